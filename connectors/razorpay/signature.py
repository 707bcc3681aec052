"""Razorpay webhook signatures (pure).

``X-Razorpay-Signature`` is the lower-case hex HMAC-SHA256 of the raw request body keyed with the
webhook secret the merchant set in Razorpay's dashboard; Razorpay signs no timestamp, so there is no
staleness check and replays are stopped by deduplicating on ``X-Razorpay-Event-Id`` instead
(reference/platform.md "Webhooks"; razorpay-python ``Utility.verify_webhook_signature``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime

import orjson

from connectors.hooks import (
    DeliveryMalformed,
    SignatureRejected,
    VerifiedDelivery,
    hex_hmac_sha256,
    matches_any,
)

SIGNATURE_HEADER = "x-razorpay-signature"
EVENT_ID_HEADER = "x-razorpay-event-id"
# Razorpay's event ids look like "evt_..." (14 characters after the prefix); anything printable and
# short is accepted, control characters and kilobytes are not.
MAX_EVENT_ID = 100


def signature(secret: str, body: bytes) -> str:
    """The signature Razorpay sends for ``body``."""
    return hex_hmac_sha256(secret, body)


def verify(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: datetime
) -> VerifiedDelivery:
    """Accept a delivery signed with one of ``secrets``; its event id from the header (or, for a
    sender that omits it, a digest of the body, so an exact re-send is still a duplicate)."""
    given = headers.get(SIGNATURE_HEADER, "").strip()
    if not given or not secrets:
        raise SignatureRejected("missing or unverifiable X-Razorpay-Signature")
    if not matches_any([signature(s, body) for s in secrets], [given.lower()]):
        raise SignatureRejected("X-Razorpay-Signature does not match the body")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DeliveryMalformed("the body is not JSON") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
        raise DeliveryMalformed("the body has no 'event'")
    event_id = headers.get(EVENT_ID_HEADER, "").strip() or "sha256:" + hashlib.sha256(body).hexdigest()
    if len(event_id) > MAX_EVENT_ID or not event_id.isprintable():
        raise DeliveryMalformed("X-Razorpay-Event-Id is not a plausible event id")
    event_type = payload["event"]
    if len(event_type) > 100 or not event_type.isprintable():
        raise DeliveryMalformed("'event' is not a plausible event type")
    return VerifiedDelivery(provider_event_id=event_id, event_type=event_type)
