"""Razorpay webhook payloads -> our payment facts (pure).

Payload shape (Razorpay webhooks docs, razorpay-python): ``{"event": "payment.captured",
"payload": {"payment": {"entity": {...}}, "refund": {"entity": {...}}}, "created_at": <unix s>}``.
Amounts are integers in the currency's smallest unit (paise for INR).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from connectors.hooks import DeliveryMalformed
from engine.payments import PaymentFact

PROVIDER = "razorpay"
PAYMENT_EVENTS = {
    "payment.authorized": "authorized",
    "payment.captured": "captured",
    "payment.failed": "failed",
}
REFUND_EVENTS = frozenset({"refund.processed"})
# ISO 4217 currencies without minor units that gateways send in whole units (Razorpay and Stripe
# both document "zero-decimal" currencies); every other currency here has two decimal places.
ZERO_DECIMAL = frozenset(
    {
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    }
)
MAX_MINOR_UNITS = 10**15
REFERENCE_NOTES = ("invoice_id", "invoice_number", "order_id")


def minor_to_decimal(amount: Any, currency: str, where: str) -> Decimal:
    """An integer amount in minor units as an exact Decimal; anything else is malformed."""
    if type(amount) is not int or not 0 <= amount < MAX_MINOR_UNITS:
        raise DeliveryMalformed(f"{where}: expected a whole number of minor units, got {amount!r}")
    return Decimal(amount) if currency in ZERO_DECIMAL else Decimal(amount).scaleb(-2)


def text(value: Any, where: str, *, limit: int = 200, required: bool = True) -> str | None:
    """A short printable string from the payload (no control characters, no kilobytes)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        if not required:
            return None
        raise DeliveryMalformed(f"{where}: expected a short printable string")
    return value


def currency_of(value: Any, where: str) -> str:
    currency = text(value, where, limit=3) or ""
    if len(currency) != 3 or not currency.isalpha():
        raise DeliveryMalformed(f"{where}: expected an ISO 4217 code")
    return currency.upper()


def unix_time(value: Any, where: str) -> datetime:
    if type(value) is not int or not 0 <= value < 32503680000:  # before year 3000
        raise DeliveryMalformed(f"{where}: expected unix seconds")
    return datetime.fromtimestamp(value, UTC)


def entity(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    found = payload.get("payload", {})
    found = found.get(name) if isinstance(found, dict) else None
    found = found.get("entity") if isinstance(found, dict) else None
    if not isinstance(found, dict):
        raise DeliveryMalformed(f"payload.{name}.entity is missing")
    return found


def references(notes: Any) -> dict[str, str]:
    """What the payment's notes say it pays (``notes.invoice_number`` / ``notes.invoice_id``)."""
    if not isinstance(notes, dict):  # Razorpay sends [] for empty notes
        return {}
    found = {}
    for key in REFERENCE_NOTES:
        value = notes.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        cleaned = text(value, f"notes.{key}", limit=100, required=False)
        if cleaned:
            found[key] = cleaned.strip()
    return found


def payment_fact(
    tenant_id: UUID,
    payment: Mapping[str, Any],
    event_id: str,
    occurred_at: datetime,
    provider: str = PROVIDER,
) -> PaymentFact:
    """The facts every event about a payment carries, from its payment entity."""
    currency = currency_of(payment.get("currency"), "payment.currency")
    customer = {
        key: value
        for key in ("customer_id", "email", "contact")
        if (value := text(payment.get(key), f"payment.{key}", required=False))
    }
    reference = references(payment.get("notes"))
    order_id = text(payment.get("order_id"), "payment.order_id", required=False)
    if order_id and "order_id" not in reference:
        reference["order_id"] = order_id
    created = payment.get("created_at")
    return PaymentFact(
        tenant_id=tenant_id,
        provider=provider,
        provider_payment_id=text(payment.get("id"), "payment.id", limit=100) or "",
        provider_event_id=event_id,
        occurred_at=occurred_at,
        amount=minor_to_decimal(payment.get("amount"), currency, "payment.amount"),
        currency=currency,
        paid_at=unix_time(created, "payment.created_at") if created is not None else occurred_at,
        method=text(payment.get("method"), "payment.method", limit=40, required=False),
        customer=customer,
        reference=reference,
    )


def facts(tenant_id: UUID, event_type: str, event_id: str, payload: Mapping[str, Any]) -> list[PaymentFact]:
    """The payment facts of one delivery; none for an event that is not about a payment."""
    if event_type not in PAYMENT_EVENTS and event_type not in REFUND_EVENTS:
        return []
    occurred_at = unix_time(payload.get("created_at"), "created_at")
    payment = entity(payload, "payment")
    base = payment_fact(tenant_id, payment, event_id, occurred_at)
    if event_type in PAYMENT_EVENTS:
        status = PAYMENT_EVENTS[event_type]
        error_code = error_description = None
        if status == "failed":
            error_code = text(payment.get("error_code"), "payment.error_code", required=False)
            error_description = text(
                payment.get("error_description"), "payment.error_description", limit=500, required=False
            )
        return [_with(base, status=status, error_code=error_code, error_description=error_description)]
    refund = entity(payload, "refund")
    if refund.get("payment_id") != base.provider_payment_id:
        raise DeliveryMalformed("refund.payment_id does not name the payment in the payload")
    refund_currency = currency_of(refund.get("currency", base.currency), "refund.currency")
    return [
        _with(
            base,
            refund_id=text(refund.get("id"), "refund.id", limit=100),
            refund_amount=minor_to_decimal(refund.get("amount"), refund_currency, "refund.amount"),
        )
    ]


def _with(fact: PaymentFact, **changes: Any) -> PaymentFact:
    from dataclasses import replace

    return replace(fact, **changes)
