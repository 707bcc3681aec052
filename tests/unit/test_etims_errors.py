"""eTIMS result codes -> retry classes, and the typed failures callers act on (kenya-etims.md)."""

from __future__ import annotations

import pytest

from connectors.errors import ErrorClass, NeedsAttentionError, PermanentError, RetryableError
from connectors.etims.errors import (
    CODES,
    DEVICE_ALREADY_INSTALLED_MESSAGE,
    DeviceAlreadyInstalled,
    DuplicateSale,
    classify,
    error_for,
    is_success,
)

R, P, N = ErrorClass.RETRYABLE, ErrorClass.PERMANENT, ErrorClass.NEEDS_ATTENTION

# Every failure code of the reference notes, with the class the notes' inferred retry table gives it.
EXPECTED = {
    "891": N,
    "892": N,
    "893": N,
    "894": R,  # communication error
    "895": N,
    "896": R,
    "897": N,
    "898": N,
    "899": N,  # VSCU's reported duplicate: verify, never retry blindly
    "900": N,  # no header: the device key is missing
    "901": N,  # invalid device
    "902": N,  # device already installed
    "903": N,  # only OSCU can be verified
    "910": P,
    "911": P,
    "912": P,
    "913": P,
    "921": P,
    "922": P,
    "990": R,
    "991": R,
    "992": R,
    "993": R,
    "994": N,  # duplicate: verify and adopt
    "995": N,
    "999": R,
}


@pytest.mark.parametrize(("code", "expected"), sorted(EXPECTED.items()))
def test_every_failure_code_of_the_notes_has_its_class(code: str, expected: ErrorClass) -> None:
    assert classify(code, "any message") == expected


def test_the_table_classifies_exactly_the_codes_of_the_notes() -> None:
    assert set(CODES) == {*EXPECTED, "000", "001"}
    assert all(entry.action for entry in CODES.values()), "every code tells the operator what to do"


@pytest.mark.parametrize("code", ["000", "001"])
def test_success_and_an_empty_answer_are_not_failures(code: str) -> None:
    assert is_success(code)
    with pytest.raises(ValueError, match="not a failure"):
        classify(code)


@pytest.mark.parametrize("code", ["123", "905", "998", "", "abc"])
def test_a_code_nobody_classified_needs_a_person(code: str) -> None:
    assert classify(code) == N
    error = error_for(code, "strange", endpoint="saveItem", device_type="oscu")
    assert isinstance(error, NeedsAttentionError) and error.details["unclassified"] is True


@pytest.mark.parametrize(
    ("code", "kind"), [("894", RetryableError), ("910", PermanentError), ("901", NeedsAttentionError)]
)
def test_error_for_raises_the_class_of_the_code_with_kras_message_and_code(code: str, kind: type) -> None:
    error = error_for(code, "KRA's words", endpoint="saveTrnsSalesOsdc", device_type="oscu")

    assert type(error) is kind
    assert error.code == code and "KRA's words" in error.message
    assert error.details["endpoint"] == "saveTrnsSalesOsdc" and error.details["result_code"] == code


def test_a_994_on_an_oscu_sale_is_a_duplicate_kra_confirmed() -> None:
    error = error_for("994", "overlapped data", endpoint="saveTrnsSalesOsdc", device_type="oscu")

    assert isinstance(error, DuplicateSale) and error.verified_duplicate is True
    assert error.error_class == N


def test_a_899_on_a_vscu_sale_is_a_duplicate_that_still_needs_verification() -> None:
    error = error_for("899", "client error", endpoint="saveSales", device_type="vscu")

    assert isinstance(error, DuplicateSale) and error.verified_duplicate is False


def test_a_899_from_oscu_or_on_another_call_is_not_taken_for_a_duplicate() -> None:
    oscu = error_for("899", "client error", endpoint="saveTrnsSalesOsdc", device_type="oscu")
    item = error_for("899", "client error", endpoint="saveItems", device_type="vscu")

    assert not isinstance(oscu, DuplicateSale) and not isinstance(item, DuplicateSale)
    assert oscu.error_class == item.error_class == N


def test_a_994_on_an_item_is_not_a_duplicate_sale() -> None:
    error = error_for("994", "overlapped data", endpoint="saveItem", device_type="oscu")

    assert not isinstance(error, DuplicateSale) and error.error_class == N


def test_902_tells_the_operator_what_to_do() -> None:
    error = error_for("902", "This device is installed", endpoint="selectInitOsdcInfo", device_type="oscu")

    assert isinstance(error, DeviceAlreadyInstalled) and error.error_class == N
    assert error.operator_message == DEVICE_ALREADY_INSTALLED_MESSAGE
    assert "reset the device serial" in error.message and "new device serial" in error.message
