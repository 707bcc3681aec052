"""Payouts: the commands on the Payout aggregate (engine/domain/payout.py) and their list.

:class:`PayoutBook` is what the API (engine/api/payouts.py), the job handler (handler.py) and the
bank's callback (webhook.py) share. Each command loads the payout, calls one aggregate method, saves
and rewrites the payout's row in ``bank_payouts`` (the list's read model; the event store is the
record). A save that loses a race (a poll and a callback telling the same fact at once) loads again
and decides again, so the fact is recorded once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, OperationalError

from connectors.bank import errors
from connectors.bank.client import PaymentStatus, rupees
from engine import db
from engine.application import LedgerService
from engine.domain.payout import FINAL, Payout, PayoutRequest, PayoutStatus, payout_id_for
from engine.errors import Conflict, NotFound
from engine.payout_records import masked_account

log = logging.getLogger(__name__)

SAVE_ATTEMPTS = 5
ALERT_CAUSE = "bank.insufficient_funds"


class PayoutNotFound(NotFound):
    """No such payout for this tenant (another tenant's payout is reported the same way)."""


class ReferenceReused(Conflict):
    """The reference names a payout with other details: one reference, one payout."""


class Applied(StrEnum):
    """What a status from the bank (a poll or a callback) did to the payout."""

    RECORDED = "recorded"
    UNCHANGED = "unchanged"
    UNKNOWN = "unknown"


class PayoutBook:
    def __init__(self, service: LedgerService) -> None:
        self.service = service

    # -- the API's commands ---------------------------------------------------------------------

    def request(self, tenant_id: UUID, req: PayoutRequest, requested_by: str) -> tuple[Payout, bool]:
        """The new payout, or the one already under this reference if it is the same (then False)."""
        payout_id = payout_id_for(tenant_id, req.reference)
        existing = self._find(payout_id)
        if existing is None:
            payout = Payout(
                tenant_id=tenant_id,
                reference=req.reference,
                amount=req.amount,
                currency=req.currency,
                mode=req.mode,
                beneficiary_name=req.beneficiary.name,
                beneficiary_account=req.beneficiary.account_number,
                beneficiary_ifsc=req.beneficiary.ifsc,
                purpose=req.purpose,
                requested_by=requested_by,
            )
            try:
                self._save(payout)
                return payout, True
            except IntegrityError:
                existing = self._find(payout_id)  # the same reference posted concurrently
        if existing is None or existing.tenant_id != tenant_id or not _same(existing, req):
            raise ReferenceReused(
                f"reference {req.reference!r} names another payout: use a new reference for a new payout"
            )
        return existing, False

    def get(self, tenant_id: UUID, payout_id: UUID) -> Payout:
        payout = self._find(payout_id)
        if payout is None or payout.tenant_id != tenant_id:
            raise PayoutNotFound(f"no payout {payout_id}")
        return payout

    def release(self, tenant_id: UUID, payout_id: UUID, released_by: str) -> Payout:
        """A person fixed the cause of a hold: submit again (a new round)."""

        def release(p: Payout) -> bool:
            p.release(released_by)
            return True

        return self._change(tenant_id, payout_id, release)

    def list(
        self,
        tenant_id: UUID,
        *,
        status: str | None = None,
        mode: str | None = None,
        reference: str | None = None,
        from_date: date | None = None,
        to_date: date | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        query = "SELECT * FROM bank_payouts WHERE tenant_id = %s"
        params: list[Any] = [tenant_id]
        for column, value in (("status", status), ("mode", mode), ("reference", reference)):
            if value is not None:
                query += f" AND {column} = %s"
                params.append(value)
        if from_date is not None:
            query += " AND created_at >= %s"
            params.append(datetime.combine(from_date, time(), UTC))
        if to_date is not None:
            query += " AND created_at < %s"
            params.append(datetime.combine(to_date + timedelta(days=1), time(), UTC))
        query += " ORDER BY created_at DESC, payout_id LIMIT %s"
        params.append(limit)
        with db.transaction(self.service.pool) as conn:
            rows = conn.execute(query, params).fetchall()
        # The service's pool answers rows as dicts (column name -> value).
        return [row_document(dict(row)) for row in rows]

    def find_by_provider_payment(self, tenant_id: UUID, payment_id: str) -> UUID | None:
        with db.transaction(self.service.pool) as conn:
            row = conn.execute(
                "SELECT payout_id FROM bank_payouts WHERE tenant_id = %s AND provider_payment_id = %s",
                (tenant_id, payment_id),
            ).fetchone()
        return UUID(str(dict(row)["payout_id"])) if row else None

    def find_by_reference(self, tenant_id: UUID, reference: str) -> UUID | None:
        payout = self._find(payout_id_for(tenant_id, reference))
        return payout.id if payout is not None and payout.tenant_id == tenant_id else None

    # -- the bank's answers ---------------------------------------------------------------------

    def record_submitted(self, tenant_id: UUID, payout_id: UUID, payment_id: str) -> Payout:
        return self._change(tenant_id, payout_id, lambda p: p.submit(payment_id))

    def apply_status(self, tenant_id: UUID, payout_id: UUID, status: PaymentStatus) -> Applied:
        """Record what the bank says about its payment (a poll or a callback), once."""
        payout = self.get(tenant_id, payout_id)
        if payout.provider_payment_id not in (None, status.payment_id) or payout.status in FINAL:
            return Applied.UNCHANGED
        if status.status == "completed":
            done = self._change(
                tenant_id,
                payout_id,
                lambda p: (
                    p.status == PayoutStatus.PROCESSING
                    and p.complete(
                        utr=status.utr or status.transaction_id or status.payment_id,
                        transaction_id=status.transaction_id,
                        charges=rupees(status.charges_paise),
                        completed_at=status.completed_at or datetime.now(UTC),
                    )
                ),
                report=True,
            )
            return Applied.RECORDED if done else Applied.UNCHANGED
        if status.status == "failed":
            code = status.failure_code or "failed"
            message = status.failure_message or code
            return self.apply_refusal(tenant_id, payout_id, code, message, payment_id=status.payment_id)
        if payout.status == PayoutStatus.REQUESTED:
            # A callback may tell of the acceptance before the initiate's own answer arrives.
            self.record_submitted(tenant_id, payout_id, status.payment_id)
            return Applied.RECORDED
        return Applied.UNCHANGED

    def apply_refusal(
        self, tenant_id: UUID, payout_id: UUID, code: str, message: str, *, payment_id: str | None = None
    ) -> Applied:
        """Apply the rule of the bank's ``code`` (connectors/bank/errors.py) to the payout.

        ``payment_id``: the bank had accepted this payment and failed it later, so a retry needs a
        new round (a bounce); without it the initiate itself was refused and the round is unused."""
        rule = errors.rule_for(code)
        if rule is errors.Rule.NEVER_RETRY:
            changed = self._change(
                tenant_id,
                payout_id,
                lambda p: p.status not in FINAL and p.fail(code=code, message=message),
                report=True,
            )
        elif rule is errors.Rule.WAIT_FOR_PERSON:
            changed = self._change(
                tenant_id,
                payout_id,
                lambda p: (
                    p.status in (PayoutStatus.REQUESTED, PayoutStatus.PROCESSING)
                    and p.hold(code=code, message=message)
                ),
                report=True,
            )
            if changed:
                self._alert(tenant_id, payout_id, code, message)
        elif payment_id is not None:
            changed = self._change(
                tenant_id,
                payout_id,
                lambda p: p.bounce(code=code, message=message, provider_payment_id=payment_id),
                report=True,
            )
        else:
            changed = None  # refused before accepting: nothing to record, the job retries the round
        return Applied.RECORDED if changed else Applied.UNCHANGED

    # -- helpers --------------------------------------------------------------------------------

    def _alert(self, tenant_id: UUID, payout_id: UUID, code: str, message: str) -> None:
        payout = self.get(tenant_id, payout_id)
        self.service.raise_alert(
            tenant_id,
            severity="warning",
            cause=ALERT_CAUSE if code == errors.INSUFFICIENT_FUNDS else f"bank.{code}",
            subject=f"payout:{payout_id}",
            message=(
                f"Payout {payout.reference} ({payout.amount} INR, {payout.mode}) is on hold: the bank"
                f" answered {code} ({message}). Fund the account, then POST /v1/payouts/{payout_id}/retry."
            ),
            details={"payout_id": str(payout_id), "reference": payout.reference, "code": code},
        )

    def _change(
        self,
        tenant_id: UUID,
        payout_id: UUID,
        change: Callable[[Payout], bool | None],
        *,
        report: bool = False,
    ) -> Any:
        """Load, change, save; again after losing a race. Returns the payout (or, with ``report``,
        whether anything changed)."""
        for _ in range(SAVE_ATTEMPTS):
            payout = self.get(tenant_id, payout_id)
            changed = bool(change(payout))
            if not changed:
                return False if report else payout
            try:
                self._save(payout)
            except IntegrityError:
                continue
            return True if report else payout
        raise PayoutChangedConcurrently(f"payout {payout_id} kept changing under us; try again")

    def _find(self, payout_id: UUID) -> Payout | None:
        try:
            found: object = self.service.ledger.repository.get(payout_id)
        except AggregateNotFoundError:
            return None
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        return found if isinstance(found, Payout) else None

    def _save(self, payout: Payout) -> None:
        self.service._save(payout)
        self._write_row(payout)

    def _write_row(self, p: Payout) -> None:
        with db.transaction(self.service.pool) as conn:
            conn.execute(
                """INSERT INTO bank_payouts (tenant_id, payout_id, reference, status, mode, amount, currency,
                       beneficiary_name, beneficiary_ifsc, beneficiary_account_masked, purpose, round,
                       provider_payment_id, utr, charges, failure_code, failure_message, created_at,
                       updated_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
                   ON CONFLICT (tenant_id, payout_id) DO UPDATE SET
                       status = EXCLUDED.status, round = EXCLUDED.round,
                       provider_payment_id = EXCLUDED.provider_payment_id, utr = EXCLUDED.utr,
                       charges = EXCLUDED.charges, failure_code = EXCLUDED.failure_code,
                       failure_message = EXCLUDED.failure_message, updated_at = now()""",
                (
                    p.tenant_id,
                    p.id,
                    p.reference,
                    p.status,
                    p.mode,
                    p.amount,
                    p.currency,
                    p.beneficiary_name,
                    p.beneficiary_ifsc,
                    masked_account(p.beneficiary_account),
                    p.purpose,
                    p.round,
                    p.provider_payment_id,
                    p.utr,
                    p.charges,
                    p.failure_code,
                    p.failure_message,
                    p.created_on,
                ),
            )


class PayoutChangedConcurrently(Conflict):
    """Saving kept losing races; the caller may try again."""


def _same(p: Payout, req: PayoutRequest) -> bool:
    return (p.amount, p.mode, p.beneficiary_account, p.beneficiary_ifsc) == (
        req.amount,
        req.mode,
        req.beneficiary.account_number,
        req.beneficiary.ifsc,
    )


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def payout_document(p: Payout) -> dict[str, Any]:
    """A payout as ``GET /v1/payouts/{id}`` shows it: money as decimal strings."""
    return {
        "id": str(p.id),
        "reference": p.reference,
        "status": p.status,
        "amount": _money(p.amount),
        "currency": p.currency,
        "mode": p.mode,
        "beneficiary": {
            "name": p.beneficiary_name,
            "account_number": masked_account(p.beneficiary_account),
            "ifsc": p.beneficiary_ifsc,
        },
        "purpose": p.purpose,
        "round": p.round,
        "provider_payment_id": p.provider_payment_id,
        "utr": p.utr,
        "transaction_id": p.transaction_id,
        "charges": _money(p.charges),
        "completed_at": p.completed_at.isoformat() if p.completed_at else None,
        "failure": {"code": p.failure_code, "message": p.failure_message} if p.failure_code else None,
        "created_at": p.created_on.isoformat(),
    }


def row_document(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["payout_id"]),
        "reference": row["reference"],
        "status": row["status"],
        "amount": _money(row["amount"]),
        "currency": row["currency"],
        "mode": row["mode"],
        "beneficiary": {
            "name": row["beneficiary_name"],
            "account_number": row["beneficiary_account_masked"],
            "ifsc": row["beneficiary_ifsc"],
        },
        "purpose": row["purpose"],
        "round": row["round"],
        "provider_payment_id": row["provider_payment_id"],
        "utr": row["utr"],
        "charges": _money(row["charges"]),
        "failure": (
            {"code": row["failure_code"], "message": row["failure_message"]} if row["failure_code"] else None
        ),
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }
