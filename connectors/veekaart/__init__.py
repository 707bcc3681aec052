"""VeeKaart, provider name ``veekaart``: the tenant's e-commerce shop (seed "EzBillify <-> VeeKaart").

Out: ``sync`` pushes the catalogue (``/v1/products``) to the shop's partner API through ``client``,
with the seed's field mappings (``mapping``), full or incremental, manually or on the tenant's
auto-sync schedule, each run recorded. In: the shop's order webhooks reach
``POST /v1/hooks/veekaart/{tenant_id}`` (``signature`` verifies, ``webhooks`` turns an order into a
customer and a draft invoice). ``api`` holds the sync, schedule and key-regeneration endpoints;
``sandbox`` (``python -m connectors.veekaart.sandbox``; not imported here) plays the shop.
"""

from __future__ import annotations

from connectors.kit import Connector, SandboxLaunch
from connectors.veekaart.client import test_connection
from connectors.veekaart.endpoints import ENDPOINTS
from connectors.veekaart.settings import PROVIDER, SETTINGS
from connectors.veekaart.webhooks import HOOKS

SANDBOX_PORT = 9108


def demo_credentials(demo_gstin: str = "") -> dict[str, str]:
    """What ``ledgerflow run`` configures the demo tenant's shop with; the sandbox accepts the API key,
    and its order sender is told the partner key or secret per request."""
    from connectors.veekaart.sandbox import SandboxAccount

    return {
        "api_key": SandboxAccount().api_key,
        "partner_api_key": "demo-partner-key",
        "webhook_secret": "demo-secret",
    }


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    hooks=HOOKS,
    migrations=(("connectors.veekaart", "veekaart.sql"),),
    sandbox=SandboxLaunch(
        module="connectors.veekaart.sandbox",
        port=SANDBOX_PORT,
        label="veekaart-sandbox",
        demo_credentials=demo_credentials,
    ),
)

__all__ = ["CONNECTOR", "PROVIDER", "SANDBOX_PORT", "demo_credentials"]
