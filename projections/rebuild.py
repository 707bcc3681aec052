"""``ledgerflow projections rebuild NAME``: build a projection afresh beside the live one, then swap.

Why a shadow table: the live table keeps answering queries (and the live projector keeps applying
new events to it) for the whole rebuild, which for a million events takes minutes. The swap is one
transaction, so a reader sees either the old table or the complete new one, never a half-built one.

The steps:

1. Create ``<table>__rebuild`` with the live table's columns, defaults, compression and
   constraint-backed indexes (the statements' ``ON CONFLICT`` needs the primary key), but not its
   other indexes: those are built once at the end, far faster than maintaining them row by row.
2. Fill it from the earliest retained offset of the projection's topics up to their end offsets as
   they were when the rebuild started, with the projection's own ``apply`` (``on_table``). Each
   batch commits together with the shadow's position, kept in ``projection_tracking`` under
   ``<name>__rebuild``, so an interrupted rebuild resumes where it stopped
   (``projection_rebuilds`` remembers that a rebuild is pending and from which source).
   With ``--from-event-store`` the events come from the PostgreSQL event store instead (for topics
   that were compacted or truncated), in notification order, turned into exactly the records the
   relay publishes; the position is then the last notification id applied.
3. Build the remaining indexes, then swap, in one transaction: lock the live table (readers and
   the live projector wait, for the few milliseconds the swap takes), apply to the shadow whatever
   the live projector had applied beyond the shadow's position, move the positions over, drop the
   live table, rename the shadow and its indexes to the live names, and re-create what depended
   on the table (reporting views and row-level security policies). The live projector then
   carries on from its position, against the new table: its statements name the table, and
   PostgreSQL resolves a name again after a lock wait.

Every projection statement is idempotent (insert-if-absent, set-to-fixed-values), and the live
projector re-applies events after the swap in their order, from a position no later than the
shadow's, so each field ends as the last event that wrote it left it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg import sql

from engine import db, kafka
from engine.config import Settings
from projections import catalogue, dead_letters, tracking
from projections.batch import at_decode_of, at_message_of
from projections.collection import CollectingBetweenBatches
from projections.dead_letters import Failure, apply_isolating
from projections.events import (
    DECODE_ERRORS,
    AtMessage,
    ProjectedEvent,
    Projection,
    ce_type_of,
    decode_message,
)
from schemas import registry

log = logging.getLogger("ledgerflow.projections.rebuild")

SHADOW_SUFFIX = "__rebuild"
# The swap asks for the live table's lock this long at a time, this many times (~1 min in all).
SWAP_LOCK_TIMEOUT_MS = 1000
SWAP_LOCK_ATTEMPTS = 40
KAFKA = "kafka"
EVENT_STORE = "event-store"

# Processes filling from Kafka, each its share of the partitions: one per core (at most 4: past
# that PostgreSQL, on the same machine, is the limit), never more than there are partitions.
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))

Progress = Callable[[int, int], None]
"""Called with (events done, events expected) as the rebuild advances."""


class RebuildError(Exception):
    """The rebuild cannot start or continue; the message says why and what to do."""


@dataclass
class RebuildReport:
    projection: str
    source: str
    resumed: bool
    events_applied: int = 0
    undecodable: int = 0
    dead_lettered: int = 0
    """Events the projection refused (recorded as dead letters of the live projection)."""
    rows: int = 0
    fill_seconds: float = 0.0
    index_seconds: float = 0.0
    swap_seconds: float = 0.0
    swap_events: int = 0
    seconds: float = 0.0
    positions: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events_applied / self.fill_seconds if self.fill_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "projection": self.projection,
            "source": self.source,
            "resumed": self.resumed,
            "events_applied": self.events_applied,
            "undecodable": self.undecodable,
            "dead_lettered": self.dead_lettered,
            "rows": self.rows,
            "fill_seconds": round(self.fill_seconds, 3),
            "index_seconds": round(self.index_seconds, 3),
            "swap_seconds": round(self.swap_seconds, 3),
            "swap_events": self.swap_events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.rate, 1),
            "positions": self.positions,
        }


def find_projection(name: str) -> Projection:
    projection = catalogue.find(name)
    if projection is None:
        raise RebuildError(f"no projection named {name!r} (known: {catalogue.known_names()})")
    return projection


def shadow_name(projection: Projection) -> str:
    return f"{projection.table}{SHADOW_SUFFIX}"


def tracking_name(projection: Projection) -> str:
    return f"{projection.name}{SHADOW_SUFFIX}"


def pending(settings: Settings) -> list[dict[str, Any]]:
    """Rebuilds started and not yet swapped in (``projections status`` shows them)."""
    with db.connect(settings) as conn:
        cur = conn.execute(
            "SELECT projection, source, shadow_table, events_applied, started_at, updated_at"
            " FROM projection_rebuilds ORDER BY projection"
        )
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# Events per write. A fill worker holds about two batches at once (one written while the next is
# decoded), ~40 KB per event of the bench's 5-line invoices with their rows and COPY buffers: peak
# RSS per worker 285 MB at 5,000, 186-189 MB at 2,500 (50,000-event rebuild, same rate).
DEFAULT_BATCH = 2500


def rebuild(
    settings: Settings,
    name: str,
    *,
    from_event_store: bool = False,
    restart: bool = False,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    stop_after: int | None = None,
    workers: int = DEFAULT_WORKERS,
) -> RebuildReport:
    """Rebuild projection ``name`` and swap it in. ``stop_after`` ends the fill after about that many
    events without swapping, leaving a resumable rebuild (what an interruption leaves; tests use it)."""
    projection = find_projection(name)
    db.ensure_schema(settings)
    source = EVENT_STORE if from_event_store else KAFKA
    # A session-level advisory lock, held for the whole rebuild on its own connection: two
    # rebuilds of one projection would fill the same shadow table.
    with db.connect(settings, autocommit=True) as lock_conn:
        key = f"ledgerflow.rebuild.{settings.db_schema}.{name}"
        locked = lock_conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
        if not locked or not locked[0]:
            raise RebuildError(f"another rebuild of {name} is running (advisory lock {key!r} is held)")
        # As in the long-running processes (engine/cli.py): a batch of thousands of decoded events
        # would otherwise set off a garbage collection every few hundred allocations.
        thresholds = gc.get_threshold()
        gc.set_threshold(50_000, 20, 100)
        try:
            return asyncio.run(
                _rebuild(settings, projection, source, restart, batch, progress, stop_after, workers)
            )
        finally:
            gc.set_threshold(*thresholds)
            lock_conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


async def _rebuild(
    settings: Settings,
    projection: Projection,
    source: str,
    restart: bool,
    batch: int,
    progress: Progress | None,
    stop_after: int | None,
    workers: int = 1,
) -> RebuildReport:
    started = time.monotonic()
    shadow = projection.on_table(shadow_name(projection))
    filler: _Filler
    if source == KAFKA:
        filler = _KafkaFiller(settings, projection, shadow, batch, workers=workers)
    else:
        filler = await asyncio.to_thread(_EventStoreFiller, settings, projection, shadow, batch)
    try:
        await filler.check_source()  # before anything is created: a refusal leaves nothing pending
        resumed = await asyncio.to_thread(_prepare_in, settings, projection, source, restart)
        report = RebuildReport(projection.name, source, resumed)
        complete = await filler.fill(report, progress, stop_after)
        report.fill_seconds = time.monotonic() - started
        if not complete:
            report.seconds = time.monotonic() - started
            return report
        index_started = time.monotonic()
        await asyncio.to_thread(_index_and_analyze, settings, projection.table, shadow.table)
        report.index_seconds = time.monotonic() - index_started
        swap_started = time.monotonic()
        await filler.swap(report)
        report.swap_seconds = time.monotonic() - swap_started
    finally:
        await filler.aclose()
    report.rows = await asyncio.to_thread(_count, settings, projection.table)
    report.seconds = time.monotonic() - started
    return report


def _prepare_in(settings: Settings, projection: Projection, source: str, restart: bool) -> bool:
    with db.connect(settings) as conn:
        return _prepare(conn, projection, source, restart)


def _index_and_analyze(settings: Settings, live: str, shadow: str) -> None:
    with db.connect(settings, autocommit=True) as conn:
        _build_indexes(conn, live, shadow)
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(shadow)))


def _count(settings: Settings, table: str) -> int:
    with db.connect(settings) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        return int(row[0]) if row else 0


# -- the shadow table -----------------------------------------------------------------------------


def _prepare(conn: psycopg.Connection, projection: Projection, source: str, restart: bool) -> bool:
    """Create the shadow table, or find the one an interrupted rebuild left. True when resuming."""
    shadow = shadow_name(projection)
    with conn.transaction():
        row = conn.execute(
            "SELECT source FROM projection_rebuilds WHERE projection = %s FOR UPDATE", (projection.name,)
        ).fetchone()
        exists = _table_exists(conn, shadow)
        if row is not None and exists and not restart:
            if row[0] != source:
                other = "--from-event-store" if row[0] == EVENT_STORE else "without --from-event-store"
                raise RebuildError(
                    f"an interrupted rebuild of {projection.name} from {row[0]} is pending: run it again"
                    f" {other} to resume it, or add --restart to start afresh from {source}"
                )
            return True
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(shadow)))
        conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (tracking_name(projection),))
        conn.execute("DELETE FROM projection_rebuilds WHERE projection = %s", (projection.name,))
        _create_shadow(conn, projection.table, shadow)
        conn.execute(
            "INSERT INTO projection_rebuilds (projection, source, shadow_table) VALUES (%s, %s, %s)",
            (projection.name, source, shadow),
        )
    return False


def _table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(table).as_string(conn),))
    return bool(row.fetchone()[0])  # type: ignore[index]


def _create_shadow(conn: psycopg.Connection, live: str, shadow: str) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMPRESSION"
            " INCLUDING STORAGE INCLUDING GENERATED INCLUDING IDENTITY)"
        ).format(sql.Identifier(shadow), sql.Identifier(live))
    )
    # Primary key and unique constraints now (ON CONFLICT needs them), under suffixed names
    # (constraint and index names are unique per schema); they get the live names at the swap.
    for constraint, definition in conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype IN ('p', 'u') ORDER BY conname",
        (sql.Identifier(live).as_string(conn),),
    ).fetchall():
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                sql.Identifier(shadow), sql.Identifier(constraint + SHADOW_SUFFIX)
            )
            + sql.SQL(definition)
        )


_INDEX_DEF = re.compile(r"^CREATE (UNIQUE )?INDEX (\S+) ON (\S+) (USING .*)$", re.DOTALL)


def _plain_indexes(conn: psycopg.Connection, table: str) -> list[tuple[str, str, str]]:
    """(name, 'UNIQUE ' or '', 'USING ...') of a table's indexes that back no constraint."""
    rows = conn.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE x.indrelid = %s::regclass"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
        " ORDER BY i.relname",
        (sql.Identifier(table).as_string(conn),),
    ).fetchall()
    found = []
    for name, definition in rows:
        match = _INDEX_DEF.match(definition)
        if match is None:
            raise RebuildError(f"cannot read the definition of index {name}: {definition}")
        found.append((name, match.group(1) or "", match.group(4)))
    return found


def _build_indexes(conn: psycopg.Connection, live: str, shadow: str) -> None:
    """Give the shadow the live table's other indexes (once; a resumed rebuild may have them)."""
    have = {name for name, _, _ in _plain_indexes(conn, shadow)}
    for name, unique, using in _plain_indexes(conn, live):
        if name + SHADOW_SUFFIX in have:
            continue
        conn.execute(
            sql.SQL("CREATE " + unique + "INDEX {} ON {} ").format(
                sql.Identifier(name + SHADOW_SUFFIX), sql.Identifier(shadow)
            )
            + sql.SQL(using)
        )


def _swap_tables(conn: psycopg.Connection, settings: Settings, live: str, shadow: str) -> None:
    """Inside the swap transaction: the shadow becomes the live table, names and dependants included."""
    suffixed = [
        name
        for (name,) in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND conname LIKE %s",
            (sql.Identifier(shadow).as_string(conn), "%" + SHADOW_SUFFIX),
        ).fetchall()
    ]
    indexes = [name for name, _, _ in _plain_indexes(conn, shadow) if name.endswith(SHADOW_SUFFIX)]
    # CASCADE: the reporting views over the live table go with it; they are created again below.
    conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(live)))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(shadow), sql.Identifier(live)))
    for name in suffixed:
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                sql.Identifier(live), sql.Identifier(name), sql.Identifier(name.removesuffix(SHADOW_SUFFIX))
            )
        )
    for name in indexes:
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(name), sql.Identifier(name.removesuffix(SHADOW_SUFFIX))
            )
        )
    db.install_dependants(conn, settings)


# -- filling --------------------------------------------------------------------------------------


class _Filler:
    """Fills the shadow table from one source, then swaps it in."""

    def __init__(self, settings: Settings, projection: Projection, shadow: Projection, batch: int) -> None:
        self.settings = settings
        self.projection = projection
        self.shadow = shadow
        self.batch = batch
        self._conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        # Autocommit, so that each ``conn.transaction()`` block is a real transaction that commits
        # (on a non-autocommit connection a read opens one implicitly, and the blocks would only
        # be savepoints inside it).
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.settings, autocommit=True)
        return self._conn

    async def aclose(self) -> None:
        if self._conn is not None:
            self._conn.close()

    async def check_source(self) -> None:
        """Raise RebuildError when the source cannot give a complete projection."""

    async def fill(self, report: RebuildReport, progress: Progress | None, stop_after: int | None) -> bool:
        raise NotImplementedError

    async def _swap_locked(self, conn: psycopg.Connection, report: RebuildReport) -> None:
        """The swap's work, inside its transaction, with the live table locked."""
        raise NotImplementedError

    async def swap(self, report: RebuildReport) -> None:
        """Lock the live table and swap, retrying while readers or writers hold it.

        The lock is ACCESS EXCLUSIVE from the start (the DROP needs it anyway), requested with a
        short lock_timeout: while it waits, every new reader of the table queues behind it, so a
        long transaction (an export, a BI query) must not make the API wait for long. Each failed
        attempt rolls back and tries again a little later.
        """
        conn = self.connection()
        attempts = 0
        while True:
            report.swap_events = 0
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT_MS}ms'")
                    # The schema lock first, in the order ensure_schema takes its locks (it alters
                    # the live table and re-creates the reporting views): a process starting
                    # mid-swap waits instead of deadlocking with the swap.
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledgerflow.ensure_schema'))")
                    conn.execute(
                        sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                            sql.Identifier(self.projection.table)
                        )
                    )
                    await self._swap_locked(conn, report)
                return
            except psycopg.errors.LockNotAvailable as exc:
                attempts += 1
                if attempts >= SWAP_LOCK_ATTEMPTS:
                    raise RebuildError(
                        f"could not lock {self.projection.table} for the swap in {attempts} attempts"
                        f" ({SWAP_LOCK_TIMEOUT_MS} ms each): a long transaction holds it. The rebuilt"
                        " table is kept; run the rebuild again to retry the swap"
                    ) from exc
                log.info("swap: %s is busy (%s); trying again shortly", self.projection.table, exc)
                await asyncio.sleep(min(0.2 * attempts, 2.0))


class _KafkaFiller(_Filler):
    def __init__(
        self,
        settings: Settings,
        projection: Projection,
        shadow: Projection,
        batch: int,
        *,
        workers: int = 1,
        partitions: frozenset[tuple[str, int]] | None = None,
    ) -> None:
        super().__init__(settings, projection, shadow, batch)
        self.topics = [settings.topic(t) for t in projection.topics]
        self.workers = workers
        self.partitions = partitions
        """Only these (topic, partition)s: the share of one worker process of a parallel fill."""
        self._consumer: AIOKafkaConsumer | None = None

    async def _start(self) -> AIOKafkaConsumer:
        if self._consumer is not None:
            return self._consumer
        # No group: a rebuild never disturbs the live projector's group or its offsets.
        consumer = kafka.consumer(
            self.settings,
            group_id=None,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        pattern = re.compile("^(" + "|".join(re.escape(t) for t in self.topics) + ")$")
        found = await kafka.topic_partitions(self.settings, pattern)
        missing = [t for t in self.topics if not found.get(t)]
        if missing:
            raise RebuildError(f"topic {', '.join(missing)} does not exist: nothing to rebuild from")
        await consumer.start()
        assigned = [
            tp
            for t in self.topics
            for tp in found[t]
            if self.partitions is None or (tp.topic, tp.partition) in self.partitions
        ]
        consumer.assign(assigned)
        self._consumer = consumer
        beginnings = await consumer.beginning_offsets(assigned)
        # A partition whose first retained offset is above 0 has lost records to retention or
        # deletion: a table built from what is left would silently miss those invoices, and the
        # swap would then replace a complete live table with it.
        truncated = {f"{tp.topic}[{tp.partition}]": beginnings[tp] for tp in assigned if beginnings[tp] > 0}
        if truncated:
            shown = ", ".join(f"{name} starts at {offset:,}" for name, offset in sorted(truncated.items()))
            raise RebuildError(
                f"the topic no longer holds every event ({shown}); a rebuild from Kafka would miss"
                " the deleted ones: rebuild with --from-event-store (add --restart if a rebuild is pending)"
            )
        return consumer

    async def check_source(self) -> None:
        await self._start()

    def _positions(self, conn: psycopg.Connection, name: str) -> dict[TopicPartition, int]:
        return {
            TopicPartition(topic, partition): offset
            for topic in self.topics
            for partition, offset in tracking.positions(conn, name, topic).items()
        }

    async def _seek(self, consumer: AIOKafkaConsumer, applied: dict[TopicPartition, int]) -> None:
        for tp in consumer.assignment():
            if tp in applied:
                consumer.seek(tp, applied[tp] + 1)
            else:
                await consumer.seek_to_beginning(tp)

    async def fill(self, report: RebuildReport, progress: Progress | None, stop_after: int | None) -> bool:
        consumer = await self._start()
        assigned = sorted(consumer.assignment())
        workers = min(self.workers, len(assigned))
        if workers > 1:
            return await self._fill_in_processes(report, progress, stop_after, assigned, workers)
        targets = await consumer.end_offsets(assigned)
        beginnings = await consumer.beginning_offsets(assigned)
        applied = await asyncio.to_thread(
            lambda: self._positions(self.connection(), tracking_name(self.projection))
        )
        await self._seek(consumer, applied)
        expected = sum(max(0, targets[tp] - max(beginnings[tp], applied.get(tp, -1) + 1)) for tp in assigned)
        done = 0
        if progress:
            progress(done, expected)
        # As in the live runner: one batch is written (in a thread) while the next is fetched and
        # decoded; batches commit in order, each with its own positions.
        writing: asyncio.Future[int] | None = None
        with CollectingBetweenBatches() as collector:
            while await self._any_behind(consumer, targets):
                if stop_after is not None and report.events_applied + done >= stop_after:
                    break
                fetched = await consumer.getmany(timeout_ms=500, max_records=self.batch)
                events, offsets, bad = _collect(
                    fetched, at_decode_of(self.shadow), at_message_of(self.shadow)
                )
                report.undecodable += len(bad)
                if writing is not None:
                    written = await writing
                    done += written
                    collector.written(written)
                    if progress:
                        progress(done, expected)
                if offsets:
                    writing = asyncio.ensure_future(
                        asyncio.to_thread(self._store, events, bad, offsets, report)
                    )
                else:
                    writing = None
            if writing is not None:
                done += await writing
                if progress:
                    progress(done, expected)
        report.events_applied += done
        return not await self._any_behind(consumer, targets)

    async def _fill_in_processes(
        self,
        report: RebuildReport,
        progress: Progress | None,
        stop_after: int | None,
        assigned: list[TopicPartition],
        workers: int,
    ) -> bool:
        """Fill with ``workers`` processes, each its share of the partitions (``_fill_share``).

        Why processes: decoding Avro is most of a rebuild's work and holds the GIL (~45 us per
        5-line invoice, docs/performance.md), so threads cannot share it out. An invoice's events
        are all in one partition (the key is the invoice id), so the shares never write one row;
        each share commits its partitions' positions, and an interrupted fill resumes per partition.
        """
        consumer = await self._start()
        targets = await consumer.end_offsets(assigned)
        beginnings = await consumer.beginning_offsets(assigned)
        applied = await asyncio.to_thread(
            lambda: self._positions(self.connection(), tracking_name(self.projection))
        )
        expected = sum(max(0, targets[tp] - max(beginnings[tp], applied.get(tp, -1) + 1)) for tp in assigned)
        counted_before = await asyncio.to_thread(self._events_applied)
        shares = [[(tp.topic, tp.partition) for tp in assigned[i::workers]] for i in range(workers)]
        share_limit = None if stop_after is None else -(-stop_after // workers)
        loop = asyncio.get_running_loop()
        # spawn, not fork: this process runs an event loop and holds sockets and a thread pool.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            running = [
                loop.run_in_executor(
                    pool, _fill_share, self.settings, self.projection.name, share, self.batch, share_limit
                )
                for share in shares
            ]
            pending_shares: set[asyncio.Future[Any]] = set(running)
            while pending_shares:
                _, pending_shares = await asyncio.wait(pending_shares, timeout=0.5)
                if progress:
                    done = await asyncio.to_thread(self._events_applied)
                    progress(done - counted_before, expected)
            outcomes = [future.result() for future in running]
        for outcome in outcomes:
            report.events_applied += outcome.events_applied
            report.undecodable += outcome.undecodable
            report.dead_lettered += outcome.dead_lettered
        return all(outcome.complete for outcome in outcomes)

    def _events_applied(self) -> int:
        row = (
            self.connection()
            .execute(
                "SELECT events_applied FROM projection_rebuilds WHERE projection = %s",
                (self.projection.name,),
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    @staticmethod
    async def _any_behind(consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> bool:
        for tp, target in targets.items():
            if await consumer.position(tp) < target:
                return True
        return False

    def _store(
        self,
        events: list[ProjectedEvent],
        undecodable: list[Failure],
        offsets: dict[TopicPartition, int],
        report: RebuildReport,
    ) -> int:
        conn = self.connection()
        with conn.transaction():
            _fill_without_flush_wait(conn)
            failed = apply_isolating(conn, self.shadow, events, dead_letters_of=self.projection.name)
            dead_letters.record(conn, self.projection.name, undecodable)
            report.dead_lettered += len(failed)
            _record(conn, tracking_name(self.projection), offsets)
            conn.execute(
                "UPDATE projection_rebuilds SET events_applied = events_applied + %s, updated_at = now()"
                " WHERE projection = %s",
                (len(events), self.projection.name),
            )
        return len(events)

    async def _swap_locked(self, conn: psycopg.Connection, report: RebuildReport) -> None:
        consumer = await self._start()
        live = self._positions(conn, self.projection.name)
        mine = self._positions(conn, tracking_name(self.projection))
        # What the live projector applied beyond the shadow (it kept running meanwhile).
        behind = {tp: offset for tp, offset in live.items() if offset > mine.get(tp, -1)}
        for tp in behind:
            if tp in mine:
                consumer.seek(tp, mine[tp] + 1)
            else:
                await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 60
        while behind:
            if time.monotonic() > deadline:
                raise RebuildError(f"could not read up to the live positions {behind} within 60 s")
            fetched = await consumer.getmany(*behind, timeout_ms=500, max_records=self.batch)
            trimmed = {tp: [m for m in ms if m.offset <= behind[tp]] for tp, ms in fetched.items()}
            events, offsets, bad = _collect(trimmed)
            report.undecodable += len(bad)
            failed = apply_isolating(conn, self.shadow, events, dead_letters_of=self.projection.name)
            dead_letters.record(conn, self.projection.name, bad)
            report.dead_lettered += len(failed)
            _record(conn, tracking_name(self.projection), offsets)
            report.swap_events += len(events)
            for tp, offset in offsets.items():
                if offset >= behind[tp]:
                    del behind[tp]
        mine = self._positions(conn, tracking_name(self.projection))
        _record(conn, self.projection.name, mine)
        conn.execute(
            "DELETE FROM projection_tracking WHERE projection = %s", (tracking_name(self.projection),)
        )
        conn.execute("DELETE FROM projection_rebuilds WHERE projection = %s", (self.projection.name,))
        _swap_tables(conn, self.settings, self.projection.table, self.shadow.table)
        report.positions = _by_topic(self._positions(conn, self.projection.name))

    async def aclose(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
        await super().aclose()


class _EventStoreFiller(_Filler):
    """Reads the event store in notification order and applies what the relay would have published."""

    def __init__(self, settings: Settings, projection: Projection, shadow: Projection, batch: int) -> None:
        super().__init__(settings, projection, shadow, batch)
        from engine.application import open_ledger

        self.ledger = open_ledger(settings)
        self.logical = set(projection.topics)

    def _position(self, conn: psycopg.Connection) -> int:
        row = conn.execute(
            "SELECT notification_id FROM projection_rebuilds WHERE projection = %s", (self.projection.name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _read(self, after: int, upto: int) -> tuple[list[ProjectedEvent], int]:
        """Events of this projection's topics after notification ``after`` (at most a batch, none past
        ``upto``), and the last notification id read."""
        from engine.publishing import UnpublishableEvent, outbound_from_stored

        notifications = self.ledger.recorder.select_notifications(
            start=after, limit=self.batch, stop=upto, inclusive_of_start=False
        )
        events: list[ProjectedEvent] = []
        for n in notifications:
            try:
                outbound = outbound_from_stored(n.originator_id, n.originator_version, n.topic, n.state)
            except UnpublishableEvent:
                continue  # not published, so no projection ever sees it
            if outbound.topic not in self.logical:
                continue
            # Through the Avro codec and back, so the record is exactly what a Kafka consumer reads.
            value, _ = registry.encode_event(outbound.ce_type, outbound.record)
            record = registry.decode_event(value, outbound.ce_type)
            headers = (
                ("ce_id", outbound.ce_id.encode()),
                ("ce_source", f"/tenants/{outbound.tenant_id}".encode()),
                ("ce_type", outbound.ce_type.encode()),
                ("ce_subject", outbound.subject.encode()),
            )
            events.append(
                ProjectedEvent(
                    self.settings.topic(outbound.topic),
                    -1,
                    n.id,
                    outbound.ce_type,
                    outbound.ce_id,
                    record,
                    outbound.key.encode(),
                    value,
                    headers,
                )
            )
        return events, (notifications[-1].id if notifications else after)

    def _store(
        self, conn: psycopg.Connection, events: Sequence[ProjectedEvent], position: int, report: RebuildReport
    ) -> None:
        failed = apply_isolating(conn, self.shadow, events, dead_letters_of=self.projection.name)
        report.dead_lettered += len(failed)
        conn.execute(
            "UPDATE projection_rebuilds SET notification_id = %s, events_applied = events_applied + %s,"
            " updated_at = now() WHERE projection = %s",
            (position, len(events), self.projection.name),
        )

    async def fill(self, report: RebuildReport, progress: Progress | None, stop_after: int | None) -> bool:
        conn = self.connection()
        position = await asyncio.to_thread(self._position, conn)
        target = await asyncio.to_thread(self.ledger.recorder.max_notification_id) or 0
        expected, done = max(0, target - position), 0
        if progress:
            progress(done, expected)
        while position < target:
            if stop_after is not None and report.events_applied >= stop_after:
                return False
            events, last = await asyncio.to_thread(self._read, position, target)
            if last == position:
                break  # nothing more below the target (ids can have gaps)

            def store(events: list[ProjectedEvent] = events, last: int = last) -> None:
                with conn.transaction():
                    _fill_without_flush_wait(conn)
                    self._store(conn, events, last, report)

            await asyncio.to_thread(store)
            report.events_applied += len(events)
            done += last - position
            position = last
            if progress:
                progress(done, expected)
        return True

    async def _swap_locked(self, conn: psycopg.Connection, report: RebuildReport) -> None:
        # Everything the live projector has applied came from the relay, which publishes only
        # what is stored: read the store to its end now, and the shadow holds all of it. The
        # live positions stay; events past them are applied again later (idempotent).
        position = self._position(conn)
        while True:
            target = self.ledger.recorder.max_notification_id() or 0
            if position >= target:
                break
            events, last = self._read(position, target)
            if last == position:
                break
            self._store(conn, events, last, report)
            report.swap_events += len(events)
            position = last
        conn.execute("DELETE FROM projection_rebuilds WHERE projection = %s", (self.projection.name,))
        _swap_tables(conn, self.settings, self.projection.table, self.shadow.table)
        report.positions = {
            topic: tracking.positions(conn, self.projection.name, topic)
            for topic in (self.settings.topic(t) for t in self.projection.topics)
        }

    async def aclose(self) -> None:
        self.ledger.close()
        await super().aclose()


@dataclass(frozen=True)
class _ShareOutcome:
    events_applied: int
    undecodable: int
    dead_lettered: int
    complete: bool


def _fill_share(
    settings: Settings, name: str, share: list[tuple[str, int]], batch: int, stop_after: int | None
) -> _ShareOutcome:
    """A worker process of a parallel fill: its partitions, from their positions to the end
    offsets, exactly as a single-process fill does them."""
    gc.set_threshold(50_000, 20, 100)
    projection = find_projection(name)
    shadow = projection.on_table(shadow_name(projection))
    filler = _KafkaFiller(settings, projection, shadow, batch, partitions=frozenset(share))
    # What is alive now (the modules, the catalogue, ...) lives as long as the worker: kept out of
    # every collection (gc.freeze, Python docs "gc"), a collection walks only what the fill made.
    gc.freeze()
    report = RebuildReport(name, KAFKA, resumed=True)

    async def run() -> bool:
        try:
            return await filler.fill(report, None, stop_after)
        finally:
            await filler.aclose()

    complete = asyncio.run(run())
    return _ShareOutcome(report.events_applied, report.undecodable, report.dead_lettered, complete)


def _collect(
    fetched: dict[TopicPartition, list[Any]],
    at_decode: Callable[[ProjectedEvent], ProjectedEvent] | None = None,
    at_message: AtMessage | None = None,
) -> tuple[list[ProjectedEvent], dict[TopicPartition, int], list[Failure]]:
    """Decoded events, the last offset per partition, and the records that could not be decoded
    (dead letters; the live projector has usually recorded them already, recording is idempotent).
    ``at_decode``: what a row projection works out from each event as it is decoded, as in the
    live runner (``batch.at_decode_of``), and ``at_message`` what it takes straight from a record
    (``batch.at_message_of``; None for a record it leaves to decoding)."""
    events: list[ProjectedEvent] = []
    offsets: dict[TopicPartition, int] = {}
    bad: list[Failure] = []
    for tp, messages in fetched.items():
        for message in messages:
            offsets[tp] = message.offset
            if at_message is not None and (ce_type := ce_type_of(message)):
                taken = at_message(message, ce_type)
                if taken is not None:
                    events.append(taken)
                    continue
            try:
                event = decode_message(message)
            except DECODE_ERRORS as exc:
                bad.append(Failure.undecodable(message, exc))
                log.warning(
                    "skipping undecodable record %s[%d]@%d: %s", tp.topic, tp.partition, message.offset, exc
                )
            else:
                events.append(event if at_decode is None else at_decode(event))
    return events, offsets, bad


def _fill_without_flush_wait(conn: psycopg.Connection) -> None:
    """A fill batch's commit does not wait for its WAL to reach disk (PostgreSQL's asynchronous
    commit, docs "Asynchronous Commit": a crash may lose the last few commits, never part of one).
    The batch and the shadow's position commit together, so a lost batch is simply filled again when
    the rebuild resumes; the swap keeps the connection's default."""
    conn.execute("SET LOCAL synchronous_commit = off")


def _record(conn: psycopg.Connection, name: str, offsets: dict[TopicPartition, int]) -> None:
    by_topic: dict[str, dict[int, int]] = {}
    for tp, offset in offsets.items():
        by_topic.setdefault(tp.topic, {})[tp.partition] = offset
    for topic, per_partition in by_topic.items():
        tracking.record(conn, name, topic, per_partition)


def _by_topic(positions: dict[TopicPartition, int]) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for tp, offset in sorted(positions.items()):
        out.setdefault(tp.topic, {})[tp.partition] = offset
    return out
