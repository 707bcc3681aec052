"""Pure: our published invoice and payment records -> QuickBooks Online entities, and queries.

Identity: an invoice is found again by ``DocNumber`` (our invoice number; QuickBooks allows 21
characters) and carries our invoice id in ``PrivateNote``; a customer by ``DisplayName`` (unique per
company in QuickBooks) = our buyer's name; an item by ``Name`` = ``HSN <code>`` (one item per HSN
code, posting to the mapped income account); a payment by ``PaymentRefNum`` = the provider's payment
id (21 characters).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

DOC_NUMBER_MAX = 21
NAME_MAX = 100
MARKER = "ledgerflow:"

# Intuit's query language quotes strings with '...' and escapes a quote with a backslash.
_QUOTE = re.compile(r"(['\\])")
MAX_SIGNIFICANT_DIGITS = 15
"""Amounts travel as JSON numbers, which QuickBooks reads as doubles: exact up to 15 digits."""


class MappingError(ValueError):
    """The document cannot be expressed in QuickBooks with this tenant's mapping."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def clean_text(value: Any, limit: int = NAME_MAX) -> str:
    """Printable text only (control and format characters dropped), NFC, trimmed to ``limit``."""
    text = unicodedata.normalize("NFC", str(value or ""))
    kept = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    return " ".join(kept.split())[:limit]


def quoted(value: str) -> str:
    return "'" + _QUOTE.sub(r"\\\1", value) + "'"


def select(entity: str, field: str, value: str) -> str:
    return f"select * from {entity} where {field} = {quoted(value)}"


def doc_number(number: str) -> str:
    text = clean_text(number, 200)
    if not text or len(text) > DOC_NUMBER_MAX:
        raise MappingError(
            "doc_number_too_long", f"invoice number {text[:40]!r} does not fit QuickBooks' 21 characters"
        )
    return text


def amount(value: Any) -> Decimal:
    """An exact decimal QuickBooks can hold: at most 15 significant digits, below 10^13, and no finer
    than 6 decimal places (its unit prices); anything else is refused rather than rounded."""
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise MappingError("amount_out_of_range", f"amount {str(value)[:30]!r} is not a number") from exc
    if (
        not number.is_finite()
        or len(number.as_tuple().digits) > MAX_SIGNIFICANT_DIGITS
        or (number != 0 and number.adjusted() >= 13)
        or int(number.as_tuple().exponent) < -6
    ):
        raise MappingError("amount_out_of_range", f"amount {str(value)[:30]} cannot be sent exactly")
    return number


def customer_name(buyer: Mapping[str, Any]) -> str:
    name = clean_text(buyer.get("name"))
    if not name:
        raise MappingError("buyer_without_name", "the invoice's buyer has no name")
    return name


def customer_body(buyer: Mapping[str, Any]) -> dict[str, Any]:
    address = buyer.get("address") or {}
    body: dict[str, Any] = {"DisplayName": customer_name(buyer), "CompanyName": customer_name(buyer)}
    if address:
        body["BillAddr"] = {
            "Line1": clean_text(address.get("line1"), 500),
            "City": clean_text(address.get("city"), 255),
            "PostalCode": clean_text(address.get("pincode"), 30),
        }
    if buyer.get("gstin"):
        body["GSTIN"] = clean_text(buyer["gstin"], 15)
    return body


def item_name(line: Mapping[str, Any]) -> str:
    hsn = clean_text(line.get("hsn"), 8)
    return f"HSN {hsn}" if hsn else clean_text(line.get("description")) or "Ledgerflow item"


def item_body(name: str, income_account_id: str) -> dict[str, Any]:
    return {"Name": name, "Type": "Service", "IncomeAccountRef": {"value": income_account_id}}


def tax_code_for(line: Mapping[str, Any], codes: Mapping[Decimal, str]) -> str:
    rate = Decimal(str(line.get("gst_rate") or line.get("tax_rate") or "0")).normalize()
    code = codes.get(rate)
    if code is None:
        raise MappingError("unmapped_tax_rate", f"no QuickBooks tax code is mapped for GST rate {rate}%")
    return code


def invoice_marker(invoice_id: str) -> str:
    return f"{MARKER}{invoice_id}"


def invoice_body(
    record: Mapping[str, Any],
    customer_id: str,
    item_ids: Mapping[str, str],
    codes: Mapping[Decimal, str],
) -> dict[str, Any]:
    """The Invoice for an issued record: one SalesItemLine per our line, at its taxable value."""
    lines = []
    for line in record.get("lines") or []:
        lines.append(
            {
                "LineNum": int(line["line_no"]),
                "Description": clean_text(line.get("description"), 4000),
                "Amount": amount(line["taxable_value"]),
                "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {
                    "ItemRef": {"value": item_ids[item_name(line)]},
                    "Qty": amount(line["quantity"]),
                    "UnitPrice": amount(line["unit_price"]),
                    "TaxCodeRef": {"value": tax_code_for(line, codes)},
                },
            }
        )
    return {
        "DocNumber": doc_number(record["number"]),
        "TxnDate": str(record["date"]),
        "CustomerRef": {"value": customer_id},
        "CurrencyRef": {"value": clean_text(record.get("currency") or "INR", 3)},
        "PrivateNote": invoice_marker(str(record["invoice_id"])),
        "GlobalTaxCalculation": "TaxExcluded",
        "Line": lines,
    }


def lines_total(entity: Mapping[str, Any]) -> Decimal:
    return sum(
        (
            Decimal(str(line.get("Amount", "0")))
            for line in entity.get("Line") or []
            if line.get("DetailType") == "SalesItemLineDetail"
        ),
        Decimal(0),
    )


def same_invoice(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the invoice in QuickBooks already says what we would send (then nothing is written)."""
    return (
        found.get("PrivateNote") == wanted["PrivateNote"]
        and found.get("CustomerRef", {}).get("value") == wanted["CustomerRef"]["value"]
        and lines_total(found) == lines_total(wanted)
        and str(found.get("TxnDate")) == wanted["TxnDate"]
    )


def is_voided(found: Mapping[str, Any]) -> bool:
    # A voided invoice keeps its number with every amount zeroed and "Voided" in its private note.
    return "Voided" in str(found.get("PrivateNote") or "") and Decimal(str(found.get("TotalAmt", "0"))) == 0


def payment_ref(record: Mapping[str, Any]) -> str:
    return clean_text(record.get("provider_payment_id") or record["payment_id"], DOC_NUMBER_MAX)


def payment_body(
    record: Mapping[str, Any], invoice: Mapping[str, Any], deposit_account_id: str
) -> dict[str, Any]:
    total = amount(record["amount"])
    paid_at = record.get("paid_at") or record.get("occurred_at")
    day = datetime.fromtimestamp(int(paid_at) / 1000, UTC).date().isoformat() if paid_at else None
    body: dict[str, Any] = {
        "TotalAmt": total,
        "CustomerRef": {"value": invoice["CustomerRef"]["value"]},
        "DepositToAccountRef": {"value": deposit_account_id},
        "PaymentRefNum": payment_ref(record),
        "PrivateNote": f"{MARKER}{record['payment_id']}",
        "Line": [{"Amount": total, "LinkedTxn": [{"TxnId": str(invoice["Id"]), "TxnType": "Invoice"}]}],
    }
    if day:
        body["TxnDate"] = day
    return body
