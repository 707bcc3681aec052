"""Tally Prime, provider name ``tally``: vouchers posted to a college's books over Tally's XML interface.

``routes`` turns issued invoices, credit notes and captured payments into jobs; ``handler`` builds each
voucher (``mapping``: our documents -> voucher types and ledger legs, names from the tenant's ledger
map) and imports it idempotently by REMOTEID (``vouchers``: the XML and Tally's answers, pure);
``client`` speaks Tally's XML over HTTP, ``errors`` classifies its answers, ``ledgers`` keeps the ledger
map and the ledgers read from Tally (``GET/PUT /v1/tally/ledger-map``, ``GET /v1/tally/ledgers``,
engine/api/tally.py), and ``sandbox`` (``python -m connectors.tally.sandbox``; not imported here, it
needs FastAPI) is a local Tally with faults and slowness on demand. docs/tally.md is the guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.kit import Connector, ConnectorHandler, SandboxLaunch
from connectors.tally import routes
from connectors.tally.client import PROVIDER
from connectors.tally.settings import ENDPOINTS, SETTINGS, test_connection

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

SANDBOX_PORT = 9162
DEMO_COMPANY = "Ledgerflow Demo College"


def _handler(context: HandlerContext) -> ConnectorHandler:
    # Imported when a worker runs: the handler needs the runtime, which needs the registry.
    from connectors.tally.handler import create_handler

    return create_handler(context)


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    routes=routes.routes,
    route_event_types=routes.EVENT_TYPES,
    handler=_handler,
    # Tally serves one request at a time and stalls under load (platform.md): a few vouchers a second.
    rate_limit_per_s=2.0,
    sandbox=SandboxLaunch(
        module="connectors.tally.sandbox",
        port=SANDBOX_PORT,
        label="tally-sandbox",
        # No demo credentials: the demo tenant is not connected to Tally by `ledgerflow run`, since its
        # vouchers would wait for a ledger map nobody set (docs/tally.md, "Sandbox", connects it).
    ),
    migrations=(("connectors.tally", "tally.sql"),),
)

__all__ = ["CONNECTOR", "DEMO_COMPANY", "PROVIDER", "SANDBOX_PORT"]
