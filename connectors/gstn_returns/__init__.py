"""GSTR-1 filing at the GST network, provider name ``gstn-returns``: save, status, file (EVC).

``client`` speaks the returns API (through a GSP), ``errors`` classifies its failures, ``handler``
runs a ``submit_gstr1`` job (save every part, poll the status until processed, record the reference
ids or the refused documents on the TaxReturn), ``routes`` builds and queues that job when the
taxpayer submits, ``sandbox`` is a local returns API for tests (``python -m
connectors.gstn_returns.sandbox``; not imported here, it needs FastAPI). No ledger event makes a job:
``routes`` is the kit's ``no_routes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.gstn_returns.client import PROVIDER, ReturnsClient, ReturnsCredentials, SaveStatus
from connectors.gstn_returns.endpoints import ENDPOINTS
from connectors.gstn_returns.settings import SETTINGS, test_connection
from connectors.kit import Connector, ConnectorHandler, SandboxLaunch

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

SANDBOX_PORT = 9111


def _demo_credentials(gstin: str) -> dict[str, str]:
    from connectors.gstn_returns.sandbox import SandboxAccount  # FastAPI: only where a sandbox runs

    return {**SandboxAccount(gstin=gstin).credentials(), "gstin": gstin}


def _handler(context: HandlerContext) -> ConnectorHandler:
    from connectors.gstn_returns.handler import build

    return build(context)


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    handler=_handler,
    # architecture.md: "GST portal 10/s". A job makes several requests (auth, one save per part,
    # one status per part), so the limit counts requests.
    rate_limit_per_s=10.0,
    rate_limit_counts="request",
    sandbox=SandboxLaunch(
        module="connectors.gstn_returns.sandbox",
        port=SANDBOX_PORT,
        label="gstn-returns-sandbox",
        extra_args=lambda demo_gstin: ["--gstin", demo_gstin],
        demo_credentials=_demo_credentials,
    ),
)

__all__ = ["CONNECTOR", "PROVIDER", "ReturnsClient", "ReturnsCredentials", "SaveStatus"]
