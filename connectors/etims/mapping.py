"""Pure: our Kenyan invoice record -> eTIMS payloads, and eTIMS answers -> receipts.

Inputs are the decoded ``ledgerflow.invoice.issued`` record (schema v4, etims_spec.md "The Kenyan
invoice record": decimals as strings, lines with ``item_code``/``tax_type``/amounts, ``tax_breakdown``
per tax type, ``totals {taxable, vat, total}``). The amounts are computed once, by the engine
(engine/tax/kenya_vat.py); this module only places them, so the payload always agrees with the invoice.

Field names and rules: kenya-etims.md "saveTrnsSalesOsdc" (navariltd/kenya-compliance, Odoo
l10n_ke_edi_oscu, paybillke's OSCU notes). Dates are Africa/Nairobi local time (EAT, UTC+3, no DST):
``cfmDt`` YYYYMMDDhhmmss, ``salesDt`` YYYYMMDD. Amounts are JSON numbers with two decimals, net
(tax-exclusive) taxable amounts as Odoo and Navari send them; credit notes carry positive amounts
with ``rcptTyCd`` R, ``orgInvcNo`` and ``rfdRsnCd``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from connectors.errors import NeedsAttentionError, PermanentError

NAIROBI = ZoneInfo("Africa/Nairobi")
TAX_TYPES: tuple[str, ...] = ("A", "B", "C", "D", "E")
DEFAULT_RATES: Mapping[str, Decimal] = {
    "A": Decimal("0"),
    "B": Decimal("16"),
    "C": Decimal("0"),
    "D": Decimal("0"),
    "E": Decimal("8"),
}
"""Class 04 as KRA publishes it (A exempt, B 16 %, C zero-rated, D non-VAT, E 8 %); only a fallback
for a type the invoice's own breakdown does not carry: the synced rates win (kenya-etims.md warns that
several SDKs hard-code A=16 %)."""
REGISTRANT = "ledgerflow"
"""regrId/regrNm/modrId/modrNm: who registered the record at KRA; KRA only requires them non-empty."""
CENT = Decimal("0.01")

QR_HOSTS = {"sandbox": "https://etims-sbx.kra.go.ke", "production": "https://etims.kra.go.ke"}
QR_PATH = "/common/link/etims/receipt/indexEtimsReceiptData"

ITEM_TYPES = {"1": "raw material", "2": "finished product", "3": "service"}
_ITEM_CODE = re.compile(r"^(?P<country>[A-Z]{2})(?P<type>[1-3])(?P<units>[A-Z0-9]{2,8})(?P<seq>[0-9]{7})$")
_UNIT = re.compile(r"^[A-Z0-9]{1,3}$")
_PKG_UNIT = re.compile(r"^[A-Z0-9]{2}$")


class MappingError(PermanentError):
    """The record cannot become a valid eTIMS payload; sending the same record again cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_sale", message)


# -- dates -----------------------------------------------------------------------------------------


def nairobi(moment: datetime) -> datetime:
    """``moment`` (timezone-aware) in Nairobi local time."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place in a KRA timestamp; pass an aware one")
    return moment.astimezone(NAIROBI)


def kra_datetime(moment: datetime) -> str:
    """YYYYMMDDhhmmss in Nairobi time (cfmDt, rcptPbctDt, lastReqDt)."""
    return nairobi(moment).strftime("%Y%m%d%H%M%S")


def kra_date(day: date) -> str:
    return day.strftime("%Y%m%d")


# -- amounts ---------------------------------------------------------------------------------------


def _decimal(value: Any, what: str) -> Decimal:
    if value is None or value == "":
        return Decimal("0")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise MappingError(f"{what} is not a number: {value!r}") from exc
    if not number.is_finite():
        raise MappingError(f"{what} is not a finite number: {value!r}")
    return number


def amount(value: Any, what: str = "amount") -> float:
    """Two decimals, half-up, as a JSON number (KRA's amounts are numbers, not strings)."""
    return float(_decimal(value, what).quantize(CENT, rounding=ROUND_HALF_UP))


def _quantity(value: Any, what: str) -> float:
    return float(_decimal(value, what))


def _rate(value: Decimal) -> float | int:
    return int(value) if value == value.to_integral_value() else float(value)


# -- item codes ------------------------------------------------------------------------------------


def _unit_segment(unit: str) -> str:
    # KRA's worked codes (KE1NTXU0000001: packaging NT, quantity unit U) and the RRA VSDC receipts of
    # the same platform end a two-character unit with "X" and leave one- and three-character units as
    # they are, so that the segments can be told apart. Inferred from examples; unconfirmed by KRA.
    return f"{unit}X" if len(unit) == 2 else unit


def build_item_code(country: str, item_type: str, pkg_unit: str, qty_unit: str, sequence: int) -> str:
    """``KE`` + item type (1 raw, 2 finished, 3 service) + packaging unit + quantity unit + a
    seven-digit sequence, e.g. ``build_item_code("KE", "1", "NT", "U", 1) == "KE1NTXU0000001"``."""
    country, pkg_unit, qty_unit = country.upper(), pkg_unit.upper(), qty_unit.upper()
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise ValueError(f"country must be two letters (ISO 3166), not {country!r}")
    if item_type not in ITEM_TYPES:
        raise ValueError(
            f"item type must be 1 (raw material), 2 (finished product) or 3 (service), not {item_type!r}"
        )
    # Packaging units (code class 17) are two characters; quantity units (class 10) one to three.
    # Holding the first to two keeps every code readable back into its parts (parse_item_code).
    if not _PKG_UNIT.match(pkg_unit):
        raise ValueError(f"packaging unit must be a two-character KRA code (class 17), not {pkg_unit!r}")
    if not _UNIT.match(qty_unit) or (len(qty_unit) == 3 and qty_unit.endswith("X")):
        raise ValueError(
            f"quantity unit must be a KRA code of 1-3 letters/digits (class 10), not {qty_unit!r}"
        )
    if not 1 <= sequence <= 9_999_999:
        raise ValueError(f"the item sequence must be 1..9999999, not {sequence}")
    return f"{country}{item_type}{_unit_segment(pkg_unit)}{_unit_segment(qty_unit)}{sequence:07d}"


@dataclass(frozen=True)
class ItemCode:
    country: str
    item_type: str
    pkg_unit: str
    qty_unit: str
    sequence: int


def _whole_unit(segment: str) -> str | None:
    if len(segment) == 3 and segment.endswith("X"):
        return segment[:2]
    if len(segment) in (1, 3):
        return segment
    return None


def parse_item_code(code: str) -> ItemCode:
    """The parts of an item code built by :func:`build_item_code`; ``ValueError`` if it is not one."""
    match = _ITEM_CODE.match(code.strip().upper())
    if match is None:
        raise ValueError(f"{code!r} is not an eTIMS item code (e.g. KE1NTXU0000001)")
    units = match["units"]
    pkg, qty = units[:2], _whole_unit(units[3:])
    if len(units) < 4 or units[2] != "X" or qty is None:
        raise ValueError(f"{code!r}: expected a two-character packaging unit + X, then the quantity unit")
    return ItemCode(match["country"], match["type"], pkg, qty, int(match["seq"]))


# -- payloads --------------------------------------------------------------------------------------


def _breakdown(record: Mapping[str, Any], rates: Mapping[str, Decimal]) -> dict[str, Any]:
    seen: dict[str, Mapping[str, Any]] = {}
    for entry in record.get("tax_breakdown") or []:
        tax_type = str(entry.get("tax_type", "")).upper()
        if tax_type not in TAX_TYPES:
            raise MappingError(f"tax_breakdown has an unknown tax type {entry.get('tax_type')!r} (A-E)")
        seen[tax_type] = entry
    fields: dict[str, Any] = {}
    for tax_type in TAX_TYPES:
        entry = seen.get(tax_type)
        rate = _decimal(entry["rate"], f"tax rate {tax_type}") if entry else rates.get(tax_type, Decimal("0"))
        fields[f"taxblAmt{tax_type}"] = amount(entry["taxable"] if entry else 0, f"taxable {tax_type}")
        fields[f"taxRt{tax_type}"] = _rate(rate)
        fields[f"taxAmt{tax_type}"] = amount(entry["tax"] if entry else 0, f"tax {tax_type}")
    return fields


def _item(line: Mapping[str, Any], item_classes: Mapping[str, str]) -> dict[str, Any]:
    number = line.get("line_no")
    code = str(line.get("item_code") or "")
    if not code:
        raise MappingError(f"line {number} has no item_code (register the item with POST /v1/etims/items)")
    try:
        parts = parse_item_code(code)
    except ValueError as exc:
        raise MappingError(f"line {number}: {exc}") from exc
    item_class = item_classes.get(code)
    if not item_class:
        raise MappingError(f"line {number}: item {code} has no item class (is it registered with eTIMS?)")
    tax_type = str(line.get("tax_type") or "").upper()
    if tax_type not in TAX_TYPES:
        raise MappingError(f"line {number}: tax_type must be one of A-E, not {line.get('tax_type')!r}")
    supply = _decimal(line.get("supply_amount"), f"line {number} supply_amount")
    discount = _decimal(line.get("discount"), f"line {number} discount")
    discount_rate = (discount * 100 / supply) if supply else Decimal("0")
    quantity = _quantity(line.get("quantity"), f"line {number} quantity")
    return {
        "itemSeq": int(number) if number is not None else 0,
        "itemCd": code,
        "itemClsCd": item_class,
        "itemNm": str(line.get("description") or ""),
        "bcd": None,
        "pkgUnitCd": parts.pkg_unit,
        "pkg": quantity,
        "qtyUnitCd": parts.qty_unit,
        "qty": quantity,
        "prc": amount(line.get("unit_price"), f"line {number} unit_price"),
        "splyAmt": amount(supply),
        "dcRt": amount(discount_rate),
        "dcAmt": amount(discount),
        "isrccCd": None,
        "isrccNm": None,
        "isrcRt": None,
        "isrcAmt": None,
        "taxTyCd": tax_type,
        "taxblAmt": amount(line.get("taxable_amount"), f"line {number} taxable_amount"),
        "taxAmt": amount(line.get("tax_amount"), f"line {number} tax_amount"),
        "totAmt": amount(line.get("total"), f"line {number} total"),
    }


def _sales_date(record: Mapping[str, Any], confirmed: datetime) -> str:
    value = record.get("date")
    if isinstance(value, date):
        return kra_date(value)
    if isinstance(value, str) and value:
        try:
            return kra_date(date.fromisoformat(value[:10]))
        except ValueError as exc:
            raise MappingError(f"date {value!r} is not an ISO date") from exc
    return kra_date(nairobi(confirmed).date())


def _address(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        parts = [value.get(k) for k in ("line1", "line2", "city", "county", "postal_code", "pincode")]
        return ", ".join(str(p) for p in parts if p) or None
    return str(value) or None


def sale_payload(
    record: Mapping[str, Any],
    *,
    invc_no: int,
    org_invc_no: int | None,
    item_classes: Mapping[str, str],
    now: datetime,
    device_type: str,
    rates: Mapping[str, Decimal] | None = None,
) -> dict[str, Any]:
    """The ``saveTrnsSalesOsdc`` body (or VSCU ``saveSales``) for an issued Kenyan invoice or credit note.

    ``invc_no``: the number allocated to this sale (sequential per environment, tenant and branch);
    ``org_invc_no``: the original sale's invcNo, for a credit note; ``item_classes``: item code ->
    its KRA item class (etims_items); ``now``: when it is sent (cfmDt); ``rates``: class 04 as synced,
    for tax types the invoice does not use (their amounts are 0 either way).
    """
    if invc_no < 1:
        raise MappingError(f"invcNo must be a positive integer, not {invc_no}")
    if device_type not in ("oscu", "vscu"):
        raise MappingError(f"device_type must be oscu or vscu, not {device_type!r}")
    credit_note = record.get("document_type") == "credit_note"
    lines: Sequence[Mapping[str, Any]] = record.get("lines") or []
    if not lines:
        raise MappingError("a sale needs at least one line")
    if credit_note and not org_invc_no:
        raise MappingError("a credit note needs the original sale's invcNo (orgInvcNo)")
    if credit_note and not record.get("refund_reason_code"):
        raise MappingError("a credit note needs refund_reason_code (KRA code class 32)")
    buyer: Mapping[str, Any] = record.get("buyer") or {}
    seller: Mapping[str, Any] = record.get("seller") or {}
    totals: Mapping[str, Any] = record.get("totals") or {}
    confirmed = kra_datetime(now)
    customer_pin = (buyer.get("kra_pin") or None) and str(buyer["kra_pin"]).upper()
    payload: dict[str, Any] = {
        "trdInvcNo": str(record.get("number") or ""),
        "invcNo": invc_no,
        "orgInvcNo": int(org_invc_no) if credit_note and org_invc_no else 0,
        "custTin": customer_pin,
        "custNm": buyer.get("name") or None,
        "salesTyCd": "N",
        "rcptTyCd": "R" if credit_note else "S",
        "pmtTyCd": str(record.get("payment_type") or "01"),
        "salesSttsCd": "02",
        "cfmDt": confirmed,
        "salesDt": _sales_date(record, now),
        "stockRlsDt": None,
        "cnclReqDt": None,
        "cnclDt": None,
        "rfdDt": confirmed if credit_note else None,
        "rfdRsnCd": str(record["refund_reason_code"]) if credit_note else None,
        "totItemCnt": len(lines),
        **_breakdown(record, {**DEFAULT_RATES, **(rates or {})}),
        "totTaxblAmt": amount(totals.get("taxable"), "totals.taxable"),
        "totTaxAmt": amount(totals.get("vat"), "totals.vat"),
        "totAmt": amount(totals.get("total"), "totals.total"),
        "prchrAcptcYn": "N",
        "remark": None,
        "regrId": REGISTRANT,
        "regrNm": REGISTRANT,
        "modrId": REGISTRANT,
        "modrNm": REGISTRANT,
        "receipt": {
            "custTin": customer_pin,
            "custMblNo": buyer.get("phone") or None,
            "rcptPbctDt": confirmed,
            "trdeNm": seller.get("trade_name") or seller.get("legal_name") or None,
            "adrs": _address(seller.get("address")),
            "topMsg": None,
            "btmMsg": None,
            "prchrAcptcYn": "N",
        },
        "itemList": [_item(line, item_classes) for line in lines],
    }
    if device_type == "vscu":
        # RRA's VSDC request (TrnsSalesSaveWrReq), the VSCU JAR's model, has no trdInvcNo: the ERP
        # number travels in the receipt's remark instead. Unconfirmed for KRA's VSCU.
        payload.pop("trdInvcNo")
        payload["remark"] = str(record.get("number") or "") or None
    return payload


def item_payload(
    *,
    item_code: str,
    item_class_code: str,
    name: str,
    origin: str,
    tax_type: str,
    default_price: Decimal | str | float,
    item_type: str | None = None,
    pkg_unit: str | None = None,
    qty_unit: str | None = None,
) -> dict[str, Any]:
    """The ``saveItem`` body; item type and units default to what the item code says."""
    parts = parse_item_code(item_code)
    for given, coded, what in (
        (item_type, parts.item_type, "item_type"),
        (pkg_unit, parts.pkg_unit, "pkg_unit"),
        (qty_unit, parts.qty_unit, "qty_unit"),
    ):
        if given is not None and given.upper() != coded:
            raise ValueError(f"{what} {given!r} disagrees with the item code {item_code} ({coded!r})")
    if tax_type.upper() not in TAX_TYPES:
        raise ValueError(f"tax_type must be one of A-E, not {tax_type!r}")
    return {
        "itemCd": item_code,
        "itemClsCd": item_class_code,
        "itemTyCd": parts.item_type,
        "itemNm": name,
        "itemStdNm": None,
        "orgnNatCd": origin.upper(),
        "pkgUnitCd": parts.pkg_unit,
        "qtyUnitCd": parts.qty_unit,
        "taxTyCd": tax_type.upper(),
        "btchNo": None,
        "bcd": None,
        "dftPrc": amount(default_price, "default_price"),
        "addInfo": None,
        "sftyQty": None,
        "isrcAplcbYn": "N",
        "useYn": "Y",
        "regrId": REGISTRANT,
        "regrNm": REGISTRANT,
        "modrId": REGISTRANT,
        "modrNm": REGISTRANT,
    }


def receipt_qr_url(environment: str, kra_pin: str, bhf_id: str, receipt_signature: str) -> str:
    """The receipt's verification link KRA's QR code points at: ``Data={PIN}{bhfId}{rcptSign}``."""
    if environment not in QR_HOSTS:
        raise ValueError(f"environment must be sandbox or production, not {environment!r}")
    return f"{QR_HOSTS[environment]}{QR_PATH}?Data={kra_pin.upper()}{bhf_id}{receipt_signature}"


# -- answers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaleReceipt:
    """What KRA signed for one sale. OSCU does not return sdcId/mrcNo (they come from the
    initialisation); VSCU does, and names the SDC time ``vsdcRcptPbctDate``."""

    invc_no: int | None
    receipt_no: int
    total_receipt_no: int
    internal_data: str
    receipt_signature: str
    sdc_datetime: str
    sdc_id: str | None = None
    mrc_no: str | None = None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def parse_receipt(data: Mapping[str, Any], *, invc_no: int | None = None) -> SaleReceipt:
    """A sale answer's ``data`` as a receipt, OSCU's shape or VSCU's.

    OSCU: ``{curRcptNo, totRcptNo, intrlData, rcptSign, sdcDateTime}`` (counters sometimes strings);
    VSCU: ``{rcptNo, totRcptNo, intrlData, rcptSign, vsdcRcptPbctDate, sdcId, mrcNo}``.
    A receipt without its signature or counters is no receipt: that needs a person.
    """
    receipt_no = _int_or_none(data.get("curRcptNo", data.get("rcptNo")))
    total = _int_or_none(data.get("totRcptNo"))
    internal = _text(data.get("intrlData"))
    signature = _text(data.get("rcptSign"))
    when = _text(data.get("sdcDateTime", data.get("vsdcRcptPbctDate")))
    missing = [
        name
        for name, value in (
            ("curRcptNo/rcptNo", receipt_no),
            ("totRcptNo", total),
            ("intrlData", internal),
            ("rcptSign", signature),
            ("sdcDateTime/vsdcRcptPbctDate", when),
        )
        if value is None
    ]
    if (
        missing
        or receipt_no is None
        or total is None
        or internal is None
        or signature is None
        or when is None
    ):
        raise NeedsAttentionError("invalid_response", f"the sale answer lacks {', '.join(missing)}")
    return SaleReceipt(
        invc_no=_int_or_none(data.get("invcNo")) if invc_no is None else invc_no,
        receipt_no=receipt_no,
        total_receipt_no=total,
        internal_data=internal,
        receipt_signature=signature,
        sdc_datetime=when,
        sdc_id=_text(data.get("sdcId")),
        mrc_no=_text(data.get("mrcNo")),
    )
