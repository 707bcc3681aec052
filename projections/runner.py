"""Runs projections: batches from Kafka applied to PostgreSQL in one transaction with their offsets.

Why not a faust agent: per-event overhead caps a faust agent at a few thousand events/s on this
machine, while a projection that takes a whole ``getmany`` batch and writes it with one
``executemany`` per statement in one transaction keeps up with the relay (see ``bench/``).

Positions live in PostgreSQL (``projection_tracking``), not in Kafka: on every partition
assignment the consumer seeks to the stored offset + 1. Offsets are also committed to Kafka after
each batch, only so that ``ledgerflow lag`` and other Kafka tools can see the group's progress.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from engine import db
from engine.config import Settings
from engine.kafka_clients import aiokafka_kwargs
from projections import tracking
from schemas import codec, registry
from streams.dlq import dead_letter_headers

log = logging.getLogger("ledgerflow.projections")


@dataclass(frozen=True)
class ProjectedEvent:
    topic: str
    partition: int
    offset: int
    ce_type: str
    ce_id: str
    record: dict[str, Any]


class Projection(Protocol):
    """A read model: a name, the logical topics it reads, the table it writes, and how to apply a batch
    of events. ``on_table`` gives the same projection writing another table of the same shape (a
    rebuild fills a shadow table that way)."""

    name: str
    topics: list[str]
    table: str

    def apply(self, conn: psycopg.Connection, events: Sequence[ProjectedEvent]) -> None: ...

    def on_table(self, table: str) -> Projection: ...


DECODE_ERRORS = (codec.CodecError, registry.UnknownEventType, ValueError, KeyError, TypeError)


def decode_message(message: Any) -> ProjectedEvent:
    """A Kafka record of the engine's topics as a projection sees it. Raises one of DECODE_ERRORS."""
    headers = dict(message.headers or [])
    ce_type = (headers.get("ce_type") or b"").decode()
    record = registry.decode_event(message.value, ce_type or None)
    return ProjectedEvent(
        message.topic,
        message.partition,
        message.offset,
        ce_type,
        (headers.get("ce_id") or b"").decode(),
        record,
    )


@dataclass
class ProjectorStats:
    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    batches: int = 0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)


class _SeekToStoredPositions(ConsumerRebalanceListener):
    def __init__(self, runner: ProjectionRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.runner.seek_to_stored(list(assigned))


class ProjectionRunner:
    def __init__(self, settings: Settings, projection: Projection, *, max_records: int = 5000) -> None:
        self.settings = settings
        self.projection = projection
        self.max_records = max_records
        self.stats = ProjectorStats()
        self.group_id = f"{settings.topic_prefix}ledgerflow.projection.{projection.name}"
        self.topics = [settings.topic(t) for t in projection.topics]
        self.dlq_topic = settings.topic(f"projection.{projection.name}.dlq.v1")
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._conn: psycopg.Connection | None = None

    def _stored(self) -> dict[tuple[str, int], int]:
        with db.connect(self.settings) as conn:
            found: dict[tuple[str, int], int] = {}
            for topic in self.topics:
                for partition, offset in tracking.positions(conn, self.projection.name, topic).items():
                    found[(topic, partition)] = offset
            return found

    async def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        assert self._consumer is not None
        stored = await asyncio.to_thread(self._stored)
        for tp in assigned:
            last = stored.get((tp.topic, tp.partition))
            if last is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, last + 1)
            self.stats.positions[(tp.topic, tp.partition)] = -1 if last is None else last
        log.info("%s assigned %s", self.projection.name, sorted((tp.topic, tp.partition) for tp in assigned))

    def _apply(self, events: list[ProjectedEvent], offsets: dict[tuple[str, int], int]) -> None:
        # One connection for the runner's life, replaced after a failure.
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.settings)
        conn = self._conn
        try:
            with conn.transaction():
                self.projection.apply(conn, events)
                by_topic: dict[str, dict[int, int]] = {}
                for (topic, partition), offset in offsets.items():
                    by_topic.setdefault(topic, {})[partition] = offset
                for topic, per_partition in by_topic.items():
                    tracking.record(conn, self.projection.name, topic, per_partition)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            conn.close()
            self._conn = None
            raise

    async def _dead_letter(self, message: Any, exc: Exception) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(
            self.dlq_topic,
            value=message.value,
            key=message.key,
            headers=dead_letter_headers(
                message.headers or [],
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                code="undecodable_event",
                message=str(exc),
            ),
        )
        self.stats.dead_lettered += 1

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await asyncio.to_thread(db.ensure_schema, self.settings)
        self._consumer = AIOKafkaConsumer(
            **aiokafka_kwargs(self.settings),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        self._producer = AIOKafkaProducer(
            **aiokafka_kwargs(self.settings), acks="all", enable_idempotence=True
        )
        await self._producer.start()
        self._consumer.subscribe(self.topics, listener=_SeekToStoredPositions(self))
        await self._consumer.start()
        # One batch is written to PostgreSQL (in a thread) while the next is fetched and decoded:
        # decoding is CPU work here, writing mostly waits on the database. Batches still commit in
        # order, each with its own offsets.
        writing: asyncio.Future[None] | None = None
        try:
            while not stop.is_set():
                batches = await self._consumer.getmany(timeout_ms=200, max_records=self.max_records)
                if not batches:
                    continue
                events, offsets = await self._collect(batches)
                if writing is not None:
                    await writing
                if offsets:
                    writing = asyncio.ensure_future(self._store(events, offsets, stop))
            if writing is not None:
                await writing
        finally:
            await self._consumer.stop()
            await self._producer.stop()
            if self._conn is not None:
                self._conn.close()

    async def _collect(
        self, batches: dict[TopicPartition, list[Any]]
    ) -> tuple[list[ProjectedEvent], dict[tuple[str, int], int]]:
        events: list[ProjectedEvent] = []
        offsets: dict[tuple[str, int], int] = {}
        for tp, messages in batches.items():
            applied_up_to = self.stats.positions.get((tp.topic, tp.partition), -1)
            for message in messages:
                if message.offset <= applied_up_to:
                    self.stats.skipped += 1
                    continue
                try:
                    events.append(decode_message(message))
                except DECODE_ERRORS as exc:
                    log.error(
                        "undecodable event at %s[%d]@%d: %s", tp.topic, tp.partition, message.offset, exc
                    )
                    await self._dead_letter(message, exc)
                offsets[(tp.topic, tp.partition)] = message.offset
        return events, offsets

    async def _store(
        self, events: list[ProjectedEvent], offsets: dict[tuple[str, int], int], stop: asyncio.Event
    ) -> None:
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(self._apply, events, offsets)
                break
            except (db.DatabaseUnavailable, psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if stop.is_set():
                    return
                log.warning("PostgreSQL unavailable while projecting (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        self.stats.positions.update(offsets)
        self.stats.applied += len(events)
        self.stats.batches += 1
        assert self._consumer is not None
        try:
            await self._consumer.commit({TopicPartition(t, p): o + 1 for (t, p), o in offsets.items()})
        except KafkaError as exc:  # only visibility is lost; positions are safe in PostgreSQL
            log.info("could not commit offsets to Kafka (%s); positions are safe in PostgreSQL", exc)
