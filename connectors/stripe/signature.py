"""Stripe webhook signatures (pure).

``Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>...]``: each v1 is the hex HMAC-SHA256, keyed with
the endpoint's signing secret, of ``f"{t}.{raw body}"``; several v1 appear while a secret is rolled.
A timestamp more than 300 s from now is refused, Stripe's own default tolerance, so a captured
delivery cannot be replayed later (reference/platform.md "Webhooks"; stripe-python
``WebhookSignature.verify_header``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import orjson

from connectors.hooks import (
    DeliveryMalformed,
    DeliveryStale,
    SignatureRejected,
    VerifiedDelivery,
    hex_hmac_sha256,
    matches_any,
)

SIGNATURE_HEADER = "stripe-signature"
TOLERANCE_SECONDS = 300
MAX_HEADER = 2000


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The v1 signature Stripe sends for ``body`` at ``timestamp``."""
    return hex_hmac_sha256(secret, str(timestamp).encode() + b"." + body)


def header(secret: str, timestamp: int, body: bytes) -> str:
    """A whole ``Stripe-Signature`` header, as Stripe sends it."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def parse_header(value: str) -> tuple[int, list[str]]:
    """(t, [v1 ...]) of a Stripe-Signature header; other schemes (v0) are ignored, as Stripe's own
    libraries do."""
    if not value or len(value) > MAX_HEADER:
        raise SignatureRejected("missing Stripe-Signature")
    timestamp: int | None = None
    v1: list[str] = []
    for item in value.split(","):
        key, _, raw = item.strip().partition("=")
        if key == "t" and raw.isascii() and raw.isdigit() and len(raw) <= 12:
            timestamp = int(raw)
        elif key == "v1" and raw:
            v1.append(raw.lower())
    if timestamp is None or not v1:
        raise SignatureRejected("Stripe-Signature needs t= and at least one v1=")
    return timestamp, v1


def verify(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: datetime
) -> VerifiedDelivery:
    timestamp, given = parse_header(headers.get(SIGNATURE_HEADER, ""))
    if not secrets or not matches_any([signature(s, timestamp, body) for s in secrets], given):
        raise SignatureRejected("no v1 signature matches the body")
    # Checked after the signature: an unsigned stale header tells an attacker nothing new.
    if abs(now.timestamp() - timestamp) > TOLERANCE_SECONDS:
        raise DeliveryStale(f"the signed timestamp is more than {TOLERANCE_SECONDS} s from now")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DeliveryMalformed("the body is not JSON") from exc
    if not isinstance(payload, dict):
        raise DeliveryMalformed("the body is not a JSON object")
    event_id, event_type = payload.get("id"), payload.get("type")
    for name, value in (("id", event_id), ("type", event_type)):
        if not isinstance(value, str) or not value or len(value) > 100 or not value.isprintable():
            raise DeliveryMalformed(f"the event has no plausible {name!r}")
    assert isinstance(event_id, str) and isinstance(event_type, str)
    return VerifiedDelivery(provider_event_id=event_id, event_type=event_type)
