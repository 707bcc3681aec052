"""Stripe events -> our payment facts (pure).

An event is ``{"id": "evt_...", "type": ..., "created": <unix s>, "data": {"object": {...}}}``. A
payment is the PaymentIntent (``pi_...``; a charge without one is keyed by its own ``ch_...`` id);
amounts are integers in the smallest currency unit and currencies lower case.
``metadata.invoice_number`` / ``metadata.invoice_id`` name the invoice it pays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from uuid import UUID

from connectors.hooks import DeliveryMalformed
from connectors.razorpay.events import currency_of, minor_to_decimal, references, text, unix_time
from engine.payments import PaymentFact

PROVIDER = "stripe"
INTENT_EVENTS = {
    "payment_intent.amount_capturable_updated": "authorized",
    "payment_intent.succeeded": "captured",
    "payment_intent.payment_failed": "failed",
}
CHARGE_REFUNDED = "charge.refunded"


def _object(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    data = payload.get("data")
    found = data.get("object") if isinstance(data, dict) else None
    if not isinstance(found, dict):
        raise DeliveryMalformed("data.object is missing")
    return found


def _base(
    tenant_id: UUID, obj: Mapping[str, Any], payment_id: str, event_id: str, payload: Mapping[str, Any]
) -> PaymentFact:
    occurred_at = unix_time(payload.get("created"), "created")
    currency = currency_of(obj.get("currency"), "data.object.currency")
    email = text(obj.get("receipt_email"), "receipt_email", required=False)
    customer_id = text(obj.get("customer"), "customer", limit=100, required=False)
    created = obj.get("created")
    return PaymentFact(
        tenant_id=tenant_id,
        provider=PROVIDER,
        provider_payment_id=payment_id,
        provider_event_id=event_id,
        occurred_at=occurred_at,
        amount=minor_to_decimal(obj.get("amount"), currency, "data.object.amount"),
        currency=currency,
        paid_at=unix_time(created, "data.object.created") if created is not None else occurred_at,
        customer={k: v for k, v in (("customer_id", customer_id), ("email", email)) if v},
        reference=references(obj.get("metadata")),
    )


def facts(tenant_id: UUID, event_type: str, event_id: str, payload: Mapping[str, Any]) -> list[PaymentFact]:
    if event_type in INTENT_EVENTS:
        intent = _object(payload)
        base = _base(
            tenant_id, intent, text(intent.get("id"), "data.object.id", limit=100) or "", event_id, payload
        )
        status = INTENT_EVENTS[event_type]
        error = intent.get("last_payment_error") if status == "failed" else None
        code = message = None
        if isinstance(error, dict):
            code = text(error.get("code"), "last_payment_error.code", required=False)
            message = text(error.get("message"), "last_payment_error.message", limit=500, required=False)
        return [replace(base, status=status, error_code=code, error_description=message)]
    if event_type == CHARGE_REFUNDED:
        charge = _object(payload)
        payment_id = text(charge.get("payment_intent"), "payment_intent", limit=100, required=False) or text(
            charge.get("id"), "data.object.id", limit=100
        )
        base = _base(tenant_id, charge, payment_id or "", event_id, payload)
        refunds = charge.get("refunds")
        listed = refunds.get("data") if isinstance(refunds, dict) else None
        if isinstance(listed, list) and listed:
            found = []
            for i, refund in enumerate(listed):
                if not isinstance(refund, dict):
                    raise DeliveryMalformed(f"refunds.data[{i}] is not an object")
                found.append(
                    replace(
                        base,
                        refund_id=text(refund.get("id"), f"refunds.data[{i}].id", limit=100),
                        refund_amount=minor_to_decimal(
                            refund.get("amount"), base.currency, f"refunds.data[{i}].amount"
                        ),
                    )
                )
            return found
        # Newer API versions leave the refund list out; the cumulative amount is then recorded
        # once per charge (a later partial refund is only seen with the list).
        total = minor_to_decimal(charge.get("amount_refunded"), base.currency, "amount_refunded")
        return [replace(base, refund_id=f"{charge.get('id')}:refunded", refund_amount=total)]
    return []
