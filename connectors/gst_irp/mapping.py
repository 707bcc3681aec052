"""Map a ``ledgerflow.invoice.issued`` record to e-invoice JSON schema v1.1, and compute its IRN.

Pure: no I/O beyond reading the bundled schema once. Sources: india-gst.md section 1 (schema, arithmetic,
IRN), the NIC v1.1 JSON schema shipped next to this file, docs/topics.md (the record's value conventions).

The invoice record already carries the tax computed by the engine (engine.tax.india_gst, which rounds per
line the way the IRP checks). This module does not recompute tax; it *re-derives* the IRP's own arithmetic
(TotAmt = Qty x UnitPrice, AssAmt = TotAmt - Discount, TotItemVal = AssAmt + taxes) and refuses to map
a record whose numbers disagree with it, because the IRP would reject it anyway (codes 2193, 2182, 2189)
and a mismatch means a bug upstream, not something to paper over here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from importlib.resources import files
from typing import Any

from connectors.errors import PermanentError

SCHEMA_VERSION = "1.1"
EXPORT_STATE = "96"
"""State code and place of supply "Other Countries" (india-gst.md section 5), used for exports."""
EXPORT_PIN = 999999
"""Exports have no Indian PIN; 999999 is what integrators send for a foreign buyer (india-compliance
practice; unconfirmed in NIC's own documentation)."""
UNREGISTERED = "URP"
"""Buyer GSTIN of an export ("unregistered person"), allowed by the schema's BuyerDtls.Gstin pattern."""

_CENT = Decimal("0.01")
_MILLI = Decimal("0.001")
_RUPEE = Decimal("1")
_ZERO = Decimal("0")
_MAX_ROUND_OFF = Decimal("99.99")
_SUPPLY_TYPES = frozenset({"B2B", "SEZWP", "SEZWOP", "EXPWP", "EXPWOP"})
_EXPORTS = frozenset({"EXPWP", "EXPWOP"})


@dataclass(frozen=True)
class SellerProfile:
    """The supplier's registered details: from the issued record (v3: trade name and address
    included), or from the tenant for records issued before v3."""

    gstin: str
    legal_name: str
    address_line1: str
    location: str
    """City or town (``Loc``, 3-50 characters)."""
    pincode: str
    state_code: str
    """Two-digit GST state code, e.g. ``"29"``."""
    trade_name: str | None = None
    address_line2: str | None = None


@dataclass(frozen=True)
class Problem:
    path: str
    """Where in the e-invoice (``ItemList/0/PrdDesc``) or the invoice record (``buyer.address``)."""
    message: str


class MappingError(PermanentError):
    """The invoice cannot become a valid e-invoice; retrying the same record cannot help."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            "einvoice_mapping",
            "; ".join(f"{p.path}: {p.message}" for p in self.problems),
            details={"problems": [{"path": p.path, "message": p.message} for p in self.problems]},
        )


def financial_year(day: date) -> str:
    """Indian financial year (April-March) as the IRN uses it: ``"2019-20"``."""
    start = day.year if day.month >= 4 else day.year - 1
    return f"{start}-{(start + 1) % 100:02d}"


def irn_for(gstin: str, doc_date: date, doc_type: str, doc_no: str) -> str:
    """The IRN: SHA-256 hex of supplier GSTIN + financial year + document type + document number.

    india-gst.md section 1: the input for GSTIN 01AAAAA9999A19N, an invoice of FY 2019-20 numbered
    ABC01234 is ``01AAAAA9999A19N2019-20INVABC01234``; recomputing this reproduces IRNs NIC returned.
    """
    return hashlib.sha256(f"{gstin}{financial_year(doc_date)}{doc_type}{doc_no}".encode()).hexdigest()


def to_einvoice(
    invoice: Mapping[str, Any], seller: SellerProfile, *, round_off: bool = False
) -> dict[str, Any]:
    """The e-invoice v1.1 JSON for an issued invoice, or :class:`MappingError` listing every problem.

    ``round_off`` rounds TotInvVal to whole rupees and reports the difference as RndOffAmt; without it
    RndOffAmt is 0 and TotInvVal is exactly the sum of the items.
    """
    problems: list[Problem] = []
    supply_type = str(invoice.get("supply_type", ""))
    if supply_type == "B2C":
        raise MappingError(
            [Problem("supply_type", "B2C supplies have no e-invoice (IRP: B2B, SEZ, exports)")]
        )
    if supply_type not in _SUPPLY_TYPES:
        problems.append(Problem("supply_type", f"{supply_type!r} is not one of {sorted(_SUPPLY_TYPES)}"))
    if invoice.get("currency", "INR") != "INR":
        # ValDtls amounts are in rupees; a foreign-currency invoice would need TotInvValFc and conversion.
        problems.append(Problem("currency", f"{invoice.get('currency')!r}: only INR invoices are mapped"))
    export = supply_type in _EXPORTS

    invoice_seller = invoice.get("seller") or {}
    if invoice_seller.get("gstin") and invoice_seller["gstin"] != seller.gstin:
        problems.append(Problem("seller.gstin", "differs from the seller profile's GSTIN"))

    doc_date = _date(invoice.get("date"), "date", problems)
    buyer = _buyer(invoice, seller, export, problems)
    items = [
        _item(line, index, bool(invoice.get("intra_state")), problems)
        for index, line in enumerate(_lines(invoice, problems))
    ]
    if problems:
        raise MappingError(problems)

    values = _values(invoice, items, round_off, problems)
    if problems:
        raise MappingError(problems)
    assert doc_date is not None
    transaction: dict[str, Any] = {
        "TaxSch": "GST",
        "SupTyp": supply_type,
        "RegRev": "Y" if invoice.get("reverse_charge") else "N",
    }
    if invoice.get("ecommerce_gstin"):
        transaction["EcmGstin"] = str(invoice["ecommerce_gstin"])
    document: dict[str, Any] = {
        "Version": SCHEMA_VERSION,
        "TranDtls": transaction,
        "DocDtls": {
            "Typ": document_type_code(invoice),
            "No": str(invoice.get("number", "")),
            "Dt": doc_date.strftime("%d/%m/%Y"),
        },
        "SellerDtls": _seller(seller, problems),
        "BuyerDtls": buyer,
        "ItemList": items,
        "ValDtls": values,
    }
    references = _references(invoice, problems)
    if references:
        document["RefDtls"] = references
    shipping = _export_details(invoice) if export else None
    if shipping:
        document["ExpDtls"] = shipping
    if problems:
        raise MappingError(problems)
    result = _to_json_numbers(document)
    validate(result)
    return result


# DocDtls.Typ per document type of the issued record (india-gst.md section 1: INV, CRN, DBN).
DOCUMENT_TYPE_CODES = {"invoice": "INV", "credit_note": "CRN", "debit_note": "DBN"}


def document_type_code(invoice: Mapping[str, Any]) -> str:
    """INV, CRN or DBN: also part of the IRN's input, so a note's IRN differs from its invoice's."""
    return DOCUMENT_TYPE_CODES.get(str(invoice.get("document_type") or "invoice"), "INV")


def _references(invoice: Mapping[str, Any], problems: list[Problem]) -> dict[str, Any] | None:
    """A note's preceding document (RefDtls.PrecDocDtls: the original invoice's number and date)."""
    if document_type_code(invoice) == "INV":
        return None
    number, day = invoice.get("original_number"), invoice.get("original_invoice_date")
    if not number or not day:
        problems.append(
            Problem("original_number", "a credit or debit note needs its invoice's number and date")
        )
        return None
    original_date = _date(day, "original_invoice_date", problems)
    if original_date is None:
        return None
    return {"PrecDocDtls": [{"InvNo": str(number), "InvDt": original_date.strftime("%d/%m/%Y")}]}


def _export_details(invoice: Mapping[str, Any]) -> dict[str, Any] | None:
    """ExpDtls from the record's shipping bill (issued v5), each part only when known."""
    export = invoice.get("export") or {}
    details: dict[str, Any] = {}
    if export.get("shipping_bill_number"):
        details["ShipBNo"] = str(export["shipping_bill_number"])
    if export.get("shipping_bill_date"):
        details["ShipBDt"] = date.fromisoformat(str(export["shipping_bill_date"])).strftime("%d/%m/%Y")
    if export.get("port_code"):
        details["Port"] = str(export["port_code"])
    return details or None


def validate(document: Mapping[str, Any]) -> None:
    """Check ``document`` against the NIC v1.1 schema, raising :class:`MappingError` with JSON paths.

    The schema also carries rules that read like prose elsewhere: no string may contain a double quote,
    document numbers may not start with 0, PIN codes are six digits.
    """
    problems = [
        Problem("/".join(str(part) for part in error.absolute_path) or "(document)", error.message)
        for error in sorted(_validator().iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if problems:
        raise MappingError(problems)


@cache
def schema() -> dict[str, Any]:
    """The NIC e-invoice v1.1 JSON schema bundled with this package."""
    text = files("connectors.gst_irp").joinpath("einvoice-v1.1.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Any:
    from jsonschema import Draft7Validator

    return Draft7Validator(schema())


def _date(value: object, path: str, problems: list[Problem]) -> date | None:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        problems.append(Problem(path, f"{value!r} is not a YYYY-MM-DD date"))
        return None


def _decimal(value: object, path: str, problems: list[Problem]) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        problems.append(Problem(path, f"{value!r} is not a decimal number"))
        return _ZERO
    return number


def _round(amount: Decimal, step: Decimal = _CENT) -> Decimal:
    return amount.quantize(step, rounding=ROUND_HALF_UP)


def _state(value: object, path: str, problems: list[Problem]) -> str:
    text = str(value or "")
    if not (text.isdigit() and len(text) == 2 and text != "00"):
        problems.append(Problem(path, f"{value!r} is not a two-digit GST state code"))
    return text


def _pin(value: object, path: str, problems: list[Problem]) -> int:
    text = str(value or "").strip()
    if not (text.isdigit() and len(text) == 6 and text[0] != "0"):
        problems.append(Problem(path, f"{value!r} is not a six-digit PIN code"))
        return 0
    return int(text)


def _seller(seller: SellerProfile, problems: list[Problem]) -> dict[str, Any]:
    details: dict[str, Any] = {
        "Gstin": seller.gstin,
        "LglNm": seller.legal_name,
        "Addr1": seller.address_line1,
        "Loc": seller.location,
        "Pin": _pin(seller.pincode, "seller.pincode", problems),
        "Stcd": _state(seller.state_code, "seller.state_code", problems),
    }
    if seller.trade_name:
        details["TrdNm"] = seller.trade_name
    if seller.address_line2:
        details["Addr2"] = seller.address_line2
    return details


def _buyer(
    invoice: Mapping[str, Any], seller: SellerProfile, export: bool, problems: list[Problem]
) -> dict[str, Any]:
    buyer = invoice.get("buyer") or {}
    address = buyer.get("address")
    gstin = buyer.get("gstin")
    if export:
        gstin = UNREGISTERED
    elif not gstin:
        problems.append(Problem("buyer.gstin", "required: an e-invoice is only for registered buyers"))
    elif gstin == seller.gstin:
        problems.append(Problem("buyer.gstin", "equals the seller's GSTIN; no e-invoice to oneself"))
    details: dict[str, Any] = {"Gstin": gstin or "", "LglNm": str(buyer.get("name", ""))}
    if export:
        details["Pos"] = EXPORT_STATE
        details["Stcd"] = EXPORT_STATE
    else:
        details["Pos"] = _state(invoice.get("place_of_supply"), "place_of_supply", problems)
        details["Stcd"] = _state(buyer.get("state"), "buyer.state", problems)
    if not address:
        problems.append(Problem("buyer.address", "required: BuyerDtls needs Addr1 and Loc"))
        return details
    details["Addr1"] = str(address.get("line1") or "")
    if address.get("line2"):
        details["Addr2"] = str(address["line2"])
    details["Loc"] = str(address.get("city") or "")
    if export:
        details["Pin"] = EXPORT_PIN
    elif not address.get("pincode"):
        problems.append(Problem("buyer.address.pincode", "required for a buyer in India"))
    else:
        details["Pin"] = _pin(address["pincode"], "buyer.address.pincode", problems)
    return details


def _lines(invoice: Mapping[str, Any], problems: list[Problem]) -> list[Mapping[str, Any]]:
    lines = list(invoice.get("lines") or [])
    if not lines:
        problems.append(Problem("lines", "an e-invoice needs at least one item"))
    return lines


def _item(line: Mapping[str, Any], index: int, intra_state: bool, problems: list[Problem]) -> dict[str, Any]:
    at = f"lines[{index}]"

    def number(name: str) -> Decimal:
        return _decimal(line.get(name), f"{at}.{name}", problems)

    qty = _round(number("quantity"), _MILLI)
    unit_price = _round(number("unit_price"), _MILLI)
    discount = number("discount")
    cgst, sgst, igst, cess = number("cgst"), number("sgst"), number("igst"), number("cess")
    # india-gst.md section 1: amounts 2 dp, Qty and UnitPrice 3 dp; AssAmt = TotAmt - Discount.
    total_amount = _round(qty * unit_price)
    assessable = total_amount - discount
    if assessable != number("taxable_value"):
        problems.append(
            Problem(
                f"{at}.taxable_value",
                f"{line.get('taxable_value')} but quantity x unit_price - discount is {assessable} "
                "(the IRP rejects AssAmt != TotAmt - Discount, code 2193)",
            )
        )
    if intra_state and (igst != 0 or cgst != sgst):
        problems.append(Problem(at, "an intra-state line needs CGST = SGST and no IGST (IRP code 2172)"))
    if not intra_state and (cgst != 0 or sgst != 0):
        problems.append(Problem(at, "an inter-state, SEZ or export line carries IGST only"))
    item_total = assessable + cgst + sgst + igst + cess
    if item_total != number("total"):
        problems.append(
            Problem(f"{at}.total", f"{line.get('total')} but taxable value + taxes is {item_total}")
        )
    hsn = str(line.get("hsn", ""))
    return {
        "SlNo": str(line.get("line_no", index + 1)),
        "PrdDesc": str(line.get("description", "")),
        # Services are SAC codes, chapter 99 (india-gst.md section 1).
        "IsServc": "Y" if hsn.startswith("99") else "N",
        "HsnCd": hsn,
        "Qty": qty,
        "Unit": str(line.get("unit", "")),
        "UnitPrice": unit_price,
        "TotAmt": total_amount,
        "Discount": discount,
        "AssAmt": assessable,
        "GstRt": number("gst_rate"),
        "IgstAmt": igst,
        "CgstAmt": cgst,
        "SgstAmt": sgst,
        "CesRt": number("cess_rate"),
        "CesAmt": cess,
        "TotItemVal": item_total,
    }


def _values(
    invoice: Mapping[str, Any], items: list[dict[str, Any]], round_off: bool, problems: list[Problem]
) -> dict[str, Any]:
    def total(key: str) -> Decimal:
        return sum((item[key] for item in items), _ZERO)

    values: dict[str, Any] = {
        "AssVal": total("AssAmt"),
        "CgstVal": total("CgstAmt"),
        "SgstVal": total("SgstAmt"),
        "IgstVal": total("IgstAmt"),
        "CesVal": total("CesAmt"),
        # Item discounts are already inside AssAmt; ValDtls.Discount is an invoice-level discount, which
        # Ledgerflow does not have. Repeating the item discounts here would subtract them twice.
        "Discount": _ZERO,
    }
    exact = total("TotItemVal")
    declared = invoice.get("totals") or {}
    for key, name in (("AssVal", "taxable"), ("CgstVal", "cgst"), ("SgstVal", "sgst"), ("IgstVal", "igst")):
        if values[key] != _decimal(declared.get(name), f"totals.{name}", problems):
            problems.append(
                Problem(f"totals.{name}", f"{declared.get(name)} but the lines add up to {values[key]}")
            )
    if exact != _decimal(declared.get("total"), "totals.total", problems):
        problems.append(Problem("totals.total", f"{declared.get('total')} but the lines add up to {exact}"))
    invoice_value = _round(exact, _RUPEE) if round_off else exact
    round_off_amount = invoice_value - exact
    assert abs(round_off_amount) <= _MAX_ROUND_OFF  # rounding to a rupee moves at most 0.50
    values["RndOffAmt"] = round_off_amount
    values["TotInvVal"] = invoice_value
    return values


def _to_json_numbers(value: Any) -> Any:
    """Decimals become JSON numbers only here, at the very end: the arithmetic above stayed exact.

    A 2- or 3-decimal Decimal converts to the nearest float, whose shortest repr (what json.dumps writes)
    is the same decimal again, so nothing the IRP sees is off by a binary fraction.
    """
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: _to_json_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_json_numbers(item) for item in value]
    return value
