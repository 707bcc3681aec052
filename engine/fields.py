"""Field types shared by every command model: text the read side can store, plain ASCII decimals,
strict ISO dates. The rules and the reasons for them are in ``docs/validation.md``.

Pure: no I/O. Refusals are pydantic errors with a stable ``type`` (the error code an API client sees
in ``details.fields[].code``), so the HTTP API and the ingest topic report them identically through
:func:`field_errors`.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError

# -- text ---------------------------------------------------------------------------------------

# U+2028/U+2029 are line breaks to every Unicode-aware reader (and were invalid inside JavaScript
# string literals before ES2019), so they are refused with the other line breaks. Noncharacters
# (Unicode 15, section 23.7) are reserved for a process's internal use and carry no text.
_LINE_SEPARATORS = frozenset({"\u2028", "\u2029"})
# Bidirectional embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069) reorder
# how the text around them is displayed, so a printed or rendered invoice can show something other
# than what was stored ("Trojan Source", CVE-2021-42574; Unicode TR #36, section 2.4). Text in
# Arabic or Urdu script needs none of them: the bidi algorithm orders it; the implicit marks
# LRM/RLM/ALM (U+200E, U+200F, U+061C) stay allowed for the rare case that does.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# Character classes searched in C: this runs on every text field of every line of every command.
# Cc is exactly U+0000-U+001F and U+007F-U+009F; Cs is U+D800-U+DFFF. The noncharacters outside the
# Basic Multilingual Plane (U+1FFFE, U+1FFFF, ... U+10FFFF) get their own class: in one class with
# the rest they made every search about 15 times slower.
_FORBIDDEN_BMP = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069\ufdd0-\ufdef\ufffe\uffff]"
)
_FORBIDDEN_ASTRAL = re.compile(
    "["
    + "".join(chr(plane * 0x10000 + 0xFFFE) + chr(plane * 0x10000 + 0xFFFF) for plane in range(1, 17))
    + "]"
)


def forbidden_character(text: str) -> tuple[int, str] | None:
    """The position and a description of a character that text fields refuse (the first one), or None.

    Refused: control characters (Unicode category Cc: C0, DEL and C1, including tab, CR and LF),
    lone surrogates (Cs: not encodable as UTF-8, which PostgreSQL and Kafka need), noncharacters
    the line/paragraph separators U+2028/U+2029 and the bidirectional embedding, override and
    isolate controls (U+202A-U+202E, U+2066-U+2069). PostgreSQL ``text`` cannot hold NUL at all
    (and ``json`` operators refuse ``\\u0000``): a NUL accepted here used to stop the projector.
    Format characters (Cf) are allowed: ZERO WIDTH JOINER/NON-JOINER are part of correct spelling
    in Indic scripts.
    """
    found = _FORBIDDEN_BMP.search(text)
    # isascii() reads a flag CPython keeps on every str; max() walks the characters in Python
    # objects (0.15 ms of each ingest command's ~24 text fields, cProfile in docs/performance.md,
    # "ingest1000"). Only a non-ASCII text can hold an astral character.
    if found is None and not text.isascii() and max(text) > "\uffff":
        found = _FORBIDDEN_ASTRAL.search(text)
    if found is None:
        return None
    ch = found.group()
    category = unicodedata.category(ch)
    if category == "Cc":
        kind = "control character"
    elif category == "Cs":
        kind = "lone surrogate"
    elif ch in _LINE_SEPARATORS:
        kind = "line separator"
    elif ch in _BIDI_CONTROLS:
        kind = "bidirectional control"
    else:
        kind = "noncharacter"
    return found.start(), f"{kind} U+{ord(ch):04X}"


def _refuse_unsafe_text(value: Any) -> Any:
    if isinstance(value, str):
        found = forbidden_character(value)
        if found is not None:
            index, what = found
            raise PydanticCustomError(
                "control_character",
                "text may not contain {character} (found at position {position}); "
                "control characters, line breaks, bidirectional controls and lone surrogates are refused "
                "in every text field",
                {"character": what, "position": index},
            )
    return value


SafeStr = Annotated[str, BeforeValidator(_refuse_unsafe_text)]
"""A string without the characters :func:`forbidden_character` refuses; add StringConstraints."""


def text(
    *, min_length: int | None = None, max_length: int, pattern: str | None = None, strip: bool = True
) -> StringConstraints:
    """The length (and pattern) constraints of a text field: ``Annotated[SafeStr, text(max_length=200)]``."""
    return StringConstraints(
        strip_whitespace=strip, min_length=min_length, max_length=max_length, pattern=pattern
    )


# -- decimals -----------------------------------------------------------------------------------

# An optional minus (negative amounts get the tax rules' precise refusals), ASCII digits, an
# optional fraction. Python's Decimal() also takes "+5", " 5 ", "1_000", "1e3" and any script's
# digits ("١٢", "１２"): none of those is how an invoice amount is written, and a fullwidth digit
# in an upstream file is a sign of a broken export, not of a number.
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
PLAIN_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
# A JSON number arrives as a binary float. Up to 15 significant digits, the float's shortest repr
# is exactly the decimal that was sent (IEEE 754 double: 15 decimal digits round-trip); beyond
# that the sender's digits may already be lost, so such amounts must be sent as strings.
_FLOAT_SIGNIFICANT_DIGITS = 15


def _number_error(message: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError("invalid_number", message, {"value": str(value)[:40]})


def _plain_decimal(value: Any) -> Any:
    if isinstance(value, bool):
        raise _number_error("expected a decimal number, not true/false", value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _number_error("expected a finite decimal number", value)
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _number_error("expected a finite decimal number", value)
        exact = Decimal(repr(value))
        if len(exact.as_tuple().digits) > _FLOAT_SIGNIFICANT_DIGITS:
            raise _number_error(
                "a JSON number with more than 15 significant digits loses precision; "
                'send this amount as a decimal string such as "1234567890123.45"',
                value,
            )
        return exact
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise _number_error(
                'expected a plain decimal such as "1250.50": ASCII digits, an optional leading '
                "minus and decimal point; no spaces, '+', '_', exponent or other scripts' digits",
                value,
            )
        return Decimal(value)
    return value  # anything else: pydantic's own decimal_type error


def ceiling(limit: Decimal, what: str) -> BeforeValidator:
    """Parse a plain decimal (see ``_plain_decimal``) and refuse it above ``limit`` with the code
    ``too_large`` and the limit. Pair it with :func:`decimal_places` for the OpenAPI maximum."""

    def check(value: Any) -> Any:
        number = _plain_decimal(value)
        if isinstance(number, Decimal) and number > limit:
            raise PydanticCustomError(
                "too_large",
                "{what} may be at most {limit} (the limits: docs/validation.md)",
                {"what": what, "limit": str(limit)},
            )
        return number

    return BeforeValidator(check)


def decimal_places(limit: Decimal, places: int) -> Any:
    """Digits and places of a bounded decimal; ``le`` makes the OpenAPI document show the maximum
    (the :func:`ceiling` check runs before it and answers with its own code)."""
    return Field(
        le=limit,
        max_digits=len(str(int(limit))) + places,
        decimal_places=places,
        allow_inf_nan=False,
        json_schema_extra=_string_pattern,
    )


def _string_pattern(schema: dict[str, Any]) -> None:
    """Show the plain-decimal pattern on the string form of the OpenAPI schema."""
    for variant in schema.get("anyOf", []):
        if variant.get("type") == "string":
            variant["pattern"] = PLAIN_DECIMAL_PATTERN


# -- dates --------------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date(value: Any) -> Any:
    # pydantic's date also takes Unix timestamps, "2026-01-19T00:00:00" and similar; an invoice
    # date is a calendar date and only YYYY-MM-DD says so without ambiguity.
    if isinstance(value, datetime):
        raise PydanticCustomError("invalid_date", "expected a date as YYYY-MM-DD, not a date and time", {})
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise PydanticCustomError(
                "invalid_date", "{value} is not a calendar date", {"value": value}
            ) from exc
    raise PydanticCustomError(
        "invalid_date", 'expected a date as a YYYY-MM-DD string, such as "2026-01-19"', {}
    )


IsoDate = Annotated[date, BeforeValidator(_iso_date), Field(json_schema_extra={"pattern": _ISO_DATE.pattern})]


# -- reporting errors ---------------------------------------------------------------------------


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """pydantic's ("body", "lines", 0, "quantity") as the request's own path: "lines[0].quantity"."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue  # pydantic's marker for "the key itself": the path up to it names the key
        elif re.fullmatch(r"function-(after|before|wrap|plain)\[.*\]|[a-z-]+\[.*\]", str(part)):
            continue  # pydantic's internal validator names are not fields
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def field_error(error: Any) -> dict[str, str]:
    """One pydantic error as ``{"path", "code", "message"}`` (plus ``limit`` for ``too_large``)."""
    if error["type"] == "json_invalid":
        # pydantic's location is the character position; the field is the whole body.
        reason = (error.get("ctx") or {}).get("error", "invalid JSON")
        return {"path": "body", "code": "json_invalid", "message": f"body is not valid JSON: {reason}"}
    found = {"path": field_path(error["loc"]), "code": error["type"], "message": error["msg"]}
    limit = (error.get("ctx") or {}).get("limit")
    if limit is not None:
        found["limit"] = str(limit)
    return found


def field_errors(errors: Any) -> list[dict[str, str]]:
    """Every error of a pydantic ``ValidationError.errors()`` in the API's field-error form."""
    return [field_error(e) for e in errors]
