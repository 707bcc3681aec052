"""What a tenant configures for ``gstn-returns``, and the connection test."""

from __future__ import annotations

import httpx

from connectors.errors import PermanentError
from connectors.gstn_returns.client import ReturnsClient, ReturnsCredentials
from connectors.kit import Credential, SettingsSchema
from engine.integrations import IntegrationSettings

SETTINGS = SettingsSchema(
    title="GST returns (GSTR-1 save and file), through a GSP",
    credentials=(
        Credential("client_id", secret=False, description="the GSP-issued client id"),
        Credential("client_secret", description="the GSP-issued client secret"),
        Credential("username", secret=False, description="the taxpayer's GST portal user name"),
        Credential("gstin", secret=False, description="the GSTIN the returns are filed for"),
    ),
)


def credentials_of(stored: dict[str, str]) -> tuple[ReturnsCredentials, str]:
    """The client credentials and the GSTIN from a tenant's stored integration; PermanentError
    ``credentials_incomplete`` when a field is missing."""
    try:
        return (
            ReturnsCredentials(stored["client_id"], stored["client_secret"], stored["username"]),
            stored["gstin"],
        )
    except KeyError as exc:
        raise PermanentError("credentials_incomplete", f"gstn-returns credentials lack {exc}") from exc


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # Authenticating proves reachability, TLS and the GSP account without saving anything.
    credentials, gstin = credentials_of(dict(settings.credentials))
    async with ReturnsClient(settings.base_url, credentials, gstin, transport=transport) as client:
        await client.authenticate(force=True)
