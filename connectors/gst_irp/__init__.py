"""India e-invoicing through the Invoice Registration Portal (IRP), provider name ``gst-irp``.

``mapping`` turns a ``ledgerflow.invoice.issued`` record into e-invoice JSON v1.1 and computes its IRN;
``client`` talks to the IRP (GSP-style JSON); ``service`` adds at-most-once generation and the
cancellation window; ``errors`` classifies the IRP's error codes; ``sandbox`` is a local IRP for tests
(``python -m connectors.gst_irp.sandbox``). The sandbox is not imported here: it needs FastAPI.

``CONNECTOR`` declares it to the engine (connectors/kit.py): ``settings`` the credentials and URLs,
``endpoints`` the production URL policy, ``routes`` which invoice events make jobs, ``handler`` the
job runner. The handler module is imported only by a process that runs jobs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.gst_irp.client import (
    PROVIDER,
    CancelResult,
    DuplicateInfo,
    DuplicateIrn,
    IrnResult,
    IrpClient,
    IrpCredentials,
)
from connectors.gst_irp.endpoints import ENDPOINTS
from connectors.gst_irp.errors import classify
from connectors.gst_irp.mapping import MappingError, SellerProfile, irn_for, to_einvoice
from connectors.gst_irp.routes import EVENT_TYPES, routes
from connectors.gst_irp.service import cancellable, generate_or_adopt
from connectors.gst_irp.settings import SETTINGS, test_connection
from connectors.kit import Connector, ConnectorHandler, SandboxLaunch

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

SANDBOX_PORT = 9101


def _demo_credentials(gstin: str) -> dict[str, str]:
    from connectors.gst_irp.sandbox import SandboxAccount  # FastAPI: only where a sandbox runs

    return SandboxAccount(gstin=gstin).credentials()


def _handler(context: HandlerContext) -> ConnectorHandler:
    from connectors.gst_irp.handler import build

    return build(context)


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    routes=routes,
    route_event_types=EVENT_TYPES,
    handler=_handler,
    # The IRP's published limit is per GSP account; 10 requests a second is what the seeds run at
    # (LEDGERFLOW_GST_IRP_RATE). One job makes up to three requests, so the limit counts requests.
    rate_limit_per_s=10.0,
    rate_limit_counts="request",
    sandbox=SandboxLaunch(
        module="connectors.gst_irp.sandbox",
        port=SANDBOX_PORT,
        label="irp-sandbox",
        extra_args=lambda demo_gstin: ["--gstin", demo_gstin],
        demo_credentials=_demo_credentials,
    ),
)

__all__ = [
    "CONNECTOR",
    "PROVIDER",
    "CancelResult",
    "DuplicateInfo",
    "DuplicateIrn",
    "IrnResult",
    "IrpClient",
    "IrpCredentials",
    "MappingError",
    "SellerProfile",
    "cancellable",
    "classify",
    "generate_or_adopt",
    "irn_for",
    "to_einvoice",
]
