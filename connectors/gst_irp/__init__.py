"""India e-invoicing through the Invoice Registration Portal (IRP), provider name ``gst-irp``.

``mapping`` turns a ``ledgerflow.invoice.issued`` record into e-invoice JSON v1.1 and computes its IRN;
``client`` talks to the IRP (GSP-style JSON); ``service`` adds at-most-once generation and the
cancellation window; ``errors`` classifies the IRP's error codes; ``sandbox`` is a local IRP for tests
(``python -m connectors.gst_irp.sandbox``). The sandbox is not imported here: it needs FastAPI.
"""

from connectors.gst_irp.client import (
    PROVIDER,
    CancelResult,
    DuplicateInfo,
    DuplicateIrn,
    IrnResult,
    IrpClient,
    IrpCredentials,
)
from connectors.gst_irp.errors import classify
from connectors.gst_irp.mapping import MappingError, SellerProfile, irn_for, to_einvoice
from connectors.gst_irp.service import cancellable, generate_or_adopt

__all__ = [
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
