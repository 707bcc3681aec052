"""Every projection the engine runs. A new projection is one module plus its SQL, registered here."""

from projections.audit_trail import AuditTrail
from projections.etims_compliance import EtimsCompliance
from projections.events import Projection
from projections.gst_outward_supplies import GstOutwardSupplies
from projections.invoice_register import InvoiceRegister
from projections.reconciliation import Reconciliation

PROJECTIONS: list[Projection] = [InvoiceRegister(), EtimsCompliance(), GstOutwardSupplies(), Reconciliation()]
PROJECTIONS.append(AuditTrail())


def find(name: str) -> Projection | None:
    return next((p for p in PROJECTIONS if p.name == name), None)


def known_names() -> str:
    return ", ".join(p.name for p in PROJECTIONS)
