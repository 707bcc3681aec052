"""Kenya VAT per eTIMS tax type (A exempt, B 16%, C zero-rated, D non-VAT, E 8%), 2-dp half-up."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.tax.errors import TaxRuleError
from engine.tax.kenya_vat import (
    DEFAULT_RATES,
    SaleLine,
    compute_sale_tax,
    effective_rates,
    round_half_up,
)

D = Decimal


def line(qty: str, price: str, tax_type: str, discount: str = "0") -> SaleLine:
    return SaleLine("KE1NTXU0000001", "Maize flour 2kg", D(qty), D(price), tax_type, D(discount))


# (quantity, unit price, tax type, discount) -> (supply, taxable, rate, tax, total)
CASES = [
    (("10", "100.00", "A", "0"), ("1000.00", "1000.00", "0", "0.00", "1000.00")),
    (("10", "100.00", "B", "0"), ("1000.00", "1000.00", "16", "160.00", "1160.00")),
    (("10", "100.00", "C", "0"), ("1000.00", "1000.00", "0", "0.00", "1000.00")),
    (("10", "100.00", "D", "0"), ("1000.00", "1000.00", "0", "0.00", "1000.00")),
    (("10", "100.00", "E", "0"), ("1000.00", "1000.00", "8", "80.00", "1080.00")),
    # Discount comes off before tax: taxblAmt is after discount, splyAmt before.
    (("2", "1000.00", "B", "150.00"), ("2000.00", "1850.00", "16", "296.00", "2146.00")),
    # 10.03 x 16% = 1.6048 -> 1.60; 10.05 x 16% = 1.608 -> 1.61
    (("1", "10.03", "B", "0"), ("10.03", "10.03", "16", "1.60", "11.63")),
    (("1", "10.05", "B", "0"), ("10.05", "10.05", "16", "1.61", "11.66")),
    # Half up, not banker's: a supply of 0.125 is 0.13 (ROUND_HALF_EVEN would give 0.12). A tax of
    # 16% or 8% on whole cents never ends in an exact half, so the supply is where it shows.
    (("1", "0.125", "E", "0"), ("0.13", "0.13", "8", "0.01", "0.14")),
    (("3", "0.105", "B", "0"), ("0.32", "0.32", "16", "0.05", "0.37")),
    # Fractional quantity with a 3-decimal price: the supply is rounded half up to cents.
    (("1.5", "33.335", "E", "0"), ("50.00", "50.00", "8", "4.00", "54.00")),
]


@pytest.mark.parametrize(("given", "expected"), CASES, ids=[f"{c[0][2]}-{c[0][1]}x{c[0][0]}" for c in CASES])
def test_each_line_is_taxed_by_its_tax_type(given: tuple[str, ...], expected: tuple[str, ...]) -> None:
    tax = compute_sale_tax([line(*given)])
    (taxed,) = tax.lines
    assert (
        str(taxed.supply_amount),
        str(taxed.taxable_amount),
        str(taxed.tax_rate),
        str(taxed.tax_amount),
        str(taxed.total),
    ) == expected
    assert (tax.taxable, tax.vat, tax.total) == (taxed.taxable_amount, taxed.tax_amount, taxed.total)


def test_round_half_up_rounds_halves_away_from_zero() -> None:
    assert [str(round_half_up(D(x))) for x in ("0.005", "0.015", "0.025", "2.675", "1.994")] == [
        "0.01",
        "0.02",
        "0.03",
        "2.68",
        "1.99",
    ]


def test_the_breakdown_lists_every_tax_type_and_sums_its_lines() -> None:
    tax = compute_sale_tax(
        [line("1", "100", "B"), line("2", "50", "B", "10"), line("1", "200", "E"), line("1", "30", "A")]
    )
    by_type = {b.tax_type: (str(b.rate), str(b.taxable), str(b.tax)) for b in tax.breakdown}
    assert by_type == {
        "A": ("0", "30.00", "0.00"),
        "B": ("16", "190.00", "30.40"),
        "C": ("0", "0.00", "0.00"),
        "D": ("0", "0.00", "0.00"),
        "E": ("8", "200.00", "16.00"),
    }
    assert [b.tax_type for b in tax.breakdown] == ["A", "B", "C", "D", "E"]
    assert (str(tax.taxable), str(tax.vat), str(tax.total)) == ("420.00", "46.40", "466.40")
    assert [x.line_no for x in tax.lines] == [1, 2, 3, 4]


def test_synced_rates_win_and_missing_types_fall_back_to_the_defaults() -> None:
    synced = {"B": D("16.00"), "E": D("10.00")}  # e.g. a class-04 change in a future Finance Act
    assert effective_rates(synced) == {**DEFAULT_RATES, "B": D("16.00"), "E": D("10.00")}
    tax = compute_sale_tax([line("1", "100", "E")], synced)
    assert str(tax.vat) == "10.00"
    assert str(compute_sale_tax([line("1", "100", "B")], {}).vat) == "16.00"


@pytest.mark.parametrize(
    ("gross", "tax_type", "taxable", "tax"),
    [("116.00", "B", "100.00", "16.00"), ("100.00", "B", "86.21", "13.79"), ("108", "E", "100.00", "8.00")],
)
def test_tax_inclusive_prices_are_backed_out_and_the_total_stays_the_gross(
    gross: str, tax_type: str, taxable: str, tax: str
) -> None:
    sale = compute_sale_tax([line("1", gross, tax_type)], prices_include_tax=True)
    (taxed,) = sale.lines
    assert (str(taxed.taxable_amount), str(taxed.tax_amount)) == (taxable, tax)
    assert taxed.total == D(gross)


@pytest.mark.parametrize(
    ("bad", "path", "code"),
    [
        (line("1", "10", "F"), "lines[0].tax_type", "invalid_tax_type"),
        (line("1", "10", "b"), "lines[0].tax_type", "invalid_tax_type"),
        (line("0", "10", "B"), "lines[0].quantity", "not_positive"),
        (line("1", "-10", "B"), "lines[0].unit_price", "negative"),
        (line("1", "10", "B", "-1"), "lines[0].discount", "negative"),
        (line("1", "10", "B", "10.01"), "lines[0].discount", "discount_exceeds_amount"),
        (line("9999999999.999", "999999999999.999", "B"), "lines[0]", "too_large"),
    ],
)
def test_a_broken_rule_is_refused_with_the_field_path(bad: SaleLine, path: str, code: str) -> None:
    with pytest.raises(TaxRuleError) as caught:
        compute_sale_tax([bad])
    assert [(v.path, v.code) for v in caught.value.violations] == [(path, code)]


def test_every_broken_line_is_reported_at_once() -> None:
    with pytest.raises(TaxRuleError) as caught:
        compute_sale_tax([line("1", "10", "Z"), line("1", "10", "B"), line("-1", "10", "B")])
    assert [v.path for v in caught.value.violations] == ["lines[0].tax_type", "lines[2].quantity"]
