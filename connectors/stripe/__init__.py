"""Stripe, provider name ``stripe``: payments in, by webhook (``POST /v1/hooks/stripe/{tenant_id}``).

Only the inbound half for now: ``signature`` verifies ``Stripe-Signature`` (300 s tolerance),
``events`` maps PaymentIntent and refund events to the same Payment aggregate as Razorpay's.
"""

from __future__ import annotations

import httpx

from connectors.errors import NeedsAttentionError, RetryableError
from connectors.kit import Connector, Credential, SettingsSchema
from connectors.stripe.events import PROVIDER
from connectors.stripe.webhooks import HOOKS
from engine.integrations import IntegrationSettings
from engine.security.egress import EndpointPolicy

SETTINGS = SettingsSchema(
    title="Stripe (payments, webhooks)",
    credentials=(
        Credential("secret_key", description="the API secret key (sk_test_... or sk_live_...)"),
        Credential(
            "webhook_secret",
            description="the endpoint's signing secret (whsec_...);"
            " a replaced one keeps verifying for 24 hours",
        ),
    ),
    production_urls=("https://api.stripe.com",),
)


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # The account's balance: a read that proves reachability, TLS and the key.
    headers = {"Authorization": f"Bearer {settings.credentials['secret_key']}"}
    async with httpx.AsyncClient(
        base_url=settings.base_url,
        headers=headers,
        transport=transport,
        timeout=httpx.Timeout(10.0, read=30.0),
    ) as client:
        try:
            response = await client.get("/v1/balance")
        except httpx.HTTPError as exc:
            raise RetryableError("unreachable", f"Stripe did not answer: {type(exc).__name__}") from exc
    if response.status_code == 401:
        raise NeedsAttentionError("unauthorized", "Stripe refused the secret key")
    if response.status_code >= 400:
        raise RetryableError(f"http_{response.status_code}", "Stripe refused the balance read")


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=EndpointPolicy(provider=PROVIDER, known_hosts=("api.stripe.com",)),
    connection_test=test_connection,
    hooks=HOOKS,
)

__all__ = ["CONNECTOR", "PROVIDER"]
