"""The Payment aggregate: money in, captured by a payment gateway (Razorpay, Stripe) for a tenant.

A payment learns its life from the gateway's webhooks, which arrive late, twice, or out of order
(Razorpay retries for 24 hours and says duplicates are expected; Stripe gives no ordering guarantee).
So every change here is judged against what is already known, never against "what came last":

- a status only ever moves up the ranking ``STATUS_RANK`` (``captured`` seen before ``authorized``
  stays ``captured``; the late ``authorized`` changes nothing);
- a refund is kept once per refund id, whenever it arrives, and implies the payment was captured
  (a gateway refunds only captured money), so a refund seen before its capture still ends as
  ``refunded`` or ``partially_refunded``;
- the same provider event applied twice changes nothing (the two rules above make it a no-op).

The status a reader sees (:attr:`Payment.status`) is derived from the ranked gateway status and the
refunds, so the final state depends only on the set of events, not on their order.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from engine.errors import InvalidInput

_PAYMENT_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/payment")

# Why ``failed`` ranks below ``authorized``: Razorpay documents "late authorisation", where a payment
# it reported failed is authorised by the bank afterwards (and may then be captured); a failure never
# follows a capture. Stripe's payment_intent.payment_failed likewise precedes a later success.
STATUS_RANK: dict[str, int] = {"created": 0, "failed": 1, "authorized": 2, "captured": 3}
GATEWAY_STATUSES = tuple(STATUS_RANK)
# What a reader sees: a gateway status, or one derived from the refunds.
STATUSES = (*GATEWAY_STATUSES, "partially_refunded", "refunded")


def payment_id_for(tenant_id: UUID, provider: str, provider_payment_id: str) -> UUID:
    """The stable id of a gateway payment: the same payment reported twice is one aggregate."""
    return uuid5(_PAYMENT_NAMESPACE, f"{tenant_id}/{provider}/{provider_payment_id}")


def later_status(current: str, reported: str) -> bool:
    """Whether ``reported`` moves the gateway status on from ``current`` (never backwards)."""
    return STATUS_RANK[reported] > STATUS_RANK[current]


def derived_status(gateway_status: str, amount: Decimal, refunded: Decimal) -> str:
    """The status shown: refunds win over the gateway status, and imply a capture."""
    if refunded > 0:
        return "refunded" if refunded >= amount else "partially_refunded"
    return gateway_status


class Payment(Aggregate):
    """One gateway payment of one tenant."""

    class Recorded(Aggregate.Created):
        tenant_id: UUID
        provider: str
        provider_payment_id: str
        amount: Decimal
        currency: str
        method: str | None
        customer: dict[str, str]
        reference: dict[str, str]
        paid_at: datetime
        provider_event_id: str

    @event(Recorded)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        provider: str,
        provider_payment_id: str,
        amount: Decimal,
        currency: str,
        method: str | None,
        customer: dict[str, str],
        reference: dict[str, str],
        paid_at: datetime,
        provider_event_id: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.provider = provider
        self.provider_payment_id = provider_payment_id
        self.amount = amount
        self.currency = currency
        self.method = method
        self.customer = customer
        self.reference = reference
        self.paid_at = paid_at
        self.gateway_status = "created"
        self.failure: dict[str, str] | None = None
        self.refunds: dict[str, dict[str, Any]] = {}

    @staticmethod
    def create_id(*, tenant_id: UUID, provider: str, provider_payment_id: str, **_: Any) -> UUID:
        return payment_id_for(tenant_id, provider, provider_payment_id)

    # -- what a reader sees --------------------------------------------------------------------

    @property
    def amount_refunded(self) -> Decimal:
        return sum((Decimal(r["amount"]) for r in self.refunds.values()), Decimal(0))

    @property
    def status(self) -> str:
        return derived_status(self.gateway_status, self.amount, self.amount_refunded)

    @property
    def captured(self) -> bool:
        """Money was taken: captured, or refunded (which implies a capture)."""
        return self.gateway_status == "captured" or bool(self.refunds)

    @property
    def amount_applicable(self) -> Decimal:
        """What this payment contributes to an invoice: captured money less refunds, never negative."""
        if not self.captured:
            return Decimal(0)
        return max(self.amount - self.amount_refunded, Decimal(0))

    # -- commands ------------------------------------------------------------------------------

    def report_status(
        self,
        status: str,
        *,
        provider_event_id: str,
        occurred_at: datetime,
        error_code: str | None = None,
        error_description: str | None = None,
    ) -> bool:
        """The gateway says the payment reached ``status``; True when that changed anything."""
        check_gateway_status(status)
        if not later_status(self.gateway_status, status):
            return False
        self._status_changed(
            status=status,
            provider_event_id=provider_event_id,
            occurred_at=occurred_at,
            error_code=error_code,
            error_description=error_description,
        )
        return True

    class StatusChanged(Aggregate.Event):
        tenant_id: UUID
        status: str
        provider_event_id: str
        occurred_at: datetime
        error_code: str | None
        error_description: str | None

    def _status_changed(self, **fields: Any) -> None:
        self._trigger_status_changed(tenant_id=self.tenant_id, **fields)

    @event(StatusChanged)
    def _trigger_status_changed(
        self,
        tenant_id: UUID,
        status: str,
        provider_event_id: str,
        occurred_at: datetime,
        error_code: str | None,
        error_description: str | None,
    ) -> None:
        self.gateway_status = status
        if status == "failed":
            self.failure = {"code": error_code or "", "description": error_description or ""}

    def record_refund(
        self, refund_id: str, amount: Decimal, *, provider_event_id: str, occurred_at: datetime
    ) -> bool:
        """The gateway refunded ``amount`` under ``refund_id``; True when that refund was new."""
        check_amount(amount)
        if refund_id in self.refunds:
            return False
        self._trigger_refunded(
            tenant_id=self.tenant_id,
            refund_id=refund_id,
            amount=amount,
            provider_event_id=provider_event_id,
            occurred_at=occurred_at,
        )
        return True

    class Refunded(Aggregate.Event):
        tenant_id: UUID
        refund_id: str
        amount: Decimal
        provider_event_id: str
        occurred_at: datetime

    @event(Refunded)
    def _trigger_refunded(
        self, tenant_id: UUID, refund_id: str, amount: Decimal, provider_event_id: str, occurred_at: datetime
    ) -> None:
        self.refunds[refund_id] = {
            "refund_id": refund_id,
            "amount": str(amount),
            "refunded_at": occurred_at.isoformat(),
        }


class InvalidPaymentFact(InvalidInput):
    """A gateway reported something the payment model cannot hold (a negative amount, an unknown
    status): the delivery is refused rather than recorded wrongly."""


def check_gateway_status(status: str) -> None:
    if status not in STATUS_RANK:
        raise InvalidPaymentFact(f"payment status {status!r}: expected one of {', '.join(GATEWAY_STATUSES)}")


def check_amount(amount: Decimal) -> None:
    if not amount.is_finite() or amount < 0 or amount >= Decimal("1e15"):
        raise InvalidPaymentFact(f"amount {amount}: expected a finite amount from 0 below 10^15")
