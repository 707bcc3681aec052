"""Our documents -> Tally vouchers (pure). docs/tally.md is the accountant's version of this map.

* invoice issued (``document_type`` invoice) -> Sales: debit the party (the buyer) with the total;
  credit sales with the taxable value and each output tax ledger (CGST, SGST, IGST, cess) with its tax;
* credit note issued -> Credit Note: the Sales voucher's mirror (sales and output taxes debited back,
  the party credited);
* payment captured (``ledger.payment.v1``) -> Receipt: debit the bank, credit the party (the buyer of
  the invoice the payment names, else the debtors ledger);
* expense approved (``ledger.expense.v1``) -> Purchase: the vendor's bill booked, debit the category's
  expense ledger, credit the vendor's ledger;
* expense paid -> Payment: debit the vendor's ledger with the expense amount, credit the bank with what
  was paid and TDS payable with the tax deducted at source.

Ledger names come from the tenant's ledger map (``PUT /v1/tally/ledger-map``): roles such as ``bank``
or ``sales`` name a ledger of the tenant's Tally company, and ``party:<buyer name>`` names the ledger of
one customer (else the ``debtors`` role's ledger takes every customer). A role a voucher needs and the
map lacks stops the job for a person (:class:`LedgerNotMapped`): guessing a ledger would post the money
to the wrong account.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from connectors.tally.vouchers import CENT, Leg, Voucher, VoucherRefused, check_name, remote_id

ROLES: dict[str, str] = {
    "bank": "the bank (or cash) ledger receipts are debited to",
    "sales": "the sales ledger an invoice's taxable value is credited to",
    "output_cgst": "output CGST",
    "output_sgst": "output SGST (or UTGST)",
    "output_igst": "output IGST",
    "output_cess": "output compensation cess",
    "debtors": "the party ledger of every customer without a party:<name> entry",
    "expenses": "the expense ledger of every expense category without an expense:<category> entry",
    "creditors": "the party ledger of every vendor without a vendor:<name> entry",
    "tds_payable": "the TDS payable ledger credited with tax deducted from a vendor payment",
}
PARTY_PREFIX = "party:"
VENDOR_PREFIX = "vendor:"
EXPENSE_PREFIX = "expense:"
NAMED_PREFIXES = (PARTY_PREFIX, VENDOR_PREFIX, EXPENSE_PREFIX)
_ROLE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
TAX_ROLES = (
    ("cgst", "output_cgst"),
    ("sgst", "output_sgst"),
    ("igst", "output_igst"),
    ("cess", "output_cess"),
)


class LedgerNotMapped(ValueError):
    """The voucher needs a ledger role the tenant's map does not name."""

    def __init__(self, role: str) -> None:
        super().__init__(
            f"the Tally ledger map has no ledger for {role!r}: set it with PUT /v1/tally/ledger-map"
        )
        self.role = role


def check_role(role: str) -> str:
    """A key of the ledger map: one of :data:`ROLES`, or ``party:<customer>``, ``vendor:<vendor>``,
    ``expense:<category>``."""
    for prefix in NAMED_PREFIXES:
        if role.startswith(prefix):
            check_name(role[len(prefix) :], prefix[:-1])
            return role
    if role in ROLES or _ROLE.match(role):
        return role
    raise VoucherRefused("bad_role", f"{role[:40]!r} is not a ledger role (see GET /v1/tally/ledger-map)")


@dataclass(frozen=True)
class LedgerMap:
    ledgers: Mapping[str, str]

    def ledger(self, role: str) -> str:
        name = self.ledgers.get(role)
        if not name:
            raise LedgerNotMapped(role)
        return name

    def party(self, name: str | None) -> str:
        """The customer's own ledger if mapped, else the ``debtors`` role's."""
        if name and (own := self.ledgers.get(PARTY_PREFIX + name)):
            return own
        return self.ledger("debtors")

    def vendor(self, name: str | None) -> str:
        """The vendor's own ledger if mapped, else the ``creditors`` role's."""
        if name and (own := self.ledgers.get(VENDOR_PREFIX + name)):
            return own
        return self.ledger("creditors")

    def expense(self, category: str | None) -> str:
        """The category's expense ledger if mapped, else the ``expenses`` role's."""
        if category and (own := self.ledgers.get(EXPENSE_PREFIX + category)):
            return own
        return self.ledger("expenses")


def _money(value: Any) -> Decimal:
    return Decimal(str(value if value is not None else "0")).quantize(CENT)


def _day(value: Any) -> date:
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _tax_legs(record: Mapping[str, Any], ledgers: LedgerMap, side: str) -> list[Leg]:
    totals = record.get("totals") or {}
    legs = []
    for tax, role in TAX_ROLES:
        amount = _money(totals.get(tax))
        if amount > 0:
            legs.append(Leg(ledgers.ledger(role), side, amount))  # type: ignore[arg-type]
    return legs


def sales_voucher(tenant_id: str, record: Mapping[str, Any], ledgers: LedgerMap) -> Voucher:
    """An issued invoice (its ``ledger.invoice.v1`` record) as a Sales voucher: the buyer owes the
    total; sales takes the taxable value and each output tax ledger its tax."""
    buyer = dict(record.get("buyer") or {})
    party = ledgers.party(buyer.get("name"))
    totals = record.get("totals") or {}
    legs = [
        Leg(party, "debit", _money(totals.get("total"))),
        Leg(ledgers.ledger("sales"), "credit", _money(totals.get("taxable"))),
        *_tax_legs(record, ledgers, "credit"),
    ]
    return Voucher(
        voucher_type="Sales",
        remote_id=remote_id(tenant_id, f"invoice:{record['invoice_id']}"),
        day=_day(record["date"]),
        legs=tuple(legs),
        number=str(record["number"]),
        reference=str(record["number"]),
        party_ledger=party,
        narration=f"Invoice {record['number']} to {buyer.get('name') or ''}".strip(),
    )


def credit_note_voucher(tenant_id: str, record: Mapping[str, Any], ledgers: LedgerMap) -> Voucher:
    """A credit note as Tally's Credit Note voucher, the Sales voucher's mirror: sales and the output
    taxes are debited back, the buyer's ledger credited."""
    buyer = dict(record.get("buyer") or {})
    party = ledgers.party(buyer.get("name"))
    totals = record.get("totals") or {}
    legs = [
        Leg(ledgers.ledger("sales"), "debit", _money(totals.get("taxable"))),
        *_tax_legs(record, ledgers, "debit"),
        Leg(party, "credit", _money(totals.get("total"))),
    ]
    original = record.get("original_number") or ""
    return Voucher(
        voucher_type="Credit Note",
        remote_id=remote_id(tenant_id, f"credit_note:{record['invoice_id']}"),
        day=_day(record["date"]),
        legs=tuple(legs),
        number=str(record["number"]),
        reference=str(original or record["number"]),
        party_ledger=party,
        narration=f"Credit note {record['number']} against {original}".strip(),
    )


def receipt_voucher(tenant_id: str, payment: Mapping[str, Any], ledgers: LedgerMap) -> Voucher:
    """A captured payment as a Receipt voucher: the bank is debited, the paying customer credited.

    ``payment``: ``payment_id``, ``amount``, ``paid_at`` (datetime or epoch ms), ``provider_payment_id``,
    and when known ``invoice_number`` and ``party_name`` (the invoice's buyer).
    """
    party = ledgers.party(payment.get("party_name"))
    amount = _money(payment["amount"])
    paid_at = payment["paid_at"]
    if not isinstance(paid_at, datetime):
        paid_at = datetime.fromtimestamp(int(paid_at) / 1000, UTC)
    invoice = payment.get("invoice_number")
    return Voucher(
        voucher_type="Receipt",
        remote_id=remote_id(tenant_id, f"receipt:{payment['payment_id']}"),
        day=paid_at.date(),
        legs=(Leg(ledgers.ledger("bank"), "debit", amount), Leg(party, "credit", amount)),
        reference=str(invoice) if invoice else str(payment.get("provider_payment_id") or ""),
        party_ledger=party,
        narration=(
            f"Payment {payment.get('provider_payment_id') or ''}"
            + (f" for invoice {invoice}" if invoice else "")
        ),
    )


def purchase_voucher(tenant_id: str, expense: Mapping[str, Any], ledgers: LedgerMap) -> Voucher:
    """An approved expense as a Purchase voucher: the vendor's bill booked against the category.

    ``expense``: ``expense_id``, ``expense_number``, ``amount``, ``category``, ``expense_date``,
    ``vendor_name``, ``description``.
    """
    vendor = ledgers.vendor(expense.get("vendor_name"))
    amount = _money(expense["amount"])
    return Voucher(
        voucher_type="Purchase",
        remote_id=remote_id(tenant_id, f"expense:{expense['expense_id']}"),
        day=_day(expense["expense_date"]),
        legs=(
            Leg(ledgers.expense(expense.get("category")), "debit", amount),
            Leg(vendor, "credit", amount),
        ),
        number=str(expense["expense_number"]),
        reference=str(expense["expense_number"]),
        party_ledger=vendor,
        narration=f"{expense['expense_number']}: {expense.get('description') or ''}".strip(),
    )


def payment_voucher(tenant_id: str, expense: Mapping[str, Any], ledgers: LedgerMap) -> Voucher:
    """A paid expense as a Payment voucher: the vendor's ledger is debited with the whole amount; the
    bank is credited with what left it and TDS payable with the tax deducted (Income-tax Act: the
    payer deducts and owes it to the government, docs/tds.md).

    ``expense``: as for :func:`purchase_voucher`, plus ``paid_on``, ``payment_reference`` and
    ``tds_deducted`` (None or 0: no deduction).
    """
    vendor = ledgers.vendor(expense.get("vendor_name"))
    amount = _money(expense["amount"])
    tds = _money(expense.get("tds_deducted"))
    legs = [Leg(vendor, "debit", amount), Leg(ledgers.ledger("bank"), "credit", amount - tds)]
    if tds > 0:
        legs.append(Leg(ledgers.ledger("tds_payable"), "credit", tds))
    reference = str(expense.get("payment_reference") or expense["expense_number"])
    return Voucher(
        voucher_type="Payment",
        remote_id=remote_id(tenant_id, f"expense_payment:{expense['expense_id']}"),
        day=_day(expense["paid_on"]),
        legs=tuple(legs),
        reference=reference,
        party_ledger=vendor,
        narration=f"Payment of {expense['expense_number']} ({reference})",
    )
