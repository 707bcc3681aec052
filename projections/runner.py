"""Runs projections: batches from Kafka applied to PostgreSQL in one transaction with their offsets.

Why not a faust agent: per-event overhead caps a faust agent at a few thousand events/s on this
machine, while a projection that takes a whole ``getmany`` batch and writes it with one
``executemany`` per statement in one transaction keeps up with the relay (see ``bench/``).

Positions live in PostgreSQL (``projection_tracking``), not in Kafka: on every partition
assignment the consumer seeks to the stored offset + 1. Offsets are also committed to Kafka after
each batch, only so that ``ledgerflow lag`` and other Kafka tools can see the group's progress.

One runner can drive several projections (``ledgerflow projector`` runs them all in one): one
consumer reads the union of their topics, each record is decoded once and handed to every
projection that reads its topic and wants its type, and each projection keeps its own positions,
transactions, dead letters and Kafka group offsets (issue 15: with a runner per projection, each of
the four projections of the invoice topic fetched and decoded every record again, and decoding is
most of a projector's CPU).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from engine import db, kafka
from engine.config import Settings
from projections import dead_letters, tracking
from projections.batch import at_decode_of, at_message_of
from projections.collection import CollectingBetweenBatches
from projections.dead_letters import Failure, apply_isolating, is_poison
from projections.events import (
    DECODE_ERRORS,
    AtDecode,
    AtMessage,
    ProjectedEvent,
    Projection,
    ce_type_of,
    decode_message,
    event_types,
)
from projections.visibility import commit_group_offsets, find_coordinators
from schemas import registry

__all__ = ["DECODE_ERRORS", "ProjectedEvent", "Projection", "ProjectionRunner", "decode_message"]

log = logging.getLogger("ledgerflow.projections")


@dataclass
class ProjectorStats:
    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    batches: int = 0
    # The consumer's view: per partition, the last offset every projection reading it has applied.
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    decoded: int = 0
    not_decoded: int = 0
    """Records no projection of their topic acts on (by their ce_type header), passed undecoded."""


class _SeekToStoredPositions(ConsumerRebalanceListener):
    def __init__(self, runner: ProjectionRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.runner.forget(list(revoked))
        # The batch being written commits before the partitions go to another process of the
        # group, which then reads the positions it stored (else both would apply it).
        await self.runner.finish_writing()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.runner.seek_to_stored(list(assigned))


Offsets = dict[tuple[str, int], int]
# A projection a record goes to, with its events.PreparesAtDecode and PreparesFromMessage hooks.
Route = tuple[str, AtDecode | None, AtMessage | None]


@dataclass
class _Start:
    """Where reading a partition starts, and each projection's last applied offset in it."""

    partition: TopicPartition
    lasts: dict[str, int]
    lowest: int
    offset: int = -1


@dataclass
class _Work:
    """One projection's share of a batch: its events, undecodable records and last offsets."""

    events: list[ProjectedEvent] = field(default_factory=list)
    undecodable: list[Failure] = field(default_factory=list)
    offsets: Offsets = field(default_factory=dict)


def shared_group(settings: Settings) -> str:
    """The consumer group of a runner that drives several projections (``ledgerflow projector``).
    Partitions are shared out in it between projector processes; each projection's own group
    (``ledgerflow.projection.<name>``) still gets its offsets, for ``ledgerflow lag`` and health."""
    return f"{settings.topic_prefix}ledgerflow.projector"


class ProjectionRunner:
    # Events a batch, bounded by memory: two batches are in memory at once (one written, one
    # decoded), under issue 15's 300 MB per process. With 5,000 the register's projector peaked at
    # 284-301 MB RSS in the bench. A projection with ``at_decode`` (events.PreparesAtDecode: all
    # five of the invoice topic) lets each record be freed as it is decoded (batch.at_decode_of); one
    # without keeps the records until the batch is written: the five, while the audit trail and
    # reconciliation kept them, peaked at 282-295 MB with 2,500 and 231-235 MB with 1,500, at the same
    # rate (docs/performance.md, "Projector: rows built as records are decoded"); all freeing them,
    # 231-245 MB with 2,500 and 205-213 MB with 1,500 ("decode-hooks"). 250-1,000 were slower
    # (per-batch round trips and commits).
    BATCH_ROWS_ONLY = 2500
    BATCH_RECORDS_KEPT = 1500
    # Types are read from headers, which a producer chooses: the routes kept are bounded.
    ROUTES_KEPT = 1024

    def __init__(
        self,
        settings: Settings,
        projection: Projection | Sequence[Projection],
        *,
        max_records: int | None = None,
        share: tuple[int, int] | None = None,
    ) -> None:
        self.settings = settings
        # (i, n): read only the partitions p with p % n == i, assigned directly rather than through
        # the consumer group (``ledgerflow projector --processes n``, ops/projector_pool.py).
        if share is not None and not 0 <= share[0] < share[1]:
            raise ValueError(f"share {share[0]} of {share[1]} does not exist")
        self.share = share
        self.projections: list[Projection] = (
            list(projection) if isinstance(projection, (list, tuple)) else [projection]  # type: ignore[list-item]
        )
        if not self.projections or len({p.name for p in self.projections}) != len(self.projections):
            raise ValueError("a runner needs projections of distinct names")
        self.projection = self.projections[0]
        self.stats = ProjectorStats()
        self.groups = {
            p.name: f"{settings.topic_prefix}ledgerflow.projection.{p.name}" for p in self.projections
        }
        self.group_id = (
            self.groups[self.projection.name] if len(self.projections) == 1 else shared_group(settings)
        )
        self.topics = list(dict.fromkeys(settings.topic(t) for p in self.projections for t in p.topics))
        # Per full topic name: the projections reading it, and the types any of them wants (None: all).
        self._readers: dict[str, list[Projection]] = {
            t: [p for p in self.projections if t in {settings.topic(x) for x in p.topics}]
            for t in self.topics
        }
        self._wants = {p.name: event_types(p) for p in self.projections}
        # Per projection offering it (events.PreparesAtDecode): what its apply needs, taken as each
        # record is decoded, so that the record is freed then (batch.at_decode_of).
        self._at_decode = {p.name: hook for p in self.projections if (hook := at_decode_of(p)) is not None}
        # And of those, the ones that can take it straight from the record's bytes when they are
        # its only reader (events.PreparesFromMessage: the register's issued invoices).
        self._at_message = {
            p.name: taker for p in self.projections if (taker := at_message_of(p)) is not None
        }
        if max_records is None:
            keeps = len(self._at_decode) < len(self.projections)
            max_records = self.BATCH_RECORDS_KEPT if keeps else self.BATCH_ROWS_ONLY
        self.max_records = max_records
        # Per projection: the last offset applied per partition (-1: none yet).
        self.applied: dict[str, Offsets] = {p.name: {} for p in self.projections}
        # Partitions whose stored positions are loaded (the rebalance listener seeks them). aiokafka
        # may hand out records fetched from the group's committed offset before the listener is done;
        # with one group for several projections that offset can be ahead of one of them (a
        # projection added or rebuilt), so such records are dropped and read again after the seek.
        self._loaded: set[tuple[str, int]] = set()
        self.dlq_topic = settings.topic(dead_letters.dlq_topic(self.projection.name))
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        # One kept connection per projection, replaced after a failure: the projections' shares of
        # a batch are written side by side (PostgreSQL works on one while Python builds the next).
        self._conns: dict[str, psycopg.Connection] = {}
        self._letters_unpublished: set[str] = set()
        # Set once the batch being written is in PostgreSQL (or given up at a stop).
        self._written: asyncio.Event | None = None
        # The Kafka commit of the last batch written, sent behind the writes (only visibility
        # waits for it); each commit waits for the one before, so offsets only move forward.
        self._committing: asyncio.Future[None] | None = None
        self._rebalances = 0
        # Per (topic, type): the projections a record goes to when all of them are due (``_share``).
        self._routes: dict[tuple[str, str], list[Route]] = {}

    def prepare(self) -> None:
        """Start-up work done before reading, not on the first batch: the schema catalogue and the
        readers of the types the projections act on (all types when one of them takes every type)."""
        wanted = list(self._wants.values())
        registry.prepare_readers(None if None in wanted else {t for w in wanted if w for t in w})

    @property
    def _conn(self) -> psycopg.Connection | None:
        """The first projection's connection (tests end its backend to simulate an outage)."""
        return self._conns.get(self.projection.name)

    def _stored(self) -> dict[str, Offsets]:
        found: dict[str, Offsets] = {p.name: {} for p in self.projections}
        with db.connect(self.settings) as conn:
            for p in self.projections:
                for topic in {self.settings.topic(t) for t in p.topics}:
                    for partition, offset in tracking.positions(conn, p.name, topic).items():
                        found[p.name][(topic, partition)] = offset
        return found

    async def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        self._seek(await self._starts(assigned))

    async def _starts(self, assigned: list[TopicPartition]) -> list[_Start]:
        """Where reading each partition starts: after the least advanced projection's stored
        offset (the others skip what they have applied already), or at the partition's beginning.

        The beginnings are asked for in one request, before the partitions are assigned where the
        runner assigns them itself (share mode): once a partition has a position the consumer
        fetches it, and a broker answers one connection's requests in order, so a request sent
        after that waited behind a fetch long poll (``fetch_max_wait_ms``, 500 ms). aiokafka gives
        assigned partitions of a group the group's committed offsets, normally the end of the
        topic, where the fetch waits out the long poll: one of the bench's two register processes
        started reading up to 0.5 s after the other (seek_to_beginning per partition, 2026-12-03)."""
        assert self._consumer is not None
        stored = await asyncio.to_thread(self._stored)
        starts = []
        for tp in assigned:
            key = (tp.topic, tp.partition)
            lasts = {p.name: stored[p.name].get(key, -1) for p in self._readers.get(tp.topic, [])}
            starts.append(_Start(tp, lasts, min(lasts.values(), default=-1)))
        unread = [s.partition for s in starts if s.lowest < 0]
        beginnings = await self._consumer.beginning_offsets(unread) if unread else {}
        for start in starts:
            start.offset = start.lowest + 1 if start.lowest >= 0 else beginnings[start.partition]
        return starts

    def _seek(self, starts: list[_Start]) -> None:
        assert self._consumer is not None
        for start in starts:
            tp = start.partition
            key = (tp.topic, tp.partition)
            for name, last in start.lasts.items():
                self.applied[name][key] = last
            self._consumer.seek(tp, start.offset)
            self.stats.positions[key] = start.lowest
            self._loaded.add(key)
        names = ", ".join(p.name for p in self.projections)
        log.info("%s assigned %s", names, sorted((s.partition.topic, s.partition.partition) for s in starts))

    async def _my_partitions(self) -> list[TopicPartition]:
        """This share's partitions of the projections' topics (the rebuild's fill workers share
        partitions out the same way, projections/rebuild.py)."""
        assert self.share is not None
        index, count = self.share
        found = await kafka.topic_partitions(self.settings, set(self.topics))
        missing = sorted(set(self.topics) - set(found))
        if missing:
            raise RuntimeError(f"topics missing: {missing} (run `ledgerflow topics ensure`)")
        return [tp for topic in self.topics for tp in found[topic] if tp.partition % count == index]

    def forget(self, revoked: list[TopicPartition]) -> None:
        self._loaded.difference_update((tp.topic, tp.partition) for tp in revoked)
        self._rebalances += 1

    async def finish_writing(self) -> None:
        """Wait for the PostgreSQL part of the batch being written; not its Kafka offset commit,
        which itself waits for the rebalance this is called from."""
        if self._written is not None:
            await self._written.wait()

    def _apply_one(self, projection: Projection, work: _Work) -> int:
        """One transaction: the projection's share of the batch (poison events isolated and
        dead-lettered), the undecodable records' letters and the positions. Returns how many
        letters it recorded."""
        conn = self._conns.get(projection.name)
        if conn is None or conn.closed:
            conn = self._conns[projection.name] = db.connect(self.settings)
        try:
            with conn.transaction():
                failed = apply_isolating(conn, projection, work.events, dead_letters_of=projection.name)
                dead_letters.record(conn, projection.name, work.undecodable)
                by_topic: dict[str, dict[int, int]] = {}
                for (topic, partition), offset in work.offsets.items():
                    by_topic.setdefault(topic, {})[partition] = offset
                for topic, per_partition in by_topic.items():
                    tracking.record(conn, projection.name, topic, per_partition)
        except Exception:
            # Whatever failed, start the retry on a fresh connection (a terminated backend leaves
            # a closed one; anything else leaves nothing worth keeping).
            conn.close()
            self._conns.pop(projection.name, None)
            raise
        return len(failed) + len(work.undecodable)

    def _apply(
        self, events: list[ProjectedEvent], undecodable: list[Failure], offsets: dict[tuple[str, int], int]
    ) -> int:
        """The single-projection form of ``_apply_one`` (kept for callers and tests)."""
        return self._apply_one(self.projection, _Work(events, undecodable, offsets))

    async def publish_dead_letters(self, name: str | None = None) -> None:
        """Copy letters not yet on ``projection.<name>.dlq.v1`` there (the table is the record; a
        failure here is retried after the next batch that dead-letters something, or at start).
        The rows stay locked (SKIP LOCKED) until Kafka has them: two projector processes of one
        projection do not both copy the same letter."""
        for p in self.projections if name is None else [q for q in self.projections if q.name == name]:
            await self._publish_dead_letters(p.name)

    async def _publish_dead_letters(self, name: str) -> None:
        assert self._producer is not None
        try:
            conn = await asyncio.to_thread(db.connect, self.settings)
            try:
                while letters := await asyncio.to_thread(dead_letters.claim_unpublished, conn, name):
                    await dead_letters.publish(self._producer, self.settings, letters)
                    await asyncio.to_thread(dead_letters.mark_published, conn, [d.id for d in letters])
                    await asyncio.to_thread(conn.commit)
            finally:
                await asyncio.to_thread(conn.close)  # an uncommitted claim is released
            self._letters_unpublished.discard(name)
        except (KafkaError, db.DatabaseUnavailable, psycopg.Error) as exc:
            self._letters_unpublished.add(name)
            topic = self.settings.topic(dead_letters.dlq_topic(name))
            log.warning("could not copy dead letters to %s yet (%s); will retry", topic, exc)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await asyncio.to_thread(db.ensure_schema, self.settings)
        self.prepare()
        self._consumer = kafka.consumer(
            self.settings,
            group_id=self.group_id,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            # A member finishes the batch it is writing before it gives its partitions up (the
            # listener): the group waits that long for it, not just one session timeout (aiokafka's
            # default), or a slow batch gets the member expelled and the group never settles.
            rebalance_timeout_ms=60_000,
        )
        self._producer = await kafka.start_producer(self.settings, "reliable")
        if self.share is None:
            self._consumer.subscribe(self.topics, listener=_SeekToStoredPositions(self))
            await self._consumer.start()
            await find_coordinators(self._consumer, self._memberless_groups())
        else:
            await self._consumer.start()
            await find_coordinators(self._consumer, self._memberless_groups())
            mine = await self._my_partitions()
            # The client learns the topics' leaders now, all in one metadata request: unassigned,
            # they are unknown to it, and beginning_offsets would find them one topic per retry
            # (a metadata update and a 100 ms back-off each: 1.4 s for the five projections'
            # topics). assign() would send the same request, but after it a fetch could start.
            await self._consumer._client.set_topics(self.topics)
            starts = await self._starts(mine)
            self._consumer.assign(mine)
            self._seek(starts)  # at once: no fetch has been sent yet
        await self.publish_dead_letters()  # letters a crash left unpublished
        try:
            with CollectingBetweenBatches() as collector:
                await self._loop(stop, collector)
        finally:
            if self._committing is not None:
                await asyncio.gather(self._committing, return_exceptions=True)
            await self._consumer.stop()
            await self._producer.stop()
            for conn in self._conns.values():
                conn.close()

    async def _loop(self, stop: asyncio.Event, collector: CollectingBetweenBatches) -> None:
        # One batch is written to PostgreSQL (in a thread) while the next is fetched and decoded:
        # decoding is CPU work here, writing mostly waits on the database. Batches still commit in
        # order, each with its own offsets.
        assert self._consumer is not None
        writing: asyncio.Future[None] | None = None
        while not stop.is_set():
            batches = await self._consumer.getmany(timeout_ms=200, max_records=self.max_records)
            if not batches:
                collector.idle()
                continue
            rebalances = self._rebalances
            records = sum(map(len, batches.values()))
            work = self._share(batches)
            del batches  # the raw records of a batch are not kept past decoding
            if writing is not None:
                await writing
            # Between batches, with only this one's events alive (projections/collection.py).
            collector.written(records)
            if self._rebalances != rebalances:
                # The partitions were handed out again while this batch waited: it may hold
                # records of a partition another process now owns. aiokafka revokes every
                # partition on a rebalance and the listener seeks each assigned one to its
                # stored position, so dropping the batch loses nothing: it is read again.
                self.stats.skipped += sum(len(w.events) for w in work.values())
                continue
            if any(w.offsets for w in work.values()):
                self._written = asyncio.Event()
                writing = asyncio.ensure_future(
                    self._store_all(work, stop, self._written, commit_behind=True)
                )
        if writing is not None:
            await writing

    def _collect(
        self, batches: dict[TopicPartition, list[Any]]
    ) -> tuple[list[ProjectedEvent], list[Failure], dict[tuple[str, int], int]]:
        """The single-projection form of ``_share`` (kept for callers and tests)."""
        work = self._share(batches)[self.projection.name]
        return work.events, work.undecodable, work.offsets

    def _share(self, batches: dict[TopicPartition, list[Any]]) -> dict[str, _Work]:
        """Decode each record once and give every projection that has not applied it yet its share."""
        work = {p.name: _Work() for p in self.projections}
        routes = self._routes
        for tp, messages in batches.items():
            topic = tp.topic
            key = (topic, tp.partition)
            if key not in self._loaded:
                self.stats.skipped += len(messages)
                continue
            readers = [
                (p.name, self._wants[p.name], self.applied[p.name].get(key, -1)) for p in self._readers[topic]
            ]
            lowest = min((up_to for _, _, up_to in readers), default=-1)
            highest = max((up_to for _, _, up_to in readers), default=-1)
            # Past every reader's position (all of a batch but the first after a projection was
            # added or rebuilt), every reader is due: one list, whose routes per type are kept, and
            # the offsets set once for the partition. Working both out per record was about a
            # twentieth of the register's projector CPU (py-spy, docs/performance.md "Projector: the
            # register's document straight from the message").
            everyone = [(name, wants) for name, wants, _ in readers]
            last = -1
            for message in messages:
                offset = message.offset
                if offset <= lowest:
                    self.stats.skipped += 1
                    continue
                if offset > highest:
                    due = everyone
                    last = offset
                else:
                    due = [(name, wants) for name, wants, up_to in readers if offset > up_to]
                    for name, _ in due:
                        work[name].offsets[key] = offset
                ce_type = ce_type_of(message)
                # Only the type from the header decides whether to decode at all. A record without
                # one is always decoded (and routed by the type it decodes to), so an undecodable
                # record is still refused as it was.
                route: list[Route] | None = None
                if ce_type:
                    route = routes.get((topic, ce_type)) if due is everyone else None
                    if route is None:
                        route = self._route(ce_type, due)
                        if due is everyone and len(routes) < self.ROUTES_KEPT:
                            routes[(topic, ce_type)] = route
                    if not route:
                        self.stats.not_decoded += 1
                        continue
                    if len(route) == 1 and (straight := route[0][2]) is not None:
                        taken = straight(message, ce_type)
                        if taken is not None:
                            self.stats.decoded += 1
                            work[route[0][0]].events.append(taken)
                            continue
                try:
                    event = decode_message(message)
                except DECODE_ERRORS as exc:
                    log.error("undecodable event at %s[%d]@%d: %s", topic, tp.partition, offset, exc)
                    failure = Failure.undecodable(message, exc)
                    # A letter for each projection that would have acted on the record.
                    for name, *_ in due if route is None else route:
                        work[name].undecodable.append(failure)
                    continue
                self.stats.decoded += 1
                for name, hook, _ in self._route(event.ce_type, due) if route is None else route:
                    work[name].events.append(event if hook is None else hook(event))
            if last >= 0:
                for name, _ in everyone:
                    work[name].offsets[key] = last
        return work

    def _route(self, ce_type: str, due: list[tuple[str, frozenset[str] | None]]) -> list[Route]:
        """The projections of ``due`` that act on ``ce_type``, each with its ``at_decode`` and
        ``at_message`` hooks (or None)."""
        return [
            (name, self._at_decode.get(name), self._at_message.get(name))
            for name, wants in due
            if wants is None or ce_type in wants
        ]

    async def _store(
        self,
        events: list[ProjectedEvent],
        undecodable: list[Failure],
        offsets: dict[tuple[str, int], int],
        stop: asyncio.Event,
    ) -> None:
        """The single-projection form of ``_store_all`` (kept for callers and tests)."""
        await self._store_all({self.projection.name: _Work(events, undecodable, offsets)}, stop)

    async def _store_all(
        self,
        work: dict[str, _Work],
        stop: asyncio.Event,
        written: asyncio.Event | None = None,
        *,
        commit_behind: bool = False,
    ) -> None:
        """Each projection's share in its own transaction. A projection that cannot write (an outage,
        a missing table) is retried until it can; the ones that committed are not applied twice.

        ``commit_behind``: return once PostgreSQL has the batch and send its Kafka offsets after
        the previous batch's, while the next batch is written (the run loop). Six groups' commits
        took ~35 ms a batch of 2,500, a tenth of its writing time."""
        try:
            if not await self._write_all(work, stop):
                return
        finally:
            if written is not None:
                written.set()
        self.stats.batches += 1
        for name in list(self._letters_unpublished):
            await self.publish_dead_letters(name)
        if commit_behind:
            # Only the offsets: the batch's decoded events are not kept while commits queue.
            offsets = {name: _Work(offsets=share.offsets) for name, share in work.items()}
            self._committing = asyncio.ensure_future(self._commit_after(self._committing, offsets))
        else:
            await self._commit_to_kafka(work)

    async def _commit_after(self, previous: asyncio.Future[None] | None, work: dict[str, _Work]) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            await self._commit_to_kafka(work)
        except Exception as exc:  # nobody awaits this task: say so rather than lose it
            log.warning("could not commit offsets to Kafka (%r); positions are safe in PostgreSQL", exc)

    def _memberless_groups(self) -> list[str]:
        """The groups whose offsets ``_commit_to_kafka`` sends with ``commit_group_offsets``."""
        groups = [self.group_id] if self.share is not None else []
        return groups + (list(self.groups.values()) if len(self.projections) > 1 else [])

    async def _write_all(self, work: dict[str, _Work], stop: asyncio.Event) -> bool:
        """The PostgreSQL part of ``_store_all``; False if stopped before every share was written."""
        pending = [p for p in self.projections if p.name in work and work[p.name].offsets]
        delay = 0.5
        while pending:
            outcomes = await asyncio.gather(
                *(asyncio.to_thread(self._apply_one, p, work[p.name]) for p in pending),
                return_exceptions=True,
            )
            failed: list[Projection] = []
            for p, outcome in zip(pending, outcomes, strict=True):
                share = work[p.name]
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, Exception):
                        raise outcome  # cancelled: the batch was not stored, it is read again
                    # Poison never gets here (apply_isolating sets it aside): this is an outage, or a
                    # fault of the deployment (a missing table). Either way nothing is skipped: wait.
                    if is_poison(outcome):
                        log.error("projecting %s failed (%r); retrying in %.1fs", p.name, outcome, delay)
                    else:
                        log.warning(
                            "PostgreSQL unavailable while projecting (%s); retrying in %.1fs", outcome, delay
                        )
                    failed.append(p)
                    continue
                letters = outcome
                self.applied[p.name].update(share.offsets)
                self.stats.applied += len(share.events) - (letters - len(share.undecodable))
                self.stats.dead_lettered += letters
                if letters:
                    self._letters_unpublished.add(p.name)
            pending = failed
            if pending:
                if stop.is_set():
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        return True

    async def _commit_to_kafka(self, work: dict[str, _Work]) -> None:
        """Offsets for ``ledgerflow lag`` and other Kafka tools; only visibility is at stake."""
        assert self._consumer is not None
        moved: Offsets = {}
        for topic, readers in self._readers.items():
            for p in readers:
                for key, _ in work.get(p.name, _Work()).offsets.items():
                    if key[0] == topic:
                        moved[key] = min(self.applied[q.name].get(key, -1) for q in readers)
        self.stats.positions.update(moved)
        ahead = {TopicPartition(t, p): o + 1 for (t, p), o in moved.items() if o >= 0}
        try:
            if self.share is not None:
                # Not a member of its group (partitions assigned directly): the memberless form.
                visible = {key: o for key, o in moved.items() if o >= 0}
                await commit_group_offsets(self._consumer, self.group_id, visible)
            elif ahead:  # empty when a rebalance has just moved the positions back (aiokafka refuses {})
                await self._consumer.commit(ahead)
            if len(self.projections) > 1:
                # Each projection's own group shows that projection's progress (it has no members:
                # the shared group does the reading). Sent together: each is a round trip.
                await asyncio.gather(
                    *(
                        commit_group_offsets(self._consumer, self.groups[name], share.offsets)
                        for name, share in work.items()
                        if share.offsets
                    )
                )
        except KafkaError as exc:  # only visibility is lost; positions are safe in PostgreSQL
            log.info("could not commit offsets to Kafka (%s); positions are safe in PostgreSQL", exc)
