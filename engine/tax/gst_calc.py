"""GST on one amount at one rate (``POST /v1/gst/calculate``, seed "College Accounts" 002).

Pure, and the same arithmetic as an invoice line (engine.tax.india_gst): the rate must be a legal GST rate
on the date (engine.tax.rates.valid_rates_on), every amount is rounded half-up to the paisa, and intra-state
tax is split into CGST and SGST of one rounded half each, so the halves are always equal (india-gst.md
notes, sections 1 and 5).

``include_tax``: the amount is what the buyer pays. The tax inside it is ``amount x rate / (100 + rate)``;
each half (or the IGST) is rounded to the paisa and the taxable amount is what remains, so that
``taxable_amount + total_gst == amount`` exactly, as on a tax-inclusive bill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from engine.tax.errors import TaxRuleError, Violation
from engine.tax.rates import GST_START, valid_rates_on
from engine.tax.states import normalise_state

_CENT = Decimal("0.01")
_HUNDRED = Decimal("100")
_ZERO = Decimal("0.00")


@dataclass(frozen=True)
class GstCalculation:
    taxable_amount: Decimal
    cgst: Decimal
    sgst: Decimal
    igst: Decimal
    total_gst: Decimal
    total_amount: Decimal
    gst_rate: Decimal
    intra_state: bool
    supplier_state: str | None
    place_of_supply: str | None


def _round(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def calculate_gst(
    *,
    amount: Decimal,
    gst_rate: Decimal,
    include_tax: bool,
    day: date,
    supplier_state: str | None = None,
    place_of_supply: str | None = None,
) -> GstCalculation:
    """The tax on ``amount`` at ``gst_rate`` on ``day``; raises :class:`TaxRuleError` listing every problem.

    Intra-state (CGST + SGST) when the two states are equal or neither is given; one state alone is refused,
    since the answer would be a guess.
    """
    violations: list[Violation] = []
    if amount < 0:
        violations.append(Violation("amount", "negative_amount", f"amount: {amount} is negative."))
    elif amount != _round(amount):
        violations.append(
            Violation(
                "amount",
                "too_many_decimal_places",
                f"amount: {amount} has more than 2 decimal places; amounts are in rupees and paise.",
            )
        )
    if day < GST_START:
        violations.append(
            Violation(
                "date",
                "before_gst",
                f"date: {day.isoformat()} is before GST began on {GST_START.isoformat()}.",
                {"earliest": GST_START.isoformat()},
            )
        )
    else:
        valid = valid_rates_on(day)
        if gst_rate not in valid:
            violations.append(
                Violation(
                    "gst_rate",
                    "rate_not_valid_on_date",
                    f"gst_rate: {gst_rate}% is not a GST rate on {day.isoformat()}; valid rates are "
                    f"{', '.join(str(r) for r in valid)}.",
                    {"valid_rates": [str(r) for r in valid], "date": day.isoformat()},
                )
            )
    supplier = _state(supplier_state, "supplier_state", violations)
    pos = _state(place_of_supply, "place_of_supply", violations)
    if (supplier_state is None) != (place_of_supply is None):
        missing = "place_of_supply" if place_of_supply is None else "supplier_state"
        violations.append(
            Violation(
                missing,
                "state_missing",
                f"{missing}: send both supplier_state and place_of_supply (inter-state supplies pay IGST, "
                "intra-state CGST and SGST), or neither for an intra-state calculation.",
            )
        )
    if violations:
        raise TaxRuleError(violations)

    intra = supplier == pos  # both None: intra-state, as the seed's example
    if include_tax:
        tax = amount * gst_rate / (_HUNDRED + gst_rate)
        if intra:
            cgst = sgst = _round(tax / 2)
            igst = _ZERO
        else:
            cgst = sgst = _ZERO
            igst = _round(tax)
        total_gst = cgst + sgst + igst
        taxable = amount - total_gst
        total = amount
    else:
        taxable = amount
        if intra:
            cgst = sgst = _round(taxable * gst_rate / 2 / _HUNDRED)
            igst = _ZERO
        else:
            cgst = sgst = _ZERO
            igst = _round(taxable * gst_rate / _HUNDRED)
        total_gst = cgst + sgst + igst
        total = taxable + total_gst
    return GstCalculation(
        taxable_amount=_round(taxable),
        cgst=cgst,
        sgst=sgst,
        igst=igst,
        total_gst=total_gst,
        total_amount=_round(total),
        gst_rate=gst_rate,
        intra_state=intra,
        supplier_state=supplier,
        place_of_supply=pos,
    )


def _state(value: str | None, path: str, violations: list[Violation]) -> str | None:
    if value is None:
        return None
    try:
        return normalise_state(value, path)
    except TaxRuleError as exc:
        violations.extend(exc.violations)
        return None
