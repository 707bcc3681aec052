"""The ReconciliationMatch aggregate: an accountant's decision that a bank statement line settles a
payment, payout or invoice (``made``), or that it does not (``undone``).

Kept as events, not as rows of the ``reconciliation`` read model, because a read model is rebuilt
from the topics: a decision stored only in the table would vanish with a rebuild. Published on
``ledger.reconciliation_match.v1``, the projection replays it like any other fact.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

TARGET_TYPES = ("payment", "payout", "invoice")


class ReconciliationMatch(Aggregate):
    """One manual match of one tenant's bank line to one target."""

    class Made(Aggregate.Created):
        tenant_id: UUID
        bank_line_id: str
        target_type: str
        target_id: str
        made_by: str
        made_at: datetime

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
    ) -> None:
        self.tenant_id = tenant_id
        self.bank_line_id = bank_line_id
        self.target_type = target_type
        self.target_id = target_id
        self.made_by = made_by
        self.made_at = made_at
        self.undone = False

    @event("Undone")
    def undo(self, *, tenant_id: UUID, undone_by: str, undone_at: datetime) -> None:
        """Take the match back: the line is then left to the accountant (never matched automatically).
        ``tenant_id`` is repeated on the event: every published record carries its tenant."""
        self.undone = True
