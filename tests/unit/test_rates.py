"""Effective-dated GST rates (india-gst.md notes, section 4) and the HSN/SAC master.

The master's expectations come from the shared reference (/work/shared/reference/hsn: 1/2017, 9/2025 and
10/2025-CT(Rate) by tariff item) and, for services, ops/hsn/sac_rates.csv (11/2017-CT(Rate) as amended).
The earlier curated subset named one rate per heading under an assumption (packaged rice, shirts above
Rs 1,000, transformers that are not EV chargers); the full master lists the candidates instead, so those
cases moved from "single rate" to "rate_required" below.
"""

from datetime import date
from decimal import Decimal

import pytest

from engine.tax import master_rate, valid_rates_on
from engine.tax.rates import GST_2_0, PERIODS, TOBACCO_CESS_END, _rates_table, hsn_lookup, hsn_search

D = Decimal


@pytest.mark.parametrize(
    ("day", "rate", "valid"),
    [
        pytest.param(date(2025, 9, 21), "12", True, id="12-valid-on-last-day-before-gst-2.0"),
        pytest.param(date(2025, 9, 22), "12", False, id="12-removed-by-gst-2.0"),
        pytest.param(date(2025, 9, 21), "40", False, id="40-not-yet-a-rate"),
        pytest.param(date(2025, 9, 22), "40", True, id="40-introduced-by-gst-2.0"),
        pytest.param(date(2025, 9, 22), "28", True, id="28-kept-for-tobacco-until-cess-ends"),
        pytest.param(date(2026, 1, 31), "28", True, id="28-last-day"),
        pytest.param(date(2026, 2, 1), "28", False, id="28-gone-when-cess-ends"),
        pytest.param(date(2024, 1, 1), "18", True, id="18-before"),
        pytest.param(date(2026, 6, 1), "18", True, id="18-after"),
        pytest.param(date(2026, 6, 1), "5", True, id="5-after"),
        pytest.param(date(2026, 6, 1), "0", True, id="nil-rate"),
        pytest.param(date(2026, 6, 1), "3", True, id="gold-special-rate"),
        pytest.param(date(2026, 6, 1), "0.25", True, id="diamond-special-rate"),
        pytest.param(date(2024, 1, 1), "7", False, id="seed-rejects-7"),
        pytest.param(date(2024, 1, 1), "15", False, id="seed-rejects-15"),
        pytest.param(date(2024, 1, 1), "20", False, id="seed-rejects-20"),
        pytest.param(date(2017, 6, 30), "18", False, id="no-gst-before-1-july-2017"),
        pytest.param(date(2017, 7, 1), "18", True, id="gst-launch-day"),
    ],
)
def test_valid_rates_depend_on_the_invoice_date(day: date, rate: str, valid: bool) -> None:
    assert (D(rate) in valid_rates_on(day)) is valid


def test_seed_smartkhata_slabs_are_all_valid_before_gst_2_0() -> None:
    assert {D("0"), D("5"), D("12"), D("18"), D("28")} <= set(valid_rates_on(date(2025, 9, 21)))


def test_valid_rates_are_ascending() -> None:
    rates = valid_rates_on(date(2026, 3, 1))
    assert list(rates) == sorted(rates)


ON_21_SEP = date(2025, 9, 21)
ON_22_SEP = GST_2_0
JAN_2026 = date(2026, 1, 31)
FEB_2026 = TOBACCO_CESS_END


@pytest.mark.parametrize(
    ("hsn", "day", "code", "gst", "cess", "since"),
    [
        pytest.param("84145110", date(2026, 4, 1), "84145110", "18", "0", "2017-07-01", id="table-fan"),
        pytest.param("847130", date(2025, 1, 1), "847130", "18", "0", "2017-07-01", id="laptop"),
        pytest.param("84713010", date(2025, 1, 1), "84713010", "18", "0", "2017-07-01", id="laptop-item"),
        pytest.param("8415", ON_21_SEP, "8415", "28", "0", "2017-07-01", id="air-conditioner-28-before"),
        pytest.param("8415", ON_22_SEP, "8415", "18", "0", "2025-09-22", id="air-conditioner-18-after"),
        pytest.param("04051000", ON_21_SEP, "04051000", "12", "0", "2017-07-01", id="butter-12"),
        pytest.param("04051000", ON_22_SEP, "04051000", "5", "0", "2025-09-22", id="butter-5"),
        pytest.param("18063100", ON_22_SEP, "18063100", "5", "0", "2025-09-22", id="chocolate-5"),
        pytest.param("0401", ON_22_SEP, "0401", "0", "0", "2025-09-22", id="milk-nil-after"),
        pytest.param("71131910", ON_22_SEP, "71131910", "3", "0", "2017-07-01", id="gold-jewellery-3"),
        pytest.param("220210", ON_21_SEP, "220210", "28", "12", "2017-07-01", id="aerated-28-cess-12"),
        pytest.param("22021010", ON_22_SEP, "22021010", "40", "0", "2025-09-22", id="aerated-40-no-cess"),
        pytest.param("24022010", ON_21_SEP, "24022010", "28", "5", "2017-07-01", id="cigarettes-before"),
        pytest.param(
            "24022010", JAN_2026, "24022010", "28", "5", "2017-07-01", id="cigarettes-last-cess-day"
        ),
        pytest.param("24022010", FEB_2026, "24022010", "40", "0", "2026-02-01", id="cigarettes-40-no-cess"),
        pytest.param("24031921", JAN_2026, "24031921", "28", "0", "2017-07-01", id="biri-28"),
        pytest.param("24031921", FEB_2026, "24031921", "18", "0", "2026-02-01", id="biri-18"),
        pytest.param("240399", FEB_2026, "240399", "40", "0", "2026-02-01", id="chewing-tobacco-40"),
        pytest.param("2523", ON_21_SEP, "2523", "28", "0", "2017-07-01", id="cement-28"),
        pytest.param("25232910", ON_22_SEP, "25232910", "18", "0", "2025-09-22", id="cement-18"),
        pytest.param("93020000", ON_22_SEP, "93020000", "40", "0", "2025-09-22", id="revolvers-40"),
        pytest.param("8504310099", ON_22_SEP, None, None, None, None, id="ten-digits-is-not-a-code"),
        # A tariff item missing from the portal list takes its sub-heading's single rate.
        pytest.param("84145199", ON_22_SEP, "841451", "18", "0", "2017-07-01", id="falls-back-to-subheading"),
        # Services: ops/hsn/sac_rates.csv, inherited by the 6-digit codes beneath a heading.
        pytest.param("998314", date(2025, 10, 1), "998314", "18", "0", "2017-07-01", id="it-services"),
        pytest.param("998222", date(2025, 10, 1), "998222", "18", "0", "2017-07-01", id="accounting"),
        pytest.param("9983", ON_21_SEP, "9983", "18", "0", "2017-07-01", id="professional-heading"),
        pytest.param("999721", ON_21_SEP, "999721", "18", "0", "2017-07-01", id="barber-18-before"),
        pytest.param("999721", ON_22_SEP, "999721", "5", "0", "2025-09-22", id="barber-5-after"),
        pytest.param("999616", ON_21_SEP, "999616", "12", "0", "2017-07-01", id="cinema-up-to-100-before"),
        pytest.param("999616", ON_22_SEP, "999616", "5", "0", "2025-09-22", id="cinema-up-to-100-after"),
        pytest.param("999694", ON_22_SEP, "999694", "40", "0", "2025-09-22", id="casino-40"),
        pytest.param("999712", ON_22_SEP, "999712", "18", "0", "2017-07-01", id="dry-cleaning"),
    ],
)
def test_master_rate_on_the_date(
    hsn: str, day: date, code: str | None, gst: str | None, cess: str | None, since: str | None
) -> None:
    entry = master_rate(hsn, day)
    if code is None:
        assert entry is None
        return
    assert entry is not None and gst is not None and cess is not None
    assert (entry.hsn_prefix, entry.gst_rate, entry.cess_rate) == (code, D(gst), D(cess))
    assert entry.effective_from.isoformat() == since


@pytest.mark.parametrize(
    ("hsn", "day", "candidates"),
    [
        pytest.param("62052000", ON_21_SEP, ["5", "12"], id="cotton-shirt-by-value-before"),
        pytest.param("62052000", ON_22_SEP, ["5", "18"], id="cotton-shirt-by-value-after"),
        pytest.param("6205", ON_22_SEP, ["5", "18"], id="shirt-heading"),
        pytest.param("87032110", ON_21_SEP, ["18", "28"], id="car-by-length-and-engine-before"),
        pytest.param("87032110", ON_22_SEP, ["18", "40"], id="car-by-length-and-engine-after"),
        pytest.param("21069020", ON_22_SEP, ["0", "5", "28"], id="pan-masala-item-after"),
        pytest.param("21069020", FEB_2026, ["0", "5", "40"], id="pan-masala-28-becomes-40"),
        pytest.param("85043100", ON_22_SEP, ["5", "18"], id="transformer-or-ev-charger"),
        pytest.param("996311", ON_21_SEP, ["12", "18"], id="hotel-by-tariff-before"),
        pytest.param("996311", ON_22_SEP, ["5", "18"], id="hotel-by-tariff-after"),
        pytest.param("9954", ON_22_SEP, ["1", "5", "7.5", "18"], id="construction"),
        pytest.param("9992", ON_22_SEP, ["0", "18"], id="education"),
    ],
)
def test_conditional_rates_list_their_candidates(hsn: str, day: date, candidates: list[str]) -> None:
    found = hsn_lookup(hsn, day)
    assert found is not None
    assert found.rate is None
    assert [str(r) for r in found.candidates] == candidates
    assert master_rate(hsn, day) is None


@pytest.mark.parametrize(
    ("hsn", "day"),
    [
        pytest.param("22030000", ON_22_SEP, id="beer"),
        pytest.param("22083011", ON_22_SEP, id="whisky"),
        pytest.param("27090000", ON_22_SEP, id="crude"),
        pytest.param("27101930", ON_21_SEP, id="diesel"),
        pytest.param("271121", date(2026, 1, 19), id="seed-natural-gas"),
    ],
)
def test_outside_gst_codes_have_no_rate(hsn: str, day: date) -> None:
    found = hsn_lookup(hsn, day)
    assert found is not None
    assert (found.outside_gst, found.rate, found.candidates) == (True, None, ())
    assert master_rate(hsn, day) is None


@pytest.mark.parametrize(
    ("hsn", "day"),
    [
        pytest.param("1234", date(2025, 1, 1), id="unknown-chapter-12-heading-34"),
        pytest.param("7700", date(2025, 1, 1), id="reserved-chapter-77"),
        pytest.param("84145110", date(2017, 6, 30), id="before-gst"),
        pytest.param("998599", ON_22_SEP, id="unsourced-support-service-has-candidates-not-one"),
        pytest.param("9973", ON_22_SEP, id="leasing-like-the-goods-not-sourced"),
    ],
)
def test_master_rate_is_none_when_nothing_single_applies(hsn: str, day: date) -> None:
    assert master_rate(hsn, day) is None


@pytest.mark.parametrize(
    ("hsn", "day", "cess"),
    [
        pytest.param("24022010", ON_21_SEP, D("5"), id="cigarettes-percent-part"),
        pytest.param("22021010", ON_21_SEP, D("12"), id="aerated-percent"),
        pytest.param("21069020", ON_21_SEP, "0.32R per unit (Pan-masala)", id="pan-masala-on-retail-price"),
        pytest.param("27011200", ON_21_SEP, "Rs.400 per tonne", id="coal-specific"),
        pytest.param("27011200", ON_22_SEP, None, id="coal-cess-ended-gst-2.0"),
        pytest.param("24039910", JAN_2026, "0.56R per unit", id="chewing-tobacco-kept-until-feb-2026"),
        pytest.param("24039910", FEB_2026, None, id="chewing-tobacco-cess-ended"),
        pytest.param("87111020", ON_21_SEP, "3% (Motorcycles", id="motorcycle-above-350cc-conditional"),
        pytest.param("84145110", ON_21_SEP, None, id="fan-no-cess"),
    ],
)
def test_cess_is_a_percent_only_when_certain(hsn: str, day: date, cess: object) -> None:
    found = hsn_lookup(hsn, day)
    assert found is not None
    if isinstance(cess, str):
        assert isinstance(found.cess, str)
        assert cess in found.cess
        assert found.cess_rate == 0
    else:
        assert found.cess == cess
        assert found.cess_rate == (cess if cess is not None else 0)


def test_lookup_shows_description_kind_basis_and_notes() -> None:
    fan = hsn_lookup("84145110", ON_22_SEP)
    assert fan is not None
    assert (fan.description, fan.kind) == ("TABLE FANS", "goods")
    assert "9/2025-CT(R)" in fan.basis
    before = hsn_lookup("84145110", ON_21_SEP)
    assert before is not None and "1/2017-CT(R)" in before.basis
    it = hsn_lookup("998314", ON_22_SEP)
    assert it is not None and it.kind == "services" and "11/2017-CT(R)" in it.basis


def test_exact_lookup_does_not_fall_back_to_a_prefix() -> None:
    assert hsn_lookup("84145199", ON_22_SEP, exact=True) is None
    assert hsn_lookup("84145110", ON_22_SEP, exact=True) is not None


@pytest.mark.parametrize("code", ["", "84A5", "８４１４", "8414 5110", None, 84145110, "841451100"])
def test_malformed_codes_find_nothing(code: object) -> None:
    assert hsn_lookup(code, ON_22_SEP) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("q", "first", "codes_include"),
    [
        # The sub-heading (table, floor, wall... fans) comes before its tariff items.
        pytest.param("table fan", "841451", ["84145110"], id="words"),
        pytest.param("TABLE FANS", "841451", ["84145110"], id="case-and-plural"),
        pytest.param("Ｔａｂｌｅ ｆａｎ", "841451", ["84145110"], id="full-width-letters"),
        pytest.param("shirt cotton", "62052000", ["62052000"], id="whole-words-rank-first"),
        pytest.param("8414", "8414", ["8414", "841451"], id="code-prefix"),
        pytest.param("hotel accommodation", None, ["996311"], id="services"),
    ],
)
def test_search_by_words_or_code_prefix(q: str, first: str | None, codes_include: list[str]) -> None:
    found = hsn_search(q, ON_22_SEP, 50)
    codes = [h.code for h in found]
    if first is not None:
        assert codes[0] == first
    assert set(codes_include) <= set(codes)


@pytest.mark.parametrize("q", ["", "   ", "\x00\x1f", "%", "'; drop table x; --", "🙂", "zzzzqqqq"])
def test_search_with_nothing_to_match_is_empty(q: str) -> None:
    assert hsn_search(q, ON_22_SEP, 20) == []


def test_search_respects_the_limit_and_the_date() -> None:
    assert len(hsn_search("84", ON_22_SEP, 3)) == 3
    (before,) = hsn_search("8415", ON_21_SEP, 1)
    (after,) = hsn_search("8415", ON_22_SEP, 1)
    assert (before.rate, after.rate) == (D("28"), D("18"))


def test_most_tariff_items_resolve_to_a_single_rate() -> None:
    items = [code for code in _rates_table() if len(code) == 8 and not code.startswith("99")]
    single = [code for code in items if master_rate(code, ON_22_SEP) is not None]
    # The reference: 10,715 of 14,339 goods tariff items have a single rate from 22 Sep 2025.
    assert len(single) / len(items) > 0.7


def test_every_single_master_rate_is_a_valid_rate_in_its_period() -> None:
    for code in _rates_table():
        for start in PERIODS:
            found = hsn_lookup(code, start, exact=True)
            assert found is not None
            for rate in found.candidates:
                assert rate in valid_rates_on(start), (code, start, found.candidates)


def test_no_code_keeps_12_after_gst_2_0_or_28_after_the_cess_ended() -> None:
    for code in _rates_table():
        assert D("12") not in hsn_lookup(code, ON_22_SEP, exact=True).candidates  # type: ignore[union-attr]
        assert D("28") not in hsn_lookup(code, FEB_2026, exact=True).candidates  # type: ignore[union-attr]
