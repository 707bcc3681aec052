"""What a tenant configures for ``gst-irp``, and the connection test.

The IRP authenticates a GSP's API user with a client id and secret issued to the GSP or taxpayer, a
username and password of the e-invoice API user, and the GSTIN the user acts for (india-gst.md
section 1). The client id and GSTIN are identifiers, not secrets; every field is still sealed.
"""

from __future__ import annotations

import httpx

from connectors.gst_irp.client import IrpClient, IrpCredentials
from connectors.kit import Credential, SettingsSchema
from engine.integrations import IntegrationSettings

SETTINGS = SettingsSchema(
    title="India GST e-invoice portal (IRP), through a GSP",
    credentials=(
        Credential("client_id", secret=False, description="the GSP/ASP client id"),
        Credential("client_secret", description="the GSP/ASP client secret"),
        Credential("username", secret=False, description="the e-invoice API user"),
        Credential("password", description="the e-invoice API user's password"),
        Credential("gstin", secret=False, description="the GSTIN the API user acts for"),
    ),
    sandbox_url="https://einv-apisandbox.nic.in",
    production_urls=("https://api.einvoice1.gst.gov.in", "https://api.einvoice2.gst.gov.in"),
)


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # Authenticating exercises reachability, TLS, the client id/secret and the API user at once.
    credentials = IrpCredentials(**settings.credentials)
    async with IrpClient(settings.base_url, credentials, transport=transport) as client:
        await client.authenticate(force=True)
