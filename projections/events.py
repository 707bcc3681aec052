"""What every projection consumes: a decoded ledger event with where it came from, and the interface
a read model implements. Shared by the live runner, rebuild, replay and the dead-letter redrive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from schemas import codec, registry


@dataclass(frozen=True)
class ProjectedEvent:
    topic: str
    partition: int
    offset: int
    ce_type: str
    ce_id: str
    record: dict[str, Any]
    # The record as it travelled (kept by reference, not copied): a dead letter stores it so that
    # ``ledgerflow dlq redrive`` can apply exactly what failed.
    key: bytes | None = field(default=None, repr=False)
    value: bytes = field(default=b"", repr=False)
    headers: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)


class Projection(Protocol):
    """A read model: a name, the logical topics it reads, the table it writes, and how to apply a batch
    of events. ``on_table`` gives the same projection writing another table of the same shape (a
    rebuild fills a shadow table that way)."""

    name: str
    topics: list[str]
    table: str

    def apply(self, conn: psycopg.Connection, events: Sequence[ProjectedEvent]) -> None: ...

    def on_table(self, table: str) -> Projection: ...


def event_types(projection: Projection) -> frozenset[str] | None:
    """The CloudEvents types ``projection`` acts on, when it declares them (an ``event_types``
    attribute), else None: every type. The runner does not decode a record that no projection reading
    its topic declares, and hands each projection only the types it declares. A projection that
    declares nothing sees every event, as before (issue 15: decoding was most of the projector's
    CPU, and records of types nobody projects were decoded all the same)."""
    declared = getattr(projection, "event_types", None)
    return None if declared is None else frozenset(declared)


DECODE_ERRORS = (codec.CodecError, registry.UnknownEventType, ValueError, KeyError, TypeError)


def header_map(headers: Any) -> dict[str, bytes]:
    return {k: (v or b"") for k, v in (headers or [])}


def last_header(headers: Any, name: str) -> bytes:
    """The value of header ``name`` (b"" when absent or null); the last one counts when it repeats,
    as in ``header_map``, without building the map of every header."""
    found = b""
    for k, v in headers or ():
        if k == name:
            found = v or b""
    return found


def ce_type_of(message: Any) -> str:
    """The ``ce_type`` header of a Kafka record, without decoding its body ("" when absent). The last
    one counts when it repeats, as in ``decode_message``."""
    found = last_header(message.headers, "ce_type")
    try:
        return found.decode()
    except UnicodeDecodeError:
        return ""  # decoded in full, so that decode_message refuses it as it always has


def decode_message(message: Any) -> ProjectedEvent:
    """A Kafka record of the engine's topics as a projection sees it. Raises one of DECODE_ERRORS."""
    # One pass over the headers finds ce_type and ce_id (the last one counts, as in header_map) and
    # whether they can be kept as they came: aiokafka gives a tuple of (str, bytes) tuples, and a
    # null value (None) is the only thing the copy made before changed. Building the map, the copy
    # and the two look-ups was about a tenth of this function's CPU (docs/performance.md, perf-decode).
    raw = message.headers or ()
    kept = type(raw) is tuple
    ce_type = ce_id = b""
    for pair in raw:
        k, v = pair
        if v is None or type(pair) is not tuple:
            kept = False
        if k == "ce_type":
            ce_type = v or b""
        elif k == "ce_id":
            ce_id = v or b""
    event_type = ce_type.decode()
    record = registry.decode_event(message.value, event_type or None)
    return ProjectedEvent(
        message.topic,
        message.partition,
        message.offset,
        event_type,
        ce_id.decode(),
        record,
        message.key,
        message.value or b"",
        raw if kept else tuple((k, v or b"") for k, v in raw),
    )
