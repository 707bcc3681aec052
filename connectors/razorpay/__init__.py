"""Razorpay, provider name ``razorpay``: payments in, by webhook.

``signature`` verifies ``X-Razorpay-Signature`` deliveries to ``POST /v1/hooks/razorpay/{tenant_id}``,
``events`` maps payment and refund events to the Payment aggregate, ``webhooks`` declares both to the
receiver (connectors/hooks.py), and ``sandbox`` (``python -m connectors.razorpay.sandbox``; not
imported here, it needs FastAPI) sends signed deliveries, retried, duplicated and reordered on demand.
"""

from __future__ import annotations

from connectors.kit import Connector
from connectors.razorpay.endpoints import ENDPOINTS
from connectors.razorpay.events import PROVIDER
from connectors.razorpay.settings import SETTINGS, test_connection
from connectors.razorpay.webhooks import HOOKS

CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    hooks=HOOKS,
)

__all__ = ["CONNECTOR", "PROVIDER"]
