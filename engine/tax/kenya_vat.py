"""Kenya VAT on an eTIMS sale: pure, table-driven by the tax type of each line.

Facts (/work/shared/reference/kenya-etims.md, "Tax types" and "saveTrnsSalesOsdc"; VAT Act 2013 and
its schedules): eTIMS knows five tax types, A exempt 0%, B standard 16%, C zero-rated 0%, D non-VAT
0%, E reduced 8%. Several SDKs get the letters wrong, so the rates actually used come from KRA's own
code list (class 04, synced into ``etims_tax_rates``) and :data:`DEFAULT_RATES` only fills a type
that has not been synced yet. Amounts have 2 decimals, rounded half up.

Per line: ``supply = unit_price x quantity`` (before discount, eTIMS' splyAmt), ``taxable = supply -
discount`` (taxblAmt), ``tax = round_half_up(taxable x rate / 100)`` (taxAmt), ``total = taxable +
tax`` (totAmt). Unit prices are tax-exclusive by default, as Odoo and Navari send them; with
``prices_include_tax`` the price is the gross and the taxable amount is backed out of it
(``taxable = round_half_up(gross x 100 / (100 + rate))``, ``tax = gross - taxable``), so the total
is exactly what the customer was quoted.

The per-type breakdown (taxblAmtA..E, taxRtA..E, taxAmtA..E of the sale) sums the lines' amounts, so
it always agrees with the lines; every type A-E is listed, unused ones with zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType

from engine.tax.errors import TaxRuleError, Violation
from engine.tax.limits import MAX_INVOICE_AMOUNT, MAX_LINE_AMOUNT

TAX_TYPES = ("A", "B", "C", "D", "E")
TAX_TYPE_NAMES: Mapping[str, str] = MappingProxyType(
    {"A": "Exempt", "B": "Standard rate", "C": "Zero-rated", "D": "Non-VAT", "E": "Reduced rate"}
)
DEFAULT_RATES: Mapping[str, Decimal] = MappingProxyType(
    {"A": Decimal("0"), "B": Decimal("16"), "C": Decimal("0"), "D": Decimal("0"), "E": Decimal("8")}
)
CENT = Decimal("0.01")
HUNDRED = Decimal("100")


def round_half_up(value: Decimal) -> Decimal:
    """To 2 decimals, halves away from zero (eTIMS' rounding; Python's default is banker's)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def effective_rates(synced: Mapping[str, Decimal] | None = None) -> dict[str, Decimal]:
    """The synced class-04 rates, each missing type filled from :data:`DEFAULT_RATES`."""
    rates = dict(DEFAULT_RATES)
    for tax_type, rate in (synced or {}).items():
        if tax_type in rates:
            rates[tax_type] = Decimal(rate)
    return rates


@dataclass(frozen=True)
class SaleLine:
    """One line as the seller sends it."""

    item_code: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    tax_type: str
    discount: Decimal = Decimal("0")


@dataclass(frozen=True)
class LineTax:
    line_no: int
    item_code: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal
    tax_type: str
    supply_amount: Decimal
    taxable_amount: Decimal
    tax_rate: Decimal
    tax_amount: Decimal
    total: Decimal


@dataclass(frozen=True)
class TaxTypeTotal:
    tax_type: str
    rate: Decimal
    taxable: Decimal
    tax: Decimal


@dataclass(frozen=True)
class SaleTax:
    lines: tuple[LineTax, ...]
    breakdown: tuple[TaxTypeTotal, ...]  # A..E, in that order
    taxable: Decimal
    vat: Decimal
    total: Decimal


def line_tax(line_no: int, line: SaleLine, rate: Decimal, *, prices_include_tax: bool = False) -> LineTax:
    """One line's amounts (no checks: :func:`compute_sale_tax` checks first)."""
    supply = round_half_up(line.unit_price * line.quantity)
    after_discount = supply - line.discount
    if prices_include_tax:
        taxable = round_half_up(after_discount * HUNDRED / (HUNDRED + rate))
        tax = after_discount - taxable
    else:
        taxable = after_discount
        tax = round_half_up(taxable * rate / HUNDRED)
    return LineTax(
        line_no=line_no,
        item_code=line.item_code,
        description=line.description,
        quantity=line.quantity,
        unit_price=line.unit_price,
        discount=line.discount,
        tax_type=line.tax_type,
        supply_amount=supply,
        taxable_amount=taxable,
        tax_rate=rate,
        tax_amount=tax,
        total=taxable + tax,
    )


def _line_violations(index: int, line: SaleLine) -> list[Violation]:
    path = f"lines[{index}]"
    found: list[Violation] = []
    if line.tax_type not in TAX_TYPES:
        found.append(
            Violation(
                f"{path}.tax_type",
                "invalid_tax_type",
                f"{path}.tax_type must be one of A (exempt), B (16%), C (zero-rated), D (non-VAT), E (8%)",
                {"valid": list(TAX_TYPES)},
            )
        )
    if line.quantity <= 0:
        found.append(Violation(f"{path}.quantity", "not_positive", f"{path}.quantity must be above 0"))
    if line.unit_price < 0:
        found.append(Violation(f"{path}.unit_price", "negative", f"{path}.unit_price may not be negative"))
    if line.discount < 0:
        found.append(Violation(f"{path}.discount", "negative", f"{path}.discount may not be negative"))
    if found:
        return found
    supply = line.unit_price * line.quantity
    if supply > MAX_LINE_AMOUNT:
        found.append(
            Violation(
                path,
                "too_large",
                f"{path}: quantity x unit price may be at most {MAX_LINE_AMOUNT}",
                {"limit": str(MAX_LINE_AMOUNT)},
            )
        )
    elif line.discount > round_half_up(supply):
        found.append(
            Violation(
                f"{path}.discount",
                "discount_exceeds_amount",
                f"{path}.discount ({line.discount}) is more than the line's amount ({round_half_up(supply)})",
            )
        )
    return found


def compute_sale_tax(
    lines: Sequence[SaleLine],
    rates: Mapping[str, Decimal] = DEFAULT_RATES,
    *,
    prices_include_tax: bool = False,
) -> SaleTax:
    """Every line's VAT and the sale's totals; TaxRuleError listing every broken rule."""
    violations = [v for i, line in enumerate(lines) for v in _line_violations(i, line)]
    if not lines:
        violations.append(Violation("lines", "no_lines", "a sale needs at least one line"))
    if violations:
        raise TaxRuleError(violations)
    used = effective_rates(rates)
    taxed = tuple(
        line_tax(i + 1, line, used[line.tax_type], prices_include_tax=prices_include_tax)
        for i, line in enumerate(lines)
    )
    breakdown = tuple(
        TaxTypeTotal(
            tax_type=t,
            rate=used[t],
            taxable=sum((x.taxable_amount for x in taxed if x.tax_type == t), Decimal("0.00")),
            tax=sum((x.tax_amount for x in taxed if x.tax_type == t), Decimal("0.00")),
        )
        for t in TAX_TYPES
    )
    taxable = sum((x.taxable_amount for x in taxed), Decimal("0.00"))
    vat = sum((x.tax_amount for x in taxed), Decimal("0.00"))
    total = taxable + vat
    if total > MAX_INVOICE_AMOUNT:
        raise TaxRuleError(
            [
                Violation(
                    "lines",
                    "too_large",
                    f"the sale's total may be at most {MAX_INVOICE_AMOUNT}",
                    {"limit": str(MAX_INVOICE_AMOUNT)},
                )
            ]
        )
    return SaleTax(lines=taxed, breakdown=breakdown, taxable=taxable, vat=vat, total=total)
