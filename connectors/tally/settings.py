"""What a tenant configures for ``tally``: the company name, and where Tally listens.

Tally's XML interface has no credentials: whoever reaches its port may post to the company loaded in
it. So production allows only a Tally on the same machine as the connector (``http://127.0.0.1:9000``,
the port Tally uses unless configured otherwise): a college reaches it from the cloud through its own
tunnel or VPN terminating there, never by opening the port to the internet (docs/tally.md).
"""

from __future__ import annotations

import httpx

from connectors.kit import Credential, SettingsSchema
from connectors.tally.client import PROVIDER, TallyClient
from engine.integrations import IntegrationSettings
from engine.security.egress import EndpointPolicy

LOCAL_TALLY = "http://127.0.0.1:9000"

ENDPOINTS = EndpointPolicy(provider=PROVIDER, local_addresses=(LOCAL_TALLY,))

SETTINGS = SettingsSchema(
    title="Tally Prime (vouchers over its XML HTTP interface)",
    credentials=(
        Credential(
            "company",
            secret=False,
            description="the Tally company vouchers are posted to, exactly as Tally names it",
        ),
    ),
    production_urls=(LOCAL_TALLY,),
)


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # Reading the List of Accounts proves Tally answers and has the company loaded, and posts nothing.
    async with TallyClient(
        settings.base_url, str(settings.credentials.get("company") or ""), transport=transport
    ) as client:
        await client.ledgers()
