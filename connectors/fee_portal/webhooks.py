"""The college fee portal's signed deliveries (seed "College Accounts": the College Fee Admin portal,
section 1.4, with the webhook format and signature of sections 3.2 and 3.3).

A delivery to ``POST /v1/hooks/fee-portal/{tenant_id}``::

    {"event": "fee.collected", "timestamp": "2024-01-10T10:30:00Z",
     "data": {"receipt_number": "FEE-2024-001234", "student_id": 5678, "student_name": "Jane Student",
              "amount": 5000000, "payment_mode": "upi", "payment_date": "2024-01-10",
              "payment_reference": "401012345678", "fee_type": "tuition", "academic_year": "2023-24",
              "semester": 1}}

signed in ``X-Signature`` (hex HMAC-SHA256 of the raw body with the tenant's ``webhook_secret``; a
replaced secret verifies for 24 hours). ``amount`` is integer paise, the seed's unit on its partner
APIs: it becomes exact rupees here, at the edge (5000000 paise is 50000.00), and is then the same
collection ``POST /v1/fee-collections`` records. The receipt number is the delivery's id: the receiver
stores one delivery per receipt, and recording the same receipt again is the collection recorded
before, so a delivery sent many times, or handled again after a crash, is one fee.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from connectors.hooks import (
    Delivery,
    DeliveryMalformed,
    HookContext,
    InboundHooks,
    SignatureRejected,
    VerifiedDelivery,
    hex_hmac_sha256,
    matches_any,
)
from engine.fees import CollectionBody, FeeBook, ReceiptReused
from engine.fields import field_errors

PROVIDER = "fee-portal"
SIGNATURE_HEADER = "x-signature"
EVENT_TYPE = "fee.collected"
RECORDED_BY = "hook:fee-portal"
# Far beyond any fee, and what the rupee amount allows (engine/commands.py's Money).
MAX_PAISE = 10**15


def _malformed(path: str, code: str, message: str) -> DeliveryMalformed:
    return DeliveryMalformed(message, fields=[{"path": path, "code": code, "message": message}])


def parse(body: bytes) -> CollectionBody:
    """The collection a delivery carries; ``DeliveryMalformed`` with the fields at fault otherwise."""
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _malformed("", "invalid_json", "the body is not JSON") from exc
    if not isinstance(document, dict) or document.get("event") != EVENT_TYPE:
        raise _malformed("event", "unknown_event", f"event: only {EVENT_TYPE!r} is accepted")
    data = document.get("data")
    if not isinstance(data, dict):
        raise _malformed("data", "missing", "data: the collection is missing")
    paise = data.get("amount")
    if not isinstance(paise, int) or isinstance(paise, bool) or not 0 < paise <= MAX_PAISE:
        raise _malformed("data.amount", "invalid_paise", "data.amount: a positive integer number of paise")
    try:
        return CollectionBody.model_validate({**data, "amount": str(Decimal(paise).scaleb(-2))})
    except ValidationError as exc:
        fields = [{**f, "path": f"data.{f['path']}"} for f in field_errors(exc.errors())]
        raise DeliveryMalformed("data: not a fee collection", fields=fields) from exc


def verify(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: datetime
) -> VerifiedDelivery:
    """Accept a delivery signed with one of the tenant's secrets that carries a fee collection."""
    given = headers.get(SIGNATURE_HEADER, "").strip().lower()
    if not given or not secrets or not matches_any([hex_hmac_sha256(s, body) for s in secrets], [given]):
        raise SignatureRejected("X-Signature is missing or made with none of the tenant's secrets")
    collection = parse(body)
    return VerifiedDelivery(provider_event_id=collection.receipt_number, event_type=EVENT_TYPE)


def handle(delivery: Delivery, context: HookContext) -> None:
    collection = parse(delivery.body.encode())
    try:
        FeeBook(context.service).record(delivery.tenant_id, collection.as_input(), RECORDED_BY, source="hook")
    except ReceiptReused as exc:
        # The portal re-used a receipt number for another payment: nothing to record; a person looks.
        raise _malformed("data.receipt_number", "receipt_reused", str(exc)) from exc


HOOKS = InboundHooks(verify=verify, handle=handle)
