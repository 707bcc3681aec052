"""QuickBooks Online, provider name ``quickbooks``: invoices and payments pushed to the tenant's books.

Connected by OAuth 2.0 (authorisation code + PKCE, connectors/oauth.py, ``Connector.oauth``); ``routes``
turns issued and cancelled invoices and recorded payments into jobs, ``handler`` pushes them with
idempotent upserts (``mapping`` says how our documents become QuickBooks entities), ``client`` speaks
the Accounting API, ``errors`` classifies its faults, and ``sandbox`` (``python -m
connectors.quickbooks.sandbox``; not imported here, it needs FastAPI) serves Intuit's OAuth endpoints
and the API subset with faults on demand. docs/quickbooks.md is the accountant's set-up guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.kit import Connector, ConnectorHandler, SandboxLaunch
from connectors.quickbooks import routes
from connectors.quickbooks.settings import ENDPOINTS, OAUTH, PROVIDER, SETTINGS, test_connection

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

SANDBOX_PORT = 9140
DEMO_TAX_CODES = "0=NON,5=12,12=13,18=14,28=15"


def _handler(context: HandlerContext) -> ConnectorHandler:
    # Imported when a worker runs: the handler needs the runtime, which needs the registry.
    from connectors.quickbooks.handler import create_handler

    return create_handler(context)


def _demo_credentials(gstin: str) -> dict[str, str]:
    from connectors.quickbooks.sandbox import SandboxAccount  # FastAPI: only where a sandbox runs

    account = SandboxAccount()
    return {
        "client_id": account.client_id,
        "client_secret": account.client_secret,
        "income_account_id": "79",
        "deposit_account_id": "4",
        "tax_codes": DEMO_TAX_CODES,
    }


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    routes=routes.routes,
    route_event_types=routes.EVENT_TYPES,
    handler=_handler,
    # Intuit throttles at 500 requests per minute per company (HTTP 429); a job makes several calls.
    rate_limit_per_s=8.0,
    rate_limit_counts="request",
    sandbox=SandboxLaunch(
        module="connectors.quickbooks.sandbox",
        port=SANDBOX_PORT,
        label="quickbooks-sandbox",
        demo_credentials=_demo_credentials,
    ),
    migrations=(("connectors", "oauth.sql"),),
    oauth=OAUTH,
)

__all__ = ["CONNECTOR", "PROVIDER"]
