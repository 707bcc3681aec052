"""Every projection the engine runs. A new projection is one module plus its SQL, registered here."""

from projections.invoice_register import InvoiceRegister
from projections.runner import Projection

PROJECTIONS: list[Projection] = [InvoiceRegister()]
