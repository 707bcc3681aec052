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
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from engine import db, kafka
from engine.config import Settings
from projections import dead_letters, tracking
from projections.dead_letters import Failure, apply_isolating, is_poison
from projections.events import DECODE_ERRORS, ProjectedEvent, Projection, decode_message

__all__ = ["DECODE_ERRORS", "ProjectedEvent", "Projection", "ProjectionRunner", "decode_message"]

log = logging.getLogger("ledgerflow.projections")


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
    # 2,500 events a batch, not 5,000: two batches are in memory at once (one written, one decoded),
    # and with 5,000 the projector peaked at 284-301 MB RSS in the bench, against 227 MB now,
    # under issue 15's 300 MB per process. A batch's fixed costs are a few round trips.
    def __init__(self, settings: Settings, projection: Projection, *, max_records: int = 2500) -> None:
        self.settings = settings
        self.projection = projection
        self.max_records = max_records
        self.stats = ProjectorStats()
        self.group_id = f"{settings.topic_prefix}ledgerflow.projection.{projection.name}"
        self.topics = [settings.topic(t) for t in projection.topics]
        self.dlq_topic = settings.topic(dead_letters.dlq_topic(projection.name))
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._conn: psycopg.Connection | None = None
        self._letters_unpublished = False

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

    def _apply(
        self, events: list[ProjectedEvent], undecodable: list[Failure], offsets: dict[tuple[str, int], int]
    ) -> int:
        """One transaction: the batch (poison events isolated and dead-lettered), the undecodable
        records' letters and the positions. Returns how many letters it recorded."""
        # One connection for the runner's life, replaced after a failure.
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.settings)
        conn = self._conn
        try:
            with conn.transaction():
                failed = apply_isolating(conn, self.projection, events, dead_letters_of=self.projection.name)
                dead_letters.record(conn, self.projection.name, undecodable)
                by_topic: dict[str, dict[int, int]] = {}
                for (topic, partition), offset in offsets.items():
                    by_topic.setdefault(topic, {})[partition] = offset
                for topic, per_partition in by_topic.items():
                    tracking.record(conn, self.projection.name, topic, per_partition)
        except Exception:
            # Whatever failed, start the retry on a fresh connection (a terminated backend leaves
            # a closed one; anything else leaves nothing worth keeping).
            conn.close()
            self._conn = None
            raise
        return len(failed) + len(undecodable)

    async def publish_dead_letters(self) -> None:
        """Copy letters not yet on ``projection.<name>.dlq.v1`` there (the table is the record; a
        failure here is retried after the next batch that dead-letters something, or at start).
        The rows stay locked (SKIP LOCKED) until Kafka has them: two projector processes of one
        projection do not both copy the same letter."""
        assert self._producer is not None
        try:
            conn = await asyncio.to_thread(db.connect, self.settings)
            try:
                while letters := await asyncio.to_thread(
                    dead_letters.claim_unpublished, conn, self.projection.name
                ):
                    await dead_letters.publish(self._producer, self.settings, letters)
                    await asyncio.to_thread(dead_letters.mark_published, conn, [d.id for d in letters])
                    await asyncio.to_thread(conn.commit)
            finally:
                await asyncio.to_thread(conn.close)  # an uncommitted claim is released
            self._letters_unpublished = False
        except (KafkaError, db.DatabaseUnavailable, psycopg.Error) as exc:
            self._letters_unpublished = True
            log.warning("could not copy dead letters to %s yet (%s); will retry", self.dlq_topic, exc)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await asyncio.to_thread(db.ensure_schema, self.settings)
        self._consumer = kafka.consumer(
            self.settings,
            group_id=self.group_id,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        self._producer = await kafka.start_producer(self.settings, "reliable")
        self._consumer.subscribe(self.topics, listener=_SeekToStoredPositions(self))
        await self._consumer.start()
        await self.publish_dead_letters()  # letters a crash left unpublished
        # One batch is written to PostgreSQL (in a thread) while the next is fetched and decoded:
        # decoding is CPU work here, writing mostly waits on the database. Batches still commit in
        # order, each with its own offsets.
        writing: asyncio.Future[None] | None = None
        try:
            while not stop.is_set():
                batches = await self._consumer.getmany(timeout_ms=200, max_records=self.max_records)
                if not batches:
                    continue
                events, undecodable, offsets = self._collect(batches)
                if writing is not None:
                    await writing
                if offsets:
                    writing = asyncio.ensure_future(self._store(events, undecodable, offsets, stop))
            if writing is not None:
                await writing
        finally:
            await self._consumer.stop()
            await self._producer.stop()
            if self._conn is not None:
                self._conn.close()

    def _collect(
        self, batches: dict[TopicPartition, list[Any]]
    ) -> tuple[list[ProjectedEvent], list[Failure], dict[tuple[str, int], int]]:
        events: list[ProjectedEvent] = []
        undecodable: list[Failure] = []
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
                    undecodable.append(Failure.undecodable(message, exc))
                offsets[(tp.topic, tp.partition)] = message.offset
        return events, undecodable, offsets

    async def _store(
        self,
        events: list[ProjectedEvent],
        undecodable: list[Failure],
        offsets: dict[tuple[str, int], int],
        stop: asyncio.Event,
    ) -> None:
        delay = 0.5
        while True:
            try:
                letters = await asyncio.to_thread(self._apply, events, undecodable, offsets)
                break
            except Exception as exc:
                # Poison never gets here (apply_isolating sets it aside): this is an outage, or a
                # fault of the deployment (a missing table). Either way nothing is skipped: wait.
                if stop.is_set():
                    return
                if is_poison(exc):
                    log.error(
                        "projecting %s failed (%r); retrying in %.1fs", self.projection.name, exc, delay
                    )
                else:
                    log.warning("PostgreSQL unavailable while projecting (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        self.stats.positions.update(offsets)
        self.stats.applied += len(events) - (letters - len(undecodable))
        self.stats.dead_lettered += letters
        self.stats.batches += 1
        if letters or self._letters_unpublished:
            await self.publish_dead_letters()
        assert self._consumer is not None
        try:
            await self._consumer.commit({TopicPartition(t, p): o + 1 for (t, p), o in offsets.items()})
        except KafkaError as exc:  # only visibility is lost; positions are safe in PostgreSQL
            log.info("could not commit offsets to Kafka (%s); positions are safe in PostgreSQL", exc)
