"""What every projection consumes: a decoded ledger event with where it came from, and the interface
a read model implements. Shared by the live runner, rebuild, replay and the dead-letter redrive."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, cast

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


# The record of a ``PreparedEvent``: read-only and empty, so that code expecting the record fails
# loudly (KeyError, TypeError) instead of seeing a stale or partial one.
NOT_KEPT = cast(dict[str, Any], MappingProxyType({}))


@dataclass(frozen=True)
class PreparedEvent(ProjectedEvent):
    """An event as a projection's ``at_decode`` leaves it: what its ``apply`` needs, and no record
    (``record`` is ``NOT_KEPT``). Key, value and headers are kept by reference, for a dead letter."""

    prepared: Any = field(default=None, repr=False)
    """What the projection took from the record, or the exception taking it raised."""
    prepared_by: str = ""
    """The projection that took it (only its ``apply`` may take the event)."""


E = TypeVar("E", bound=ProjectedEvent)


def frozen_with(kind: type[E], fields: dict[str, Any]) -> E:
    """An instance of the frozen dataclass ``kind`` (without slots) holding ``fields``, which must
    name every field: set at once as its ``__dict__``, not through ``__init__``, which sets each field
    with ``object.__setattr__`` (about twice the time for an event's nine fields)."""
    made = object.__new__(kind)
    object.__setattr__(made, "__dict__", fields)
    return made


class PreparesAtDecode(Protocol):
    """A projection that takes what its ``apply`` needs from each record as the record is decoded
    (``at_decode``), so that the record itself (about 190 objects for a 5-line invoice) is freed at
    once, instead of living until the batch is written. Decoding cost about three times as much
    when a batch's records were kept (cache misses, memory): docs/performance.md, "Projector: rows
    built as records are decoded", and "Projection catch-up: the floor, and each read model's share".

    The runner and the rebuild hand ``apply`` what ``at_decode`` returned (``at_decode_of``); the
    replay and the dead-letter redrive hand it full events. So ``apply`` takes both, usually through
    ``prepared``. ``at_decode`` must not raise: an event it cannot read keeps the exception (see
    ``prepare``), which ``apply`` raises again, inside the batch's poison isolation
    (``dead_letters.apply_isolating``), so that event alone is set aside with the same error."""

    name: str

    def at_decode(self, event: ProjectedEvent) -> ProjectedEvent: ...


AtDecode = Callable[[ProjectedEvent], ProjectedEvent]


class PreparesFromMessage(PreparesAtDecode, Protocol):
    """A projection that can also take what its ``at_decode`` would straight from a Kafka record's
    bytes (``at_message``), without the decoded record: the invoice register reads an issued
    invoice's document as JSON text written from the message and decodes no arrays (its lines),
    which are most of the record's objects (docs/performance.md, "Projector: the register's
    document straight from the message").

    ``at_message(message, ce_type)`` returns the event ``at_decode(decode_message(message))``
    would, equal field for field, or None for any record it does not take that way (then the
    runner decodes it as usual: an undecodable record or a failing change keeps the usual path's
    error). The runner asks only when this projection is the one projection due to act on the
    record (others would need the decoded record anyway), and ``ce_type`` is the record's
    ``ce_type`` header."""

    def at_message(self, message: Any, ce_type: str) -> ProjectedEvent | None: ...


AtMessage = Callable[[Any, str], ProjectedEvent | None]
T = TypeVar("T")


def prepare(
    event: ProjectedEvent,
    by: str,
    extract: Callable[[ProjectedEvent], Any],
    kind: type[PreparedEvent] = PreparedEvent,
) -> PreparedEvent:
    """``event`` without its record (a ``kind``), with what ``extract`` took from it or the
    exception it raised."""
    try:
        taken = extract(event)
    except Exception as exc:
        # Raised again by ``prepared`` in ``apply``, inside the batch's poison isolation, which then
        # sets this event alone aside: as when ``apply`` itself raised on the full event.
        taken = exc
    # The event's fields copied as they are (a dataclass without slots keeps them in ``__dict__``),
    # not passed through the frozen dataclass's ``__init__``, which sets each of them with
    # ``object.__setattr__``: 0.8 against 1.5 us (timeit), paid once per record and projection of
    # its topic (five on the invoice topic).
    fields = dict(event.__dict__)
    fields["record"] = NOT_KEPT
    fields["prepared"] = taken
    fields["prepared_by"] = by
    return cast(PreparedEvent, frozen_with(kind, fields))


def prepared(event: ProjectedEvent, by: str, extract: Callable[[ProjectedEvent], T]) -> T:
    """What projection ``by`` works from in ``apply``: what its ``at_decode`` took (raised again if
    taking it raised), or, for a full event (a replay, a redrive, a test), ``extract(event)`` now."""
    if not isinstance(event, PreparedEvent):
        return extract(event)
    if event.prepared_by != by:
        raise ValueError(f"{by} was given an event prepared by {event.prepared_by}")
    if isinstance(event.prepared, Exception):
        raise event.prepared
    return cast(T, event.prepared)


def at_decode_hook(projection: object) -> AtDecode | None:
    """``projection.at_decode`` when it offers one (``PreparesAtDecode``), else None."""
    hook = getattr(projection, "at_decode", None)
    return hook if callable(hook) else None


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
    ce_type, ce_id, headers = read_headers(message)
    event_type = ce_type.decode()
    record = registry.decode_event(message.value, event_type or None)
    return message_event(message, ProjectedEvent, event_type, ce_id.decode(), headers, record)


def read_headers(message: Any) -> tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]:
    """The raw ``ce_type`` and ``ce_id`` of a Kafka record (b"" when absent or null; the last one
    counts, as in header_map) and its headers as an event keeps them (null values as b"")."""
    # One pass over the headers finds both and whether they can be kept as they came: aiokafka
    # gives a tuple of (str, bytes) tuples, and a null value (None) is the only thing the copy made
    # before changed. Building the map, the copy and the two look-ups was about a tenth of
    # decode_message's CPU (docs/performance.md, perf-decode).
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
    return ce_type, ce_id, raw if kept else tuple((k, v or b"") for k, v in raw)


def message_event(
    message: Any,
    kind: type[E],
    ce_type: str,
    ce_id: str,
    headers: tuple[tuple[str, bytes], ...],
    record: dict[str, Any],
    added: dict[str, Any] | None = None,
) -> E:
    """An event of ``kind`` for ``message``: where it came from, its record, the record as it
    travelled, and the fields ``kind`` adds (``added``). Set at once (frozen_with): 0.44 against
    0.94 us through the frozen dataclass's __init__ (timeit), once per record."""
    fields = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "ce_type": ce_type,
        "ce_id": ce_id,
        "record": record,
        "key": message.key,
        "value": message.value or b"",
        "headers": headers,
    }
    if added:
        fields.update(added)
    return frozen_with(kind, fields)
