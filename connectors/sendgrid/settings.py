"""What a tenant configures for ``sendgrid``, and the connection test."""

from __future__ import annotations

import httpx

from connectors.errors import NeedsAttentionError
from connectors.kit import Credential, SettingsSchema
from connectors.sendgrid.client import SendGridClient
from engine.integrations import IntegrationSettings

SETTINGS = SettingsSchema(
    title="SendGrid (alert emails through the v3 Mail Send API)",
    credentials=(
        Credential("api_key", description="a SendGrid API key with the mail.send scope"),
        Credential(
            "from_email", secret=False, description="a verified sender identity, e.g. alerts@example.com"
        ),
    ),
    production_urls=("https://api.sendgrid.com", "https://api.eu.sendgrid.com"),
)


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # Listing the key's scopes proves reachability, TLS and the key without sending a mail.
    async with SendGridClient(
        settings.base_url, settings.credentials["api_key"], transport=transport
    ) as client:
        scopes = await client.scopes()
    if "mail.send" not in scopes:
        raise NeedsAttentionError("missing_scope", "the SendGrid API key lacks the mail.send scope")
