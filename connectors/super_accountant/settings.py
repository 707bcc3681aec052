"""What a tenant (a college) configures for ``super-accountant``, the consolidating accountant's API,
and the connection test."""

from __future__ import annotations

import httpx

from connectors.kit import Credential, SettingsSchema
from connectors.super_accountant.client import PROVIDER, SuperAccountantClient
from engine.integrations import IntegrationSettings

CLIENT_ID = "client_id"
CLIENT_SECRET = "client_secret"
SIGNING_SECRET = "signing_secret"
COLLEGE_ID = "college_id"

SETTINGS = SettingsSchema(
    title="Consolidating accountant (daily expense batches, monthly P&L)",
    credentials=(
        Credential(
            CLIENT_ID, secret=False, description="OAuth 2.0 client id the accountant issued the college"
        ),
        Credential(CLIENT_SECRET, description="OAuth 2.0 client secret (client credentials grant)"),
        Credential(
            SIGNING_SECRET, description="HMAC-SHA256 key every request body is signed with (X-Signature)"
        ),
        Credential(COLLEGE_ID, secret=False, description="the college's id in the accountant's books"),
    ),
    production_urls=(),
)


def client_for(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> SuperAccountantClient:
    c = settings.credentials
    return SuperAccountantClient(
        settings.base_url, c[CLIENT_ID], c[CLIENT_SECRET], c[SIGNING_SECRET], transport=transport
    )


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # A token proves reachability, TLS and the client credentials without sending anything.
    async with client_for(settings, transport) as client:
        await client.authenticate()


__all__ = ["PROVIDER", "SETTINGS", "client_for", "test_connection"]
