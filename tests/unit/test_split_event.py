"""The register's issued invoices read straight from the message (registry.split_event, the native
reader's ``Program.split``; ``InvoiceRegister.at_message``): the JSON text must be exactly what
orjson writes of the decoded record without the omitted fields (keys in the same order, the same
escapes), the record must be the decoded one without its arrays, and anything the one-pass writer
does not cover must come back as None, so that the usual decoding path gives its record or error.
The runner's event must equal, field for field, the one the usual path makes."""

from __future__ import annotations

import json
import operator
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.batch import ChangedEvent
from projections.events import NOT_KEPT, decode_message
from projections.invoice_register import ENVELOPE, ISSUED, InvoiceRegister
from schemas import codec, registry
from schemas.registry import SchemaVersion
from tests.unit.test_compiled_reader import records, sample_message

ALL_VERSIONS = [sv for ce_type in registry.all_types() for sv in registry.versions(ce_type)]
ISSUED_VERSIONS = registry.versions(ISSUED)
CURRENT = registry.current(ISSUED)
SAMPLE = json.loads(CURRENT.sample_path.read_text(encoding="utf-8"))


def _id(sv: SchemaVersion) -> str:
    return f"{sv.ce_type}.v{sv.version}"


def expected(data: bytes, ce_type: str, omit: frozenset[str]) -> tuple[dict[str, Any], str]:
    """What the usual path gives: the decoded record, and orjson's text of it without ``omit``."""
    record = registry.decode_event(data, ce_type)
    return record, orjson.dumps({k: v for k, v in record.items() if k not in omit}).decode()


def typed(value: Any) -> Any:
    """Types and key order made part of equality (as test_compiled_reader's ``typed``)."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, value)


def check(data: bytes, ce_type: str, omit: frozenset[str] = ENVELOPE) -> bool:
    """True when split_event took the message (and then agrees with the usual path), False for None."""
    got = registry.split_event(data, ce_type, omit)
    if got is None:
        return False
    record, text = got
    want_record, want_text = expected(data, ce_type, omit)
    assert text == want_text
    # The decoded record, in its order, but for arrays read from the message (only in the text).
    assert typed(record) == typed({k: v for k, v in want_record.items() if k in record})
    assert all(isinstance(v, list) for k, v in want_record.items() if k not in record)
    return True


@pytest.mark.parametrize("sv", ALL_VERSIONS, ids=_id)
def test_every_sample_is_split_as_the_usual_path_reads_it_or_left_to_it(sv: SchemaVersion) -> None:
    taken = check(sample_message(sv), sv.ce_type)
    if sv.ce_type == ISSUED:
        # Every version of an issued invoice (older ones read as the current, with defaults).
        assert taken, f"{_id(sv)} was left to the usual path"


def test_a_timestamp_a_map_or_a_float_in_the_text_is_left_to_the_usual_path() -> None:
    # occurred_at (timestamp-millis) is in the register's text only if it is not omitted.
    data = sample_message(CURRENT)
    assert check(data, ISSUED, ENVELOPE)
    assert not check(data, ISSUED, frozenset())
    # The samples of other types with timestamps, maps or floats outside the envelope: None, not a
    # text of our own making.
    left = [sv for sv in ALL_VERSIONS if not check(sample_message(sv), sv.ce_type)]
    assert left and all(sv.ce_type != ISSUED for sv in left)


def test_another_type_a_bad_body_or_trailing_bytes_are_left_to_the_usual_path() -> None:
    data = sample_message(CURRENT)
    assert registry.split_event(data, "ledgerflow.invoice.cancelled", ENVELOPE) is None
    assert registry.split_event(data + b"\x00", ISSUED, ENVELOPE) is None
    assert registry.split_event(b"not avro", ISSUED, ENVELOPE) is None
    assert registry.split_event(bytearray(data), ISSUED, ENVELOPE) is None  # type: ignore[arg-type]
    for cut in range(codec.HEADER_SIZE, len(data), 7):
        assert registry.split_event(data[:cut], ISSUED, ENVELOPE) is None
    # A corrupted byte: either a record the usual path reads the same, or None.
    for position in range(codec.HEADER_SIZE, len(data), 3):
        for byte in (0x00, 0x02, 0x05, 0x80, 0xFF):
            bad = data[:position] + bytes([byte]) + data[position + 1 :]
            try:
                registry.decode_event(bad, ISSUED)
            except codec.CodecError:
                assert registry.split_event(bad, ISSUED, ENVELOPE) is None
                continue
            check(bad, ISSUED)


HOSTILE = st.one_of(
    st.text(max_size=40),
    # Every control character, the quote and the backslash, DEL, and runs of non-ASCII.
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40),
    st.builds(operator.mul, st.characters(exclude_categories=["Cs"]), st.integers(60, 200)),
    st.sampled_from(['"', "\\", "\x00", "\x1f\x7f", "\u2028\u2029", "\U0001f600", "é\nü\t"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(number=HOSTILE, name=HOSTILE, description=HOSTILE, quantity=st.integers(-(2**31), 2**31 - 1))
def test_any_text_in_an_invoice_is_written_as_orjson_writes_it(
    number: str, name: str, description: str, quantity: int
) -> None:
    record = json.loads(json.dumps(SAMPLE))
    record["number"] = number
    record["buyer"]["name"] = name
    record["lines"][0]["description"] = description
    record["lines"][0]["line_no"] = quantity
    assert check(CURRENT.write(record), ISSUED)


@pytest.mark.parametrize("sv", ISSUED_VERSIONS, ids=_id)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_any_issued_record_of_any_version_is_split_as_the_usual_path_reads_it(
    sv: SchemaVersion, data: st.DataObject
) -> None:
    message = sv.write(data.draw(records(sv.schema)))
    for omit in (ENVELOPE, frozenset({"event_id", "idempotency_key"})):
        check(message, ISSUED, omit)  # taken and equal, or left to the usual path


def message(value: bytes, headers: Any) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("ledger.invoice.v1", 2, 17, 0, 0, b"key", value, None, 3, len(value), headers)


@pytest.mark.parametrize(
    "headers",
    [
        (("ce_id", b"e-1"), ("ce_type", ISSUED.encode()), ("traceparent", b"00-ab")),
        [("ce_type", ISSUED.encode()), ("ce_id", b"e-1"), ("ce_id", b"e-2"), ("x", None)],
    ],
)
def test_the_registers_event_from_the_message_is_the_usual_paths(headers: Any) -> None:
    register = InvoiceRegister()
    for sv in ISSUED_VERSIONS:
        record = message(sample_message(sv), headers)
        straight = register.at_message(record, ISSUED)
        usual = register.at_decode(decode_message(record))
        assert isinstance(straight, ChangedEvent) and straight.record is NOT_KEPT
        assert straight == usual
        assert list(vars(straight)) == list(vars(usual))  # the same fields, in the same order
        assert isinstance(straight.change, type(usual.change))
        assert straight.change is not None and usual.change is not None
        assert not isinstance(straight.change, Exception) and not isinstance(usual.change, Exception)
        assert list(straight.change.insert or {}) == list(usual.change.insert or {})


def test_the_register_leaves_other_types_undecodable_ids_and_subclasses_to_the_usual_path() -> None:
    register = InvoiceRegister()
    good = (("ce_type", ISSUED.encode()), ("ce_id", b"e-1"))
    data = sample_message(CURRENT)
    assert register.at_message(message(data, good), "ledgerflow.invoice.cancelled") is None
    # A ce_id that is not UTF-8: the usual path refuses the record (DECODE_ERRORS), so must this one.
    assert (
        register.at_message(message(data, (("ce_type", ISSUED.encode()), ("ce_id", b"\xff"))), ISSUED) is None
    )

    class Shown(InvoiceRegister):
        def change(self, event: Any) -> Any:
            return None

    assert Shown().at_message(message(data, good), ISSUED) is None


def test_a_huge_invoice_and_the_small_ones_after_it_are_written_whole() -> None:
    # The text's buffer grows past its starting size, and the next text starts smaller again.
    record = json.loads(json.dumps(SAMPLE))
    record["lines"][0]["description"] = 'a"\\\x01é\U0001f600' * 60_000
    assert check(CURRENT.write(record), ISSUED)
    assert check(sample_message(CURRENT), ISSUED)
