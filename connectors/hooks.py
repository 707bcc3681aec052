"""The inbound webhook kit: what a connector declares so that ``POST /v1/hooks/{provider}/{tenant_id}``
accepts its provider's deliveries (engine/api/hooks.py) and the hook processor (streams/hooks.py) acts
on them.

A connector sets ``Connector.hooks = InboundHooks(verify=..., handle=...)``:

- ``verify(body, headers, secrets, now)`` is pure: it checks the provider's signature over the RAW
  body (never a re-serialised one: the commonest bug in both Razorpay's and Stripe's SDK trackers)
  against each of the tenant's valid secrets, and returns the provider's event id and type. It raises
  ``SignatureRejected`` (bad, missing or forged signature), ``DeliveryStale`` (a signed timestamp
  outside the provider's tolerance) or ``DeliveryMalformed`` (signed, but without an event id).
- ``handle(delivery, context)`` runs after the delivery was stored, in the hook processor: it turns
  the delivery into commands on the aggregates (payments through ``context.payments``, anything else
  through ``context.service``). It must be idempotent: a delivery may be handled again after a crash.
  Raising ``DeliveryMalformed`` marks a delivery the handler can never use (kept, logged, skipped).

The secrets are the tenant's integration credential ``secret_field`` (``webhook_secret`` by default)
and, within ``rotation_window`` after it was replaced, the previous value (engine/integrations.py).

Errors::

    DeliveryRejected            the delivery is not accepted (nothing is stored)
    ├── SignatureRejected       -> 401
    ├── DeliveryStale           -> 401
    └── DeliveryMalformed       -> 400 (signed, but not a delivery we can store or use)
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from engine.errors import InvalidInput, RequestRefused
from engine.integrations import (
    PREVIOUS_SECRET_REPLACED_AT_SUFFIX,
    PREVIOUS_SECRET_SUFFIX,
    WEBHOOK_SECRET_FIELD,
)

if TYPE_CHECKING:
    from engine.application import LedgerService
    from engine.payments import PaymentBook


class DeliveryRejected(RequestRefused):
    """A delivery the receiver does not accept; nothing about it is stored."""


class SignatureRejected(DeliveryRejected):
    """The signature is missing, malformed or made with none of the tenant's secrets."""


class DeliveryStale(DeliveryRejected):
    """The signed timestamp is outside the provider's tolerance (a replay, or a badly skewed clock)."""


class DeliveryMalformed(DeliveryRejected, InvalidInput):
    """Correctly signed, but without what we need (an event id, a JSON body of the expected shape).
    ``fields`` lists the fields at fault (path, code, message) when the provider's contract names them."""

    def __init__(self, message: str, fields: Sequence[Mapping[str, str]] = ()) -> None:
        super().__init__(message)
        self.fields = [dict(f) for f in fields]


@dataclass(frozen=True)
class VerifiedDelivery:
    """What a verifier learnt from a delivery it accepted."""

    provider_event_id: str
    event_type: str


@dataclass(frozen=True)
class Delivery:
    """A stored delivery, as the handler gets it."""

    tenant_id: UUID
    provider: str
    provider_event_id: str
    event_type: str
    body: str
    received_at: datetime


@dataclass(frozen=True)
class HookContext:
    """What a handler may act through: the write side (any aggregate) and the payment book."""

    service: LedgerService
    payments: PaymentBook


class WebhookVerifier(Protocol):
    def __call__(
        self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: datetime
    ) -> VerifiedDelivery:
        """Accept the delivery (``headers`` keys are lower case) or raise ``DeliveryRejected``."""


class WebhookHandler(Protocol):
    def __call__(self, delivery: Delivery, context: HookContext) -> None:
        """Act on a stored delivery, idempotently."""


def ignore(delivery: Delivery, context: HookContext) -> None:
    """A handler for a provider whose deliveries are only recorded."""


@dataclass(frozen=True)
class InboundHooks:
    """A connector's inbound webhooks."""

    verify: WebhookVerifier
    handle: WebhookHandler = ignore
    secret_field: str = WEBHOOK_SECRET_FIELD
    rotation_window: timedelta = timedelta(hours=24)
    """How long a replaced secret still verifies. Razorpay retries a delivery for 24 hours, signed
    with the secret it was first sent with (reference/platform.md, "Webhooks")."""
    max_body_bytes: int = 256 * 1024
    """Provider deliveries are a few kilobytes; anything far larger is refused unread (413)."""

    def secrets(self, credentials: Mapping[str, str], now: datetime) -> list[str]:
        """The tenant's secrets that verify now: the current one and, within the rotation window,
        the one it replaced."""
        valid = [credentials[self.secret_field]] if credentials.get(self.secret_field) else []
        previous = credentials.get(self.secret_field + PREVIOUS_SECRET_SUFFIX)
        replaced_at = credentials.get(self.secret_field + PREVIOUS_SECRET_REPLACED_AT_SUFFIX)
        if previous and replaced_at and now - datetime.fromisoformat(replaced_at) <= self.rotation_window:
            valid.append(previous)
        return valid


def hex_hmac_sha256(secret: str, message: bytes) -> str:
    """Lower-case hex HMAC-SHA256, the signature Razorpay, Stripe (v1) and many banks use."""
    return hmac.new(secret.encode(), message, "sha256").hexdigest()


def matches_any(expected_by_secret: Sequence[str], given: Sequence[str]) -> bool:
    """Constant-time comparison of every candidate signature with every given one (no early exit
    that would tell an attacker which secret or which position almost matched)."""
    found = False
    for expected in expected_by_secret:
        for candidate in given:
            found |= hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
    return found
