"""The compiled Avro readers, Python (schemas/compiled_reader.py) and native (schemas/native_reader.py,
the Cython extension), return fastavro's record (same keys, order, values and types) for every
shipped schema version resolved to its type's current version, and fastavro's CodecError for every
malformed body, because anything outside their well-formed case is handed to codec.decode. Every
test taking ``compile_`` runs against both; the native ones fail (not skip) when the extension is
not built, as CI builds it."""

from __future__ import annotations

import json
import operator
import re
import subprocess
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec, native_reader, registry
from schemas.compiled_reader import compile_reader
from schemas.native_reader import compile_native
from schemas.registry import SchemaVersion

COMPILERS = {"python": compile_reader, "native": compile_native}
each_reader = pytest.mark.parametrize("compile_", COMPILERS.values(), ids=COMPILERS.keys())

ALL_VERSIONS = [sv for ce_type in registry.all_types() for sv in registry.versions(ce_type)]


def _id(sv: SchemaVersion) -> str:
    return f"{sv.ce_type}.v{sv.version}"


def _current(sv: SchemaVersion) -> SchemaVersion:
    return registry.current(sv.ce_type)


def typed(value: Any) -> Any:
    """The value with every leaf's type and every dict's key order made part of what compares equal
    (``1 == True`` and ``{"a": 1, "b": 2} == {"b": 2, "a": 1}`` would hide a difference)."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), str(value.tzinfo))
    return (type(value).__name__, value)


def outcome(read: Any, data: bytes) -> Any:
    """The record read (typed), or the error's type and message."""
    try:
        return typed(read(data))
    except codec.CodecError as exc:
        # fastavro's messages name its reader object by address; that part differs between calls.
        return re.sub(r" at 0x[0-9a-f]+", "", f"CodecError: {exc}")


def fastavro_reader(writer: SchemaVersion, reader: SchemaVersion) -> Any:
    """Today's path: fastavro through codec.decode, resolving to ``reader`` when it differs."""
    resolved = None if reader is writer else reader.parsed
    return lambda data: codec.decode(data, lambda _fp: writer.parsed, resolved)


def compiled(writer: SchemaVersion, reader: SchemaVersion, compile_: Any = compile_reader) -> Any:
    read = compile_(writer.schema, None if reader is writer else reader.schema)
    assert read is not None, f"{_id(writer)} -> v{reader.version} has no compiled reader"
    return read


def sample_message(sv: SchemaVersion) -> bytes:
    return sv.write(json.loads(sv.sample_path.read_text(encoding="utf-8")))


# -- every shipped version, its sample, and random records ----------------------------------------


def test_the_native_extension_is_built() -> None:
    # CI builds it (pip install -e .); without it every message would be decoded in Python, slowly.
    assert native_reader.available()


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=_id)
def test_every_version_decodes_through_the_native_reader(sv: SchemaVersion) -> None:
    # A pair the analysis cannot handle would silently stay on fastavro: correct, but slow; the
    # registry takes the Python reader only when the extension is missing.
    found = registry._decoder(sv.fingerprint)
    assert found is not None
    assert found[0] == sv.ce_type
    assert hasattr(found[1], "program"), f"{_id(sv)} is not decoded by the native reader"
    assert registry._compiled_reader(sv.fingerprint, _current(sv).fingerprint) is not None


def test_without_the_extension_the_registry_keeps_the_python_reader() -> None:
    # A machine where the extension was not built: a fresh interpreter in which importing it fails
    # (None in sys.modules makes the import raise ImportError), as it does when the .so is missing.
    script = """
import sys
sys.modules["schemas._native_reader"] = None
from schemas import native_reader, registry
assert not native_reader.available()
sv = registry.current("ledgerflow.invoice.issued")
read = registry._decoder(sv.fingerprint)[1]
assert hasattr(read, "source") and not hasattr(read, "program"), read
print(sorted(registry.decode_event(sv.write(__import__("json").loads(sv.sample_path.read_text())))))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    sample = json.loads(registry.current("ledgerflow.invoice.issued").sample_path.read_text(encoding="utf-8"))
    assert done.stdout.strip() == str(sorted(sample))


@each_reader
@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=_id)
def test_the_compiled_reader_reads_each_sample_as_fastavro_does(sv: SchemaVersion, compile_: Any) -> None:
    data = sample_message(sv)
    for reader in {id(sv): sv, id(_current(sv)): _current(sv)}.values():
        expected = outcome(fastavro_reader(sv, reader), data)
        assert not isinstance(expected, str)
        assert outcome(compiled(sv, reader, compile_), data) == expected
        assert not falls_back(compiled(sv, reader, compile_), data), "a sample went to fastavro"
    assert typed(registry.decode_event(data, sv.ce_type)) == outcome(fastavro_reader(sv, _current(sv)), data)


def records(schema: Any) -> st.SearchStrategy[Any]:
    """Records of the raw JSON ``schema``, edge values included."""
    if isinstance(schema, list):
        return st.one_of(*(records(branch) for branch in schema))
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(kind, (dict, list)):
        return records(kind)
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "int":
        return st.integers(-(2**31), 2**31 - 1)
    if kind == "long":
        if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
            # Inside datetime's years 1..9999, where fastavro's conversion succeeds.
            return st.integers(-62_135_596_800_000, 253_402_300_799_999)
        return st.integers(-(2**63), 2**63 - 1)
    if kind == "string":
        # Multi-byte lengths (>= 64 bytes) and any code point but surrogates.
        long = st.builds(operator.mul, st.characters(exclude_categories=["Cs"]), st.integers(60, 300))
        return st.one_of(st.text(max_size=12), long)
    if kind == "array":
        return st.lists(records(schema["items"]), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), records(schema["values"]), max_size=3)
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: records(f["type"]) for f in schema["fields"]})
    raise AssertionError(f"no strategy for {kind}")


@each_reader
@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=_id)
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_the_compiled_reader_reads_any_record_as_fastavro_does(
    sv: SchemaVersion, compile_: Any, data: st.DataObject
) -> None:
    message = sv.write(data.draw(records(sv.schema)))
    reader = _current(sv)
    assert outcome(compiled(sv, reader, compile_), message) == outcome(fastavro_reader(sv, reader), message)


# -- malformed bodies: fastavro's CodecError, raised where fastavro raises ---------------------------

INVOICE = registry.versions("ledgerflow.invoice.issued")[3]  # v4 read as v5: resolution on top
TENANT = registry.current("ledgerflow.tenant.registered")


@each_reader
@pytest.mark.parametrize("sv", [INVOICE, TENANT], ids=_id)
def test_every_truncation_and_a_trailing_byte_raise_fastavros_codec_error(
    sv: SchemaVersion, compile_: Any
) -> None:
    data = sample_message(sv)
    read, slow = compiled(sv, _current(sv), compile_), fastavro_reader(sv, _current(sv))
    for cut in range(codec.HEADER_SIZE, len(data)):
        expected = outcome(slow, data[:cut])
        assert isinstance(expected, str), f"fastavro read a body cut at {cut}"
        assert outcome(read, data[:cut]) == expected
    for extra in (b"\x00", b"\x02abc"):
        expected = outcome(slow, data + extra)
        assert isinstance(expected, str) and "trailing" in expected
        assert outcome(read, data + extra) == expected


@each_reader
@pytest.mark.parametrize("sv", [INVOICE, TENANT], ids=_id)
def test_every_corrupted_byte_gets_fastavros_record_or_error(sv: SchemaVersion, compile_: Any) -> None:
    # Each body byte replaced by values that hit the reader's branches: a null-union index, a
    # one-byte count, a negative (odd) varint, a continuation byte, an invalid UTF-8 start byte.
    data = sample_message(sv)
    read, slow = compiled(sv, _current(sv), compile_), fastavro_reader(sv, _current(sv))
    for position in range(codec.HEADER_SIZE, len(data)):
        for byte in (0x00, 0x02, 0x05, 0x80, 0xFF):
            bad = data[:position] + bytes([byte]) + data[position + 1 :]
            assert outcome(read, bad) == outcome(slow, bad), f"byte {position} -> {byte:#x}"


INVOICE_SLOW = fastavro_reader(INVOICE, _current(INVOICE))
INVOICE_DATA = sample_message(INVOICE)


@each_reader
@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 2000))
def test_random_bytes_spliced_into_a_body_get_fastavros_record_or_error(
    compile_: Any, junk: bytes, at: int
) -> None:
    data, read = INVOICE_DATA, compiled(INVOICE, _current(INVOICE), compile_)
    at = codec.HEADER_SIZE + at % (len(data) - codec.HEADER_SIZE)
    for bad in (data[:at] + junk, data[:at] + junk + data[at:], data[:at] + junk + data[at + len(junk) :]):
        assert outcome(read, bad) == outcome(INVOICE_SLOW, bad)


def test_decode_event_refuses_a_corrupted_message_with_a_codec_error() -> None:
    data = sample_message(TENANT)
    with pytest.raises(codec.CodecError):
        registry.decode_event(data[:-3], TENANT.ce_type)
    with pytest.raises(codec.CodecError):
        registry.decode_event(data + b"\x00", TENANT.ce_type)


# -- constructs the shipped schemas do not use yet -----------------------------------------------


def _record(*fields: tuple[Any, ...], name: str = "R", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "record", "name": name, "namespace": "t", "fields": []}
    for field_name, field_type, *default in fields:
        field: dict[str, Any] = {"name": field_name, "type": field_type}
        if default:
            field["default"] = default[0]
        out["fields"].append(field)
    out.update(extra)
    return out


POINT = _record(("x", "int"), ("y", "int"), name="Point")
RICH = _record(
    ("f", "float"),
    ("g", "double"),
    ("b", "bytes"),
    ("e", {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}),
    ("h", {"type": "fixed", "name": "Hash", "size": 4}),
    ("d", {"type": "int", "logicalType": "date"}),
    ("m", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}),
    ("u", ["null", "string", "long", "boolean"]),
    ("p", POINT),
    ("q", ["null", "t.Point"]),
    ("tags", {"type": "map", "values": {"type": "array", "items": "t.Colour"}}),
)
RICH_RECORD = {
    "f": 1.5,
    "g": -2.25e300,
    "b": b"\x00\xff",
    "e": "BLUE",
    "h": b"abcd",
    "d": date(2026, 1, 19),
    "m": Decimal("-1234.56"),
    "u": 7,
    "p": {"x": 1, "y": -1},
    "q": {"x": 2**31 - 1, "y": -(2**31)},
    "tags": {"a": ["RED"], "": []},
}
# (writer, reader, record): the reader adds fields with every kind of default and drops one.
RESOLUTION = (
    _record(("a", "string"), ("gone", ["null", {"type": "array", "items": "long"}]), ("c", "long")),
    _record(
        ("c", "long"),
        ("a", ["null", "string"]),
        ("n", ["null", "string"], None),
        ("l", {"type": "array", "items": "string"}, ["x"]),
        ("o", {"type": "map", "values": "int"}, {"k": 1}),
        ("s", "string", "IN"),
        ("t", "boolean", False),
    ),
    {"a": "é", "gone": [1, -(2**63)], "c": 2**40},
)


def _message(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    return codec.encode(codec.parse(schema), record, fp=b"\x00" * 8)


@each_reader
@pytest.mark.parametrize(
    ("writer", "reader", "record"),
    [(RICH, None, RICH_RECORD), (RICH, RICH, RICH_RECORD), RESOLUTION],
    ids=["every-type", "every-type-same-reader", "resolution"],
)
def test_other_avro_types_and_resolutions_read_as_fastavro_does(
    writer: dict[str, Any], reader: dict[str, Any] | None, record: dict[str, Any], compile_: Any
) -> None:
    read = compile_(writer, reader)
    assert read is not None
    data = _message(writer, record)
    parsed_reader = None if reader is None else codec.parse(reader)
    slow = lambda d: codec.decode(d, lambda _fp: codec.parse(writer), parsed_reader)  # noqa: E731
    assert outcome(read, data) == outcome(slow, data)
    for cut in range(codec.HEADER_SIZE, len(data)):
        assert outcome(read, data[:cut]) == outcome(slow, data[:cut])
    if reader is not None and "l" in {f["name"] for f in reader["fields"]}:
        # A default that is a list or map is a fresh object per record.
        first, second = read(data), read(data)
        first["l"].append("y")
        assert second["l"] == ["x"]


UNSUPPORTED = {
    "a promotion int -> long": (_record(("a", "int")), _record(("a", "long"))),
    "a renamed record": (_record(("a", "int")), _record(("a", "int"), name="S")),
    "a field alias": (
        _record(("a", "int")),
        {**_record(), "fields": [{"name": "b", "type": "int", "aliases": ["a"]}]},
    ),
    "a reader field without a default": (_record(("a", "int")), _record(("a", "int"), ("b", "int"))),
    "a recursive type": (_record(("next", ["null", "t.R"])), None),
}


@each_reader
@pytest.mark.parametrize(("writer", "reader"), UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_what_the_generator_does_not_handle_is_left_to_fastavro(
    writer: dict[str, Any], reader: dict[str, Any] | None, compile_: Any
) -> None:
    assert compile_(writer, reader) is None


@each_reader
def test_a_sized_array_block_is_read_by_fastavro_through_the_fallback(compile_: Any) -> None:
    # Avro lets a writer give a block as a negative count followed by its size in bytes; our writers
    # never do, so the compiled reader leaves such a body to fastavro, which reads it.
    schema = _record(("a", {"type": "array", "items": "int"}))
    body = b"\x03" + b"\x04" + b"\x02\x04" + b"\x00"  # count -2, 2 bytes: items 1 and 2, end
    data = b"\xc3\x01" + b"\x00" * 8 + body
    read = compile_(schema)
    assert read is not None
    assert read(data) == {"a": [1, 2]} == codec.decode(data, lambda _fp: codec.parse(schema))


# -- the one-byte fast paths: string lengths and ["null", X] unions (perf-decode) -----------------

NULLABLE = _record(
    ("s", "string"),
    ("b", "bytes"),
    ("n", ["null", "string"]),
    ("p", ["null", POINT]),
    ("r", ["string", "null"]),
    ("after", "int"),
    name="N",
)


def falls_back(read: Any, data: bytes) -> bool:
    """Whether ``read`` hands ``data`` to codec.decode: observed with a profile hook, as the
    fallback gives fastavro's record too, so the record alone cannot tell."""
    calls: list[object] = []

    def hook(frame: Any, event: str, _arg: Any) -> None:
        if event == "call" and frame.f_code is codec.decode.__code__:
            calls.append(frame)

    sys.setprofile(hook)
    try:
        read(data)
    finally:
        sys.setprofile(None)
    return bool(calls)


@each_reader
@pytest.mark.parametrize("size", [0, 1, 62, 63, 64, 65, 127, 128, 8191, 8192])
@pytest.mark.parametrize("text", ["a", "é", "₹"])
def test_strings_either_side_of_a_one_byte_length_read_as_fastavro_does(
    size: int, text: str, compile_: Any
) -> None:
    # 63 bytes is the longest length of one varint byte; the compiled reader reads longer ones, and
    # multi-byte characters, through its slower branch.
    read = compile_(NULLABLE)
    assert read is not None
    slow = lambda d: codec.decode(d, lambda _fp: codec.parse(NULLABLE))  # noqa: E731
    value = (text * size)[:size] if text == "a" else text * (size // len(text.encode()) or 1)
    for n, p, r in ((value, None, value), (None, {"x": size, "y": -size}, None)):
        record = {"s": value, "b": value.encode(), "n": n, "p": p, "r": r, "after": -size}
        data = _message(NULLABLE, record)
        assert not isinstance(outcome(slow, data), str)
        assert outcome(read, data) == outcome(slow, data)
        assert not falls_back(read, data)


@each_reader
@pytest.mark.parametrize("index", [1, 3, 4, 6, 0x7F, 0x80, 0xFF])
def test_a_bad_index_of_a_null_first_union_gets_fastavros_record_or_error(index: int, compile_: Any) -> None:
    read = compile_(NULLABLE)
    assert read is not None
    slow = lambda d: codec.decode(d, lambda _fp: codec.parse(NULLABLE))  # noqa: E731
    record = {"s": "x", "b": b"", "n": "y", "p": {"x": 1, "y": 2}, "r": "z", "after": 5}
    data = _message(NULLABLE, record)
    # The body: s (2 bytes), b (1), then n's union index, n's string, then p's union index.
    body = codec.HEADER_SIZE
    for at in (body + 3, body + 5):
        bad = data[:at] + bytes([index]) + data[at + 1 :]
        assert outcome(read, bad) == outcome(slow, bad), f"byte {at} -> {index:#x}"


# -- hostile values: strings, integer edges, truncations (the native reader's C paths) -------------

HOSTILE = _record(
    ("s", "string"),
    ("l", "long"),
    ("i", "int"),
    ("n", ["null", "string"]),
    ("t", {"type": "long", "logicalType": "timestamp-millis"}),
    name="H",
)


def _varint(n: int, extra: bytes = b"") -> bytes:
    """``n`` as an unsigned base-128 varint (already zig-zagged), any size, for hand-made bodies."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + extra


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


STRINGS = {
    "nul": "\x00a\x00",
    "emoji": "🧾💸👩🏽‍💻",
    "devanagari": "चालान संख्या ₹ १२३",
    "long-emoji": "🙂" * 40,  # 160 bytes: a two-byte length
}
LONGS = [0, -1, 63, -64, 64, 2**31 - 1, -(2**31), 2**31, 2**63 - 1, -(2**63), 2**62, -(2**62) - 1]


@each_reader
@pytest.mark.parametrize("text", STRINGS.values(), ids=STRINGS.keys())
@pytest.mark.parametrize("number", LONGS)
def test_hostile_strings_and_integer_edges_read_as_fastavro_does(
    text: str, number: int, compile_: Any
) -> None:
    read, slow = compile_(HOSTILE), lambda d: codec.decode(d, lambda _fp: codec.parse(HOSTILE))
    fits_int = -(2**31) <= number < 2**31
    data = _message(HOSTILE, {"s": text, "l": number, "i": number if fits_int else 0, "n": text, "t": 0})
    assert not isinstance(outcome(slow, data), str)
    assert outcome(read, data) == outcome(slow, data)
    # Every truncation: fastavro's error, and the native reader never reads past the end.
    for cut in range(codec.HEADER_SIZE, len(data)):
        assert outcome(read, data[:cut]) == outcome(slow, data[:cut]), f"cut at {cut}"


BODIES = {
    # (the long and int fields, the timestamp field), hand-encoded: ints beyond 32 bits, varints
    # beyond 64 bits, timestamps outside datetime's years.
    "int just above range": (_varint(_zigzag(0)) + _varint(_zigzag(2**31)), b"\x00"),
    "int just below range": (_varint(_zigzag(0)) + _varint(_zigzag(-(2**31) - 1)), b"\x00"),
    "long max": (_varint(_zigzag(2**63 - 1)) + b"\x00", b"\x00"),
    "long min": (_varint(_zigzag(-(2**63))) + b"\x00", b"\x00"),
    "long of 65 bits": (_varint(2**64) + b"\x00", b"\x00"),
    "long of 11 bytes": (b"\x80" * 10 + b"\x00" + b"\x00", b"\x00"),
    "overlong zero": (b"\x80\x00" + b"\x00", b"\x00"),
    "timestamp beyond year 9999": (b"\x00\x00", _varint(_zigzag(253_402_300_800_000))),
    "timestamp before year 1": (b"\x00\x00", _varint(_zigzag(-62_135_596_800_001))),
    "timestamp at long min": (b"\x00\x00", _varint(_zigzag(-(2**63)))),
    "timestamp at long max": (b"\x00\x00", _varint(_zigzag(2**63 - 1))),
    "negative timestamp": (b"\x00\x00", _varint(_zigzag(-1))),
    "timestamp a millisecond before the epoch's day": (b"\x00\x00", _varint(_zigzag(-86_400_001))),
}


@each_reader
@pytest.mark.parametrize("numbers", BODIES.values(), ids=BODIES.keys())
@pytest.mark.parametrize("string", [b"\x02a", b"\x04\xc3\x28", b"\x02\xed", b"\x06\xed\xa0\x80", b"\x01"])
def test_hand_made_bodies_get_fastavros_record_or_error(
    numbers: tuple[bytes, bytes], string: bytes, compile_: Any
) -> None:
    # Strings: plain, invalid UTF-8, a lone lead byte, an encoded surrogate, a negative length.
    read, slow = compile_(HOSTILE), lambda d: codec.decode(d, lambda _fp: codec.parse(HOSTILE))
    long_and_int, timestamp = numbers
    body = string + long_and_int + b"\x00" + timestamp  # s, l, i, n (null), t
    data = b"\xc3\x01" + b"\x00" * 8 + body
    assert outcome(read, data) == outcome(slow, data)
