"""SendGrid, provider name ``sendgrid``: alert emails through the v3 Mail Send API.

The alert worker (streams/alerts.py) reads ``ledger.alert.v1``, asks the tenant's alert policy
(engine/alert_policy.py) who gets the alert, and queues one ``alert.email`` job per alert; this
connector's handler sends it (``handler``), once per alert. ``client`` speaks the API, ``errors``
classifies its answers, ``mapping`` builds the mail, ``sandbox`` is a local SendGrid
(``python -m connectors.sendgrid.sandbox``; not imported here, it needs FastAPI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.kit import Connector, ConnectorHandler, SandboxLaunch
from connectors.sendgrid.client import PROVIDER, SendGridClient
from connectors.sendgrid.endpoints import ENDPOINTS
from connectors.sendgrid.settings import SETTINGS, test_connection

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

SANDBOX_PORT = 9121
# SendGrid does not publish a Mail Send rate limit for API keys (its 600/min limit is for other v3
# endpoints, changelog 2019-10-10); alerts are few. 429s are honoured through Retry-After anyway.
RATE_LIMIT_PER_S = 10.0


def _demo_credentials(demo_gstin: str) -> dict[str, str]:
    from connectors.sendgrid.sandbox import SandboxAccount  # FastAPI: only where a sandbox runs

    return SandboxAccount().credentials()


def _handler(context: HandlerContext) -> ConnectorHandler:
    from connectors.sendgrid.handler import build

    return build(context)


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    handler=_handler,
    rate_limit_per_s=RATE_LIMIT_PER_S,
    migrations=(("connectors.sendgrid", "sendgrid.sql"),),
    sandbox=SandboxLaunch(
        module="connectors.sendgrid.sandbox",
        port=SANDBOX_PORT,
        label="sendgrid-sandbox",
        demo_credentials=_demo_credentials,
    ),
)

__all__ = ["CONNECTOR", "PROVIDER", "SANDBOX_PORT", "SendGridClient"]
