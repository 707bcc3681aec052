"""What one outbound webhook delivery looks like on the wire: its body and its signature headers.

Pure (no I/O). Two body formats:

* ``cloudevents`` (default): CloudEvents 1.0 structured-mode JSON (``Content-Type:
  application/cloudevents+json``): the event's ``ce_*`` attributes as the ledger topic carries them
  plus ``data``, the event record as JSON (money as decimal strings, instants as RFC 3339).
* ``legacy``: the seed "College Accounts" section 3.2 body ``{"event", "timestamp", "data"}`` with the
  short event name (``invoice.issued``). The seed's ``signature`` body field is left out: a body cannot
  carry a signature of itself; it travels in ``X-Signature`` instead.

Signatures, on the exact bytes sent (platform.md: verifying a re-serialised body is the classic bug):

* Standard Webhooks: ``webhook-id`` (the event id: stable across retries, so receivers dedupe on it),
  ``webhook-timestamp`` (unix seconds of this attempt), ``webhook-signature`` = space-separated
  ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``, one per live secret (two during a
  rotation), computed by the ``standardwebhooks`` library itself.
* ``X-Signature``: the seed's hex HMAC-SHA256 of the raw body, keyed with the current secret's text
  exactly as shown (``whsec_...`` as UTF-8 bytes, what the seed's ``secret.encode()`` does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
# Standard Webhooks: secrets are 24 to 64 random bytes; 32 is Svix's default.
SECRET_BYTES = 32
USER_AGENT = "Ledgerflow-Webhooks/1"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@dataclass(frozen=True)
class LedgerEvent:
    """One ledger event as the delivery worker read it from its topic."""

    id: str
    type: str
    source: str
    subject: str
    time: str
    data: Mapping[str, Any]


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON")


def to_json(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def short_type(ce_type: str) -> str:
    """``ledgerflow.invoice.issued`` -> ``invoice.issued`` (the seed's event names)."""
    return ce_type.removeprefix("ledgerflow.")


def body(event: LedgerEvent, body_format: str) -> tuple[bytes, str]:
    """(raw body, content type) of a delivery of ``event`` in ``body_format``."""
    if body_format == "legacy":
        return to_json({"event": short_type(event.type), "timestamp": event.time, "data": event.data}), (
            "application/json"
        )
    envelope = {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": event.time,
        "datacontenttype": "application/json",
        "data": event.data,
    }
    return to_json(envelope), "application/cloudevents+json"


def signature_headers(
    msg_id: str, raw_body: bytes, live_secrets: Sequence[str], now: datetime
) -> dict[str, str]:
    """The Standard Webhooks headers and the seed's ``X-Signature``; ``live_secrets[0]`` is current."""
    if not live_secrets:
        raise ValueError("a delivery needs at least one signing secret")
    moment = now.astimezone(UTC)
    text = raw_body.decode()
    signatures = [Webhook(secret).sign(msg_id, moment, text) for secret in live_secrets]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": " ".join(signatures),
        "X-Signature": hex_signature(live_secrets[0], raw_body),
    }


def hex_signature(secret: str, raw_body: bytes) -> str:
    return hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
