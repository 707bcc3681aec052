"""What a tenant configures for ``razorpay``, and the connection test."""

from __future__ import annotations

import httpx

from connectors.errors import NeedsAttentionError, RetryableError
from connectors.kit import Credential, SettingsSchema
from engine.integrations import IntegrationSettings

SETTINGS = SettingsSchema(
    title="Razorpay (payments, subscriptions, webhooks)",
    credentials=(
        Credential("key_id", secret=False, description="the API key id (rzp_test_... or rzp_live_...)"),
        Credential("key_secret", description="the API key secret"),
        Credential(
            "webhook_secret",
            description="the secret set on the webhook in Razorpay's dashboard; a replaced one keeps"
            " verifying for 24 hours",
        ),
    ),
    sandbox_url=None,
    production_urls=("https://api.razorpay.com",),
)


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # Listing one subscription proves reachability, TLS and the key pair, and changes nothing.
    auth = (settings.credentials["key_id"], settings.credentials["key_secret"])
    async with httpx.AsyncClient(
        base_url=settings.base_url, auth=auth, transport=transport, timeout=httpx.Timeout(10.0, read=30.0)
    ) as client:
        try:
            response = await client.get("/v1/subscriptions", params={"count": 1})
        except httpx.HTTPError as exc:
            raise RetryableError("unreachable", f"Razorpay did not answer: {type(exc).__name__}") from exc
    if response.status_code == 401:
        raise NeedsAttentionError("unauthorized", "Razorpay refused the key id and secret")
    if response.status_code >= 400:
        raise RetryableError(f"http_{response.status_code}", "Razorpay refused the listing")
