"""What a tenant configures for ``veekaart`` (seed "EzBillify <-> VeeKaart", "Configuration
Parameters"), and the connection test."""

from __future__ import annotations

import httpx

from connectors.errors import NeedsAttentionError, RetryableError
from connectors.kit import Credential, SettingsSchema
from engine.integrations import IntegrationSettings

PROVIDER = "veekaart"
API_KEY = "api_key"
PARTNER_API_KEY = "partner_api_key"
WEBHOOK_SECRET = "webhook_secret"

SETTINGS = SettingsSchema(
    title="VeeKaart shop (catalogue push, order webhooks)",
    credentials=(
        Credential(
            API_KEY, description="the shop's API key Ledgerflow pushes products, stock and prices with"
        ),
        Credential(
            PARTNER_API_KEY,
            description="the key the shop presents (Authorization: Bearer) on order webhooks;"
            " POST /v1/integrations/veekaart/partner-key replaces it",
        ),
        Credential(
            WEBHOOK_SECRET,
            description="the secret the shop signs order webhooks with (X-VeeKaart-Signature); a replaced"
            " one keeps verifying for 24 hours",
        ),
    ),
    sandbox_url=None,
    production_urls=("https://api.veekaart.com",),
)

TIMEOUT = httpx.Timeout(10.0, read=30.0)


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # Reading the store's profile proves reachability, TLS and the API key, and changes nothing.
    async with httpx.AsyncClient(
        base_url=settings.base_url,
        headers={"Authorization": f"Bearer {settings.credentials[API_KEY]}"},
        transport=transport,
        timeout=TIMEOUT,
    ) as client:
        try:
            response = await client.get("/api/v1/store")
        except httpx.HTTPError as exc:
            raise RetryableError("unreachable", f"VeeKaart did not answer: {type(exc).__name__}") from exc
    if response.status_code == 401:
        raise NeedsAttentionError("unauthorized", "VeeKaart refused the API key")
    if response.status_code >= 400:
        raise RetryableError(f"http_{response.status_code}", "VeeKaart refused the store lookup")
