"""Invoice GST: place of supply, effective-dated rates, overrides, rounding, validation.

Cases come from india-gst.md notes (sections 1, 4, 5) and the seeds SmartKhata (000) and
College Accounts (002).
"""

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from engine.tax import (
    InvoiceTax,
    LineInput,
    SupplyType,
    TaxRuleError,
    compute_invoice_tax,
    financial_year,
)

D = Decimal
BEFORE_GST_2_0 = date(2025, 9, 21)
GST_2_0 = date(2025, 9, 22)


def line(hsn: str = "8471", quantity: str = "1", unit_price: str = "100", **kwargs: object) -> LineInput:
    return LineInput(
        description="item",
        hsn=hsn,
        quantity=D(quantity),
        unit="NOS",
        unit_price=D(unit_price),
        **kwargs,  # type: ignore[arg-type]
    )


def compute(*lines: LineInput, **kwargs: object) -> InvoiceTax:
    arguments: dict[str, object] = {
        "invoice_date": date(2026, 1, 19),
        "seller_state": "29",
        "place_of_supply": "29",
        "lines": list(lines),
    }
    arguments.update(kwargs)
    return compute_invoice_tax(**arguments)  # type: ignore[arg-type]


def violations(*lines: LineInput, **kwargs: object) -> list[tuple[str, str]]:
    with pytest.raises(TaxRuleError) as info:
        compute(*lines, **kwargs)
    return [(v.path, v.code) for v in info.value.violations]


def test_seed_smartkhata_intra_state_example() -> None:
    # Seed 000: 10 x 100 of HSN 271121 at 18%, KA -> KA: CGST 90, SGST 90, total 1180. HSN 271121 is not in
    # our master, so the seed's explicit rate is recorded as an override.
    tax = compute(line("271121", "10", "100", gst_rate=D("18")), seller_state="KA", place_of_supply="KA")
    assert (tax.taxable, tax.cgst, tax.sgst, tax.igst, tax.total) == (
        D("1000.00"),
        D("90.00"),
        D("90.00"),
        D("0"),
        D("1180.00"),
    )
    (only,) = tax.lines
    assert (only.rate_source, only.master_rate, only.line_no) == ("override", None, 1)
    assert tax.place_of_supply == "29"
    assert tax.intra_state


@pytest.mark.parametrize(
    ("seller", "pos", "supply_type", "cgst", "sgst", "igst", "total"),
    [
        # Seed 002: 10000 at 18% -> CGST 900 + SGST 900.
        pytest.param("29", "29", SupplyType.B2B, "900.00", "900.00", "0", "11800.00", id="intra-state"),
        pytest.param("KA", "29", SupplyType.B2B, "900.00", "900.00", "0", "11800.00", id="intra-mixed-codes"),
        pytest.param("29", "27", SupplyType.B2B, "0", "0", "1800.00", "11800.00", id="inter-state"),
        pytest.param("29", "29", SupplyType.B2C, "900.00", "900.00", "0", "11800.00", id="b2c-intra"),
        pytest.param(
            "29", "29", SupplyType.SEZ_WITH_PAYMENT, "0", "0", "1800.00", "11800.00", id="sez-same-state"
        ),
        pytest.param(
            "29", "29", SupplyType.SEZ_WITHOUT_PAYMENT, "0", "0", "0", "10000.00", id="sez-under-lut"
        ),
        pytest.param(
            "29", "96", SupplyType.EXPORT_WITH_PAYMENT, "0", "0", "1800.00", "11800.00", id="export-paid"
        ),
        pytest.param(
            "29", "96", SupplyType.EXPORT_WITHOUT_PAYMENT, "0", "0", "0", "10000.00", id="export-lut"
        ),
        pytest.param("38", "38", SupplyType.B2B, "900.00", "900.00", "0", "11800.00", id="ladakh-intra"),
        pytest.param("38", "01", SupplyType.B2B, "0", "0", "1800.00", "11800.00", id="ladakh-to-jk"),
    ],
)
def test_place_of_supply_decides_cgst_sgst_or_igst(
    seller: str, pos: str, supply_type: SupplyType, cgst: str, sgst: str, igst: str, total: str
) -> None:
    tax = compute(
        line("9983", "1", "10000"), seller_state=seller, place_of_supply=pos, supply_type=supply_type
    )
    assert (tax.cgst, tax.sgst, tax.igst, tax.total) == (D(cgst), D(sgst), D(igst), D(total))
    assert tax.lines[0].gst_rate == D("18")  # recorded even when no tax is paid


@pytest.mark.parametrize(
    ("hsn", "day", "rate", "cess_rate", "cess", "total"),
    [
        pytest.param("24022010", BEFORE_GST_2_0, "28", "5", "50.00", "1330.00", id="cigarettes-before"),
        pytest.param("24022010", date(2026, 1, 31), "28", "5", "50.00", "1330.00", id="cigarettes-jan-2026"),
        pytest.param("24022010", date(2026, 2, 1), "40", "0", "0.00", "1400.00", id="cigarettes-feb-2026"),
        pytest.param("220210", BEFORE_GST_2_0, "28", "12", "120.00", "1400.00", id="aerated-before"),
        pytest.param("220210", GST_2_0, "40", "0", "0.00", "1400.00", id="aerated-after"),
        pytest.param("8415", BEFORE_GST_2_0, "28", "0", "0.00", "1280.00", id="air-conditioner-before"),
        pytest.param("84151010", GST_2_0, "18", "0", "0.00", "1180.00", id="air-conditioner-after"),
        pytest.param("84145110", date(2026, 6, 1), "18", "0", "0.00", "1180.00", id="table-fan"),
        pytest.param("24031921", date(2026, 1, 31), "28", "0", "0.00", "1280.00", id="biri-jan-2026"),
        pytest.param("24031921", date(2026, 2, 1), "18", "0", "0.00", "1180.00", id="biri-feb-2026"),
        pytest.param("0401", GST_2_0, "0", "0", "0.00", "1000.00", id="milk-nil-rated"),
    ],
)
def test_master_rate_in_force_on_the_invoice_date_applies(
    hsn: str, day: date, rate: str, cess_rate: str, cess: str, total: str
) -> None:
    tax = compute(line(hsn, "1", "1000"), invoice_date=day, seller_state="29", place_of_supply="27")
    (taxed,) = tax.lines
    assert (taxed.gst_rate, taxed.rate_source, taxed.master_rate) == (D(rate), "master", D(rate))
    assert (taxed.cess_rate, taxed.cess, taxed.total) == (D(cess_rate), D(cess), D(total))
    assert tax.cess == D(cess)


@pytest.mark.parametrize(
    ("hsn", "day", "candidates"),
    [
        pytest.param("62052000", date(2026, 1, 19), ["5", "18"], id="cotton-shirt-by-sale-value"),
        pytest.param("62052000", BEFORE_GST_2_0, ["5", "12"], id="cotton-shirt-before-gst-2.0"),
        pytest.param("8504", date(2026, 1, 19), ["5", "18"], id="transformer-or-ev-charger"),
        pytest.param("21069020", GST_2_0, ["0", "5", "28"], id="pan-masala-heading-item"),
        pytest.param("996311", GST_2_0, ["5", "18"], id="hotel-by-tariff"),
    ],
)
def test_several_candidate_rates_without_gst_rate_is_rate_required(
    hsn: str, day: date, candidates: list[str]
) -> None:
    with pytest.raises(TaxRuleError) as info:
        compute(line(hsn), invoice_date=day)
    (violation,) = info.value.violations
    assert (violation.path, violation.code) == ("lines[0].hsn", "rate_required")
    assert violation.details["candidates"] == candidates
    assert "gst_rate" in violation.message


def test_a_candidate_sent_as_gst_rate_is_used_and_keeps_the_certain_cess() -> None:
    # 2202 99 90 before GST 2.0: 18% or 28% by the drink, compensation cess 12% on every entry naming it.
    tax = compute(
        line("22029990", "1", "1000", gst_rate=D("28"), gst_rate_reason="caffeinated beverage"),
        invoice_date=BEFORE_GST_2_0,
        place_of_supply="27",
    )
    (taxed,) = tax.lines
    assert (taxed.gst_rate, taxed.rate_source, taxed.master_rate) == (D("28"), "override", None)
    assert (taxed.cess_rate, taxed.igst, taxed.cess, taxed.total) == (
        D("12"),
        D("280.00"),
        D("120.00"),
        D("1400.00"),
    )


@pytest.mark.parametrize("hsn", ["22030000", "27101930", "27090000"], ids=["beer", "diesel", "crude"])
def test_outside_gst_code_without_gst_rate_says_so(hsn: str) -> None:
    with pytest.raises(TaxRuleError) as info:
        compute(line(hsn))
    (violation,) = info.value.violations
    assert (violation.code, violation.details["outside_gst"]) == ("unknown_hsn", True)
    assert "outside GST" in violation.message


def test_twelve_percent_is_accepted_the_day_before_gst_2_0() -> None:
    tax = compute(
        line("9999", gst_rate=D("12"), gst_rate_reason="contract rate"), invoice_date=BEFORE_GST_2_0
    )
    assert tax.cgst == tax.sgst == D("6.00")


def test_twelve_percent_is_rejected_from_gst_2_0_with_the_valid_rates_listed() -> None:
    with pytest.raises(TaxRuleError) as info:
        compute(line("8471", gst_rate=D("12")), invoice_date=GST_2_0)
    (violation,) = info.value.violations
    assert (violation.path, violation.code) == ("lines[0].gst_rate", "rate_not_valid_on_date")
    assert violation.details == {
        "valid_rates": ["0", "0.1", "0.25", "1", "1.5", "3", "5", "6", "7.5", "18", "28", "40"],
        "date": "2025-09-22",
    }
    assert "valid rates are 0, 0.1" in violation.message


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        pytest.param("5", "concessional rate, notification 1/2017 entry", id="different-from-master"),
        pytest.param("18", None, id="equal-to-master-without-reason"),
        pytest.param("18.0", "confirmed", id="equal-with-trailing-zero"),
    ],
)
def test_explicit_rate_is_an_override_recorded_with_the_master_rate(
    override: str, reason: str | None
) -> None:
    tax = compute(line("8471", "2", "50", gst_rate=D(override), gst_rate_reason=reason))
    (taxed,) = tax.lines
    assert (taxed.rate_source, taxed.gst_rate, taxed.master_rate) == ("override", D(override), D("18"))
    assert taxed.override_reason == reason
    assert taxed.cgst == taxed.sgst == (D("100") * D(override) / 200).quantize(D("0.01"))


def test_override_keeps_the_master_cess() -> None:
    tax = compute(line("24022010", "1", "1000", gst_rate=D("28")), invoice_date=date(2025, 12, 1))
    assert tax.lines[0].cess == D("50.00")


def test_master_rate_line_has_no_override_reason_even_if_one_is_sent() -> None:
    tax = compute(line("8471", gst_rate_reason="ignored"))
    assert tax.lines[0].override_reason is None


@pytest.mark.parametrize(
    ("lines", "taxable", "igst", "naive_igst"),
    [
        # Ten lines of 0.333: each taxable value rounds to 0.33 and each IGST at 18% to 0.06.
        # Rounding the invoice once would give 3.30 x 18% = 0.59; the IRP wants the sum of the lines.
        pytest.param([("1", "0.333")] * 10, "3.30", "0.60", "0.59", id="ten-lines-of-0.333"),
        # Three lines of 1.005 at 18%: taxable 1.01 each (half up), IGST 0.18 each = 0.54; once: 0.55.
        pytest.param([("1", "1.005")] * 3, "3.03", "0.54", "0.55", id="half-up-per-line"),
        # 0.5 x 0.05 = 0.025 taxable rounds half up to 0.03.
        pytest.param([("0.5", "0.05")], "0.03", "0.01", "0.01", id="tiny-line"),
    ],
)
def test_invoice_totals_are_sums_of_rounded_lines(
    lines: list[tuple[str, str]], taxable: str, igst: str, naive_igst: str
) -> None:
    tax = compute(*(line("8471", q, p) for q, p in lines), place_of_supply="27")
    assert tax.taxable == D(taxable)
    assert tax.igst == D(igst)
    assert (tax.taxable * D("0.18")).quantize(D("0.01")) == D(naive_igst)
    assert tax.total == sum((t.total for t in tax.lines), D(0))
    assert tax.total == tax.taxable + tax.cgst + tax.sgst + tax.igst + tax.cess


def test_intra_state_halves_are_rounded_separately_and_always_equal() -> None:
    # 1.00 at 5%: each half is 0.025 -> 0.03, so CGST + SGST = 0.06 where IGST would be 0.05.
    tax = compute(line("1806", "1", "1"), invoice_date=GST_2_0)  # chocolate, 5% from GST 2.0
    assert (tax.cgst, tax.sgst, tax.igst) == (D("0.03"), D("0.03"), D("0"))


def test_discount_is_subtracted_before_rounding_the_taxable_value() -> None:
    # 3 x 333.333 - 0.005 = 999.994 -> 999.99; rounding the gross first would give 1000.00 - 0.005 -> 1000.00.
    tax = compute(line("8471", "3", "333.333", discount=D("0.005")), place_of_supply="27")
    (taxed,) = tax.lines
    assert taxed.taxable_value == D("999.99")
    assert taxed.igst == D("180.00")  # 179.9982
    assert taxed.total == D("1179.99")


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        pytest.param(line(quantity="-1"), [("lines[0].quantity", "negative_quantity")], id="negative-qty"),
        pytest.param(line(quantity="0"), [("lines[0].quantity", "zero_quantity")], id="zero-qty"),
        pytest.param(line(unit_price="-1"), [("lines[0].unit_price", "negative_unit_price")], id="neg-price"),
        pytest.param(line(discount=D("-1")), [("lines[0].discount", "negative_discount")], id="neg-discount"),
        pytest.param(
            line(discount=D("100.01")), [("lines[0].discount", "discount_exceeds_gross")], id="discount>gross"
        ),
        pytest.param(line(hsn="850"), [("lines[0].hsn", "invalid_hsn")], id="hsn-3-digits"),
        pytest.param(line(hsn="85041"), [("lines[0].hsn", "invalid_hsn")], id="hsn-5-digits"),
        pytest.param(line(hsn="85A4"), [("lines[0].hsn", "invalid_hsn")], id="hsn-letter"),
        pytest.param(line(hsn="271121"), [("lines[0].hsn", "unknown_hsn")], id="unknown-hsn-no-rate"),
        pytest.param(line(gst_rate=D("7")), [("lines[0].gst_rate", "rate_not_valid_on_date")], id="seed-7"),
        pytest.param(line(quantity="NaN"), [("lines[0].quantity", "invalid_number")], id="nan"),
    ],
)
def test_each_line_rule_has_its_own_code(bad: LineInput, expected: list[tuple[str, str]]) -> None:
    assert violations(bad) == expected


def test_unknown_hsn_message_asks_for_gst_rate() -> None:
    with pytest.raises(TaxRuleError) as info:
        compute(line("271121"))
    assert "send gst_rate" in str(info.value)


def test_all_violations_are_collected_before_raising() -> None:
    found = violations(
        line(),
        line(quantity="-2", hsn="12"),
        line(hsn="271121"),
        line(gst_rate=D("28")),
        seller_state="XX",
        place_of_supply="Atlantis",
        invoice_date=date(2026, 2, 1),
    )
    assert found == [
        ("seller_state", "unknown_state"),
        ("place_of_supply", "unknown_state"),
        ("lines[1].quantity", "negative_quantity"),
        ("lines[1].hsn", "invalid_hsn"),
        ("lines[2].hsn", "unknown_hsn"),
        ("lines[3].gst_rate", "rate_not_valid_on_date"),
    ]


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        pytest.param(0, [("lines", "no_lines")], id="no-lines"),
        pytest.param(1001, [("lines", "too_many_lines")], id="over-irp-limit"),
    ],
)
def test_line_count_limits(count: int, expected: list[tuple[str, str]]) -> None:
    assert violations(*([line()] * count)) == expected


def test_a_thousand_lines_are_accepted() -> None:
    tax = compute(*([line("8471", "1", "0.333")] * 1000))
    assert len(tax.lines) == 1000
    assert tax.lines[-1].line_no == 1000
    assert tax.taxable == D("330.00")


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        pytest.param(date(2025, 3, 31), "2024-25", id="31-march"),
        pytest.param(date(2025, 4, 1), "2025-26", id="1-april"),
        pytest.param(date(2026, 1, 19), "2025-26", id="january"),
        pytest.param(date(2019, 12, 31), "2019-20", id="notes-irn-example-year"),
        pytest.param(date(2099, 4, 1), "2099-00", id="century-wrap"),
    ],
)
def test_financial_year_runs_april_to_march(day: date, expected: str) -> None:
    assert financial_year(day) == expected


def test_line_echoes_its_input() -> None:
    source = replace(line("998314", "2.5", "1000.10", discount=D("0.25")), description="Dev work")
    (taxed,) = compute(source).lines
    assert (taxed.description, taxed.hsn, taxed.quantity, taxed.unit, taxed.unit_price, taxed.discount) == (
        "Dev work",
        "998314",
        D("2.5"),
        "NOS",
        D("1000.10"),
        D("0.25"),
    )
    assert taxed.taxable_value == D("2500.00")
