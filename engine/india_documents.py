"""Indian GST documents beyond the plain invoice (issue 11): the fields GSTR-1 needs on an invoice
(reverse charge, e-commerce operator, export shipping bill) and credit and debit notes.

Pure: builds unsaved aggregates and lists violations; LedgerService saves them. Facts from
/work/shared/reference/india-gst.md sections 1-2 (e-invoice DocDtls.Typ CRN/DBN, GSTR-1 cdnr/cdnur/exp).

A note is its own Invoice aggregate (its number is one of the tenant's document numbers, unique per
financial year like an invoice's) linked to its original. Each note line adjusts one line of the
original and is taxed as that line was: same rate, cess rate, supply category and CGST+SGST / IGST
split (a note corrects the original supply; the tax on it cannot follow a different rule). Amounts on
a note are positive; the document type says which way they go. A credit note can never take back
more than what remains of each line, in quantity or in amount (CGST Act s.34 lets a credit note
reduce the tax of a supply, not create a refund beyond it); a debit note is not capped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from engine.commands import IssueGstNote, IssueInvoice
from engine.domain.invoice import CREDIT_PARTS, DocumentType, Invoice
from engine.domain.tenant import Tenant
from engine.publishing import seller_address
from engine.tax.errors import TaxRuleError, Violation
from engine.tax.gstin import validate_gstin
from engine.tax.india_gst import SupplyType, check_invoice_date, financial_year
from engine.tax.limits import MAX_INVOICE_AMOUNT, MAX_LINE_AMOUNT

NOTE_KINDS = frozenset({DocumentType.CREDIT_NOTE, DocumentType.DEBIT_NOTE})
EXPORTS = frozenset({SupplyType.EXPORT_WITH_PAYMENT.value, SupplyType.EXPORT_WITHOUT_PAYMENT.value})
# Zero-rated supplies made under a letter of undertaking charge no tax (engine.tax.india_gst).
_WITHOUT_PAYMENT = frozenset({"SEZWOP", "EXPWOP"})
_CENT = Decimal("0.01")
_ZERO = Decimal("0")
_HUNDRED = Decimal("100")


# -- invoice fields ------------------------------------------------------------------------------


def invoice_extras(command: IssueInvoice, supply_type: str, violations: list[Violation]) -> dict[str, Any]:
    """The issue-11 fields of an invoice as the Issued event stores them; violations appended.

    The export block belongs to exports only: with or without payment of tax is the supply type
    (EXPWP / EXPWOP), as on the IRP, so it is not asked for twice."""
    ecommerce_gstin = None
    if command.ecommerce_gstin:
        try:
            ecommerce_gstin = validate_gstin(command.ecommerce_gstin, "ecommerce_gstin")
        except TaxRuleError as exc:
            violations.extend(exc.violations)
    export = None
    if command.export is not None:
        if supply_type not in EXPORTS:
            violations.append(
                Violation(
                    "export",
                    "export_not_applicable",
                    f"export: shipping bill details belong to exports (supply_type EXPWP or EXPWOP), "
                    f"not to a {supply_type} supply.",
                    {"supply_type": supply_type},
                )
            )
        else:
            shipping_day = command.export.shipping_bill_date
            export = {
                "shipping_bill_number": command.export.shipping_bill_number,
                "shipping_bill_date": shipping_day.isoformat() if shipping_day else None,
                "port_code": command.export.port_code.upper() if command.export.port_code else None,
            }
    return {"reverse_charge": command.reverse_charge, "ecommerce_gstin": ecommerce_gstin, "export": export}


# -- notes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltNote:
    note: Invoice
    credited: list[dict[str, Any]]
    """Per original line {line_no, quantity, amount} a credit note takes back; empty for a debit note."""


def codes_of(violations: tuple[Violation, ...] | list[Violation]) -> set[str]:
    return {v.code for v in violations}


def _round(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def gst_seller(tenant: Tenant) -> dict[str, Any]:
    """The seller block of a document issued now (as build_invoice records it)."""
    return {
        "gstin": tenant.gstin,
        "legal_name": tenant.legal_name,
        "state": tenant.state,
        "trade_name": tenant.name,
        "address": seller_address(tenant.address),
    }


def build_gst_note(
    tenant: Tenant,
    original: Invoice,
    command: IssueGstNote,
    *,
    kind: str,
    day: date,
    today: date,
    max_future_days: int,
    idempotency_key: str | None,
    request_hash: str,
    source: str,
    traceparent: str | None,
) -> BuiltNote:
    """A credit or debit note against ``original`` dated ``day``, or TaxRuleError listing every
    violation (code ``credit_note_exceeds_original`` on a line asking for more than remains)."""
    assert kind in NOTE_KINDS
    violations = check_invoice_date(day, today=today, max_future_days=max_future_days)
    if day < original.invoice_date:
        violations.append(
            Violation(
                "date",
                "before_original",
                f"date: a note cannot be dated before its invoice ({original.invoice_date.isoformat()})",
                {"original_date": original.invoice_date.isoformat()},
            )
        )
    by_no = {int(line["line_no"]): line for line in original.lines}
    seen: set[int] = set()
    lines: list[dict[str, Any]] = []
    credited: list[dict[str, Any]] = []
    without_payment = original.supply_type in _WITHOUT_PAYMENT
    for index, wanted in enumerate(command.lines):
        path = f"lines[{index}]"
        source_line = by_no.get(wanted.line_no)
        if source_line is None:
            violations.append(
                Violation(
                    f"{path}.line_no",
                    "unknown_line",
                    f"{path}.line_no: invoice {original.number} has no line {wanted.line_no}",
                    {"lines": sorted(by_no)},
                )
            )
            continue
        if wanted.line_no in seen:
            violations.append(
                Violation(
                    f"{path}.line_no",
                    "duplicate_line",
                    f"{path}.line_no: line {wanted.line_no} appears twice in one note",
                )
            )
            continue
        seen.add(wanted.line_no)
        rest = None
        if (
            kind == DocumentType.CREDIT_NOTE
            and wanted.quantity == original.remaining(wanted.line_no)[0]
            and wanted.unit_price is None
            and wanted.discount == 0
        ):
            # The rest of the line at the invoice's price: exactly what is left of each amount, so
            # partial credit notes add up to the invoice line to the paisa (each note rounds its own
            # tax, and the roundings need not sum to the invoice's).
            rest = original.remaining_parts(wanted.line_no)
            if any(value < 0 for value in rest.values()):
                rest = None
        line = _note_line(
            path,
            len(lines) + 1,
            source_line,
            wanted,
            bool(original.intra_state),
            without_payment,
            violations,
            rest,
        )
        if line is None:
            continue
        if kind == DocumentType.CREDIT_NOTE:
            left_quantity, left_amount = original.remaining(wanted.line_no)
            if line["quantity"] > left_quantity or line["total"] > left_amount:
                violations.append(
                    Violation(
                        path,
                        "credit_note_exceeds_original",
                        f"{path}: line {wanted.line_no} of invoice {original.number} has "
                        f"{_plain(left_quantity)} left to credit, worth {left_amount:.2f}; this credit "
                        f"note asks for {_plain(line['quantity'])} worth {line['total']:.2f}",
                        {
                            "line_no": wanted.line_no,
                            "remaining_quantity": _plain(left_quantity),
                            "remaining_amount": f"{left_amount:.2f}",
                            "quantity": _plain(line["quantity"]),
                            "amount": f"{line['total']:.2f}",
                        },
                    )
                )
            credited.append(
                {
                    "line_no": wanted.line_no,
                    "quantity": line["quantity"],
                    "amount": line["total"],
                    "parts": {name: line[name] for name in CREDIT_PARTS},
                }
            )
        lines.append(line)
    totals = {
        name: sum((line[key] for line in lines), _ZERO)
        for name, key in (
            ("taxable", "taxable_value"),
            ("cgst", "cgst"),
            ("sgst", "sgst"),
            ("igst", "igst"),
            ("cess", "cess"),
            ("total", "total"),
        )
    }
    if totals["total"] > MAX_INVOICE_AMOUNT:
        violations.append(
            Violation(
                "lines",
                "invoice_amount_too_large",
                f"lines: the note's total {totals['total']} exceeds the limit of {MAX_INVOICE_AMOUNT}",
                {"amount": str(totals["total"]), "limit": str(MAX_INVOICE_AMOUNT)},
            )
        )
    if violations:
        raise TaxRuleError(violations)
    note = Invoice(
        country="IN",
        document_type=kind,
        original_invoice_id=str(original.id),
        original_number=original.number,
        reverse_charge=bool(getattr(original, "reverse_charge", False)),
        ecommerce_gstin=getattr(original, "ecommerce_gstin", None),
        export=None,
        note_reason=command.reason,
        original_invoice_date=original.invoice_date,
        tenant_id=tenant.id,
        number=command.number,
        financial_year=financial_year(day),
        invoice_date=day,
        currency=original.currency,
        supply_type=original.supply_type,
        seller=gst_seller(tenant),
        buyer=dict(original.buyer),
        place_of_supply=original.place_of_supply,
        intra_state=original.intra_state,
        lines=lines,
        totals=totals,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        source=source,
        traceparent=traceparent,
    )
    return BuiltNote(note, credited)


def _note_line(
    path: str,
    line_no: int,
    source: Mapping[str, Any],
    wanted: Any,
    intra_state: bool,
    without_payment: bool,
    violations: list[Violation],
    rest: Mapping[str, Decimal] | None = None,
) -> dict[str, Any] | None:
    """One note line, taxed at its original line's rate and split (engine.tax.india_gst rounds the
    same way: each amount to the paisa, CGST = SGST computed once)."""
    quantity: Decimal = wanted.quantity
    unit_price = wanted.unit_price if wanted.unit_price is not None else Decimal(source["unit_price"])
    discount: Decimal = wanted.discount
    found: list[Violation] = []
    if quantity <= 0:
        found.append(
            Violation(f"{path}.quantity", "zero_quantity", f"{path}.quantity must be greater than 0.")
        )
    if unit_price < 0:
        found.append(
            Violation(f"{path}.unit_price", "negative_unit_price", f"{path}.unit_price is negative.")
        )
    if discount < 0:
        found.append(Violation(f"{path}.discount", "negative_discount", f"{path}.discount is negative."))
    gross = quantity * unit_price
    if found:
        violations.extend(found)
        return None
    if discount > gross:
        found.append(
            Violation(
                f"{path}.discount",
                "discount_exceeds_gross",
                f"{path}.discount: {discount} exceeds the gross amount {gross} (quantity x unit_price).",
                {"gross": str(gross)},
            )
        )
    if gross > MAX_LINE_AMOUNT:
        found.append(
            Violation(
                path,
                "line_amount_too_large",
                f"{path}: the gross amount {gross} exceeds the limit of {MAX_LINE_AMOUNT}",
                {"amount": str(gross), "limit": str(MAX_LINE_AMOUNT)},
            )
        )
    if found:
        violations.extend(found)
        return None
    rate = Decimal(source["gst_rate"])
    cess_rate = Decimal(source.get("cess_rate") or 0)
    taxable = _round(gross - discount)
    cgst = sgst = igst = cess = _ZERO
    if rest is not None and rest["taxable_value"] <= _round(gross):
        taxable, cgst, sgst, igst, cess = (rest[name] for name in CREDIT_PARTS)
        # What the invoice's discount left on these units, so AssAmt = TotAmt - Discount still holds
        # on the e-invoice (IRP code 2193).
        discount = _round(gross) - taxable
    elif not without_payment:
        if intra_state:
            cgst = sgst = _round(taxable * rate / 2 / _HUNDRED)
        else:
            igst = _round(taxable * rate / _HUNDRED)
        cess = _round(taxable * cess_rate / _HUNDRED)
    total = taxable + cgst + sgst + igst + cess
    if total > MAX_LINE_AMOUNT:
        violations.append(
            Violation(
                path,
                "line_amount_too_large",
                f"{path}: the line total after tax {total} exceeds the limit of {MAX_LINE_AMOUNT}",
                {"amount": str(total), "limit": str(MAX_LINE_AMOUNT)},
            )
        )
        return None
    return {
        "line_no": line_no,
        "original_line_no": int(source["line_no"]),
        "description": source["description"],
        "hsn": source["hsn"],
        "quantity": quantity,
        "unit": source["unit"],
        "unit_price": unit_price,
        "discount": discount,
        "taxable_value": taxable,
        "gst_rate": rate,
        "rate_source": source["rate_source"],
        "master_rate": source.get("master_rate"),
        "override_reason": source.get("override_reason"),
        "cgst": cgst,
        "sgst": sgst,
        "igst": igst,
        "cess_rate": cess_rate,
        "cess": cess,
        "total": total,
        "supply_category": source.get("supply_category") or "taxable",
    }
