"""A bank, provider name ``bank``: payouts over NEFT, RTGS and IMPS, statements and balance, in the
shape of seed 002's bank API ("College Accounts").

``client`` speaks the bank API, ``errors`` holds the seed's error codes and their rules, ``settings``
the credentials and the connection test, ``endpoints`` the production URL policy, ``payouts`` the
commands on the Payout aggregate and their list, ``routes``/``handler`` the payout jobs, ``webhook``
the signed payment-status callback, ``statements`` the MT940/camt.053/API statement import, and
``sandbox`` a local bank (``python -m connectors.bank.sandbox``; not imported here, it needs FastAPI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.bank.client import PROVIDER
from connectors.bank.endpoints import ENDPOINTS
from connectors.bank.errors import RETRY_PER_CODE
from connectors.bank.hooks import HOOKS
from connectors.bank.routes import EVENT_TYPES, routes
from connectors.bank.settings import SETTINGS, test_connection
from connectors.kit import Connector, ConnectorHandler, SandboxLaunch

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

SANDBOX_PORT = 9107


def demo_credentials(demo_gstin: str = "") -> dict[str, str]:
    """What the demo tenant's bank integration is configured with; the sandbox accepts them."""
    from connectors.bank.sandbox import SandboxAccount

    return SandboxAccount().credentials()


def _handler(context: HandlerContext) -> ConnectorHandler:
    from connectors.bank.handler import build

    return build(context)


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    # A payout is never given up while the bank is away or still processing it: bank_offline every
    # 30 minutes, a daily limit the next day, status polls on their schedule, without end
    # (errors.RETRY_PER_CODE); refusals that need a person hold the payout instead (handler.py).
    retry_forever=True,
    retry_per_code=RETRY_PER_CODE,
    routes=routes,
    route_event_types=EVENT_TYPES,
    handler=_handler,
    # Payment-status callbacks at POST /v1/hooks/bank/{tenant_id} (connectors/bank/hooks.py).
    hooks=HOOKS,
    migrations=(("connectors.bank", "bank.sql"),),
    sandbox=SandboxLaunch(
        module="connectors.bank.sandbox",
        port=SANDBOX_PORT,
        label="bank-sandbox",
        demo_credentials=demo_credentials,
    ),
)

__all__ = ["CONNECTOR", "PROVIDER", "SANDBOX_PORT", "demo_credentials"]
