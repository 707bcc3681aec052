"""GST on an Indian invoice: rate per line from the effective-dated master, CGST/SGST or IGST, cess.

Pure: same inputs, same result, no I/O. The arithmetic mirrors what the e-invoice portal (IRP) checks
(india-gst.md notes, section 1):

* ``AssAmt = TotAmt - Discount``; each amount is rounded to 2 decimal places (ROUND_HALF_UP);
* intra-state: CGST = SGST = AssAmt x GstRt / 2, computed once and used for both halves so they are
  always equal; inter-state, SEZ and exports: IGST = AssAmt x GstRt (section 5: SEZ and exports are
  inter-state supplies under the IGST Act, s.7(5));
* ``TotItemVal = AssAmt + taxes + cess`` and every invoice total is the sum of the line values. Rounding
  each line and summing (rather than rounding the invoice total) is what makes ValDtls equal the sum of
  ItemList values, which the IRP validates; india-compliance issue #655 was this mismatch.

Exports and SEZ supplies made under a letter of undertaking ("without payment") are zero-rated: the rate
is still reported but no tax or cess is charged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from engine.tax.errors import TaxRuleError, Violation
from engine.tax.limits import LIMITS, MAX_INVOICE_AMOUNT, MAX_LINE_AMOUNT, MAX_QUANTITY, MAX_UNIT_PRICE
from engine.tax.rates import master_cess_rate, master_rate, no_master_rate, valid_rates_on
from engine.tax.states import normalise_state

MAX_LINES = 1000
"""The IRP rejects an e-invoice with more than 1000 items (ItemList maxItems)."""

GST_START = date(2017, 7, 1)
"""GST replaced the earlier indirect taxes on 1 July 2017 (CGST Act 2017, s.1(3), notification 9/2017-CT):
there is no GST invoice dated before it."""

IST = timezone(timedelta(hours=5, minutes=30), "IST")
"""India Standard Time: one zone for the whole country, no daylight saving."""

_HSN = re.compile(r"[0-9]{4}|[0-9]{6}|[0-9]{8}")
_ZERO = Decimal("0")
_CENT = Decimal("0.01")
_HUNDRED = Decimal("100")


class SupplyType(StrEnum):
    """Supply type, with the IRP ``SupTyp`` codes as values (B2C has no e-invoice but is taxed the same)."""

    B2B = "B2B"
    B2C = "B2C"
    SEZ_WITH_PAYMENT = "SEZWP"
    SEZ_WITHOUT_PAYMENT = "SEZWOP"
    EXPORT_WITH_PAYMENT = "EXPWP"
    EXPORT_WITHOUT_PAYMENT = "EXPWOP"


_ZERO_RATED = frozenset(
    {
        SupplyType.SEZ_WITH_PAYMENT,
        SupplyType.SEZ_WITHOUT_PAYMENT,
        SupplyType.EXPORT_WITH_PAYMENT,
        SupplyType.EXPORT_WITHOUT_PAYMENT,
    }
)
_WITHOUT_PAYMENT = frozenset({SupplyType.SEZ_WITHOUT_PAYMENT, SupplyType.EXPORT_WITHOUT_PAYMENT})


@dataclass(frozen=True)
class LineInput:
    description: str
    hsn: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    discount: Decimal = Decimal("0")
    gst_rate: Decimal | None = None
    """Explicit combined rate; overrides the master (and is required when the HSN is not in it)."""
    gst_rate_reason: str | None = None
    supply_category: str = "taxable"
    """``taxable``, or ``nil`` / ``exempt`` / ``non_gst``: supplies that carry no GST (no rate, no cess)
    and that GSTR-1 reports in its ``nil`` table instead."""


UNTAXED_CATEGORIES = frozenset({"nil", "exempt", "non_gst"})


@dataclass(frozen=True)
class LineTax:
    line_no: int
    """1-based, as the IRP's SlNo."""
    description: str
    hsn: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    discount: Decimal
    taxable_value: Decimal
    gst_rate: Decimal
    rate_source: str
    """``"master"``, ``"override"``, or ``"supply_category"`` (a nil, exempt or non-GST line: rate 0)."""
    master_rate: Decimal | None
    override_reason: str | None
    cgst: Decimal
    sgst: Decimal
    igst: Decimal
    cess_rate: Decimal
    cess: Decimal
    total: Decimal
    supply_category: str = "taxable"


@dataclass(frozen=True)
class InvoiceTax:
    supply_type: SupplyType
    intra_state: bool
    place_of_supply: str
    lines: tuple[LineTax, ...]
    taxable: Decimal
    cgst: Decimal
    sgst: Decimal
    igst: Decimal
    cess: Decimal
    total: Decimal


def financial_year(day: date) -> str:
    """Indian financial year (April-March) of ``day`` as the IRN uses it: ``"2025-26"``."""
    start = day.year if day.month >= 4 else day.year - 1
    return f"{start}-{(start + 1) % 100:02d}"


def today_in_india(now: datetime) -> date:
    """The calendar date in India at ``now`` (an aware datetime). Invoice dates are Indian calendar
    dates: from midnight to 05:30 IST the UTC date is still the day before, and an invoice dated
    today would look future-dated if "today" were taken in UTC."""
    return now.astimezone(IST).date()


def check_invoice_date(invoice_date: date, *, today: date, max_future_days: int) -> list[Violation]:
    """The invoice date's violations: before GST began, or more than ``max_future_days`` after ``today``
    (the date in India). The e-invoice portal refuses future-dated documents; an upstream that sends
    them usually has a wrong clock or a typo in the year."""
    if invoice_date < GST_START:
        return [
            Violation(
                "date",
                "before_gst",
                f"date: {invoice_date.isoformat()} is before GST began on {GST_START.isoformat()}.",
                {"earliest": GST_START.isoformat()},
            )
        ]
    latest = today + timedelta(days=max_future_days)
    if invoice_date > latest:
        return [
            Violation(
                "date",
                "date_in_future",
                f"date: {invoice_date.isoformat()} is in the future; the latest accepted invoice date "
                f"is {latest.isoformat()} (today in India plus {max_future_days} day(s)).",
                {"latest": latest.isoformat(), "today": today.isoformat()},
            )
        ]
    return []


def compute_invoice_tax(
    *,
    invoice_date: date,
    seller_state: str,
    place_of_supply: str,
    lines: Sequence[LineInput],
    supply_type: SupplyType = SupplyType.B2B,
) -> InvoiceTax:
    """Compute the GST of an invoice, or raise :class:`TaxRuleError` listing every violation found."""
    violations: list[Violation] = []
    seller = _state(seller_state, "seller_state", violations)
    pos = _state(place_of_supply, "place_of_supply", violations)
    if not lines:
        violations.append(Violation("lines", "no_lines", "lines: an invoice needs at least one line."))
    elif len(lines) > MAX_LINES:
        violations.append(
            Violation(
                "lines",
                "too_many_lines",
                f"lines: {len(lines)} lines exceed the e-invoice limit of {MAX_LINES}; split the invoice.",
                {"count": len(lines), "max": MAX_LINES},
            )
        )
    supply_type = SupplyType(supply_type)
    intra_state = seller is not None and seller == pos and supply_type not in _ZERO_RATED
    computed = [
        (_untaxed_line if line.supply_category in UNTAXED_CATEGORIES else _line)(
            index, line, invoice_date, intra_state, supply_type, violations
        )
        for index, line in enumerate(lines[:MAX_LINES])
    ]
    if violations:
        raise TaxRuleError(violations)
    taxed = tuple(line for line in computed if line is not None)
    assert pos is not None  # no violations, so the place of supply was normalised
    total = sum((t.total for t in taxed), _ZERO)
    # Every amount is non-negative and at most the total, so this one check bounds them all.
    if total > MAX_INVOICE_AMOUNT:
        raise TaxRuleError(
            [
                Violation(
                    "lines",
                    "invoice_amount_too_large",
                    f"lines: the invoice total {total} exceeds the limit of {MAX_INVOICE_AMOUNT}; "
                    f"split the invoice. Limits: {_limits_text()}.",
                    {"amount": str(total), "limits": dict(LIMITS)},
                )
            ]
        )
    return InvoiceTax(
        supply_type=supply_type,
        intra_state=intra_state,
        place_of_supply=pos,
        lines=taxed,
        taxable=sum((t.taxable_value for t in taxed), _ZERO),
        cgst=sum((t.cgst for t in taxed), _ZERO),
        sgst=sum((t.sgst for t in taxed), _ZERO),
        igst=sum((t.igst for t in taxed), _ZERO),
        cess=sum((t.cess for t in taxed), _ZERO),
        total=total,
    )


def _limits_text() -> str:
    return (
        f"quantity <= {MAX_QUANTITY}, unit_price <= {MAX_UNIT_PRICE}, each line's amounts and total "
        f"<= {MAX_LINE_AMOUNT}, the invoice's totals <= {MAX_INVOICE_AMOUNT}"
    )


def _too_large(path: str, code: str, what: str, amount: Decimal, limit: Decimal) -> Violation:
    return Violation(
        path,
        code,
        f"{path}: {what} {amount} exceeds the limit of {limit} (every limit: details.limits).",
        {"amount": str(amount), "limit": str(limit), "limits": dict(LIMITS)},
    )


def _round(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def _state(value: str, path: str, violations: list[Violation]) -> str | None:
    try:
        return normalise_state(value, path)
    except TaxRuleError as exc:
        violations.extend(exc.violations)
        return None


def _untaxed_line(
    index: int,
    line: LineInput,
    invoice_date: date,
    intra_state: bool,
    supply_type: SupplyType,
    violations: list[Violation],
) -> LineTax | None:
    """A nil-rated, exempt or non-GST line: checked like any line (HSN, amounts) but taxed at 0, with
    no cess. Any other rate on it is a contradiction the caller must resolve, not something to pick."""
    at = f"lines[{index}]"
    if line.gst_rate is not None and line.gst_rate != _ZERO:
        violations.append(
            Violation(
                f"{at}.gst_rate",
                "rate_on_untaxed_supply",
                f"{at}.gst_rate: a {line.supply_category} line carries no GST; send 0 or leave gst_rate out "
                f"(got {line.gst_rate}%).",
                {"supply_category": line.supply_category},
            )
        )
        return None
    # Rate 0 given explicitly: the master's rate (or the lack of one) does not apply to this supply.
    taxed = _line(index, replace(line, gst_rate=_ZERO), invoice_date, intra_state, supply_type, violations)
    if taxed is None:
        return None
    return replace(
        taxed,
        rate_source="supply_category",
        override_reason=None,
        cgst=_ZERO,
        sgst=_ZERO,
        igst=_ZERO,
        cess_rate=_ZERO,
        cess=_ZERO,
        total=taxed.taxable_value,
        supply_category=line.supply_category,
    )


def _line(
    index: int,
    line: LineInput,
    invoice_date: date,
    intra_state: bool,
    supply_type: SupplyType,
    violations: list[Violation],
) -> LineTax | None:
    """Tax one line, appending its violations; ``None`` when the line has any."""
    at = f"lines[{index}]"
    found: list[Violation] = []
    numbers = {
        "quantity": line.quantity,
        "unit_price": line.unit_price,
        "discount": line.discount,
        **({"gst_rate": line.gst_rate} if line.gst_rate is not None else {}),
    }
    for name, number in numbers.items():
        if not isinstance(number, Decimal) or not number.is_finite():
            found.append(
                Violation(
                    f"{at}.{name}",
                    "invalid_number",
                    f"{at}.{name}: {number!r} is not a finite decimal number.",
                )
            )
    if found:
        violations.extend(found)
        return None

    if line.quantity < 0:
        found.append(
            Violation(f"{at}.quantity", "negative_quantity", f"{at}.quantity: {line.quantity} is negative.")
        )
    elif line.quantity == 0:
        found.append(Violation(f"{at}.quantity", "zero_quantity", f"{at}.quantity must be greater than 0."))
    elif line.quantity > MAX_QUANTITY:
        found.append(_too_large(f"{at}.quantity", "too_large", "the quantity", line.quantity, MAX_QUANTITY))
    if line.unit_price < 0:
        found.append(
            Violation(
                f"{at}.unit_price", "negative_unit_price", f"{at}.unit_price: {line.unit_price} is negative."
            )
        )
    elif line.unit_price > MAX_UNIT_PRICE:
        found.append(
            _too_large(f"{at}.unit_price", "too_large", "the unit price", line.unit_price, MAX_UNIT_PRICE)
        )
    gross = line.quantity * line.unit_price
    if gross > MAX_LINE_AMOUNT:
        found.append(
            _too_large(
                at,
                "line_amount_too_large",
                "the gross amount (quantity x unit_price)",
                gross,
                MAX_LINE_AMOUNT,
            )
        )
    if line.discount < 0:
        found.append(
            Violation(f"{at}.discount", "negative_discount", f"{at}.discount: {line.discount} is negative.")
        )
    elif line.quantity > 0 and line.unit_price >= 0 and line.discount > gross:
        found.append(
            Violation(
                f"{at}.discount",
                "discount_exceeds_gross",
                f"{at}.discount: {line.discount} exceeds the gross amount {gross} (quantity x unit_price).",
                {"gross": str(gross)},
            )
        )

    hsn = line.hsn.strip() if isinstance(line.hsn, str) else ""
    entry = None
    # ASCII digits only: str.isdigit() also takes other scripts' digits ("８５０４").
    if not _HSN.fullmatch(hsn):
        found.append(
            Violation(
                f"{at}.hsn",
                "invalid_hsn",
                f"{at}.hsn: {line.hsn!r} is not an HSN/SAC code of 4, 6 or 8 digits.",
            )
        )
    else:
        entry = master_rate(hsn, invoice_date)
        if entry is None and line.gst_rate is None:
            found.append(no_master_rate(f"{at}.hsn", hsn, invoice_date))

    if line.gst_rate is not None:
        valid = valid_rates_on(invoice_date)
        if line.gst_rate not in valid:
            found.append(
                Violation(
                    f"{at}.gst_rate",
                    "rate_not_valid_on_date",
                    f"{at}.gst_rate: {line.gst_rate}% is not a GST rate on {invoice_date.isoformat()}; "
                    f"valid rates are {', '.join(str(r) for r in valid) or 'none (before GST)'}.",
                    {"valid_rates": [str(r) for r in valid], "date": invoice_date.isoformat()},
                )
            )

    if found:
        violations.extend(found)
        return None

    if line.gst_rate is not None:
        rate, source = line.gst_rate, "override"
    else:
        assert entry is not None  # otherwise unknown_hsn was reported above
        rate, source = entry.gst_rate, "master"
    # The override replaces the GST rate only; compensation cess follows the goods, so it still comes from
    # the master when the HSN is known (also when the master lists several GST rates for it).
    cess_rate = entry.cess_rate if entry is not None else master_cess_rate(hsn, invoice_date)

    taxable = _round(gross - line.discount)
    cgst = sgst = igst = cess = _ZERO
    if supply_type not in _WITHOUT_PAYMENT:
        if intra_state:
            cgst = sgst = _round(taxable * rate / 2 / _HUNDRED)
        else:
            igst = _round(taxable * rate / _HUNDRED)
        cess = _round(taxable * cess_rate / _HUNDRED)
    total = taxable + cgst + sgst + igst + cess
    if total > MAX_LINE_AMOUNT:
        # Taxes can more than double a line (28% GST plus up to 160% cess on tobacco), so a line
        # whose gross fits can still exceed the ceiling once taxed.
        violations.append(
            _too_large(at, "line_amount_too_large", "the line total after tax", total, MAX_LINE_AMOUNT)
        )
        return None
    return LineTax(
        line_no=index + 1,
        description=line.description,
        hsn=hsn,
        quantity=line.quantity,
        unit=line.unit,
        unit_price=line.unit_price,
        discount=line.discount,
        taxable_value=taxable,
        gst_rate=rate,
        rate_source=source,
        master_rate=entry.gst_rate if entry is not None else None,
        override_reason=line.gst_rate_reason if source == "override" else None,
        cgst=cgst,
        sgst=sgst,
        igst=igst,
        cess_rate=cess_rate,
        cess=cess,
        total=total,
    )
