"""GST taxpayer search ("GSTIN lookup"), provider name ``gstin-lookup``: who is registered under a GSTIN.

Called on demand (the GST returns work and a future ``POST /v1/gst/validate`` ask it whether a buyer's
GSTIN is active), so it has no routes and no handler: no topics, no worker. ``client`` speaks the
search, ``errors`` classifies its failures, ``sandbox`` is a local search with taxpayer records
(``python -m connectors.gstin_lookup.sandbox``; not imported here, it needs FastAPI).
"""

from __future__ import annotations

from connectors.gstin_lookup.client import PROVIDER, LookupClient, LookupCredentials, Taxpayer
from connectors.gstin_lookup.endpoints import ENDPOINTS
from connectors.gstin_lookup.settings import SETTINGS, test_connection
from connectors.kit import Connector, SandboxLaunch

SANDBOX_PORT = 9102


def _demo_credentials(gstin: str) -> dict[str, str]:
    from connectors.gstin_lookup.sandbox import SandboxAccount  # FastAPI: only where a sandbox runs

    return SandboxAccount().credentials()


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    sandbox=SandboxLaunch(
        module="connectors.gstin_lookup.sandbox",
        port=SANDBOX_PORT,
        label="gstin-sandbox",
        demo_credentials=_demo_credentials,
    ),
)

__all__ = ["CONNECTOR", "PROVIDER", "LookupClient", "LookupCredentials", "Taxpayer"]
