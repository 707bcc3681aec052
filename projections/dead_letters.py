"""Projection dead letters: events a projection cannot apply, set aside so that the projector goes on.

One event that PostgreSQL refuses (a NUL byte in a text field, totals beyond numeric(18,2), a CHECK
constraint) or that the projection's code cannot read must not stop the read side: left alone,
every restart would fail on the same event. The runner and a rebuild go through
:func:`apply_isolating` (a replay through the same ``db.apply_refusing_faults``, without recording):

1. apply the whole batch inside a savepoint; usually that is all;
2. when it fails with a *poison* error, roll the savepoint back and apply each half the same way,
   down to the single events that fail (bisection: k bad events in n cost about k * log2(n) tries);
3. record each failing event in ``projection_dead_letters`` in the same transaction as the good
   events and the tracking row, so the position moves past it and stays exact.

Which errors are poison (:func:`is_poison`)::

    poison, dead-lettered        psycopg.DataError       NUL byte, numeric overflow, bad encoding
                                 psycopg.IntegrityError  CHECK, NOT NULL, foreign key
                                 any other Exception     KeyError/TypeError/ValueError... raised by
                                                         the projection's parameter builders
    transient, waited out        db.is_outage (DatabaseUnavailable, connection errors of psycopg
                                 and of the event store library), every other psycopg.Error:
                                 OperationalError (connection lost, admin shutdown, serialization
                                 failure, deadlock, disk full), InterfaceError, InternalError and
                                 ProgrammingError (a missing table or column is a deployment fault:
                                 dead-lettering would bury every event behind it)

Each letter is also copied to ``projection.<name>.dlq.v1`` (original key, value and headers plus
the context headers of ``streams/dlq.py``) after its transaction commits; ``published_at`` makes
that an outbox, so a crash in between publishes it at the next start.

A row of a projection is *incomplete* while a pending letter names its aggregate (``ce_subject``):
derived, not stored, so it cannot drift, needs no column on the projection's table and survives
a rebuild unchanged. ``ledgerflow dlq ... --projection NAME`` redrives or discards letters.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
import psycopg
from aiokafka import AIOKafkaProducer, TopicPartition
from psycopg.rows import dict_row

from engine import db, kafka
from engine.config import Settings
from projections import catalogue, tracking
from projections.events import DECODE_ERRORS, ProjectedEvent, Projection, decode_message
from streams.dlq import dead_letter_headers

log = logging.getLogger("ledgerflow.projections.dead_letters")

UNDECODABLE = "undecodable_event"
APPLY_FAILED = "apply_failed"
# Header naming the letter on the DLQ topic (the id ``ledgerflow dlq ... --projection`` takes).
DEAD_LETTER_ID = "dead-letter-id"


class DeadLetterError(Exception):
    """An operator request on projection dead letters that cannot be done; the message says why."""


def dlq_topic(projection: str) -> str:
    """Logical name of a projection's dead-letter topic."""
    return f"projection.{projection}.dlq.v1"


def is_poison(exc: BaseException) -> bool:
    """True when ``exc`` is about the event itself (dead-letter it), False for an outage (wait)."""
    return db.is_record_fault(exc)


@dataclass(frozen=True)
class Failure:
    """One record a projection could not apply, as it travelled, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    code: str
    error_class: str
    error_message: str

    @classmethod
    def of_event(cls, event: ProjectedEvent, exc: BaseException) -> Failure:
        return cls(
            event.topic,
            event.partition,
            event.offset,
            event.key,
            event.value,
            event.headers,
            APPLY_FAILED,
            type(exc).__name__,
            _message(exc),
        )

    @classmethod
    def undecodable(cls, message: Any, exc: BaseException) -> Failure:
        return cls(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value or b"",
            tuple((k, v or b"") for k, v in message.headers or ()),
            UNDECODABLE,
            type(exc).__name__,
            _message(exc),
        )


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return text[:4000]


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL: show it escaped (a header is exactly what may carry one)."""
    return value.replace("\x00", "\\x00")


# -- applying ---------------------------------------------------------------------------------------


def apply_isolating(
    conn: psycopg.Connection,
    projection: Projection,
    events: Sequence[ProjectedEvent],
    *,
    dead_letters_of: str,
) -> list[Failure]:
    """Apply ``events`` inside the caller's transaction; poison events are recorded as dead letters
    of projection ``dead_letters_of`` (in the same transaction) instead. Transient errors propagate.
    Returns the failures recorded."""
    failures = _isolate(conn, projection, list(events))
    if failures:
        record(conn, dead_letters_of, failures)
    return failures


def _isolate(conn: psycopg.Connection, projection: Projection, events: list[ProjectedEvent]) -> list[Failure]:
    refused = db.apply_refusing_faults(conn, lambda chunk: projection.apply(conn, chunk), events)
    for event, exc in refused:
        log.error(
            "%s cannot apply %s %s at %s[%d]@%d: %s: %s",
            projection.name,
            event.ce_type or "event",
            event.ce_id,
            event.topic,
            event.partition,
            event.offset,
            type(exc).__name__,
            _message(exc),
        )
    return [Failure.of_event(event, exc) for event, exc in refused]


_RECORD = """
INSERT INTO projection_dead_letters (
    projection, topic, partition, "offset", ce_id, ce_type, aggregate_id, tenant_id,
    error_code, error_class, error_message, key, value, headers
)
SELECT %(projection)s, %(topic)s, %(partition)s, %(offset)s, %(ce_id)s, %(ce_type)s, %(aggregate_id)s,
       %(tenant_id)s, %(code)s, %(error_class)s, %(error_message)s, %(key)s, %(value)s, %(headers)s::jsonb
-- An event a rebuild read from the event store (partition -1) that the live projector already
-- dead-lettered from Kafka is the same event: one letter.
WHERE %(partition)s >= 0 OR NOT EXISTS (
    SELECT 1 FROM projection_dead_letters
    WHERE projection = %(projection)s AND ce_id = %(ce_id)s AND %(ce_id)s <> ''
)
ON CONFLICT (projection, topic, partition, "offset") DO UPDATE SET
    -- Applied by a redrive once, refused again now (a rebuild, a replay): pending again.
    state = 'pending', resolved_at = NULL, attempts = projection_dead_letters.attempts + 1,
    error_class = EXCLUDED.error_class, error_message = EXCLUDED.error_message
WHERE projection_dead_letters.state = 'redriven'
"""


def record(conn: psycopg.Connection, projection: str, failures: Iterable[Failure]) -> None:
    """Store dead letters (idempotent per record position)."""
    rows = []
    for f in failures:
        h = {k: v.decode(errors="replace") for k, v in f.headers}
        rows.append(
            {
                "projection": projection,
                "topic": f.topic,
                "partition": f.partition,
                "offset": f.offset,
                "ce_id": _text(h.get("ce_id", "")),
                "ce_type": _text(h.get("ce_type", "")),
                "aggregate_id": _text(h.get("ce_subject") or (f.key or b"").decode(errors="replace")),
                "tenant_id": _text(h.get("ce_source", "").removeprefix("/tenants/")),
                "code": f.code,
                "error_class": f.error_class,
                "error_message": _text(f.error_message),
                "key": f.key,
                "value": f.value,
                "headers": orjson.dumps(
                    [[_text(k), base64.b64encode(v).decode()] for k, v in f.headers]
                ).decode(),
            }
        )
    if rows:
        with conn.cursor() as cur:
            cur.executemany(_RECORD, rows)


# -- the stored letters -----------------------------------------------------------------------------


State = Literal["pending", "redriven", "discarded"]


@dataclass(frozen=True)
class DeadLetter:
    id: int
    projection: str
    topic: str
    partition: int
    offset: int
    ce_id: str
    ce_type: str
    aggregate_id: str
    tenant_id: str
    error_code: str
    error_class: str
    error_message: str
    state: str
    attempts: int
    created_at: datetime
    resolved_at: datetime | None
    published_at: datetime | None = None
    key: bytes | None = field(default=None, repr=False)
    value: bytes = field(default=b"", repr=False)
    headers: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    def as_message(self) -> Any:
        """The record as a Kafka consumer read it (what ``decode_message`` takes)."""
        return _StoredMessage(
            self.topic, self.partition, self.offset, self.key, self.value, list(self.headers)
        )

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """The original headers plus the context of ``streams/dlq.py`` and this letter's identity."""
        return dead_letter_headers(
            self.headers,
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            code=self.error_code,
            message=self.error_message,
            extra=(
                ("error-class", self.error_class),
                ("projection", self.projection),
                (DEAD_LETTER_ID, str(self.id)),
            ),
        )


@dataclass(frozen=True)
class _StoredMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def _letter(row: dict[str, Any]) -> DeadLetter:
    headers = tuple((k, base64.b64decode(v)) for k, v in row["headers"])
    return DeadLetter(
        id=row["id"],
        projection=row["projection"],
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        ce_id=row["ce_id"],
        ce_type=row["ce_type"],
        aggregate_id=row["aggregate_id"],
        tenant_id=row["tenant_id"],
        error_code=row["error_code"],
        error_class=row["error_class"],
        error_message=row["error_message"],
        state=row["state"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        resolved_at=row["resolved_at"],
        published_at=row["published_at"],
        key=bytes(row["key"]) if row["key"] is not None else None,
        value=bytes(row["value"]),
        headers=headers,
    )


def select(conn: psycopg.Connection, projection: str, ids: Sequence[int] | None = None) -> list[DeadLetter]:
    """Letters of ``projection`` (or only ``ids``), in the order they were read from their topics."""
    query = "SELECT * FROM projection_dead_letters WHERE projection = %s"
    params: list[Any] = [projection]
    if ids is not None:
        query += " AND id = ANY(%s)"
        params.append(list(ids))
    query += ' ORDER BY topic, partition, "offset", id'
    with conn.cursor(row_factory=dict_row) as cur:
        return [_letter(row) for row in cur.execute(query, params).fetchall()]


def claim_unpublished(conn: psycopg.Connection, projection: str, limit: int = 500) -> list[DeadLetter]:
    """Letters not yet copied to the DLQ topic, locked in the caller's open transaction (others
    skip them) until it commits with ``mark_published``."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM projection_dead_letters WHERE projection = %s AND published_at IS NULL"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (projection, limit),
        ).fetchall()
    return [_letter(row) for row in rows]


def mark_published(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    conn.execute("UPDATE projection_dead_letters SET published_at = now() WHERE id = ANY(%s)", (list(ids),))


async def publish(producer: AIOKafkaProducer, settings: Settings, letters: Sequence[DeadLetter]) -> None:
    """Copy letters to their projection's DLQ topic and wait for every acknowledgement."""
    sends = [
        await producer.send(
            settings.topic(dlq_topic(letter.projection)),
            value=letter.value,
            key=letter.key,
            headers=letter.kafka_headers(),
        )
        for letter in letters
    ]
    await asyncio.gather(*sends)


def pending_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Pending letters per projection (projections without any are absent)."""
    if not conn.execute("SELECT to_regclass('projection_dead_letters') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return {}
    rows = conn.execute(
        "SELECT projection, count(*) FROM projection_dead_letters WHERE state = 'pending' GROUP BY projection"
    ).fetchall()
    return {str(name): int(count) for name, count in rows}


def pending_counts_of(settings: Settings) -> dict[str, int]:
    with db.connect(settings) as conn:
        return pending_counts(conn)


# -- what operators do ------------------------------------------------------------------------------


def find_projection(name: str) -> Projection:
    projection = catalogue.find(name)
    if projection is None:
        raise DeadLetterError(f"no projection named {name!r} (known: {catalogue.known_names()})")
    return projection


def letters(settings: Settings, projection: str) -> list[DeadLetter]:
    find_projection(projection)
    db.ensure_schema(settings)
    with db.connect(settings) as conn:
        return select(conn, projection)


def letter(settings: Settings, projection: str, letter_id: int) -> DeadLetter | None:
    find_projection(projection)
    db.ensure_schema(settings)
    with db.connect(settings) as conn:
        found = select(conn, projection, [letter_id])
    return found[0] if found else None


def render_list(found: Sequence[DeadLetter]) -> str:
    """What ``ledgerflow dlq list --projection`` prints: one line per letter, in topic order."""
    if not found:
        return "no dead letters"
    lines = [
        f"{'id':>5}  {'state':<9} {'created at':<19} {'record':<34} {'type':<32} {'aggregate':<36} "
        f"{'error':<24} message"
    ]
    for d in found:
        where = f"{d.topic}[{d.partition}]@{d.offset}"
        lines.append(
            f"{d.id:>5}  {d.state:<9} {d.created_at.isoformat(timespec='seconds')[:19]:<19} "
            f"{where[-34:]:<34} {d.ce_type[:32]:<32} {d.aggregate_id[:36]:<36} {d.error_class[:24]:<24} "
            + d.error_message.splitlines()[0][:100]
        )
    return "\n".join(lines)


def render_letter(d: DeadLetter) -> str:
    """What ``ledgerflow dlq show --projection`` prints: the letter, every header and the value."""
    resolved = f", resolved {d.resolved_at.isoformat(timespec='seconds')}" if d.resolved_at else ""
    lines = [
        f"{d.projection} dead letter {d.id}: {d.state} ({d.attempts} attempt(s)){resolved}",
        f"read from {d.topic}[{d.partition}]@{d.offset}, dead-lettered {d.created_at.isoformat()}",
        f"event {d.ce_id or '-'} ({d.ce_type or 'no ce_type'}) aggregate {d.aggregate_id or '-'}"
        f" tenant {d.tenant_id or '-'}",
        f"{d.error_code} {d.error_class}: {d.error_message}",
        f"copied to {dlq_topic(d.projection)}: {'yes' if d.published_at else 'not yet'}",
        "headers:",
        *(f"  {k}: {v.decode(errors='replace')!r}" for k, v in d.headers),
        "key: " + ("-" if d.key is None else repr(d.key.decode(errors="replace"))),
        f"value: {len(d.value)} bytes",
    ]
    return "\n".join(lines)


@dataclass
class DeadLetterReport:
    """What a redrive or discard did, letter by letter."""

    projection: str
    action: Literal["redrive", "discard"]
    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    """id -> the error of the new attempt (the letter stays pending with it)."""
    skipped: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing

    def __str__(self) -> str:
        past = "redriven" if self.action == "redrive" else "discarded"
        lines = [
            f"{self.projection}: {len(self.done)} {past}" + (f": {_ids(self.done)}" if self.done else "")
        ]
        lines += [f"  id {i}: FAILED again, still pending: {why}" for i, why in sorted(self.failed.items())]
        lines += [f"  id {i}: skipped, {why}" for i, why in sorted(self.skipped.items())]
        lines += [f"  id {i}: no such dead letter of {self.projection}" for i in self.missing]
        return "\n".join(lines)


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids))


def _chosen(
    conn: psycopg.Connection, projection: str, ids: Sequence[int] | Literal["all"], report: DeadLetterReport
) -> list[DeadLetter]:
    found = select(conn, projection, None if ids == "all" else ids)
    if ids != "all":
        present = {d.id for d in found}
        report.missing = [i for i in ids if i not in present]
    chosen = []
    for d in found:
        if d.state == "pending":
            chosen.append(d)
        elif ids != "all":
            report.skipped[d.id] = f"already {d.state}"
    return chosen


def discard(settings: Settings, projection: str, ids: Sequence[int] | Literal["all"]) -> DeadLetterReport:
    """Mark pending letters as dealt with without applying them; their rows are no longer incomplete."""
    find_projection(projection)
    db.ensure_schema(settings)
    report = DeadLetterReport(projection, "discard")
    with db.connect(settings) as conn, conn.transaction():
        chosen = _chosen(conn, projection, ids, report)
        done = conn.execute(
            "UPDATE projection_dead_letters SET state = 'discarded', resolved_at = now()"
            " WHERE id = ANY(%s) AND state = 'pending' RETURNING id",
            ([d.id for d in chosen],),
        ).fetchall()
    report.done = sorted(int(row[0]) for row in done)
    return report


def redrive(
    settings: Settings, projection_name: str, ids: Sequence[int] | Literal["all"]
) -> DeadLetterReport:
    """Apply pending letters again with the projection's own ``apply``, in topic order, one transaction
    each. Together with a letter, the later events of the same aggregate that the projector has
    already applied are applied again after it (statements are idempotent, set-to-fixed-values), so
    an invoice whose ``issued`` event failed and whose ``cancelled`` event found no row ends
    cancelled, not issued. A letter that fails again stays pending with the new error."""
    projection = find_projection(projection_name)
    db.ensure_schema(settings)
    report = DeadLetterReport(projection_name, "redrive")
    with db.connect(settings) as conn:
        chosen = _chosen(conn, projection_name, ids, report)
        pending_positions = {
            (d.topic, d.partition, d.offset) for d in select(conn, projection_name) if d.state == "pending"
        }
        applied_up_to = {
            (topic, partition): offset
            for topic in {d.topic for d in chosen}
            for partition, offset in tracking.positions(conn, projection_name, topic).items()
        }
    later = asyncio.run(_later_events(settings, chosen, applied_up_to, pending_positions)) if chosen else {}
    for d in chosen:
        try:
            with db.connect(settings) as conn, conn.transaction():
                state = conn.execute(
                    "SELECT state FROM projection_dead_letters WHERE id = %s FOR UPDATE", (d.id,)
                ).fetchone()
                if state is None or state[0] != "pending":
                    report.skipped[d.id] = f"already {state[0] if state else 'gone'}"
                    continue
                event = decode_message(d.as_message())
                projection.apply(conn, [event, *later.get(d.id, [])])
                conn.execute(
                    "UPDATE projection_dead_letters SET state = 'redriven', resolved_at = now(),"
                    " attempts = attempts + 1 WHERE id = %s",
                    (d.id,),
                )
            report.done.append(d.id)
        except Exception as exc:
            if not is_poison(exc):
                raise DeadLetterError(
                    f"PostgreSQL failed while redriving dead letter {d.id} ({type(exc).__name__}: {exc});"
                    f" nothing was changed for it: run the redrive again once PostgreSQL is back"
                ) from exc
            with db.connect(settings) as conn, conn.transaction():
                conn.execute(
                    "UPDATE projection_dead_letters SET attempts = attempts + 1, error_class = %s,"
                    " error_message = %s WHERE id = %s",
                    (type(exc).__name__, _text(_message(exc)), d.id),
                )
            report.failed[d.id] = f"{type(exc).__name__}: {_message(exc)}"
    return report


async def _later_events(
    settings: Settings,
    chosen: Sequence[DeadLetter],
    applied_up_to: dict[tuple[str, int], int],
    pending_positions: set[tuple[str, int, int]],
) -> dict[int, list[ProjectedEvent]]:
    """Per letter: the events of its aggregate after it, up to what the projector has applied, that
    are not themselves pending letters (those get their own turn). One read per partition."""
    wanted: dict[TopicPartition, list[DeadLetter]] = {}
    for d in chosen:
        if (
            d.partition >= 0
            and d.key is not None
            and d.offset < applied_up_to.get((d.topic, d.partition), -1)
        ):
            wanted.setdefault(TopicPartition(d.topic, d.partition), []).append(d)
    found: dict[int, list[ProjectedEvent]] = {}
    if not wanted:
        return found
    consumer = kafka.consumer(settings)
    await consumer.start()
    try:
        for tp, ds in wanted.items():
            end = applied_up_to[(tp.topic, tp.partition)]
            start = min(d.offset for d in ds) + 1
            keys = {d.key for d in ds}
            consumer.assign([tp])
            consumer.seek(tp, start)
            by_key: list[tuple[int, bytes | None, ProjectedEvent]] = []
            while await consumer.position(tp) <= end:
                batch = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
                for message in batch:
                    if message.offset > end or message.key not in keys:
                        continue
                    if (tp.topic, tp.partition, message.offset) in pending_positions:
                        continue
                    try:
                        by_key.append((message.offset, message.key, decode_message(message)))
                    except DECODE_ERRORS:
                        continue  # undecodable: never applied by the projector either
                if not batch and await consumer.position(tp) <= end:
                    # Retention removed the rest, or the broker is slow: what was read is all there is.
                    end_offsets = await consumer.end_offsets([tp])
                    if end_offsets[tp] <= await consumer.position(tp):
                        break
            for d in ds:
                found[d.id] = [e for offset, key, e in by_key if key == d.key and offset > d.offset]
    finally:
        # Let the consumer's own start-up tasks run before it is stopped: aiokafka 0.x raises
        # CancelledError from stop() when one of them was cancelled before it ever ran.
        await asyncio.sleep(0)
        await consumer.stop()
    return found
