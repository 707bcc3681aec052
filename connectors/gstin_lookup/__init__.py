"""GST taxpayer search ("GSTIN lookup"), provider name ``gstin-lookup``: who is registered under a GSTIN.

Called on demand by ``POST /v1/gst/validate`` (engine/api/gst_parties.py), and as a job: every issued
Indian invoice with a buyer GSTIN makes a ``verify_buyer`` job (``routes``) that the connector
workers run (``handler``): a buyer found cancelled, suspended or unknown raises an alert. Both reuse
the tenant's cached answers (``store``, tables in ``taxpayers.sql``). ``client`` speaks the search,
``errors`` classifies its failures, ``sandbox`` is a local search with taxpayer records
(``python -m connectors.gstin_lookup.sandbox``; not imported here, it needs FastAPI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.gstin_lookup.client import PROVIDER, LookupClient, LookupCredentials, Taxpayer
from connectors.gstin_lookup.endpoints import ENDPOINTS
from connectors.gstin_lookup.routes import EVENT_TYPES, routes
from connectors.gstin_lookup.settings import SETTINGS, test_connection
from connectors.kit import Connector, ConnectorHandler, SandboxLaunch

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

SANDBOX_PORT = 9102


def _demo_credentials(gstin: str) -> dict[str, str]:
    from connectors.gstin_lookup.sandbox import SandboxAccount  # FastAPI: only where a sandbox runs

    return SandboxAccount().credentials()


def _handler(context: HandlerContext) -> ConnectorHandler:
    from connectors.gstin_lookup.handler import build

    return build(context)


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    routes=routes,
    route_event_types=EVENT_TYPES,
    handler=_handler,
    migrations=(("connectors.gstin_lookup", "taxpayers.sql"),),
    sandbox=SandboxLaunch(
        module="connectors.gstin_lookup.sandbox",
        port=SANDBOX_PORT,
        label="gstin-sandbox",
        demo_credentials=_demo_credentials,
    ),
)

__all__ = ["CONNECTOR", "PROVIDER", "LookupClient", "LookupCredentials", "Taxpayer"]
