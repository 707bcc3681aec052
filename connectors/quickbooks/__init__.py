"""QuickBooks Online, provider name ``quickbooks``: invoices and payments pushed to the tenant's books.

Connected by OAuth 2.0 (authorisation code + PKCE, connectors/oauth.py, ``Connector.oauth``); ``routes``
turns issued and cancelled invoices and recorded payments into jobs, ``handler`` pushes them with
idempotent upserts (``mapping`` says how our documents become QuickBooks entities), ``client`` speaks
the Accounting API, ``errors`` classifies its faults, and ``sandbox`` (``python -m
connectors.quickbooks.sandbox``; not imported here, it needs FastAPI) serves Intuit's OAuth endpoints
and the API subset with faults on demand. docs/quickbooks.md is the accountant's set-up guide.
"""

from __future__ import annotations

from connectors.kit import Connector, SandboxLaunch
from connectors.quickbooks import routes
from connectors.quickbooks.handler import create_handler
from connectors.quickbooks.settings import ENDPOINTS, OAUTH, PROVIDER, SETTINGS, test_connection

CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    routes=routes.routes,
    route_event_types=routes.EVENT_TYPES,
    handler=create_handler,
    # Intuit throttles at 500 requests per minute per company (HTTP 429); a job makes several calls.
    rate_limit_per_s=8.0,
    rate_limit_counts="request",
    sandbox=SandboxLaunch(
        module="connectors.quickbooks.sandbox", port=9140, label="QuickBooks Online sandbox"
    ),
    migrations=(("connectors", "oauth.sql"),),
    oauth=OAUTH,
)

__all__ = ["CONNECTOR", "PROVIDER"]
