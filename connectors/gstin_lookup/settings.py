"""What a tenant configures for ``gstin-lookup``, and the connection test."""

from __future__ import annotations

import httpx

from connectors.gstin_lookup.client import LookupClient, LookupCredentials
from connectors.kit import Credential, SettingsSchema
from engine.integrations import IntegrationSettings

SETTINGS = SettingsSchema(
    title="GST taxpayer search (GSTIN lookup), through a GSP",
    credentials=(
        Credential("client_id", secret=False, description="the GSP-issued client id"),
        Credential("client_secret", description="the GSP-issued client secret"),
    ),
)


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # Authenticating proves reachability, TLS and the GSP account without a billed search.
    credentials = LookupCredentials(**settings.credentials)
    async with LookupClient(settings.base_url, credentials, transport=transport) as client:
        await client.authenticate(force=True)
