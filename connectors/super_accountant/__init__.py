"""The consolidating accountant, provider name ``super-accountant`` (seed "College Accounts": the Super
Accountant portal that consolidates several colleges).

Out only: the daily batch sync of approved expenses (``sync`` plans batches of 1000 on the college's
schedule, ``handler`` sends each once) and the monthly P&L submission (engine/financial_reports.py
builds it; ``POST /v1/financial-reports/submit`` queues it). ``client`` speaks the API (OAuth 2.0
client credentials, HMAC-signed bodies, paise), ``mapping`` converts rupees to paise exactly,
``errors`` classifies answers, ``sandbox`` (``python -m connectors.super_accountant.sandbox``; not
imported here, it needs FastAPI) plays the accountant. docs/super-accountant.md is for accountants
and operators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.kit import Connector, ConnectorHandler, SandboxLaunch
from connectors.super_accountant.client import PROVIDER, SuperAccountantClient
from connectors.super_accountant.endpoints import ENDPOINTS
from connectors.super_accountant.settings import SETTINGS, test_connection

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

SANDBOX_PORT = 9153
# The seed gives no rate limit for the accountant's API; a daily batch and a monthly report are few
# requests, so a modest limit only protects it from a replay storm.
RATE_LIMIT_PER_S = 5.0


def demo_credentials(demo_gstin: str = "") -> dict[str, str]:
    from connectors.super_accountant.sandbox import SandboxAccount  # FastAPI: only where a sandbox runs

    return SandboxAccount().credentials()


def _handler(context: HandlerContext) -> ConnectorHandler:
    from connectors.super_accountant.handler import build

    return build(context)


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    handler=_handler,
    rate_limit_per_s=RATE_LIMIT_PER_S,
    migrations=(("connectors.super_accountant", "super_accountant.sql"),),
    sandbox=SandboxLaunch(
        module="connectors.super_accountant.sandbox",
        port=SANDBOX_PORT,
        label="super-accountant-sandbox",
        demo_credentials=demo_credentials,
    ),
)

__all__ = ["CONNECTOR", "PROVIDER", "SANDBOX_PORT", "SuperAccountantClient", "demo_credentials"]
