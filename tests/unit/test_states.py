"""State code normalisation (india-gst.md notes, section 5; seeds send two-letter codes such as "KA")."""

import pytest

from engine.tax import STATES, TaxRuleError, normalise_state


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("KA", "29", id="seed-two-letter-code"),
        pytest.param("ka", "29", id="lower-case"),
        pytest.param(" KA ", "29", id="surrounding-spaces"),
        pytest.param("29", "29", id="numeric"),
        pytest.param("9", "09", id="single-digit-padded"),
        pytest.param("09", "09", id="uttar-pradesh"),
        pytest.param("38", "38", id="ladakh-numeric"),
        pytest.param("LA", "38", id="ladakh-alpha"),
        pytest.param("96", "96", id="other-countries"),
        pytest.param("97", "97", id="other-territory"),
        pytest.param("99", "99", id="centre-jurisdiction"),
        pytest.param("MH", "27", id="maharashtra"),
        pytest.param("TS", "36", id="telangana-vehicle-code"),
        pytest.param("TG", "36", id="telangana-iso-code"),
        pytest.param("AP", "37", id="andhra-pradesh-is-the-new-code"),
        pytest.param("Karnataka", "29", id="full-name"),
        pytest.param("tamil nadu", "33", id="full-name-lower-case"),
    ],
)
def test_state_values_normalise_to_the_two_digit_gst_code(value: str, expected: str) -> None:
    assert normalise_state(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("XX", id="unknown-alpha"),
        pytest.param("39", id="unassigned-number"),
        pytest.param("0", id="zero"),
        pytest.param("00", id="double-zero"),
        pytest.param("100", id="three-digits"),
        pytest.param("", id="empty"),
        pytest.param("Atlantis", id="unknown-name"),
    ],
)
def test_unknown_states_are_rejected_with_the_path_given(value: str) -> None:
    with pytest.raises(TaxRuleError) as info:
        normalise_state(value, path="buyer.state")
    (violation,) = info.value.violations
    assert violation.code == "unknown_state"
    assert violation.path == "buyer.state"
    assert repr(value) in violation.message


def test_state_table_has_every_code_from_the_notes() -> None:
    expected = {f"{n:02d}" for n in range(1, 39)} | {"96", "97", "99"}
    assert set(STATES) == expected
    assert STATES["29"].alpha == "KA"
    assert STATES["38"].name == "Ladakh"
