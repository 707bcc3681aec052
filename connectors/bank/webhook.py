"""The bank's payment-status callback (seed 002, 2.1 "Webhook"): verify, then apply.

The bank POSTs ``{event, payment_id, reference_number, status, transaction_id, utr_number,
completed_at}`` with ``X-Signature``: the hex HMAC-SHA256 of the raw body under the tenant's webhook
secret (seed 002, 3.3; platform.md). Polling (handler.py) learns the same facts; both end in
:meth:`connectors.bank.payouts.PayoutBook.apply_status`, which records each fact once, so a callback
and a poll arriving together, or a callback delivered twice, change nothing the second time.

How it plugs into the generic receiver ``POST /v1/hooks/{provider}/{tenant_id}`` (another part of
issue 12): for provider ``bank`` the receiver calls :func:`verify` with the raw body, the
``X-Signature`` header and the tenant's ``webhook_secret`` credential(s) (the current and, during a
rotation, the previous one); a False is a 401 that records nothing. After storing the delivery it
calls :func:`handle` with the parsed body and the tenant's :class:`PayoutBook`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from connectors.bank.client import PaymentStatus
from connectors.bank.payouts import Applied, PayoutBook

SIGNATURE_HEADER = "X-Signature"
EVENTS = ("payment.completed", "payment.failed", "payment.processing")


def sign(secret: str, body: bytes) -> str:
    """The signature the bank sends for ``body`` (lower-case hex)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str | None, secrets: Iterable[str]) -> bool:
    """Whether ``signature`` is the HMAC of the raw ``body`` under any of ``secrets`` (constant time
    per secret; an empty secret never verifies anything)."""
    if not signature:
        return False
    given = signature.strip().lower().removeprefix("sha256=")
    return any(secret and hmac.compare_digest(sign(secret, body), given) for secret in secrets)


class InvalidCallback(ValueError):
    """A verified body that is not a payment-status callback we understand."""


def status_of(payload: Mapping[str, Any]) -> PaymentStatus:
    """The callback as the status a poll would have returned."""
    try:
        payment_id = str(payload["payment_id"])
        status = str(payload["status"])
    except KeyError as exc:
        raise InvalidCallback(f"missing {exc}") from exc
    if status not in ("processing", "completed", "failed"):
        raise InvalidCallback(f"unknown status {status!r}")
    completed = payload.get("completed_at")
    charges = payload.get("charges") or 0
    if isinstance(charges, bool) or not isinstance(charges, int | str) or not str(charges).isdigit():
        raise InvalidCallback("charges must be whole paise")
    try:
        completed_at = datetime.fromisoformat(str(completed).replace("Z", "+00:00")) if completed else None
    except ValueError as exc:
        raise InvalidCallback("completed_at is not an ISO 8601 time") from exc
    return PaymentStatus(
        payment_id=payment_id,
        status=status,
        utr=payload.get("utr_number") or None,
        transaction_id=payload.get("transaction_id") or None,
        completed_at=completed_at,
        charges_paise=int(charges),
        failure_code=payload.get("failure_code") or None,
        failure_message=payload.get("failure_reason") or None,
    )


def handle(book: PayoutBook, tenant_id: UUID, payload: Mapping[str, Any]) -> Applied:
    """Apply a verified callback of ``tenant_id``'s bank to the payout it names (by the bank's
    payment id, else our reference); a payout of another tenant is never found."""
    status = status_of(payload)
    payout_id = book.find_by_provider_payment(tenant_id, status.payment_id)
    if payout_id is None and payload.get("reference_number"):
        payout_id = book.find_by_reference(tenant_id, str(payload["reference_number"]))
    if payout_id is None:
        return Applied.UNKNOWN
    return book.apply_status(tenant_id, payout_id, status)
