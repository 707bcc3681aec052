"""Kenya KRA eTIMS (OSCU and VSCU), provider name ``etims``: device initialisation, code lists, items,
signed sales and credit notes.

``client`` speaks eTIMS (both device types), ``errors`` classifies its result codes, ``mapping`` turns
our invoice records into eTIMS payloads and answers into receipts, ``settings`` holds the credentials
and the connection test, ``endpoints`` the production URL policy, ``sandbox`` a local eTIMS
(``python -m connectors.etims.sandbox``; not imported here, it needs FastAPI).

``CONNECTOR`` declares it to the engine (connectors/kit.py). The routes and handler that turn invoice
events into sales jobs live in ``connectors/etims/routes.py`` and ``handler.py`` and are added to this
declaration by the sales side (``dataclasses.replace`` or a new ``Connector`` with the same settings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.etims import sync
from connectors.etims.client import PROVIDER, DeviceInfo, EtimsClient
from connectors.etims.endpoints import ENDPOINTS
from connectors.etims.errors import DeviceAlreadyInstalled, DuplicateSale, SaleLookupUnavailable, classify
from connectors.etims.mapping import SaleReceipt, build_item_code, receipt_qr_url, sale_payload
from connectors.etims.routes import EVENT_TYPES, routes
from connectors.etims.settings import SETTINGS, test_connection
from connectors.kit import Connector, ConnectorHandler, IntegrationSync, SandboxLaunch

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

SANDBOX_PORT = 9103
DEMO_KRA_PIN = "P051234567X"
DEMO_BRANCH_ID = "01"
"""Deliberately not "00": integrations that hard-code branch 00 break when KRA assigns another."""
DEMO_DEVICE_SERIAL = "LFDEMO-OSCU-0001"
RATE_LIMIT_PER_S = 10.0
"""KRA publishes no rate limit for OSCU; integrators report congestion under load (hence Odoo's 45 s
timeout). 10 requests a second across all workers, as for the IRP, until KRA says otherwise;
LEDGERFLOW_ETIMS_RATE overrides it ("none" lifts it, e.g. against the local sandbox)."""


def demo_credentials(demo_gstin: str = "") -> dict[str, str]:
    """What the demo Kenyan tenant's integration is configured with; the sandbox accepts them."""
    return {
        "tin": DEMO_KRA_PIN,
        "bhf_id": DEMO_BRANCH_ID,
        "device_serial": DEMO_DEVICE_SERIAL,
        "device_type": "oscu",
    }


def _handler(context: HandlerContext) -> ConnectorHandler:
    from connectors.etims.handler import build

    return build(context)


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    rate_limit_per_s=RATE_LIMIT_PER_S,
    # A job (device init, a sale) may make several calls (a sale: save, then the 994 look-up).
    rate_limit_counts="request",
    # KRA may be away for hours (OSCU has no offline mode: store-and-forward is ours, kenya-etims.md):
    # a sale retries at 0, 1 min, 5 min, then every 15 min without end, never to the DLQ while KRA
    # is unreachable; a sale failing for 7 days raises one alert (connectors/etims/sales.py).
    retry_delays=(0.0, 60.0, 300.0, 900.0),
    retry_forever=True,
    # The routes: Kenyan invoices and credit notes -> sale jobs, keyed by branch; a saved integration
    # -> device initialisation (routes.py). The handler is imported only where jobs run.
    routes=routes,
    route_event_types=EVENT_TYPES,
    handler=_handler,
    migrations=(("connectors.etims", "devices.sql"), ("connectors.etims", "sales.sql")),
    sandbox=SandboxLaunch(
        module="connectors.etims.sandbox",
        port=SANDBOX_PORT,
        label="etims-sandbox",
        demo_credentials=demo_credentials,
    ),
    sync=IntegrationSync(start=sync.start, last_synced=sync.last_synced, every=sync.every),
)

__all__ = [
    "CONNECTOR",
    "DEMO_BRANCH_ID",
    "DEMO_DEVICE_SERIAL",
    "DEMO_KRA_PIN",
    "PROVIDER",
    "SANDBOX_PORT",
    "DeviceAlreadyInstalled",
    "DeviceInfo",
    "DuplicateSale",
    "EtimsClient",
    "SaleLookupUnavailable",
    "SaleReceipt",
    "build_item_code",
    "classify",
    "demo_credentials",
    "receipt_qr_url",
    "sale_payload",
]
