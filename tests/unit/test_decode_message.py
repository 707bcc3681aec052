"""What ``decode_message`` makes of a Kafka record's headers: ce_type and ce_id (the last one of a
repeated header counts, a null value reads as empty), and the headers kept for a dead letter as a
tuple of (name, bytes) pairs whatever the record held (perf-decode reads them in one pass)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from projections.events import DECODE_ERRORS, ProjectedEvent, decode_message
from schemas import codec, registry

ISSUED = registry.current("ledgerflow.invoice.issued")
VALUE = ISSUED.write(json.loads(ISSUED.sample_path.read_text(encoding="utf-8")))
TYPE = ISSUED.ce_type.encode()


def record(headers: Any, value: bytes | None = VALUE) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", 3, 41, 0, 0, b"k", value, None, 1, len(value or b""), headers)


@pytest.mark.parametrize(
    ("headers", "ce_type", "ce_id", "kept"),
    [
        (
            (("ce_id", b"e-1"), ("ce_type", TYPE), ("traceparent", b"00-ab")),
            ISSUED.ce_type,
            "e-1",
            (("ce_id", b"e-1"), ("ce_type", TYPE), ("traceparent", b"00-ab")),
        ),
        # A list, a null value, repeated headers: the kept headers are a tuple of tuples, b"" for null.
        (
            [("ce_id", b"e-1"), ("ce_id", b"e-2"), ("ce_type", TYPE), ("x", None)],
            ISSUED.ce_type,
            "e-2",
            (("ce_id", b"e-1"), ("ce_id", b"e-2"), ("ce_type", TYPE), ("x", b"")),
        ),
        ((["ce_type", TYPE], ("ce_id", None)), ISSUED.ce_type, "", (("ce_type", TYPE), ("ce_id", b""))),
        # No type header: the body is decoded by its fingerprint alone.
        (None, "", "", ()),
        ((), "", "", ()),
        ((("ce_type", None),), "", "", (("ce_type", b""),)),
    ],
)
def test_headers_are_read_once_and_kept_as_pairs(
    headers: Any, ce_type: str, ce_id: str, kept: tuple[tuple[str, bytes], ...]
) -> None:
    event = decode_message(record(headers))
    assert (event.topic, event.partition, event.offset, event.key, event.value) == ("t", 3, 41, b"k", VALUE)
    assert event.ce_type == ce_type
    assert event.ce_id == ce_id
    assert event.headers == kept
    assert all(type(pair) is tuple for pair in event.headers)
    assert event.record == registry.decode_event(VALUE)


@pytest.mark.parametrize(
    ("headers", "value", "error"),
    [
        # A type header naming another type than the body's schema.
        ((("ce_type", b"ledgerflow.invoice.cancelled"),), VALUE, codec.CodecError),
        ((("ce_type", b"\xff"),), VALUE, UnicodeDecodeError),
        # The body is checked before ce_id: a bad body with a bad ce_id is the body's error.
        ((("ce_type", TYPE), ("ce_id", b"\xff")), VALUE[:5], codec.CodecError),
        ((("ce_type", TYPE), ("ce_id", b"\xff")), VALUE, UnicodeDecodeError),
        ((("ce_type", TYPE),), b"\x00" * 20, codec.CodecError),
        ((("ce_type", TYPE),), None, TypeError),
    ],
)
def test_undecodable_records_raise_a_decode_error(headers: Any, value: bytes | None, error: type) -> None:
    with pytest.raises(error) as raised:
        decode_message(record(headers, value))
    assert isinstance(raised.value, DECODE_ERRORS)


def test_the_event_is_the_dataclass_its_constructor_makes() -> None:
    # decode_message sets the fields at once rather than through __init__: the same event, frozen.
    event = decode_message(record((("ce_id", b"e-1"), ("ce_type", TYPE))))
    made = ProjectedEvent(
        "t", 3, 41, ISSUED.ce_type, "e-1", event.record, b"k", VALUE, (("ce_id", b"e-1"), ("ce_type", TYPE))
    )
    assert type(event) is ProjectedEvent
    assert event == made and repr(event) == repr(made)
    assert vars(event) == {f.name: getattr(made, f.name) for f in dataclasses.fields(ProjectedEvent)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.offset = 42  # type: ignore[misc]
