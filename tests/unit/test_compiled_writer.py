"""The precompiled Avro writers, the compiled Python one and the native one (schemas/native_writer.py),
write exactly fastavro's bytes, and leave every record outside their exact case (defaults, coercions,
errors) to fastavro, so nothing a consumer decodes changes."""

from __future__ import annotations

import json
import operator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# An ImportError fails this module (not a skip) when the native writer is not built.
from schemas import _native_writer, codec, registry
from schemas.native_writer import compile_native_writer
from schemas.registry import SchemaVersion

ALL_VERSIONS = [sv for ce_type in registry.all_types() for sv in registry.versions(ce_type)]
CURRENT = [registry.current(ce_type) for ce_type in registry.all_types()]

# Each test runs against both writers, built once per (kind, schema version).
KINDS = ["compiled", "native"]
_writers: dict[tuple[str, bytes], Any] = {}


def writer(kind: str, sv: SchemaVersion) -> Any:
    key = (kind, sv.fingerprint)
    if key not in _writers:
        build = codec.compile_writer if kind == "compiled" else compile_native_writer
        _writers[key] = build(sv.schema, sv.fingerprint)
    return _writers[key]


def refuse(record: Any) -> bytes:
    raise AssertionError(f"the native writer handed on a record it should write itself: {record!r}")


def _id(sv: SchemaVersion) -> str:
    return f"{sv.ce_type}.v{sv.version}"


def sample(sv: SchemaVersion) -> dict[str, Any]:
    data = json.loads(sv.sample_path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def fastavro_bytes(sv: SchemaVersion, record: Any) -> bytes:
    return codec.encode(sv.parsed, record, fp=sv.fingerprint)


def outcome(write: Any, record: Any) -> bytes | str:
    """The bytes written, or the error's type and message."""
    try:
        return bytes(write(record))
    except codec.CodecError as exc:
        return f"CodecError: {exc}"


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=_id)
def test_every_shipped_schema_gets_a_compiled_writer(sv: SchemaVersion) -> None:
    # A schema the compiler cannot handle silently falls back to fastavro: correct, but the relay's
    # speed depends on this staying true for the shipped schemas.
    compiled = writer("compiled", sv)
    assert hasattr(compiled, "source"), f"{_id(sv)} is written by fastavro, not a compiled writer"
    assert isinstance(writer("native", sv), _native_writer.Program), f"{_id(sv)} has no native writer"


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=_id)
def test_the_registry_writes_with_the_native_writer(sv: SchemaVersion) -> None:
    assert isinstance(sv.write, _native_writer.Program)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=_id)
def test_the_compiled_writer_writes_each_sample_as_fastavro_does(kind: str, sv: SchemaVersion) -> None:
    record = sample(sv)
    assert writer(kind, sv)(record) == fastavro_bytes(sv, record)


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=_id)
def test_the_native_writer_writes_each_sample_itself(sv: SchemaVersion) -> None:
    # Not by handing it to the compiled writer: the samples are the exact case.
    record = sample(sv)
    assert compile_native_writer(sv.schema, sv.fingerprint, refuse)(record) == fastavro_bytes(sv, record)


# -- random records of each current schema ---------------------------------------------------------


def records(schema: Any) -> st.SearchStrategy[Any]:
    """Records of the raw JSON ``schema``, with the edge values of each type."""
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
        return st.integers(-(2**63), 2**63 - 1)
    if kind == "string":
        # Any code point but surrogates; some past the pre-encoded lengths (1,024 bytes), built by
        # repeating one character so that they cost hypothesis little to draw.
        long = st.builds(operator.mul, st.characters(exclude_categories=["Cs"]), st.integers(1000, 1400))
        return st.one_of(st.text(max_size=20), long)
    if kind == "array":
        return st.lists(records(schema["items"]), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=20), records(schema["values"]), max_size=4)
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: records(f["type"]) for f in schema["fields"]})
    raise AssertionError(f"no strategy for {kind}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sv", CURRENT, ids=_id)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_the_compiled_writer_writes_any_record_as_fastavro_does(
    kind: str, sv: SchemaVersion, data: st.DataObject
) -> None:
    record = data.draw(records(sv.schema))
    assert writer(kind, sv)(record) == fastavro_bytes(sv, record)


# -- records outside the compiled case: fastavro's answer, bytes or error ---------------------------


def cancelled(**changes: Any) -> dict[str, Any]:
    record = sample(registry.current("ledgerflow.invoice.cancelled"))
    record.update(changes)
    return {k: v for k, v in record.items() if v is not REMOVE}


REMOVE = object()
CANCELLED = registry.current("ledgerflow.invoice.cancelled")
OUTSIDE = {
    "a field with a default left out": cancelled(remark=REMOVE),
    "a required field left out": cancelled(reason=REMOVE),
    "a field the schema does not have": cancelled(note="x"),
    "a number for a string": cancelled(reason=3),
    "bytes for a string": cancelled(reason=b"order_cancelled"),
    "a string for a long": cancelled(occurred_at="1768817730123"),
    "a datetime for timestamp-millis": cancelled(occurred_at=datetime(2026, 1, 19, 10, 15, tzinfo=UTC)),
    "a boolean for a long": cancelled(occurred_at=True),
    "a long beyond 64 bits": cancelled(occurred_at=2**64),
    "a lone surrogate in a string": cancelled(remark="\ud800"),
    "not a record": ["not", "a", "record"],
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("record", OUTSIDE.values(), ids=OUTSIDE.keys())
def test_a_record_outside_the_compiled_case_gets_fastavros_bytes_or_error(kind: str, record: Any) -> None:
    write = writer(kind, CANCELLED)
    assert outcome(write, record) == outcome(lambda r: fastavro_bytes(CANCELLED, r), record)


@pytest.mark.parametrize("kind", KINDS)
def test_a_record_of_another_shape_is_refused_with_a_codec_error(kind: str) -> None:
    with pytest.raises(codec.CodecError):
        writer(kind, CANCELLED)(cancelled(note="x"))


# -- hostile values, one type at a time: the native writer's C checks against fastavro ------------

HOSTILE_SCHEMA = {
    "type": "record",
    "name": "Hostile",
    "namespace": "ledgerflow.test",
    "fields": [
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "b", "type": "boolean"},
        {"name": "s", "type": "string"},
        {"name": "o", "type": ["null", "string"]},
        {"name": "a", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": {"type": "map", "values": ["string", "null"]}},
        {"name": "r", "type": {"type": "record", "name": "In", "fields": [{"name": "x", "type": "string"}]}},
    ],
}
PLAIN = {"i": 1, "l": 2, "b": True, "s": "x", "o": None, "a": [], "m": {}, "r": {"x": ""}}
HOSTILE: dict[str, tuple[str, Any]] = {
    "NUL and controls": ("s", "\x00\x01\x1f\x7f\x00"),
    "emoji": ("s", "🧾👩‍👩‍👧"),
    "Devanagari": ("o", "कर बीजक ०१२३४५६७८९"),
    "a string past 1 KB": ("s", "ज" * 2000),
    "an ASCII string of 64 KB": ("o", "a" * 65536),
    "a lone surrogate": ("s", "a\udc80"),
    "a str subclass": ("s", type("Text", (str,), {})("x")),
    "bytes for a string": ("o", b"x"),
    "the smallest long": ("l", -(2**63)),
    "the largest long": ("l", 2**63 - 1),
    "a long past 64 bits": ("l", 2**63),
    "a long below 64 bits": ("l", -(2**63) - 1),
    "the smallest int": ("i", -(2**31)),
    "an int past 32 bits": ("i", 2**31),
    "a bool for an int": ("i", True),
    "a float for a long": ("l", 1.0),
    "1 for a boolean": ("b", 1),
    "None for a string": ("s", None),
    "a tuple for an array": ("a", (1, 2)),
    "huge and negative longs in an array": ("a", [2**63 - 1, -(2**63), 0, -1, 64, -65]),
    "a number key in a map": ("m", {1: "x"}),
    "odd keys and values in a map": ("m", {"\x00": None, "🧾": "ज" * 1500, "": ""}),
    "a record with an extra field": ("r", {"x": "", "y": 1}),
    "a record missing its field": ("r", {"y": ""}),
    "a list for a record": ("r", ["x"]),
}


@pytest.mark.parametrize(("name", "value"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_values_get_fastavros_bytes_or_error(name: str, value: Any) -> None:
    fp = codec.fingerprint(HOSTILE_SCHEMA)
    parsed = codec.parse(HOSTILE_SCHEMA)
    record = {**PLAIN, name: value}
    native = compile_native_writer(HOSTILE_SCHEMA, fp)
    assert isinstance(native, _native_writer.Program)
    assert outcome(native, record) == outcome(lambda r: codec.encode(parsed, r, fp=fp), record)
