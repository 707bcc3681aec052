"""GSTIN validation (india-gst.md notes, section 3).

Expected check characters come from GSTINs published by their holders or in library documentation, never
from our own function, so a wrong algorithm cannot agree with itself.
"""

import pytest
from stdnum import luhn

from engine.tax import TaxRuleError, check_character, classify_gstin, gstin_state, validate_gstin

# Publicly printed GSTINs with their real check characters.
REAL_GSTINS = [
    pytest.param("27AAACR5055K1Z7", id="reliance-industries-maharashtra"),
    pytest.param("27AAPFU0939F1ZV", id="python-stdnum-documentation-example"),
    pytest.param("24AAQCA8719H1ZC", id="india-compliance-test-gujarat"),
    pytest.param("07AAGFF2194N1Z1", id="delhi-firm"),
]


@pytest.mark.parametrize("gstin", REAL_GSTINS)
def test_real_gstins_are_valid(gstin: str) -> None:
    assert validate_gstin(gstin) == gstin


@pytest.mark.parametrize("gstin", REAL_GSTINS)
def test_check_character_reproduces_the_published_one(gstin: str) -> None:
    assert check_character(gstin[:14]) == gstin[14]


@pytest.mark.parametrize(
    "first14",
    [
        pytest.param("38AAACR5055K1Z", id="ladakh"),
        pytest.param("97AAACR5055K1Z", id="other-territory"),
        pytest.param("99AAACR5055K1Z", id="centre-jurisdiction"),
        pytest.param("29AAGCB1286Q2Z", id="karnataka-second-registration"),
        pytest.param("07AAGFF2194N1C", id="tcs-operator"),
        pytest.param("0000000000000Z", id="all-zeros"),
        pytest.param("ZZZZZZZZZZZZZZ", id="all-z"),
    ],
)
def test_check_character_agrees_with_an_independent_luhn_mod_36(first14: str) -> None:
    # python-stdnum's generic Luhn mod N is a separate implementation of the same algorithm.
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert check_character(first14) == luhn.calc_check_digit(first14, alphabet)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("27aaacr5055k1z7", "27AAACR5055K1Z7", id="lower-case"),
        pytest.param(" 27 AAACR5055K 1Z7 ", "27AAACR5055K1Z7", id="spaces"),
        pytest.param("27-AAACR5055K-1Z7", "27AAACR5055K1Z7", id="hyphens"),
        # States that python-stdnum's table does not know (it stops at 37).
        pytest.param("38AAACR5055K1Z4", "38AAACR5055K1Z4", id="ladakh-38"),
        pytest.param("97AAACR5055K1Z0", "97AAACR5055K1Z0", id="other-territory-97"),
        pytest.param("99AAACR5055K1ZW", "99AAACR5055K1ZW", id="centre-jurisdiction-99"),
        # 'C' in position 14: tax collector (e-commerce operator); python-stdnum insists on 'Z'.
        pytest.param("07AAGFF2194N1CC", "07AAGFF2194N1CC", id="tcs-registration"),
    ],
)
def test_valid_gstins_are_normalised(value: str, expected: str) -> None:
    assert validate_gstin(value) == expected


def test_gstins_beyond_stdnums_state_table_have_the_check_characters_luhn_gives() -> None:
    # Guards the literals above against typos: each is its prefix plus stdnum's Luhn mod 36 character.
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for gstin in ("38AAACR5055K1Z4", "97AAACR5055K1Z0", "99AAACR5055K1ZW", "07AAGFF2194N1CC"):
        assert luhn.is_valid(gstin, alphabet), gstin


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param("27AAACR5055K1Z", "15 characters long, not 14", id="too-short"),
        pytest.param("27AAACR5055K1Z77", "15 characters long, not 16", id="too-long"),
        pytest.param("27AAACR5055K1Z*", "only digits and the letters", id="bad-character"),
        pytest.param("40AAACR5055K1Z7", "starts with '40'", id="unknown-state"),
        pytest.param("96AAACR5055K1ZX", "starts with '96'", id="outside-india-is-not-a-registration"),
        pytest.param("27AAAXR5055K1Z7", "not a valid PAN", id="pan-holder-type"),
        pytest.param("27AAACR0000K1Z7", "not a valid PAN", id="pan-serial-zero"),
        pytest.param("27AAACR5055K1A7", "does not follow a GSTIN format", id="position-14-not-z"),
        pytest.param("27AAACR5055K0Z7", "entity code '0'", id="entity-code-zero"),
        pytest.param("27AAACR5055K1Z8", "check character '8' but '7' was expected", id="check-char"),
        # Seed SmartKhata's example GSTINs carry wrong check characters.
        pytest.param("06AABCT1234H1Z0", "but 'Q' was expected", id="seed-smartkhata-seller"),
        pytest.param("08AABCT1234H1Z0", "but 'M' was expected", id="seed-smartkhata-buyer"),
        # Seed College Accounts: "ABCDE1234F" has 'D' as holder type, which no PAN has.
        pytest.param("29ABCDE1234F1Z5", "not a valid PAN", id="seed-college-accounts"),
        # NIC sandbox test GSTINs fail the rules on purpose (india-gst.md notes, section 1).
        pytest.param("02AMBPG7773M002", "does not follow a GSTIN format", id="nic-sandbox-02"),
        pytest.param("36AMBPG7773M002", "does not follow a GSTIN format", id="nic-sandbox-36"),
    ],
)
def test_invalid_gstins_say_what_is_wrong(value: str, fragment: str) -> None:
    with pytest.raises(TaxRuleError) as info:
        validate_gstin(value, path="buyer.gstin")
    (violation,) = info.value.violations
    assert violation.code == "invalid_gstin"
    assert violation.path == "buyer.gstin"
    assert fragment in violation.message


def test_check_character_mismatch_details_name_the_expected_character() -> None:
    with pytest.raises(TaxRuleError) as info:
        validate_gstin("06AABCT1234H1Z0")
    assert info.value.violations[0].details["expected_check_character"] == "Q"


@pytest.mark.parametrize(
    ("gstin", "state"),
    [
        pytest.param("27AAACR5055K1Z7", "27", id="maharashtra"),
        pytest.param("38AAACR5055K1Z4", "38", id="ladakh"),
    ],
)
def test_gstin_state_is_the_first_two_digits(gstin: str, state: str) -> None:
    assert gstin_state(gstin) == state


@pytest.mark.parametrize("bad", ["27AAACR5055K1", "27AAACR5055K1Z*"])
def test_check_character_needs_fourteen_alphanumerics(bad: str) -> None:
    with pytest.raises(ValueError, match="14 characters"):
        check_character(bad)


# classify_gstin (contract C4). Each number is its pattern's prefix plus the check character that
# python-stdnum's independent Luhn mod 36 gives (test below), so the table cannot agree with itself.
KINDS = [
    pytest.param("27AAACR5055K1Z7", "regular", "27", "AAACR5055K", id="regular"),
    pytest.param("38AAACR5055K1Z4", "regular", "38", "AAACR5055K", id="regular-ladakh"),
    pytest.param("27AAACR5055K1CI", "tcs", "27", "AAACR5055K", id="tcs-e-commerce-operator"),
    # A deductor (a government office) registers with its TAN: 4 letters, 5 digits, a letter.
    pytest.param("29BLRA12345B1DP", "tds", "29", None, id="tds-with-tan"),
    pytest.param("0723CHE00027UN5", "uin", "07", None, id="uin-un-body"),
    pytest.param("0717USA12345ON", "uin", "07", None, id="uin-embassy"),
    pytest.param("2717GBR12345NRI", "nri", "27", None, id="non-resident-taxable-person"),
    pytest.param("9917SGP29001OST", "oidar", "99", None, id="oidar-centre-jurisdiction"),
]


def _with_check(first14: str) -> str:
    return first14 + luhn.calc_check_digit(first14, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@pytest.mark.parametrize(("gstin", "kind", "state", "pan"), KINDS)
def test_classify_says_what_kind_of_registration_a_gstin_is(
    gstin: str, kind: str, state: str, pan: str | None
) -> None:
    number = gstin if len(gstin) == 15 else _with_check(gstin)
    info = classify_gstin(number.lower())
    assert (info.gstin, info.kind, info.state_code, info.pan) == (number, kind, state, pan)
    assert validate_gstin(number) == number


def test_the_classification_table_carries_luhn_check_characters() -> None:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for param in KINDS:
        gstin = str(param.values[0])
        assert len(gstin) == 14 or luhn.is_valid(gstin, alphabet), gstin


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        # OIDAR suppliers register with the Centre: the portal's pattern starts with 99.
        pytest.param(_with_check("0717USA12345OS"), "OIDAR GSTINs start with 99", id="oidar-in-a-state"),
        pytest.param(_with_check("27AAACR5055K0D"), "entity code '0'", id="tds-entity-zero"),
        pytest.param(_with_check("0723CHE00027XX"), "does not follow a GSTIN format", id="foreign-unknown"),
        pytest.param(_with_check("9617SGP29001OS"), "starts with '96'", id="foreign-outside-india"),
        pytest.param("27AAACR5055K1Z7\x00", "15 characters long", id="nul-byte"),
        pytest.param("２７AAACR5055K1Z7", "only digits and the letters", id="fullwidth-digits"),
        pytest.param("27AAACR5055K1Z7" * 1000, "15 characters long, not 15000", id="huge"),
        pytest.param("", "15 characters long, not 0", id="empty"),
    ],
)
def test_classify_refuses_what_validate_refuses(value: str, fragment: str) -> None:
    for check in (classify_gstin, validate_gstin):
        with pytest.raises(TaxRuleError) as info:
            check(value)
        (violation,) = info.value.violations
        assert violation.code == "invalid_gstin"
        assert fragment in violation.message


def test_classify_refuses_a_value_that_is_not_text() -> None:
    with pytest.raises(TaxRuleError, match="must be a string"):
        classify_gstin(12345)  # type: ignore[arg-type]


def test_a_refusal_names_the_field_of_each_call_however_often_the_number_was_seen() -> None:
    # Valid numbers are cached (engine/tax/gstin.py, _classify_valid); a refusal must still name the
    # field of the call that made it, not the one of an earlier call with the same number.
    refused = "27AAACR5055K1Z8"  # the real check character is 7
    for path in ("seller.gstin", "buyer.gstin", "seller.gstin"):
        with pytest.raises(TaxRuleError) as caught:
            validate_gstin(refused, path=path)
        assert [v.path for v in caught.value.violations] == [path]
    first = classify_gstin(" 27-aaacr5055k1z7 ", "seller.gstin")
    again = classify_gstin("27AAACR5055K1Z7", "buyer.gstin")
    assert first == again
    assert first.gstin == "27AAACR5055K1Z7"
    assert (first.kind, first.state_code, first.pan) == ("regular", "27", "AAACR5055K")
