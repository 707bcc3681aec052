"""How large an invoice's numbers may be: the e-invoice portal's (IRP) own ceilings, which also keep
every amount inside the read side's columns.

Source: the NIC e-invoice JSON schema v1.1 (``/work/shared/reference/einvoice-v1.1.schema.json``):
``Qty`` <= 9999999999.999, ``UnitPrice`` <= 999999999999.999, item amounts (``TotAmt``, ``Discount``,
``AssAmt``, taxes, ``TotItemVal``) <= 999999999999.99, invoice totals (``ValDtls``) <= 99999999999999.98.
A larger invoice could never get an IRN, so nothing is lost by refusing it up front.

The read side stores amounts as ``numeric(18, 2)`` (< 10^16) and quantities and unit prices as
``numeric(18, 3)`` (< 10^15): every limit below is at least 100 times smaller, so one invoice always
fits, whatever its lines (at most 1000) and rates (up to 40% GST plus up to 160% cess on tobacco).
Sums over many invoices (the monthly views) fit while a tenant's month stays under 10^16 in total.
"""

from __future__ import annotations

from decimal import Decimal

MAX_QUANTITY = Decimal("9999999999.999")
MAX_UNIT_PRICE = Decimal("999999999999.999")
MAX_LINE_AMOUNT = Decimal("999999999999.99")
"""Ceiling of a line's gross (quantity x unit price), discount, taxable value, each tax and total."""
MAX_INVOICE_AMOUNT = Decimal("99999999999999.98")
"""Ceiling of an invoice's taxable value, each tax total and grand total."""

LIMITS: dict[str, str] = {
    "quantity": str(MAX_QUANTITY),
    "unit_price": str(MAX_UNIT_PRICE),
    "line_amount": str(MAX_LINE_AMOUNT),
    "invoice_amount": str(MAX_INVOICE_AMOUNT),
}
"""The limits as a 422 lists them (``details.fields[].limits``)."""
