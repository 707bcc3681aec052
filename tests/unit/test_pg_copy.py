"""engine/pg_copy.py: rows in PostgreSQL's binary COPY format from the strings the projections hold.

Each accepted value must be byte for byte what psycopg's own binary dumper sends for the Python
object the server's text input would make of it (Decimal for a numeric string, UUID, date...);
everything the text input reads differently, or that psycopg's text path refuses, must make
``encode`` give up (None), so the caller COPYs in text format and nothing changes for it.
(tests/integration/test_pg_copy_server.py checks the same against the server.)"""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import adapters
from psycopg.adapt import PyFormat

from engine import pg_copy

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2
TRAILER = b"\xff\xff"


def oracle(value: Any) -> bytes:
    """psycopg's binary form of ``value``."""
    return bytes(adapters.get_dumper(type(value), PyFormat.BINARY)(type(value)).dump(value))


def field(kind: bytes, value: Any) -> bytes | None:
    """The one field ``encode`` writes for ``value`` (without its length), or None if it gives up."""
    encoded = pg_copy.encode([{"c": value}], kind, header=False, trailer=False)
    if encoded is None:
        return None
    assert encoded[:2] == b"\x00\x01"  # one column
    (length,) = struct.unpack(">i", encoded[2:6])
    assert length == len(encoded) - 6
    return encoded[6:]


def test_the_native_encoder_is_built() -> None:
    # `make install` builds it; without it every batch silently goes in text format (slower only).
    assert pg_copy.available()


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0.00",
        "-0.00",
        "7",
        "1180.00",
        "-1180.50",
        "12345.6",
        "100000000",
        "0.5",
        "0.0001",
        "0.00000005",
        "-99999999999999.99",
        "000123.4500",
        "10000",
        "9999.9999",
        "12345678901234567890123456789.123456789",
    ],
)
def test_numeric_strings_as_psycopg_sends_their_decimal(text: str) -> None:
    assert field(b"n", text) == oracle(Decimal(text))


@given(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=0, max_value=12),
)
def test_any_plain_decimal_as_psycopg_sends_it(units: int, scale: int) -> None:
    text = str(Decimal(units).scaleb(-scale))
    if "E" in text:  # Decimal's own spelling of some small numbers: not a plain decimal
        text = f"{Decimal(units).scaleb(-scale):f}"
    assert field(b"n", text) == oracle(Decimal(text))


def test_integers_in_numeric_columns() -> None:
    assert field(b"n", 42) == oracle(Decimal(42))
    assert field(b"n", -(10**20)) == oracle(Decimal(-(10**20)))


@pytest.mark.parametrize(
    "text",
    [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
    ],
)
def test_uuid_strings(text: str) -> None:
    assert field(b"u", text) == oracle(uuid.UUID(text))


@pytest.mark.parametrize(
    "value", [uuid.UUID(int=0), uuid.UUID(int=1), uuid.uuid4(), uuid.UUID(int=2**128 - 1)]
)
def test_uuid_objects_as_their_text(value: uuid.UUID) -> None:
    assert field(b"u", value) == oracle(value) == field(b"u", str(value))


@pytest.mark.parametrize(
    "value", [b"", b"\x00", b"\xff\x00\\x41", b'{"a": "\xc3\xa9"}', bytes(range(256)) * 40]
)
def test_bytea_is_its_bytes(value: bytes) -> None:
    assert field(b"B", value) == oracle(value) == value


@pytest.mark.parametrize(
    "text", ["2026-01-19", "2024-02-29", "0001-01-01", "9999-12-31", "1999-12-31", "2000-01-01"]
)
def test_date_strings_and_dates(text: str) -> None:
    assert field(b"d", text) == oracle(date.fromisoformat(text))
    assert field(b"d", date.fromisoformat(text)) == oracle(date.fromisoformat(text))


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 19, 10, 0, tzinfo=UTC),
        datetime(2026, 12, 4, 15, 30, 1, 123456, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=-3))),
    ],
)
def test_aware_datetimes(moment: datetime) -> None:
    assert field(b"T", moment) == oracle(moment)


def test_text_json_and_jsonb_are_their_utf8() -> None:
    text = 'héllo ✓ 🎉 tab\there\nnew line \\ back "quoted"'
    assert field(b"t", text) == text.encode()
    assert field(b"j", '{"a": 1}') == b"\x01" + b'{"a": 1}'  # jsonb's version byte, then the text


def test_booleans_and_integers() -> None:
    assert field(b"b", True) == b"\x01" and field(b"b", False) == b"\x00"
    assert field(b"h", -32768) == struct.pack(">h", -32768)
    assert field(b"i", 2**31 - 1) == struct.pack(">i", 2**31 - 1)
    assert field(b"l", -(2**63)) == struct.pack(">q", -(2**63))


def test_null_is_length_minus_one() -> None:
    for kind in b"tjudnTbhilB":
        assert pg_copy.encode([{"c": None}], bytes([kind]), header=False, trailer=False) == (
            b"\x00\x01\xff\xff\xff\xff"
        )


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        # What the server's text input reads in its own way: its errors and results stay its own.
        (b"n", "1e5"),
        (b"n", " 1"),
        (b"n", "1 "),
        (b"n", "+1"),
        (b"n", "1."),
        (b"n", ".5"),
        (b"n", "NaN"),
        (b"n", "Infinity"),
        (b"n", "1_000"),
        (b"n", "0x1F"),
        (b"n", "-"),
        (b"n", ""),
        (b"n", "١٢"),  # Arabic-Indic digits
        (b"n", "9" * 1001),
        (b"n", 1.5),
        (b"n", Decimal("1.5")),
        (b"n", True),
        (b"u", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
        (b"u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g"),
        (b"u", "a0eebc99-9c0b4ef8-bb6d-6bb9bd380a11-"),
        (b"u", 1),
        (b"B", bytearray(b"x")),  # only bytes itself
        (b"B", memoryview(b"x")),
        (b"B", "text"),
        (b"d", "2023-02-29"),
        (b"d", "2023-2-01"),
        (b"d", "0000-01-01"),
        (b"d", "2023-13-01"),
        (b"d", "2023-01-00"),
        (b"d", "Jan 19 2026"),
        (b"d", datetime(2026, 1, 19, tzinfo=UTC)),
        (b"T", datetime(2026, 1, 19)),  # naive: the session time zone's business
        (b"T", "2026-01-19T10:00:00Z"),
        # What psycopg's text path refuses with its own message.
        (b"t", "a NUL \x00 here"),
        (b"t", "a lone surrogate \ud800"),
        (b"j", "\x00"),
        (b"t", 5),
        (b"t", b"bytes"),
        (b"b", 1),
        (b"h", 2**15),
        (b"i", 2**31),
        (b"l", 2**63),
        (b"i", True),
        (b"i", "5"),
    ],
)
def test_values_left_to_the_text_format(kind: bytes, value: Any) -> None:
    assert field(kind, value) is None


def test_a_stream_is_signature_rows_trailer_and_can_be_sent_in_parts() -> None:
    rows = [{"a": "x", "b": "1.00"}, {"a": None, "b": "-2"}]
    whole = pg_copy.encode(rows, b"tn")
    assert whole is not None
    assert whole.startswith(SIGNATURE) and whole.endswith(TRAILER)
    first = pg_copy.encode(rows[:1], b"tn", trailer=False)
    second = pg_copy.encode(rows[1:], b"tn", header=False)
    assert first is not None and second is not None
    assert first + second == whole


def test_rows_that_do_not_match_the_columns_are_left_to_the_text_format() -> None:
    assert pg_copy.encode([{"a": "x"}], b"tn") is None  # one value for two columns
    assert pg_copy.encode([("x", "1")], b"tn") is None  # not a dict


def test_kinds_of_format_type_names() -> None:
    names = ["uuid", "numeric(18,2)", "character varying(64)", "json", "jsonb", "date"]
    assert pg_copy.kinds_of(names) == b"unttjd"
    assert pg_copy.kinds_of(["timestamp with time zone", "timestamp(3) with time zone"]) == b"TT"
    assert pg_copy.kinds_of(["boolean", "smallint", "integer", "bigint", "text", "bytea"]) == b"bhiltB"
    # A type it does not write sends the whole table's rows in text format.
    for other in ("text[]", "timestamp without time zone", "double precision", "inet"):
        assert pg_copy.kinds_of(["text", other]) is None
