"""Pure: does an order webhook come from the tenant's shop?

The seed's partner authenticates with ``Authorization: Bearer <API key>`` (the key EzBillify issued
it); issue 13 also wants the body signed with the partner's webhook secret. Either proves it: a
signature ``X-VeeKaart-Signature`` (hex HMAC-SHA256 of the raw body, the scheme of the seed's other
webhooks) made with the current or, for 24 hours after a rotation, the previous secret; or the
partner-scoped key. A signature that is present but wrong is refused even if a key is also sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from connectors.hooks import (
    DeliveryMalformed,
    SignatureRejected,
    VerifiedDelivery,
    hex_hmac_sha256,
    matches_any,
)
from connectors.veekaart.orders import OrderRejected, parse_order

SIGNATURE_HEADER = "x-veekaart-signature"
# InboundHooks hands the verifier one list of secrets; VeeKaartHooks tags each with what it is.
HMAC_PREFIX = "hmac:"
KEY_PREFIX = "key:"
EVENT_TYPE = "order.created"


def signature(secret: str, body: bytes) -> str:
    return hex_hmac_sha256(secret, body)


def authenticated(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> bool:
    hmac_secrets = [s.removeprefix(HMAC_PREFIX) for s in secrets if s.startswith(HMAC_PREFIX)]
    keys = [s.removeprefix(KEY_PREFIX) for s in secrets if s.startswith(KEY_PREFIX)]
    given_signature = headers.get(SIGNATURE_HEADER)
    if given_signature is not None:
        return bool(hmac_secrets) and matches_any(
            [signature(s, body) for s in hmac_secrets], [given_signature.strip().lower()]
        )
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(keys) and bool(token) and matches_any(keys, [token.strip()])


def verify(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: datetime
) -> VerifiedDelivery:
    """Accept a delivery from the tenant's shop with a well-formed order, keyed by the order id."""
    if not authenticated(body, headers, secrets):
        raise SignatureRejected("neither a valid X-VeeKaart-Signature nor the partner API key")
    try:
        order = parse_order(body)
    except OrderRejected as exc:
        raise DeliveryMalformed(str(exc), fields=exc.fields) from exc
    return VerifiedDelivery(provider_event_id=order.order_id, event_type=EVENT_TYPE)
