"""The ReconciliationMatch aggregate: an accountant's decision that a bank statement line settles a
payment, payout or invoice (``made``), or that it does not (``undone``).

Kept as events, not as rows of the ``reconciliation`` read model, because a read model is rebuilt
from the topics: a decision stored only in the table would vanish with a rebuild. Published on
``ledger.reconciliation_match.v1``, the projection replays it like any other fact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

TARGET_TYPES = ("payment", "payout", "invoice")
_MATCH_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/reconciliation-match")


def match_id_for(tenant_id: UUID, key: str) -> UUID:
    """The match's id: from the tenant and the caller's Idempotency-Key (or a fresh random key), so a
    retried request names the match it made before instead of making a second."""
    return uuid5(_MATCH_NAMESPACE, f"{tenant_id}/{key}")


class ReconciliationMatch(Aggregate):
    """One manual match of one tenant's bank line to one target."""

    class Made(Aggregate.Created):
        tenant_id: UUID
        bank_line_id: str
        target_type: str
        target_id: str
        made_by: str
        made_at: datetime
        key: str

    @event(Made)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        bank_line_id: str,
        target_type: str,
        target_id: str,
        made_by: str,
        made_at: datetime,
        key: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.bank_line_id = bank_line_id
        self.target_type = target_type
        self.target_id = target_id
        self.made_by = made_by
        self.made_at = made_at
        self.undone = False

    @staticmethod
    def create_id(*, tenant_id: UUID, key: str, **_: Any) -> UUID:
        return match_id_for(tenant_id, key)

    class Undone(Aggregate.Event):
        tenant_id: UUID
        undone_by: str
        undone_at: datetime

    @event(Undone)
    def undo(self, *, tenant_id: UUID, undone_by: str, undone_at: datetime) -> None:
        """Take the match back: the line is then left to the accountant (never matched automatically).
        ``tenant_id`` is repeated on the event: every published record carries its tenant."""
        self.undone = True
