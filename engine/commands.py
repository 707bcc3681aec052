"""Commands upstream systems send, as pydantic models: the contract of ``POST /v1/invoices`` and of
the ``ingest.invoice.v1`` topic (whose body is the same JSON).

Validation here is about shape (types, lengths, digits); tax rules are checked by the pure code in
``engine/tax`` and reported with the same field paths.
"""

from __future__ import annotations

import hashlib
from datetime import date as date_type
from decimal import Decimal
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from engine.fields import IsoDate, SafeStr, ceiling, decimal_places, text
from engine.tax.limits import MAX_LINE_AMOUNT, MAX_QUANTITY, MAX_UNIT_PRICE

# Every str field is a SafeStr: control characters, line breaks and lone surrogates are refused
# (docs/validation.md); none of today's fields needs a newline.
Text = Annotated[SafeStr, text(min_length=1, max_length=200)]
# Quantities and unit prices carry 3 decimals on the IRP; money amounts 2. Amounts are plain ASCII
# decimals (string or JSON number) bounded by the IRP's own ceilings (engine/tax/limits.py), which
# also keeps a hostile "1e999999" from turning into a giant Decimal computation.
MAX_RATE = Decimal("100")
Quantity = Annotated[Decimal, decimal_places(MAX_QUANTITY, 3), ceiling(MAX_QUANTITY, "a quantity")]
UnitPrice = Annotated[Decimal, decimal_places(MAX_UNIT_PRICE, 3), ceiling(MAX_UNIT_PRICE, "a unit price")]
Money = Annotated[Decimal, decimal_places(MAX_LINE_AMOUNT, 2), ceiling(MAX_LINE_AMOUNT, "a line amount")]
Rate = Annotated[Decimal, decimal_places(MAX_RATE, 3), ceiling(MAX_RATE, "a rate in percent")]


class Address(BaseModel):
    model_config = ConfigDict(extra="ignore")

    line1: Text
    line2: Annotated[SafeStr, text(max_length=200, strip=False)] | None = None
    city: Text
    pincode: Annotated[SafeStr, text(max_length=6, pattern=r"^[1-9][0-9]{5}$", strip=False)] | None = None


class Party(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Text
    gstin: Annotated[SafeStr, text(max_length=20)] | None = None
    state: Annotated[SafeStr, text(min_length=1, max_length=3)]
    address: Address | None = None


SupplyCategory = Literal["taxable", "nil", "exempt", "non_gst"]
# A GSTIN as typed (spaces and hyphens allowed); engine.tax.gstin decides whether it is one.
GstinText = Annotated[SafeStr, text(max_length=20)]


class ExportDetails(BaseModel):
    """Shipping bill of an export (IRP ExpDtls; GSTR-1 exp: sbnum, sbdt, sbpcode). Each part may come
    later than the invoice (the shipping bill is filed after it), so each is optional."""

    model_config = ConfigDict(extra="ignore")

    # GSTR-1's offline tool takes shipping bill numbers as digits; the IRP allows up to 20 characters.
    shipping_bill_number: Annotated[SafeStr, text(max_length=20, pattern=r"^[0-9]{1,20}$")] | None = None
    shipping_bill_date: IsoDate | None = None
    # Customs port codes are six characters, e.g. INBOM4 (GSTR-1 sbpcode).
    port_code: Annotated[SafeStr, text(max_length=6, pattern=r"^[A-Za-z0-9]{6}$")] | None = None


class InvoiceLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    description: Text
    hsn: Annotated[SafeStr, text(min_length=1, max_length=10)]
    quantity: Quantity
    unit: Annotated[SafeStr, text(min_length=1, max_length=8)]
    unit_price: UnitPrice
    discount: Money = Decimal("0")
    gst_rate: Rate | None = None
    gst_rate_reason: Annotated[SafeStr, text(max_length=200, strip=False)] | None = None
    # What GSTR-1 reports the line under: taxable, or the "nil" table's nil-rated, exempt and
    # non-GST columns (india-gst.md section 2, nil: nil_amt, expt_amt, ngsup_amt). Those carry no tax.
    supply_category: SupplyCategory = "taxable"


SupplyTypeCode = Literal["B2B", "B2C", "SEZWP", "SEZWOP", "EXPWP", "EXPWOP"]


class IssueInvoice(BaseModel):
    """Issue a GST invoice. Extra optional fields are ignored so upstream systems can send more."""

    model_config = ConfigDict(extra="ignore")

    number: Annotated[SafeStr, text(max_length=16, pattern=r"^[A-Za-z1-9][A-Za-z0-9/-]{0,15}$")]
    date: IsoDate
    buyer: Party
    place_of_supply: Annotated[SafeStr, text(max_length=3)] | None = None
    supply_type: SupplyTypeCode | None = None
    lines: Annotated[list[InvoiceLine], Field(min_length=1, max_length=1000)]
    # Issue 11 (GSTR-1 fields): tax payable by the recipient, the e-commerce operator the supply
    # went through, the shipping bill of an export.
    reverse_charge: bool = False
    ecommerce_gstin: GstinText | None = None
    export: ExportDetails | None = None

    def fingerprint(self) -> str:
        """A hash of the command's meaning, to tell a retried request from a different one.

        The fields added with issue 11 count only when they differ from their defaults, so a
        command without them hashes as it did before (a retry across an upgrade is still a retry)."""
        data = self.model_dump(mode="json")
        for name, default in _ISSUE11_DEFAULTS.items():
            if data.get(name) == default:
                data.pop(name)
        for line in data["lines"]:
            if line.get("supply_category") == "taxable":
                line.pop("supply_category")
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


_ISSUE11_DEFAULTS: dict[str, object] = {"reverse_charge": False, "ecommerce_gstin": None, "export": None}


CancellationReason = Literal["duplicate", "data_entry_mistake", "order_cancelled", "other"]


class CancelInvoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: CancellationReason
    remark: Annotated[SafeStr, text(max_length=100, strip=False)] | None = None


# -- Kenya (eTIMS) ---------------------------------------------------------------------------------
# A Kenyan tenant's POST /v1/invoices body (and its ingest.invoice.v1 command): the same endpoint,
# validated by the tenant's country (LedgerService.parse_issue_command). Fields per KRA's
# saveTrnsSalesOsdc (/work/shared/reference/kenya-etims.md); Indian HSN/GST fields are not asked for.

KraPinText = Annotated[SafeStr, text(min_length=1, max_length=20)]
# KRA's item codes look like KE1NTXU0000001 (country, item type, packaging and quantity units, a
# sequence); KRA's own field (itemCd) is at most 20 characters.
ItemCode = Annotated[SafeStr, text(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9-]+$")]
# KRA's branch ids (bhfId) are two digits ("00" head office, "01"...), never assumed to be "00".
BranchId = Annotated[SafeStr, text(min_length=2, max_length=2, pattern=r"^[0-9]{2}$")]
KenyaPhone = Annotated[SafeStr, text(max_length=32, pattern=r"^\+?[0-9][0-9 -]{5,30}$")]
TaxType = Literal["A", "B", "C", "D", "E"]
# KRA payment types (code class 07): 01 cash, 02 credit, 03 cash/credit, 04 cheque, 05 card,
# 06 mobile money, 07 other.
PaymentType = Literal["01", "02", "03", "04", "05", "06", "07"]
KenyaInvoiceNumber = Annotated[SafeStr, text(max_length=50, pattern=r"^[A-Za-z0-9][A-Za-z0-9/_-]{0,49}$")]


class KenyanBuyer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Text
    kra_pin: KraPinText | None = None
    phone: KenyaPhone | None = None


class KenyanInvoiceLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    item_code: ItemCode
    description: Text
    quantity: Quantity
    unit_price: UnitPrice
    discount: Money = Decimal("0")
    tax_type: TaxType


class IssueKenyanInvoice(BaseModel):
    """Issue a Kenyan sale (reported to KRA's eTIMS). Extra optional fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    number: KenyaInvoiceNumber
    date: IsoDate
    buyer: KenyanBuyer
    currency: Literal["KES"] = "KES"
    payment_type: PaymentType = "01"
    branch_id: BranchId | None = None
    prices_include_tax: bool = False
    lines: Annotated[list[KenyanInvoiceLine], Field(min_length=1, max_length=1000)]

    def fingerprint(self) -> str:
        return hashlib.sha256(
            orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()


class CreditNoteLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    line_no: Annotated[int, Field(ge=1, le=1000)]
    quantity: Quantity
    unit_price: UnitPrice | None = None  # default: the original line's
    discount: Money = Decimal("0")


class IssueCreditNote(BaseModel):
    """``POST /v1/invoices/{id}/credit-notes``: take back (part of) a Kenyan invoice."""

    model_config = ConfigDict(extra="ignore")

    number: KenyaInvoiceNumber
    date: IsoDate | None = None  # default: today in Nairobi
    # KRA's refund reason codes (code class 32) are two-digit codes ("01" ... ); the list is synced,
    # so only the shape is checked here.
    refund_reason_code: Annotated[SafeStr, text(min_length=1, max_length=5, pattern=r"^[0-9A-Za-z]+$")]
    payment_type: PaymentType | None = None  # default: the original's
    lines: Annotated[list[CreditNoteLine], Field(min_length=1, max_length=1000)]

    def fingerprint(self) -> str:
        return hashlib.sha256(
            orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()


# -- India: credit and debit notes (CGST Act s.34) ----------------------------------------------

# Reasons as GSTR-1's offline tool listed them for notes (the values are ours, snake case).
NoteReason = Literal[
    "sales_return",
    "post_sale_discount",
    "deficiency_in_services",
    "correction_in_invoice",
    "change_in_pos",
    "finalization_of_provisional_assessment",
    "others",
]


class IssueGstNote(BaseModel):
    """``POST /v1/invoices/{id}/credit-notes`` or ``/debit-notes`` of an Indian tenant: a note
    against an issued invoice, line by line. Amounts are positive; the document type says which way
    they go. Each line keeps its original line's rate and tax split."""

    model_config = ConfigDict(extra="ignore")

    number: Annotated[SafeStr, text(max_length=16, pattern=r"^[A-Za-z1-9][A-Za-z0-9/-]{0,15}$")]
    date: IsoDate | None = None  # default: today in India
    reason: NoteReason
    lines: Annotated[list[CreditNoteLine], Field(min_length=1, max_length=1000)]

    def fingerprint(self) -> str:
        return hashlib.sha256(
            orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()


# -- Drafts (issue 13) -----------------------------------------------------------------------------


class DraftInvoice(BaseModel):
    """A draft GST invoice (``POST /v1/invoices/drafts``): IssueInvoice's fields without the number,
    which the tenant's series gives when the draft is issued; ``date`` defaults to today in India."""

    model_config = ConfigDict(extra="ignore")

    date: IsoDate | None = None
    buyer: Party
    place_of_supply: Annotated[SafeStr, text(max_length=3)] | None = None
    supply_type: SupplyTypeCode | None = None
    lines: Annotated[list[InvoiceLine], Field(min_length=1, max_length=1000)]
    reverse_charge: bool = False
    ecommerce_gstin: GstinText | None = None
    export: ExportDetails | None = None

    def fingerprint(self) -> str:
        """A hash of the draft's meaning, to tell a retried request from a different one."""
        return hashlib.sha256(
            orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()

    def as_invoice(self, number: str, day: date_type) -> IssueInvoice:
        """The IssueInvoice this draft becomes with ``number``, dated ``day``."""
        return IssueInvoice.model_validate(
            {**self.model_dump(mode="json"), "number": number, "date": day.isoformat()}
        )
