"""What the write side accepts, as pure rules: safe text, plain bounded decimals, strict ISO dates,
line and invoice ceilings after tax, the invoice date window (docs/validation.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from engine.commands import CancelInvoice, IssueInvoice
from engine.fields import field_errors, forbidden_character
from engine.tax import LineInput, TaxRuleError, compute_invoice_tax
from engine.tax.india_gst import check_invoice_date, today_in_india
from engine.tax.limits import MAX_INVOICE_AMOUNT, MAX_LINE_AMOUNT

D = Decimal

BODY: dict[str, Any] = {
    "number": "INV-1",
    "date": "2026-01-19",
    "buyer": {
        "name": "Reliable Traders",
        "state": "27",
        "address": {"line1": "12 Market Road", "city": "Pune", "pincode": "411001"},
    },
    "lines": [
        {"description": "Coil", "hsn": "8471", "quantity": "10", "unit": "NOS", "unit_price": "100.00"}
    ],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """BODY with the field at ``path`` ("lines.0.description") set to ``value``."""
    body = _copy(BODY)
    *parents, last = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value
    return body


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def refusal(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        IssueInvoice.model_validate(body)
    return [(f["path"], f["code"]) for f in field_errors(info.value.errors())]


# -- text -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("character", "kind"),
    [
        ("\x00", "control character U+0000"),
        ("\t", "control character U+0009"),
        ("\n", "control character U+000A"),
        ("\r", "control character U+000D"),
        ("\x1b", "control character U+001B"),
        ("\x7f", "control character U+007F"),
        ("\x85", "control character U+0085"),
        ("\ud800", "lone surrogate U+D800"),
        ("\udfff", "lone surrogate U+DFFF"),
        ("\u2028", "line separator U+2028"),
        ("\u2029", "line separator U+2029"),
        ("\ufdd0", "noncharacter U+FDD0"),
        ("\ufffe", "noncharacter U+FFFE"),
        ("\U0010ffff", "noncharacter U+10FFFF"),
        ("\u202e", "bidirectional control U+202E"),
        ("\u202a", "bidirectional control U+202A"),
        ("\u2066", "bidirectional control U+2066"),
        ("\u2069", "bidirectional control U+2069"),
    ],
)
def test_text_refuses_control_characters_surrogates_noncharacters_and_line_separators(
    character: str, kind: str
) -> None:
    assert forbidden_character(f"ab{character}c") == (2, kind)


@pytest.mark.parametrize(
    "text",
    [
        "Transformer coil",
        "ट्रांसफार्मर कॉइल",  # Devanagari
        "क्‍ष",  # with ZERO WIDTH JOINER: part of correct Indic spelling
        "ಕನ್ನಡ",
        "Café 50% — \"quoted\" 'single' ₹",
        "😀 emoji and \U000f0000 private use",
        "مؤسسة التجارة\u200f 12",  # Arabic with RIGHT-TO-LEFT MARK: implicit marks are fine
    ],
)
def test_ordinary_text_in_any_script_is_accepted(text: str) -> None:
    assert forbidden_character(text) is None


@pytest.mark.parametrize(
    "path",
    [
        "number",
        "buyer.name",
        "buyer.gstin",
        "buyer.state",
        "buyer.address.line1",
        "buyer.address.line2",
        "buyer.address.city",
        "buyer.address.pincode",
        "place_of_supply",
        "lines.0.description",
        "lines.0.hsn",
        "lines.0.unit",
        "lines.0.gst_rate_reason",
    ],
)
def test_every_text_field_of_an_invoice_refuses_a_nul_with_its_path(path: str) -> None:
    expected = path.replace(".0.", "[0].")
    assert refusal(with_change(path, "A1\x00")) == [(expected, "control_character")]


def test_a_cancellation_remark_refuses_a_line_break() -> None:
    with pytest.raises(ValidationError) as info:
        CancelInvoice.model_validate({"reason": "other", "remark": "first\nsecond"})
    assert [(f["path"], f["code"]) for f in field_errors(info.value.errors())] == [
        ("remark", "control_character")
    ]


def test_surrounding_spaces_are_still_trimmed_but_a_trailing_newline_is_refused() -> None:
    assert IssueInvoice.model_validate(with_change("buyer.name", "  Reliable  ")).buyer.name == "Reliable"
    assert refusal(with_change("buyer.name", "Reliable\n")) == [("buyer.name", "control_character")]


# -- numbers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "１２",
        "١٢",
        "१२",
        "1_000",
        "+5",
        " 5",
        "5 ",
        "1e3",
        "1E+3",
        "0x10",
        "5.",
        ".5",
        "NaN",
        "Infinity",
        "",
        True,
    ],
    ids=[
        "fullwidth",
        "arabic-indic",
        "devanagari",
        "underscore",
        "plus",
        "leading-space",
        "trailing-space",
        "exponent",
        "signed-exponent",
        "hex",
        "trailing-point",
        "leading-point",
        "nan",
        "infinity",
        "empty",
        "boolean",
    ],
)
def test_amounts_are_plain_ascii_decimals(value: Any) -> None:
    codes = refusal(with_change("lines.0.quantity", value))
    assert codes and codes[0][0] == "lines[0].quantity", codes
    assert codes[0][1] in {"invalid_number", "decimal_type"}, codes


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12.5", D("12.5")), (12.5, D("12.5")), (12, D("12")), ("007", D("7")), (1e3, D("1000.0"))],
)
def test_amounts_may_be_decimal_strings_or_json_numbers(value: Any, expected: Decimal) -> None:
    assert IssueInvoice.model_validate(with_change("lines.0.quantity", value)).lines[0].quantity == expected


def test_a_json_number_too_precise_for_a_float_must_be_sent_as_a_string() -> None:
    assert refusal(with_change("lines.0.unit_price", 1234567890123.456)) == [
        ("lines[0].unit_price", "invalid_number")
    ]
    line = IssueInvoice.model_validate(with_change("lines.0.unit_price", "123456789012.345")).lines[0]
    assert line.unit_price == D("123456789012.345")


@pytest.mark.parametrize(
    ("field", "too_large", "largest"),
    [
        ("quantity", "10000000000", "9999999999.999"),
        ("unit_price", "1000000000000", "999999999999.999"),
        ("discount", "1000000000000", "999999999999.99"),
        ("gst_rate", "100.001", "100"),
    ],
)
def test_each_amount_has_a_ceiling_that_the_refusal_names(field: str, too_large: str, largest: str) -> None:
    with pytest.raises(ValidationError) as info:
        IssueInvoice.model_validate(with_change(f"lines.0.{field}", too_large))
    [error] = field_errors(info.value.errors())
    assert (error["path"], error["code"], error["limit"]) == (f"lines[0].{field}", "too_large", largest)
    assert largest in error["message"]
    # As a JSON number too.
    assert refusal(with_change(f"lines.0.{field}", float(too_large) * 10)) == [
        (f"lines[0].{field}", "too_large")
    ]


def test_the_openapi_schema_shows_each_ceiling_as_a_maximum() -> None:
    schema = IssueInvoice.model_json_schema()
    quantity = schema["$defs"]["InvoiceLine"]["properties"]["quantity"]["anyOf"]
    assert {"type": "number", "maximum": 9999999999.999} in quantity
    assert {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"} in quantity
    assert schema["properties"]["date"]["pattern"] == "[0-9]{4}-[0-9]{2}-[0-9]{2}"


# -- dates ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        1768780800,  # 2026-01-19T00:00:00Z as a Unix timestamp: pydantic's date took it
        "2026-01-19T00:00:00",
        "2026-01-19 00:00",
        "20260119",
        "19/01/2026",
        "2026-1-19",
        "２０２６-01-19",
        "2026-02-30",
        "",
    ],
)
def test_dates_are_strictly_yyyy_mm_dd_calendar_dates(value: Any) -> None:
    assert refusal(with_change("date", value)) == [("date", "invalid_date")]


def test_the_invoice_date_lies_between_the_start_of_gst_and_today_in_india_plus_the_allowance() -> None:
    today = date(2026, 12, 2)
    assert check_invoice_date(date(2017, 7, 1), today=today, max_future_days=1) == []
    assert [v.code for v in check_invoice_date(date(2017, 6, 30), today=today, max_future_days=1)] == [
        "before_gst"
    ]
    assert check_invoice_date(date(2026, 12, 3), today=today, max_future_days=1) == []
    [late] = check_invoice_date(date(2026, 12, 4), today=today, max_future_days=1)
    assert (late.path, late.code, late.details["latest"]) == ("date", "date_in_future", "2026-12-03")
    assert [v.code for v in check_invoice_date(date(2026, 12, 3), today=today, max_future_days=0)] == [
        "date_in_future"
    ]


def test_today_is_the_date_in_india_which_starts_five_and_a_half_hours_before_utc() -> None:
    assert today_in_india(datetime(2026, 12, 1, 18, 29, tzinfo=UTC)) == date(2026, 12, 1)
    assert today_in_india(datetime(2026, 12, 1, 18, 30, tzinfo=UTC)) == date(2026, 12, 2)


# -- ceilings after tax -----------------------------------------------------------------------------


def tax_line(hsn: str, quantity: str, unit_price: str) -> LineInput:
    return LineInput(description="x", hsn=hsn, quantity=D(quantity), unit="NOS", unit_price=D(unit_price))


def tax_codes(*lines: LineInput, on: date = date(2026, 1, 19)) -> list[tuple[str, str]]:
    with pytest.raises(TaxRuleError) as info:
        compute_invoice_tax(invoice_date=on, seller_state="29", place_of_supply="29", lines=list(lines))
    return [(v.path, v.code) for v in info.value.violations]


def test_a_line_whose_gross_exceeds_the_line_ceiling_is_refused_with_the_limits() -> None:
    # Both factors are within their own ceilings; their product is not.
    assert tax_codes(tax_line("8471", "9999999999", "1000")) == [("lines[0]", "line_amount_too_large")]


def test_a_line_that_fits_before_tax_but_not_after_is_refused() -> None:
    # "Other cigarettes" (2402 20 90) before February 2026: 28% GST + 36% cess (plus a specific cess per
    # thousand, not computed), so the total is 1.64 x taxable. The master's highest certain ad valorem cess.
    taxable = (MAX_LINE_AMOUNT / Decimal("1.5")).quantize(Decimal("0.01"))
    with pytest.raises(TaxRuleError) as info:
        compute_invoice_tax(
            invoice_date=date(2025, 10, 1),
            seller_state="29",
            place_of_supply="29",
            lines=[tax_line("24022090", "1", str(taxable))],
        )
    [violation] = info.value.violations
    assert (violation.path, violation.code) == ("lines[0]", "line_amount_too_large")
    assert violation.details["limits"] == {
        "quantity": "9999999999.999",
        "unit_price": "999999999999.999",
        "line_amount": "999999999999.99",
        "invoice_amount": "99999999999999.98",
    }


def test_an_invoice_whose_total_exceeds_the_invoice_ceiling_is_refused() -> None:
    # 1000 lines, each within the line ceiling with tax: 1000 x 1.18 x 700,000,000,000 > 10^14.
    lines = [tax_line("8471", "1", "700000000000")] * 1000
    [(path, code)] = tax_codes(*lines)
    assert (path, code) == ("lines", "invoice_amount_too_large")


def test_the_largest_invoice_allowed_fits_every_column_of_the_read_side() -> None:
    # 84 lines at the line ceiling is just under the invoice ceiling; numeric(18, 2) holds < 10^16.
    line_taxable = (MAX_LINE_AMOUNT / D("1.18")).quantize(D("0.01"), rounding=ROUND_DOWN)
    lines = [tax_line("8471", "1", str(line_taxable))] * 84
    tax = compute_invoice_tax(
        invoice_date=date(2026, 1, 19), seller_state="29", place_of_supply="29", lines=lines
    )
    assert tax.total <= MAX_INVOICE_AMOUNT < D(10) ** 16
    assert all(line.total <= MAX_LINE_AMOUNT for line in tax.lines)


def test_hsn_codes_are_ascii_digits_only() -> None:
    assert tax_codes(tax_line("８５０４", "1", "100")) == [("lines[0].hsn", "invalid_hsn")]


# -- field paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("body", "lines", 0, "quantity"), "lines[0].quantity"),
        (("body", "buyer", "address", "line1"), "buyer.address.line1"),
        (("body", "credentials", "client\x00id", "[key]"), "credentials.client\x00id"),
        (("body", "date", "function-before[_iso_date(), date]"), "date"),
        (("body",), "body"),
    ],
)
def test_field_paths_read_like_the_request(loc: tuple[Any, ...], path: str) -> None:
    from engine.fields import field_path

    assert field_path(loc) == path
