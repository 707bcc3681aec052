"""Effective-dated GST rates (india-gst.md notes, section 4) and the HSN/SAC master."""

from datetime import date
from decimal import Decimal

import pytest

from engine.tax import master_rate, valid_rates_on
from engine.tax.rates import MASTER

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


@pytest.mark.parametrize(
    ("hsn", "day", "prefix", "gst", "cess"),
    [
        pytest.param("8504", date(2024, 4, 1), "8504", "18", "0", id="seed-transformers"),
        pytest.param("85043100", date(2026, 4, 1), "8504", "18", "0", id="8-digit-falls-back-to-4"),
        pytest.param("847130", date(2025, 1, 1), "8471", "18", "0", id="laptop"),
        pytest.param("998314", date(2025, 10, 1), "998314", "18", "0", id="it-services-sac-6"),
        pytest.param("998319", date(2025, 10, 1), "9983", "18", "0", id="other-it-service-falls-back"),
        pytest.param("0401", date(2025, 10, 1), "0401", "0", "0", id="milk-nil"),
        pytest.param("4901", date(2025, 10, 1), "4901", "0", "0", id="books-nil"),
        pytest.param("996331", date(2025, 10, 1), "9963", "5", "0", id="restaurant"),
        pytest.param("996311", date(2025, 9, 21), "996311", "12", "0", id="hotel-before"),
        pytest.param("996311", date(2025, 9, 22), "996311", "5", "0", id="hotel-after"),
        pytest.param("6204", date(2025, 9, 21), "6204", "12", "0", id="seed-garments-12-before"),
        pytest.param("2106", date(2025, 9, 21), "2106", "18", "0", id="namkeen-before"),
        pytest.param("210690", date(2025, 9, 22), "2106", "5", "0", id="namkeen-after"),
        pytest.param("21069020", date(2025, 9, 22), "21069020", "28", "60", id="pan-masala-kept-at-28"),
        pytest.param("21069020", date(2026, 2, 1), "21069020", "40", "0", id="pan-masala-40"),
        pytest.param("220210", date(2025, 9, 21), "2202", "28", "12", id="aerated-28-cess"),
        pytest.param("220210", date(2025, 9, 22), "2202", "40", "0", id="aerated-40"),
        pytest.param("24022010", date(2025, 9, 21), "2402", "28", "5", id="cigarettes-before"),
        pytest.param("24022010", date(2026, 1, 31), "2402", "28", "5", id="cigarettes-last-cess-day"),
        pytest.param("24022010", date(2026, 2, 1), "2402", "40", "0", id="cigarettes-40-no-cess"),
        pytest.param("24031921", date(2026, 1, 31), "24031921", "28", "0", id="bidi-28"),
        pytest.param("24031921", date(2026, 2, 1), "24031921", "18", "0", id="bidi-18"),
        pytest.param("87032110", date(2025, 9, 21), "870321", "28", "1", id="small-car-before"),
        pytest.param("87032110", date(2025, 9, 22), "870321", "18", "0", id="small-car-after"),
        pytest.param("870324", date(2025, 9, 22), "870324", "40", "0", id="large-car-after"),
        pytest.param("3004", date(2025, 9, 22), "3004", "5", "0", id="medicines-after"),
        pytest.param("9954", date(2025, 9, 22), "9954", "18", "0", id="construction"),
        pytest.param("9302", date(2025, 9, 22), "9302", "40", "0", id="seed-weapons-40"),
    ],
)
def test_master_rate_takes_longest_prefix_and_latest_period(
    hsn: str, day: date, prefix: str, gst: str, cess: str
) -> None:
    entry = master_rate(hsn, day)
    assert entry is not None
    assert (entry.hsn_prefix, entry.gst_rate, entry.cess_rate) == (prefix, D(gst), D(cess))


@pytest.mark.parametrize(
    ("hsn", "day"),
    [
        pytest.param("271121", date(2026, 1, 19), id="seed-natural-gas-not-in-master"),
        pytest.param("1234", date(2025, 1, 1), id="unknown-chapter"),
        pytest.param("8504", date(2017, 6, 30), id="before-gst"),
    ],
)
def test_master_rate_is_none_when_nothing_applies(hsn: str, day: date) -> None:
    assert master_rate(hsn, day) is None


def test_every_master_rate_is_a_valid_rate_throughout_its_period() -> None:
    for prefix, entries in MASTER.items():
        for index, entry in enumerate(entries):
            ends = entries[index + 1].effective_from if index + 1 < len(entries) else date(2030, 1, 1)
            for day in (entry.effective_from, date(2025, 9, 22), date(2026, 2, 1), ends):
                if entry.effective_from <= day < ends:
                    assert entry.gst_rate in valid_rates_on(day), (prefix, entry, day)


def test_no_master_entry_keeps_12_or_28_after_their_removal_except_tobacco() -> None:
    tobacco = {"2402", "240399", "24031921", "21069020"}
    for prefix in MASTER:
        entry = master_rate(prefix, date(2025, 9, 22))
        assert entry is not None
        if prefix not in tobacco:
            assert entry.gst_rate not in {D("12"), D("28")}, entry
            assert entry.cess_rate == 0, entry


def test_master_is_a_representative_size() -> None:
    assert 40 <= len(MASTER) <= 80
