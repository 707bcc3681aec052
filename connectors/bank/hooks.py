"""The bank's payment-status callbacks at the generic receiver ``POST /v1/hooks/bank/{tenant_id}``
(engine/api/hooks.py): verified there, stored in the inbox, then applied here by the hook processor.

``verify`` checks ``X-Signature`` (hex HMAC-SHA256 of the raw body under the tenant's
``webhook_secret``, seed 002 section 3.3) with :func:`connectors.bank.webhook.verify`; the bank signs
no timestamp, so, as for Razorpay, there is no staleness check. The bank sends no event id either:
a callback is identified by what it reports, the bank's payment id and the status it moved to, so
the bank's retries of one callback are one delivery (a 200 ``duplicate``), and ``processing`` then
``completed`` are two.

``handle`` applies it through :class:`connectors.bank.payouts.PayoutBook`, the path the status poll
takes too: each fact is recorded once, whichever of the callback and the poll comes first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from connectors.bank.payouts import Applied, PayoutBook
from connectors.bank.webhook import SIGNATURE_HEADER, InvalidCallback, status_of
from connectors.bank.webhook import handle as apply_callback
from connectors.bank.webhook import verify as signature_ok
from connectors.hooks import (
    Delivery,
    DeliveryMalformed,
    HookContext,
    InboundHooks,
    SignatureRejected,
    VerifiedDelivery,
)

log = logging.getLogger(__name__)

# The bank's payment ids (``PAY_...``) are short; anything longer, or not printable ASCII, is not one.
MAX_ID_LENGTH = 100


def _payload(body: bytes | str) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DeliveryMalformed("the callback is not JSON") from exc
    if not isinstance(payload, dict):
        raise DeliveryMalformed("the callback is not a JSON object")
    try:
        status = status_of(payload)
    except InvalidCallback as exc:
        raise DeliveryMalformed(f"not a payment-status callback: {exc}") from exc
    printable = status.payment_id.isascii() and status.payment_id.isprintable()
    if not status.payment_id or len(status.payment_id) > MAX_ID_LENGTH or not printable:
        raise DeliveryMalformed("payment_id is not a bank payment id")
    return payload


def verify(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: datetime
) -> VerifiedDelivery:
    if not signature_ok(body, headers.get(SIGNATURE_HEADER.lower()), secrets):
        raise SignatureRejected("X-Signature does not verify")
    payload = _payload(body)
    status = str(payload["status"])
    return VerifiedDelivery(f"{payload['payment_id']}:{status}", f"payment.{status}")


def handle(delivery: Delivery, context: HookContext) -> None:
    payload = _payload(delivery.body)
    applied = apply_callback(PayoutBook(context.service), delivery.tenant_id, payload)
    if applied is Applied.UNKNOWN:
        # Not this tenant's payout, or one the bank knows and we never sent: nothing to change. The
        # delivery stays in the inbox for an operator to look at.
        log.warning(
            "bank callback %s of tenant %s names no payout of the tenant",
            delivery.provider_event_id,
            delivery.tenant_id,
        )


HOOKS = InboundHooks(verify=verify, handle=handle)
