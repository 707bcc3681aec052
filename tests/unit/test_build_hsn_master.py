"""The rules ops/build_hsn_master.py applies to the shared HSN reference (pure parts, table-driven)."""

import pytest

from ops.build_hsn_master import _cess_percent_8, _load_sac, _p2, _rates, _sac_row

RULES = [
    (("22021010",), (), "12%"),
    (("2202",), (), "12%"),
    (("24022010",), (), "5% + Rs.2076 per thousand"),
    (("24021010",), (), "21% or Rs. 4170 per thousand, whichever is higher"),
    (("21069020",), (), "0.32R per unit"),
    (("2701",), (), "Rs.400 per tonne"),
    (("8711",), (), "3%"),
    (("8702", "870321"), (), "1%"),
    (("8703",), (), "17%"),
    (("8703",), (), "nil"),
    (("9999",), ("99991234",), "15%"),
]


@pytest.mark.parametrize(
    ("code", "percent"),
    [
        pytest.param("22021010", "12", id="item-and-heading-agree"),
        pytest.param("22029910", "", id="only-the-heading-names-it-by-description"),
        pytest.param("24022010", "5", id="percent-part-of-a-mixed-cess"),
        pytest.param("24021010", "", id="whichever-is-higher"),
        pytest.param("21069020", "", id="on-retail-price"),
        pytest.param("27011200", "", id="per-tonne"),
        pytest.param("87112010", "", id="heading-only-motorcycles-above-350cc"),
        pytest.param("87032110", "", id="entries-disagree"),
        pytest.param("84145110", "", id="no-entry"),
        pytest.param("99991234", "", id="excluded"),
    ],
)
def test_cess_percent_only_when_certain(code: str, percent: str) -> None:
    assert _cess_percent_8(code, RULES) == percent


@pytest.mark.parametrize(
    ("single", "possible", "expected"),
    [
        pytest.param("18", "18", "18", id="single"),
        pytest.param("", "18;5", "5|18", id="candidates-sorted"),
        pytest.param("", "5;5.0;18", "5|18", id="duplicates"),
        pytest.param("0.250", "0.25", "0.25", id="normalised"),
        pytest.param("", "", "", id="none"),
    ],
)
def test_rate_cells(single: str, possible: str, expected: str) -> None:
    assert _rates(single, possible) == expected


@pytest.mark.parametrize(
    ("description", "p1", "column", "expected"),
    [
        pytest.param("CIGARETTES", "28", "40", "40", id="reference-2026-column"),
        pytest.param("PAN MASALA", "0|5|28", "", "0|5|40", id="28-candidate-becomes-40"),
        pytest.param("BIRIS", "5|28", "", "5|18", id="biri-28-becomes-18"),
        pytest.param("TABLE FANS", "18", "", "18", id="unchanged"),
        pytest.param("NOTHING", "", "", "", id="no-rate"),
    ],
)
def test_rates_from_1_february_2026(description: str, p1: str, column: str, expected: str) -> None:
    assert _p2("24", description, p1, column) == expected


@pytest.mark.parametrize(
    ("code", "rates_post"),
    [
        pytest.param("998314", "18", id="inherits-9983"),
        pytest.param("999721", "5", id="five-digit-group-99972"),
        pytest.param("999711", "18", id="group-99971"),
        pytest.param("999731", "5|18", id="heading-9997"),
        pytest.param("996311", "5|18", id="own-row"),
        pytest.param("9973", None, id="not-sourced"),
    ],
)
def test_service_rows_apply_to_the_codes_beneath(code: str, rates_post: str | None) -> None:
    row = _sac_row(code, _load_sac())
    assert (row["rates_post"] if row else None) == rates_post
