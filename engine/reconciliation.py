"""Manual reconciliation commands: an accountant matches a bank line to a payment, payout or invoice,
or takes a match back. Each is a ReconciliationMatch event in the ledger's store (published on
``ledger.reconciliation_match.v1``), so the ``reconciliation`` read model replays it on a rebuild.

Whether the line and the target exist is the API's question (it reads the read model); here the
command is recorded once: a match's id derives from the tenant and the caller's Idempotency-Key
when one is given, so a retried POST finds the match it made instead of making a second.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from engine.application import LedgerService
from engine.domain.reconciliation_match import ReconciliationMatch, match_id_for


def find(svc: LedgerService, tenant_id: UUID, match_id: UUID) -> ReconciliationMatch | None:
    """The tenant's match, or None (another tenant's match is None too: tenants are strangers)."""
    try:
        found: object = svc.ledger.repository.get(match_id)
    except AggregateNotFoundError:
        return None
    if not isinstance(found, ReconciliationMatch) or found.tenant_id != tenant_id:
        return None
    return found


def make(
    svc: LedgerService,
    tenant_id: UUID,
    *,
    bank_line_id: str,
    target_type: str,
    target_id: str,
    made_by: str,
    idempotency_key: str | None = None,
) -> tuple[ReconciliationMatch, bool]:
    """Record the match; returns it and whether it is new (False: the same key made it before)."""
    key = idempotency_key or str(uuid4())
    match_id = match_id_for(tenant_id, key)
    existing = find(svc, tenant_id, match_id) if idempotency_key else None
    if existing is not None:
        return existing, False
    match = ReconciliationMatch(
        tenant_id=tenant_id,
        bank_line_id=bank_line_id,
        target_type=target_type,
        target_id=target_id,
        made_by=made_by,
        made_at=datetime.now(UTC),
        key=key,
    )
    try:
        svc.ledger.save(match)
    except IntegrityError:
        # The same key raced us: that request's match is the one.
        again = find(svc, tenant_id, match_id)
        if again is None:
            raise
        return again, False
    return match, True


def undo(svc: LedgerService, match: ReconciliationMatch, undone_by: str) -> None:
    """Take the match back; taking back a match already undone changes nothing."""
    if match.undone:
        return
    match.undo(tenant_id=match.tenant_id, undone_by=undone_by, undone_at=datetime.now(UTC))
    try:
        svc.ledger.save(match)
    except IntegrityError:
        # Undone at the same moment by another request: the match is undone either way.
        return
