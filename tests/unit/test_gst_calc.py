"""GST on one amount (POST /v1/gst/calculate): the seed "College Accounts" example, rounding each half to
the paisa, tax-inclusive back-calculation, and the refusals. Expected values are worked by hand below."""

from datetime import date
from decimal import Decimal

import pytest

from engine.tax.errors import TaxRuleError
from engine.tax.gst_calc import calculate_gst

D = Decimal
DAY = date(2026, 1, 19)


@pytest.mark.parametrize(
    ("amount", "rate", "states", "taxable", "cgst", "sgst", "igst", "total_gst", "total"),
    [
        # Seed 002: 10000 at 18%, no states -> intra-state, CGST 900 + SGST 900.
        pytest.param(
            "10000", "18", None, "10000", "900.00", "900.00", "0.00", "1800.00", "11800.00", id="seed"
        ),
        pytest.param(
            "10000",
            "18",
            ("KA", "27"),
            "10000",
            "0.00",
            "0.00",
            "1800.00",
            "1800.00",
            "11800.00",
            id="inter-state-igst",
        ),
        pytest.param(
            "10000",
            "18",
            ("KA", "29"),
            "10000",
            "900.00",
            "900.00",
            "0.00",
            "1800.00",
            "11800.00",
            id="letters-and-digits-same-state",
        ),
        # 1.00 at 5%: each half is 0.025 -> 0.03, so CGST + SGST = 0.06 where IGST is 0.05.
        pytest.param(
            "1.00", "5", None, "1.00", "0.03", "0.03", "0.00", "0.06", "1.06", id="odd-paise-halves"
        ),
        pytest.param(
            "1.00", "5", ("07", "09"), "1.00", "0.00", "0.00", "0.05", "0.05", "1.05", id="odd-paise-igst"
        ),
        # 99.99 x 9% = 8.9991 -> 9.00.
        pytest.param("99.99", "18", None, "99.99", "9.00", "9.00", "0.00", "18.00", "117.99", id="99.99"),
        # 0.01 x 1.5% = 0.00015 -> 0.00.
        pytest.param("0.01", "3", None, "0.01", "0.00", "0.00", "0.00", "0.00", "0.01", id="one-paisa"),
        # 333.33 x 0.25% = 0.833325 -> 0.83.
        pytest.param(
            "333.33",
            "0.25",
            ("29", "33"),
            "333.33",
            "0.00",
            "0.00",
            "0.83",
            "0.83",
            "334.16",
            id="diamond-rate",
        ),
        pytest.param("0", "18", None, "0", "0.00", "0.00", "0.00", "0.00", "0.00", id="zero"),
        pytest.param("500", "0", None, "500", "0.00", "0.00", "0.00", "0.00", "500.00", id="nil-rate"),
        # 999999999999.99 x 40% = 399999999999.996 -> 400000000000.00.
        pytest.param(
            "999999999999.99",
            "40",
            ("29", "27"),
            "999999999999.99",
            "0.00",
            "0.00",
            "400000000000.00",
            "400000000000.00",
            "1399999999999.99",
            id="largest-amount",
        ),
    ],
)
def test_tax_on_top_of_the_amount(
    amount: str,
    rate: str,
    states: tuple[str, str] | None,
    taxable: str,
    cgst: str,
    sgst: str,
    igst: str,
    total_gst: str,
    total: str,
) -> None:
    supplier, pos = states if states else (None, None)
    result = calculate_gst(
        amount=D(amount),
        gst_rate=D(rate),
        include_tax=False,
        day=DAY,
        supplier_state=supplier,
        place_of_supply=pos,
    )
    assert (
        result.taxable_amount,
        result.cgst,
        result.sgst,
        result.igst,
        result.total_gst,
        result.total_amount,
    ) == (
        D(taxable),
        D(cgst),
        D(sgst),
        D(igst),
        D(total_gst),
        D(total),
    )
    assert result.cgst == result.sgst


@pytest.mark.parametrize(
    ("amount", "rate", "states", "taxable", "cgst", "igst", "total_gst"),
    [
        # 11800 includes 18%: tax 1800, halves 900.
        pytest.param("11800", "18", None, "10000.00", "900.00", "0.00", "1800.00", id="seed-reversed"),
        # 100 x 18/118 = 15.2542...; half 7.6271 -> 7.63 each; the taxable amount takes the rest: 84.74.
        pytest.param("100", "18", None, "84.74", "7.63", "0.00", "15.26", id="hundred-intra"),
        # Inter-state: IGST 15.2542 -> 15.25, taxable 84.75.
        pytest.param("100", "18", ("29", "27"), "84.75", "0.00", "15.25", "15.25", id="hundred-inter"),
        # 1.05 includes 5%: tax 0.05, each half 0.025 -> 0.03.
        pytest.param("1.05", "5", None, "0.99", "0.03", "0.00", "0.06", id="odd-paise"),
        pytest.param("0.01", "18", None, "0.01", "0.00", "0.00", "0.00", id="one-paisa"),
        pytest.param("250", "0", None, "250.00", "0.00", "0.00", "0.00", id="nil-rate"),
    ],
)
def test_tax_inclusive_amount_is_split_back_and_adds_up_exactly(
    amount: str, rate: str, states: tuple[str, str] | None, taxable: str, cgst: str, igst: str, total_gst: str
) -> None:
    supplier, pos = states if states else (None, None)
    result = calculate_gst(
        amount=D(amount),
        gst_rate=D(rate),
        include_tax=True,
        day=DAY,
        supplier_state=supplier,
        place_of_supply=pos,
    )
    assert (result.taxable_amount, result.cgst, result.sgst, result.igst, result.total_gst) == (
        D(taxable),
        D(cgst),
        D(cgst),
        D(igst),
        D(total_gst),
    )
    assert result.total_amount == D(amount)
    assert result.taxable_amount + result.total_gst == D(amount)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"gst_rate": D("12")}, [("gst_rate", "rate_not_valid_on_date")], id="12-after-gst-2.0"),
        pytest.param(
            {"gst_rate": D("28"), "day": date(2026, 2, 1)},
            [("gst_rate", "rate_not_valid_on_date")],
            id="28-after-cess-ended",
        ),
        pytest.param({"gst_rate": D("7")}, [("gst_rate", "rate_not_valid_on_date")], id="not-a-gst-rate"),
        pytest.param({"amount": D("-1")}, [("amount", "negative_amount")], id="negative"),
        pytest.param({"amount": D("1.001")}, [("amount", "too_many_decimal_places")], id="three-places"),
        pytest.param({"day": date(2017, 6, 30)}, [("date", "before_gst")], id="before-gst"),
        pytest.param(
            {"supplier_state": "ZZ", "place_of_supply": "29"},
            [("supplier_state", "unknown_state")],
            id="unknown-state",
        ),
        pytest.param({"supplier_state": "29"}, [("place_of_supply", "state_missing")], id="one-state-only"),
        pytest.param({"place_of_supply": "29"}, [("supplier_state", "state_missing")], id="other-state-only"),
        pytest.param(
            {"amount": D("-1"), "gst_rate": D("12")},
            [("amount", "negative_amount"), ("gst_rate", "rate_not_valid_on_date")],
            id="all-at-once",
        ),
    ],
)
def test_refusals_list_every_problem(kwargs: dict[str, object], expected: list[tuple[str, str]]) -> None:
    arguments: dict[str, object] = {"amount": D("100"), "gst_rate": D("18"), "include_tax": False, "day": DAY}
    arguments.update(kwargs)
    with pytest.raises(TaxRuleError) as info:
        calculate_gst(**arguments)  # type: ignore[arg-type]
    assert [(v.path, v.code) for v in info.value.violations] == expected


def test_an_invalid_rate_lists_the_valid_ones_on_the_date() -> None:
    with pytest.raises(TaxRuleError) as info:
        calculate_gst(amount=D("100"), gst_rate=D("12"), include_tax=False, day=date(2025, 9, 22))
    (violation,) = info.value.violations
    assert violation.details["valid_rates"] == [
        "0",
        "0.1",
        "0.25",
        "1",
        "1.5",
        "3",
        "5",
        "6",
        "7.5",
        "18",
        "28",
        "40",
    ]
    assert (
        "12"
        in calculate_gst(
            amount=D("100"), gst_rate=D("12"), include_tax=False, day=date(2025, 9, 21)
        ).gst_rate.to_eng_string()
    )
