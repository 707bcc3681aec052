"""KRA PINs: a letter, nine digits and a letter (issue 10; reference notes on Kenya eTIMS)."""

from __future__ import annotations

import pytest

from engine.errors import InvalidInput
from engine.tax.errors import TaxRuleError
from engine.tax.kra_pin import validate_kra_pin


@pytest.mark.parametrize(
    ("given", "expected"),
    [("P051234567X", "P051234567X"), ("p051234567x", "P051234567X"), (" A123456789Z ", "A123456789Z")],
)
def test_a_kra_pin_is_accepted_and_upper_cased(given: str, expected: str) -> None:
    assert validate_kra_pin(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "",
        "P05123456X",  # 8 digits
        "P0512345678X",  # 10 digits
        "0051234567X",  # starts with a digit
        "P051234567",  # no closing letter
        "PP51234567X",
        "P05123 4567X",
        "P051234567X\n",
        "P051234567\x00",
        "Р051234567X",  # Cyrillic Р
        "P" + "9" * 10_000 + "X",
    ],
)
def test_anything_else_is_refused_as_invalid_input_naming_the_field(given: str) -> None:
    with pytest.raises(TaxRuleError) as caught:
        validate_kra_pin(given, "buyer.kra_pin")
    assert isinstance(caught.value, InvalidInput)
    (violation,) = caught.value.violations
    assert violation.path == "buyer.kra_pin"
    assert violation.code == "invalid_kra_pin"
    assert "letter, 9 digits and a letter" in violation.message
    # A hostile value is never echoed whole (log lines, answers).
    assert len(violation.message) < 200
    assert "\x00" not in violation.message and "\n" not in violation.message
