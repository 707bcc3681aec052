"""TDS rules (engine/tax/tds.py): section, rate and threshold of a payment under the Act in force,
around every threshold and every date a rule changed. Expected values are worked by hand from the
provisions cited in the module docstring."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from engine.tax.errors import TaxRuleError
from engine.tax.tds import (
    NATURES,
    PriorPayments,
    TdsRequest,
    calculate_tds,
    check_pan,
    financial_year_of,
    parse_financial_year,
    quarter_bounds,
    quarter_of,
    round_tds,
    rule_for,
)

IND = "ABCPE1234F"  # 4th character P: an individual
HUF = "ABCHE1234F"
COMPANY = "AAACE1234F"
FIRM = "AAAFE1234F"
FY25 = date(2025, 6, 15)  # 1961 Act, Finance Act 2025 thresholds
FY24_H1 = date(2024, 6, 15)  # before the 194H cut and the 2025 thresholds
FY24_H2 = date(2024, 11, 15)
FY26 = date(2026, 6, 15)  # Income-tax Act 2025


def dec(text: str) -> Decimal:
    return Decimal(text)


def calc(
    nature: str,
    amount: str,
    day: date,
    pan: str | None = IND,
    prior: str = "0",
    untaxed: str = "0",
    **kw: object,
) -> tuple[str, str, str, bool]:
    result = calculate_tds(
        TdsRequest(
            nature=nature,
            amount=dec(amount),
            day=day,
            pan=pan,
            prior=PriorPayments(dec(prior), dec(untaxed)),
            **kw,  # type: ignore[arg-type]
        )
    )
    return result.section, str(result.rate), str(result.tds_amount), result.threshold.exceeded


# (nature, amount, date, pan, paid before, untaxed before) -> (section, rate %, tds, threshold exceeded)
CASES = [
    # -- 194C: single 30,000, aggregate 1,00,000; 1% individual/HUF, 2% others --------------------
    ("contractor", "30000", FY25, IND, "0", "0", ("194C", "1", "0", False)),
    ("contractor", "30000.01", FY25, IND, "0", "0", ("194C", "1", "300", True)),
    ("contractor", "30001", FY25, COMPANY, "0", "0", ("194C", "2", "600", True)),
    ("contractor", "30001", FY25, HUF, "0", "0", ("194C", "1", "300", True)),
    ("contractor", "30001", FY25, FIRM, "0", "0", ("194C", "2", "600", True)),
    ("contractor", "20000", FY25, IND, "80000", "80000", ("194C", "1", "0", False)),
    # aggregate 1,00,001 crosses: tax on the whole year (80,001 untaxed + 20,000)
    ("contractor", "20000", FY25, IND, "80001", "80001", ("194C", "1", "1000", True)),
    # earlier payments already taxed: only this one
    ("contractor", "20000", FY25, COMPANY, "120000", "0", ("194C", "2", "400", True)),
    ("contractor", "10000", FY25, None, "0", "0", ("194C", "20", "0", False)),
    ("contractor", "40000", FY25, None, "0", "0", ("194C", "20", "8000", True)),
    ("contractor", "40000", FY26, IND, "0", "0", ("393(1) Table Sl. No. 6(i)", "1", "400", True)),
    ("contractor", "40000", FY26, COMPANY, "0", "0", ("393(1) Table Sl. No. 6(i)", "2", "800", True)),
    ("contractor", "5000", FY26, COMPANY, "95001", "95001", ("393(1) Table Sl. No. 6(i)", "2", "2000", True)),
    # -- 194J professional 10%, technical 2%; 30,000 then 50,000 a year from 1 April 2025 ----------
    ("professional_services", "30000", FY24_H1, IND, "0", "0", ("194J", "10", "0", False)),
    ("professional_services", "30001", FY24_H1, IND, "0", "0", ("194J", "10", "3000", True)),
    ("professional_services", "50000", FY25, IND, "0", "0", ("194J", "10", "0", False)),
    ("professional_services", "50001", FY25, IND, "0", "0", ("194J", "10", "5000", True)),
    ("professional_services", "100000", FY25, IND, "0", "0", ("194J", "10", "10000", True)),
    ("professional_services", "10000", FY25, IND, "40001", "40001", ("194J", "10", "5000", True)),
    ("professional_services", "100000", FY25, None, "0", "0", ("194J", "20", "20000", True)),
    ("professional_services", "100000", FY25, "ABCDE1234", "0", "0", ("194J", "20", "20000", True)),
    ("technical_services", "50001", FY25, COMPANY, "0", "0", ("194J", "2", "1000", True)),
    ("technical_services", "50000", FY25, COMPANY, "0", "0", ("194J", "2", "0", False)),
    ("technical_services", "60000", FY25, None, "0", "0", ("194J", "20", "12000", True)),
    (
        "professional_services",
        "50001",
        FY26,
        IND,
        "0",
        "0",
        ("393(1) Table Sl. No. 6(iii)", "10", "5000", True),
    ),
    ("technical_services", "50001", FY26, IND, "0", "0", ("393(1) Table Sl. No. 6(iii)", "2", "1000", True)),
    # -- 194H: 5% to 30 Sep 2024, 2% after; 15,000 then 20,000 a year -------------------------------
    ("commission", "15001", FY24_H1, IND, "0", "0", ("194H", "5", "750", True)),
    ("commission", "15000", FY24_H1, IND, "0", "0", ("194H", "5", "0", False)),
    ("commission", "15001", FY24_H2, IND, "0", "0", ("194H", "2", "300", True)),
    ("commission", "15001", date(2024, 9, 30), IND, "0", "0", ("194H", "5", "750", True)),
    ("commission", "15001", date(2024, 10, 1), IND, "0", "0", ("194H", "2", "300", True)),
    ("commission", "20000", FY25, IND, "0", "0", ("194H", "2", "0", False)),
    ("commission", "20001", FY25, IND, "0", "0", ("194H", "2", "400", True)),
    ("commission", "20001", FY26, IND, "0", "0", ("393(1) Table Sl. No. 1(ii)", "2", "400", True)),
    # -- 194-I: 2,40,000 a year, then 50,000 a month from 1 April 2025 ------------------------------
    ("rent_building", "40000", FY24_H1, COMPANY, "200000", "200000", ("194-I(b)", "10", "0", False)),
    ("rent_building", "40001", FY24_H1, COMPANY, "200000", "200000", ("194-I(b)", "10", "24000", True)),
    ("rent_plant", "40001", FY24_H1, COMPANY, "200000", "200000", ("194-I(a)", "2", "4800", True)),
    ("rent_building", "50000", FY25, COMPANY, "500000", "500000", ("194-I(b)", "10", "0", False)),
    ("rent_building", "50001", FY25, COMPANY, "0", "0", ("194-I(b)", "10", "5000", True)),
    ("rent_plant", "50001", FY25, COMPANY, "0", "0", ("194-I(a)", "2", "1000", True)),
    (
        "rent_building",
        "50001",
        FY26,
        COMPANY,
        "0",
        "0",
        ("393(1) Table Sl. No. 2(ii)(b)", "10", "5000", True),
    ),
    ("rent_plant", "50001", FY26, None, "0", "0", ("393(1) Table Sl. No. 2(ii)(a)", "20", "10000", True)),
    # -- rounding to the rupee: 50 paise up ---------------------------------------------------------
    ("technical_services", "50025", FY25, IND, "0", "0", ("194J", "2", "1001", True)),  # 1000.50
    ("technical_services", "50024", FY25, IND, "0", "0", ("194J", "2", "1000", True)),  # 1000.48
]


@pytest.mark.parametrize(("nature", "amount", "day", "pan", "prior", "untaxed", "expected"), CASES)
def test_section_rate_and_tax_for_each_nature_and_threshold(
    nature: str, amount: str, day: date, pan: str | None, prior: str, untaxed: str, expected: tuple
) -> None:
    assert calc(nature, amount, day, pan, prior, untaxed) == expected


PURCHASES = [
    # (amount, paid before, turnover condition, pan) -> (tds, rate)
    ("5000000", "0", True, COMPANY, "0", "0.1"),
    ("5000001", "0", True, COMPANY, "0", "0.1"),  # 0.001 rupee -> 0
    ("6000000", "0", True, COMPANY, "1000", "0.1"),
    ("1000000", "4500000", True, COMPANY, "500", "0.1"),
    ("1000000", "6000000", True, COMPANY, "1000", "0.1"),
    ("1000000", "6000000", False, COMPANY, "0", "0.1"),
    ("1000000", "6000000", True, None, "50000", "5"),
]


@pytest.mark.parametrize(("amount", "prior", "buyer", "pan", "tds", "rate"), PURCHASES)
def test_purchase_of_goods_taxes_only_the_excess_over_fifty_lakh_for_a_large_buyer(
    amount: str, prior: str, buyer: bool, pan: str | None, tds: str, rate: str
) -> None:
    for day, section in ((FY25, "194Q"), (FY26, "393(1) Table Sl. No. 8(ii)")):
        result = calculate_tds(
            TdsRequest(
                "purchase_of_goods",
                dec(amount),
                day,
                pan,
                buyer_turnover_above_10_crore=buyer,
                prior=PriorPayments(dec(prior)),
            )
        )
        assert (result.section, str(result.rate), str(result.tds_amount)) == (section, rate, tds)


def test_no_cess_and_no_surcharge_on_a_resident_fee_unlike_the_seed() -> None:
    result = calculate_tds(TdsRequest("professional_services", dec("100000"), date(2024, 5, 10), IND))
    # The seed answers cess 400 and total 10,400: cess is not added to TDS on residents.
    assert (result.tds_amount, result.cess, result.surcharge, result.total_tds) == (
        dec("10000"),
        dec("0"),
        dec("0"),
        dec("10000"),
    )
    assert result.net_payment == dec("90000")


def test_the_seeds_example_pan_is_no_pan_its_fourth_character_names_no_holder_type() -> None:
    # "ABCDE1234F": D is not among the holder types (P, C, H, F, A, T, B, L, J, G), so 206AA applies.
    result = calculate_tds(
        TdsRequest("professional_services", dec("100000"), date(2024, 5, 10), "ABCDE1234F")
    )
    assert (result.pan.status, result.rate, result.tds_amount) == ("invalid", dec("20"), dec("20000"))


def test_a_non_resident_is_refused_as_a_section_195_matter() -> None:
    with pytest.raises(TaxRuleError) as caught:
        calculate_tds(TdsRequest("professional_services", dec("100000"), FY25, IND, resident=False))
    assert caught.value.codes == ("non_resident_not_supported",)


def test_an_inoperative_pan_is_a_pan_not_furnished() -> None:
    result = calculate_tds(TdsRequest("contractor", dec("40000"), FY25, IND, pan_inoperative=True))
    assert (result.rate, result.tds_amount, result.pan.status, result.higher_rate) == (
        dec("20"),
        dec("8000"),
        "inoperative",
        True,
    )
    assert result.higher_rate_provision == "206AA"
    after = calculate_tds(TdsRequest("contractor", dec("40000"), FY26, IND, pan_inoperative=True))
    assert after.higher_rate_provision == "397(2)(b)"


def test_rent_for_several_months_is_judged_per_month() -> None:
    base = {"nature": "rent_building", "day": FY25, "pan": COMPANY}
    two_months = calculate_tds(TdsRequest(amount=dec("100000"), rent_months=2, **base))  # type: ignore[arg-type]
    assert two_months.tds_amount == 0
    one_month = calculate_tds(TdsRequest(amount=dec("100000"), **base))  # type: ignore[arg-type]
    assert one_month.tds_amount == dec("10000")


@pytest.mark.parametrize(
    ("nature", "day", "code"),
    [
        ("purchase_of_goods", date(2021, 6, 30), "provision_not_in_force"),
        ("contractor", date(2021, 3, 31), "before_supported_period"),
        ("salary", FY25, "unknown_payment_nature"),
    ],
)
def test_what_the_tables_do_not_cover_is_refused(nature: str, day: date, code: str) -> None:
    with pytest.raises(TaxRuleError) as caught:
        calculate_tds(TdsRequest(nature, dec("100000"), day, IND))
    assert caught.value.codes == (code,)


def test_every_nature_has_a_rule_on_every_day_of_both_acts() -> None:
    for nature in NATURES:
        for day in (
            date(2021, 7, 1),
            date(2025, 3, 31),
            date(2025, 4, 1),
            date(2026, 3, 31),
            date(2026, 4, 1),
        ):
            rule = rule_for(nature, day)
            assert rule is not None, (nature, day)
            assert rule.act == ("Income-tax Act, 2025" if day >= date(2026, 4, 1) else "Income-tax Act, 1961")


@pytest.mark.parametrize(
    ("pan", "inoperative", "status", "holder"),
    [
        ("ABCPE1234F", False, "valid", "P"),
        ("abcpe1234f", False, "valid", "P"),
        ("AAACE1234F", True, "inoperative", "C"),
        (None, False, "missing", None),
        ("  ", False, "missing", None),
        ("ABCDE12345", False, "invalid", None),
        ("ABCXE1234F", False, "invalid", None),  # X is no holder type
        ("ＡＢＣＰＥ１２３４Ｆ", False, "invalid", None),  # fullwidth letters are not a PAN
    ],
)
def test_pan_status(pan: str | None, inoperative: bool, status: str, holder: str | None) -> None:
    checked = check_pan(pan, inoperative=inoperative)
    assert (checked.status, checked.holder_type) == (status, holder)


@pytest.mark.parametrize(
    ("text", "start"),
    [("2025-26", 2025), ("2099-00", None), ("2025-27", None), ("25-26", None), ("２０２５-26", None)],
)
def test_financial_year_text(text: str, start: int | None) -> None:
    assert parse_financial_year(text) == start


def test_quarters_of_the_indian_financial_year() -> None:
    assert [quarter_of(date(2025, m, 1)) for m in (4, 6, 7, 9, 10, 12, 1, 3)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert quarter_bounds(2025, 1) == (date(2025, 4, 1), date(2025, 6, 30))
    assert quarter_bounds(2025, 4) == (date(2026, 1, 1), date(2026, 3, 31))
    assert financial_year_of(date(2026, 3, 31)) == "2025-26"
    assert financial_year_of(date(2026, 4, 1)) == "2026-27"


@pytest.mark.parametrize(
    ("amount", "rounded"), [("0.49", "0"), ("0.50", "1"), ("1000.5", "1001"), ("99.99", "100")]
)
def test_tax_is_rounded_to_the_nearest_rupee(amount: str, rounded: str) -> None:
    assert round_tds(dec(amount)) == dec(rounded)
