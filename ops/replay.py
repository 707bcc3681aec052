"""``ledgerflow replay``: re-read a range of a Kafka topic into another topic or a projection's table.

How a replay runs:

1. **Names.** Topics are named by their logical name (``ledger.invoice.v1``); the deployment's
   ``LEDGERFLOW_TOPIC_PREFIX`` is added. A name that already carries the prefix is taken as it is,
   so a full name copied from ``ledgerflow lag`` also works. Both topics must exist: a replay never
   creates one (the broker would auto-create it with its default settings).
2. **Range.** Per partition, ``[start, end)``: ``--from`` is ``earliest``, one offset for every
   partition, ``P:OFFSET,...`` for only the partitions named, or an ISO-8601 time (the first record
   at or after it, Kafka's ``offsets_for_times``). ``--to`` is ``latest``, the end offsets captured
   when the replay starts, so it terminates while producers keep writing, or an ISO-8601 time
   (records strictly before it). Offsets below a partition's log start (removed by retention) are
   raised to it.
3. **Reading.** One consumer without a group, partitions assigned by hand: a replay never joins,
   rebalances or commits for any consumer group, so running consumers are not disturbed.
4. **Writing.** ``--into-topic``: each record is published again with the same key, value bytes and
   headers (so the same ``ce_id``: deduplicating consumers stay idempotent), to the same partition
   number when the target has at least as many partitions as the source, otherwise to the partition
   its key hashes to. The producer is idempotent with ``acks=all``; sends are batched and the
   acknowledgements of one fetched batch are awaited while the next one is sent. ``--projection``:
   each batch is decoded and handed to the projection's own ``apply`` in one transaction. The
   projection's stored positions (``projection_tracking``) are not touched: a replay re-applies,
   it does not move the projector. Undecodable records are counted and reported, not fatal.

Errors a user can cause are :class:`ReplayUsageError` (bad arguments) or :class:`ReplayError` (a
topic that does not exist, Kafka or PostgreSQL unreachable, ...); the messages are meant to be shown
as they are. Errors of aiokafka and psycopg are mapped to them here and do not leak to the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from engine import db, kafka
from engine.config import Settings

T = TypeVar("T")

# Largest number of records taken from one getmany call; also the size of one projection transaction.
BATCH_RECORDS = 5000
# Without a single record from an unfinished partition for this long, the replay gives up.
STALL_SECONDS = 60.0


# -- errors -----------------------------------------------------------------------------------------


class ReplayError(Exception):
    """A replay that cannot start or could not finish. The message is written for the operator.

    ReplayError
    └── ReplayUsageError   the arguments are wrong (bad bound, no or two targets, unknown projection)
    """


class ReplayUsageError(ReplayError):
    """The command line asks for something that cannot be done as written."""


# -- bounds -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Earliest:
    """The first record each partition still holds."""


@dataclass(frozen=True)
class Latest:
    """The end offsets captured when the replay starts."""


@dataclass(frozen=True)
class Offsets:
    """``--from OFFSET`` (``every`` partition) or ``--from P:OFFSET,...`` (only the partitions named)."""

    every: int | None = None
    by_partition: Mapping[int, int] = field(default_factory=dict)

    def for_partition(self, partition: int) -> int | None:
        return self.every if self.every is not None else self.by_partition.get(partition)


@dataclass(frozen=True)
class AtTime:
    """A moment; resolved per partition to the first record whose timestamp is at or after it."""

    moment: datetime

    @property
    def millis(self) -> int:
        return int(self.moment.timestamp() * 1000)


StartBound = Earliest | Offsets | AtTime
EndBound = Latest | AtTime


def _parse_time(text: str, option: str) -> AtTime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        accepted = "earliest, an offset, P:OFFSET,..." if option == "--from" else "latest"
        raise ReplayUsageError(
            f"{option} {text!r} is not {accepted} or an ISO-8601 time such as 2026-11-26T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise ReplayUsageError(
            f"{option} {text!r} has no time zone; write it as UTC (2026-11-26T10:00:00Z) or with an"
            " offset (2026-11-26T15:30:00+05:30)"
        )
    if moment.timestamp() < 0:
        raise ReplayUsageError(f"{option} {text!r} is before 1970: Kafka timestamps start there")
    return AtTime(moment.astimezone(UTC))


def _offset(text: str, option: str) -> int:
    value = int(text)
    if value < 0:
        raise ReplayUsageError(f"{option} {text}: offsets start at 0")
    return value


def parse_start(text: str) -> StartBound:
    """``earliest``, ``OFFSET``, ``P:OFFSET[,P:OFFSET...]`` or an ISO-8601 time with a zone."""
    text = text.strip()
    if text.lower() == "earliest":
        return Earliest()
    if text.lstrip("-").isdigit():
        return Offsets(every=_offset(text, "--from"))
    if ":" in text and all(part.strip().replace(":", "", 1).isdigit() for part in text.split(",")):
        by_partition: dict[int, int] = {}
        for part in text.split(","):
            partition, _, offset = part.strip().partition(":")
            if int(partition) in by_partition:
                raise ReplayUsageError(f"--from {text!r} names partition {int(partition)} twice")
            by_partition[int(partition)] = _offset(offset, "--from")
        return Offsets(by_partition=by_partition)
    return _parse_time(text, "--from")


def parse_end(text: str) -> EndBound:
    """``latest`` or an ISO-8601 time with a zone (exclusive)."""
    text = text.strip()
    if text.lower() == "latest":
        return Latest()
    if text.lstrip("-").isdigit():
        raise ReplayUsageError(
            f"--to {text}: give 'latest' or an ISO-8601 time; offsets are accepted by --from only"
        )
    return _parse_time(text, "--to")


# -- the request ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay and where to. Build it with :func:`parse_request` from command-line text."""

    topic: str
    start: StartBound = field(default_factory=Earliest)
    end: EndBound = field(default_factory=Latest)
    into_topic: str | None = None
    projection: str | None = None
    tenant: UUID | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        if not self.topic.strip():
            raise ReplayUsageError("--topic is empty")
        if (self.into_topic is None) == (self.projection is None):
            raise ReplayUsageError("name exactly one target: --into-topic TOPIC or --projection NAME")
        if self.into_topic is not None and not self.into_topic.strip():
            raise ReplayUsageError("--into-topic is empty")
        if (
            isinstance(self.start, AtTime)
            and isinstance(self.end, AtTime)
            and self.start.moment > self.end.moment
        ):
            raise ReplayUsageError(
                f"--from {_iso(self.start.moment)} is after --to {_iso(self.end.moment)}:"
                " nothing lies between them"
            )


def parse_request(
    topic: str,
    start: str = "earliest",
    end: str = "latest",
    *,
    into_topic: str | None = None,
    projection: str | None = None,
    tenant: str | None = None,
    dry_run: bool = False,
) -> ReplayRequest:
    """The request the command line describes; :class:`ReplayUsageError` says what is wrong with it."""
    tenant_id: UUID | None = None
    if tenant is not None:
        try:
            tenant_id = UUID(tenant.strip())
        except ValueError:
            raise ReplayUsageError(f"--tenant {tenant!r} is not a tenant id (a UUID)") from None
    return ReplayRequest(
        topic=topic.strip(),
        start=parse_start(start),
        end=parse_end(end),
        into_topic=into_topic.strip() if into_topic is not None else None,
        projection=projection.strip() if projection is not None else None,
        tenant=tenant_id,
        dry_run=dry_run,
    )


def resolve_topic(settings: Settings, name: str) -> str:
    """The full topic name: the logical name with the deployment's prefix, or a full name as given."""
    name = name.strip()
    if settings.topic_prefix and name.startswith(settings.topic_prefix):
        return name
    return settings.topic(name)


# -- the result -------------------------------------------------------------------------------------


@dataclass
class PartitionReplay:
    partition: int
    start: int
    """First offset of the range."""
    end: int
    """Offset after the range (exclusive); ``end <= start`` means nothing to replay here."""
    read: int = 0
    matched: int = 0
    first: int | None = None
    """Offset of the first record read (compaction or retention may leave gaps)."""
    last: int | None = None
    note: str = ""

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class ReplaySummary:
    topic: str
    target: str
    dry_run: bool
    tenant: UUID | None
    partitions: list[PartitionReplay] = field(default_factory=list)
    written: int = 0
    """Records published to the target topic, or events applied to the projection (acknowledged)."""
    undecodable: int = 0
    undecodable_samples: list[str] = field(default_factory=list)
    refused: int = 0
    """Events the projection or PostgreSQL refused (poison); the projector dead-letters those."""
    refused_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    """From the first fetch to the last acknowledgement or commit (clients' start-up excluded)."""

    @property
    def read(self) -> int:
        return sum(p.read for p in self.partitions)

    @property
    def matched(self) -> int:
        return sum(p.matched for p in self.partitions)

    @property
    def skipped(self) -> int:
        """Records read but left out by the tenant filter."""
        return self.read - self.matched

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def render_summary(summary: ReplaySummary) -> str:
    """What ``ledgerflow replay`` prints when it is done."""
    what = "dry run, nothing written" if summary.dry_run else f"into {summary.target}"
    tenant = f", tenant {summary.tenant} only" if summary.tenant else ""
    lines = [f"replay of {summary.topic} {what}{tenant}"]
    lines.append(f"  {'part':>4} {'from':>10} {'to':>10} {'read':>10} {'matched':>10}  note")
    for p in summary.partitions:
        first = "-" if p.first is None else str(p.first)
        last = "-" if p.last is None else str(p.last)
        lines.append(
            f"  {p.partition:>4} {first:>10} {last:>10} {p.read:>10} {p.matched:>10}  {p.note}".rstrip()
        )
    written = "would write" if summary.dry_run else "written"
    count = summary.matched - summary.undecodable if summary.dry_run else summary.written
    lines.append(
        f"read {summary.read:,}, matched {summary.matched:,}, skipped {summary.skipped:,}"
        f" (other tenants), {written} {count:,}"
    )
    if summary.undecodable:
        lines.append(
            f"undecodable {summary.undecodable:,} (not applied): {', '.join(summary.undecodable_samples)}"
            + (" ..." if summary.undecodable > len(summary.undecodable_samples) else "")
        )
    if summary.refused:
        lines.append(
            f"refused {summary.refused:,} (not applied): {', '.join(summary.refused_samples)}"
            + (" ..." if summary.refused > len(summary.refused_samples) else "")
        )
    lines.append(f"elapsed {summary.seconds:.2f} s, {summary.rate:,.0f} records/s")
    return "\n".join(lines)


# -- progress ---------------------------------------------------------------------------------------


class ReplayProgress(Protocol):
    """Told how many offsets the replay covers, then how far it got."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, offsets: int) -> None: ...

    def finish(self) -> None: ...


class TerminalProgress:
    """A rich progress bar on stderr: records, rate, ETA and elapsed time."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            Task,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Task) -> Text:
                speed = task.finished_speed or task.speed
                return Text("" if speed is None else f"{speed:,.0f} rec/s")

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            Rate(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._task: Any = None

    def start(self, description: str, total: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, offsets: int) -> None:
        self._progress.advance(self._task, offsets)

    def finish(self) -> None:
        self._progress.stop()


def terminal_progress() -> ReplayProgress | None:
    """A progress bar when stderr is a terminal; nothing (a quiet run) otherwise."""
    return TerminalProgress() if sys.stderr.isatty() else None


# -- sinks: where matched records go ----------------------------------------------------------------


class _Sink(Protocol):
    async def write(self, records: list[Any]) -> None:
        """Take one fetched batch (in partition order); may finish the work later."""

    async def flush(self) -> None:
        """Wait until everything taken so far is written."""


class _TopicSink:
    """Republishes records unchanged; the acknowledgements of one batch are awaited after the next
    batch has been handed to the producer, so fetching, sending and acknowledging overlap."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, keep_partition: bool, summary: ReplaySummary
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.keep_partition = keep_partition
        self.summary = summary
        self._unacknowledged: list[asyncio.Future[Any]] = []

    async def write(self, records: list[Any]) -> None:
        send = self.producer.send
        topic = self.topic
        keep = self.keep_partition
        sent = [
            await send(
                topic,
                value=r.value,
                key=r.key,
                headers=list(r.headers),
                partition=r.partition if keep else None,
            )
            for r in records
        ]
        await self._acknowledged()
        self._unacknowledged = sent

    async def _acknowledged(self) -> None:
        if self._unacknowledged:
            await asyncio.gather(*self._unacknowledged)
            self.summary.written += len(self._unacknowledged)
            self._unacknowledged = []

    async def flush(self) -> None:
        await self._acknowledged()


class _ProjectionSink:
    """Decodes records as the projector does and applies each batch in one transaction, without
    recording positions; one batch is written while the next is fetched and decoded."""

    def __init__(self, settings: Settings, projection: Any, summary: ReplaySummary, dry_run: bool) -> None:
        self.settings = settings
        self.projection = projection
        self.summary = summary
        self.dry_run = dry_run
        self._conn: psycopg.Connection | None = None
        self._writing: asyncio.Future[None] | None = None

    def _decode(self, records: list[Any]) -> list[Any]:
        from projections.runner import DECODE_ERRORS, decode_message

        events = []
        for r in records:
            try:
                events.append(decode_message(r))
            except DECODE_ERRORS as exc:
                self.summary.undecodable += 1
                if len(self.summary.undecodable_samples) < 5:
                    self.summary.undecodable_samples.append(f"{r.partition}@{r.offset} ({exc})")
        return events

    def _apply(self, events: list[Any]) -> int:
        if self._conn is None:
            self._conn = db.connect(self.settings)
        conn = self._conn
        with conn.transaction():
            # A poison event (PostgreSQL or the projection refuses it) must not stop the replay:
            # it is left out and reported; the projector has recorded it as a dead letter.
            refused = db.apply_refusing_faults(conn, lambda chunk: self.projection.apply(conn, chunk), events)
        for event, exc in refused:
            self.summary.refused += 1
            if len(self.summary.refused_samples) < 5:
                self.summary.refused_samples.append(
                    f"{event.partition}@{event.offset} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
                )
        return len(events) - len(refused)

    async def write(self, records: list[Any]) -> None:
        events = self._decode(records)
        await self.flush()
        if events and not self.dry_run:
            self._writing = asyncio.ensure_future(self._applied(events))

    async def _applied(self, events: list[Any]) -> None:
        self.summary.written += await asyncio.to_thread(self._apply, events)

    async def flush(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class _Nowhere:
    """--dry-run into a topic: only the counts."""

    async def write(self, records: list[Any]) -> None:
        return None

    async def flush(self) -> None:
        return None


# -- the replay -------------------------------------------------------------------------------------


def find_projection(name: str) -> Any:
    from projections import catalogue

    projection = catalogue.find(name)
    if projection is None:
        raise ReplayUsageError(f"no projection named {name!r}; known: {catalogue.known_names()}")
    return projection


async def _ranges(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], start: StartBound, end: EndBound
) -> list[PartitionReplay]:
    """``[start, end)`` per partition, from the offsets Kafka holds right now."""
    beginning = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    starts: dict[TopicPartition, int] = {}
    notes: dict[TopicPartition, str] = {}
    if isinstance(start, Earliest):
        starts = dict(beginning)
    elif isinstance(start, Offsets):
        unknown = sorted(set(start.by_partition) - {tp.partition for tp in tps})
        if unknown:
            raise ReplayUsageError(
                f"--from names partition(s) {', '.join(map(str, unknown))}, but {tps[0].topic} has"
                f" partitions 0..{len(tps) - 1}"
            )
        for tp in tps:
            wanted = start.for_partition(tp.partition)
            if wanted is None:
                starts[tp] = ends[tp]
                notes[tp] = "not named in --from"
            elif wanted < beginning[tp]:
                starts[tp] = beginning[tp]
                notes[tp] = f"offsets before {beginning[tp]} are no longer retained"
            else:
                starts[tp] = wanted
    else:
        found = await consumer.offsets_for_times({tp: start.millis for tp in tps})
        for tp in tps:
            hit = found.get(tp)
            starts[tp] = ends[tp] if hit is None else hit.offset
    stops = dict(ends)
    if isinstance(end, AtTime):
        found = await consumer.offsets_for_times({tp: end.millis for tp in tps})
        for tp in tps:
            hit = found.get(tp)
            if hit is not None:
                stops[tp] = min(hit.offset, ends[tp])
    out = []
    for tp in tps:
        replay = PartitionReplay(tp.partition, starts[tp], stops[tp], note=notes.get(tp, ""))
        if not replay.note and replay.size == 0:
            replay.note = "nothing in range"
        out.append(replay)
    return out


async def _partition_counts(settings: Settings, source: str, target: str | None) -> dict[str, int]:
    """Partitions of the source (and target) topic; a `ReplayError` naming the option whose topic is
    missing. engine.kafka never names a topic in a metadata request: asking about a missing one
    would create it (auto.create.topics.enable)."""
    try:
        found = await kafka.require_partitions(settings, [source] if target is None else [source, target])
    except kafka.TopicNotFound as exc:
        role = "--topic" if exc.topic == source else "--into-topic"
        prefix = settings.topic_prefix
        raise ReplayError(
            f"{role}: no topic {exc.topic} on {exc.bootstrap}"
            + (f" (logical names get the prefix {prefix!r})" if prefix else "")
        ) from exc
    except kafka.KAFKA_ERRORS as exc:
        raise ReplayError(str(exc)) from exc
    return {topic: len(partitions) for topic, partitions in found.items()}


def _tenant_source(tenant: UUID | None) -> bytes | None:
    return None if tenant is None else f"/tenants/{tenant}".encode()


def _matches(record: Any, source: bytes) -> bool:
    for name, value in record.headers:
        if name == "ce_source":
            return bool(value == source)
    return False


async def _replay(
    settings: Settings, request: ReplayRequest, progress: ReplayProgress | None
) -> ReplaySummary:
    source = resolve_topic(settings, request.topic)
    target = resolve_topic(settings, request.into_topic) if request.into_topic is not None else None
    if target == source:
        raise ReplayUsageError(f"--into-topic is the topic being read ({source}); name another topic")
    projection = find_projection(request.projection) if request.projection is not None else None
    if projection is not None:
        reads = [settings.topic(t) for t in projection.topics]
        if source not in reads:
            raise ReplayUsageError(f"projection {projection.name} reads {', '.join(reads)}, not {source}")
    summary = ReplaySummary(
        topic=source,
        target=f"topic {target}" if target is not None else f"projection {request.projection}",
        dry_run=request.dry_run,
        tenant=request.tenant,
    )
    consumer = kafka.consumer(
        settings,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    producer: AIOKafkaProducer | None = None
    sink: _Sink = _Nowhere()
    projection_sink: _ProjectionSink | None = None
    try:
        counts = await _partition_counts(settings, source, target)
        await consumer.start()
        tps = [TopicPartition(source, p) for p in range(counts[source])]
        summary.partitions = await _ranges(consumer, tps, request.start, request.end)
        if projection is not None:
            if not request.dry_run:
                await asyncio.to_thread(db.ensure_schema, settings)
            sink = projection_sink = _ProjectionSink(settings, projection, summary, request.dry_run)
        elif target is not None and not request.dry_run:
            # Same partition number keeps every aggregate's events on one partition in their order;
            # with fewer partitions the key decides, which keeps that guarantee too.
            keep_partition = counts[target] >= counts[source]
            # The relay's profile with twice its batch: a replay copies a backlog, never a lone event.
            producer = await kafka.start_producer(settings, "bulk", max_batch_size=512 * 1024)
            sink = _TopicSink(producer, target, keep_partition, summary)
        await _copy(consumer, summary, sink, _tenant_source(request.tenant), progress)
        return summary
    except (KafkaError, *kafka.KAFKA_ERRORS) as exc:
        raise ReplayError(
            f"Kafka failed during the replay after {summary.written:,} records were written: {exc}."
            " Running the same replay again is safe: consumers deduplicate on ce_id."
        ) from exc
    except (psycopg.Error, db.DatabaseUnavailable) as exc:
        raise ReplayError(
            f"PostgreSQL failed during the replay after {summary.written:,} events were applied: {exc}."
            " Running the same replay again is safe: the projection's statements are idempotent."
        ) from exc
    finally:
        if producer is not None:
            await producer.stop()
        await consumer.stop()
        if projection_sink is not None:
            projection_sink.close()


async def _copy(
    consumer: AIOKafkaConsumer,
    summary: ReplaySummary,
    sink: _Sink,
    tenant_source: bytes | None,
    progress: ReplayProgress | None,
) -> None:
    by_tp = {TopicPartition(summary.topic, p.partition): p for p in summary.partitions if p.size > 0}
    total = sum(p.size for p in by_tp.values())
    if progress is not None:
        progress.start(f"replay {summary.topic}", total)
    started = time.perf_counter()
    try:
        if not by_tp:
            return
        consumer.assign(list(by_tp))
        covered: dict[TopicPartition, int] = {}
        for tp, p in by_tp.items():
            consumer.seek(tp, p.start)
            covered[tp] = p.start
        remaining = set(by_tp)
        last_progress = time.monotonic()
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=BATCH_RECORDS)
            chosen: list[Any] = []
            for tp, records in batches.items():
                p = by_tp[tp]
                in_range = records if records[-1].offset < p.end else [r for r in records if r.offset < p.end]
                if not in_range:
                    continue
                if p.first is None:
                    p.first = in_range[0].offset
                p.last = in_range[-1].offset
                p.read += len(in_range)
                if tenant_source is not None:
                    in_range = [r for r in in_range if _matches(r, tenant_source)]
                p.matched += len(in_range)
                chosen.extend(in_range)
            if chosen:
                await sink.write(chosen)
            if batches:
                last_progress = time.monotonic()
            for tp in list(remaining):
                # The position passes compacted gaps and transaction markers that no record shows.
                position = min(await consumer.position(tp), by_tp[tp].end)
                if progress is not None and position > covered[tp]:
                    progress.advance(position - covered[tp])
                covered[tp] = position
                if position >= by_tp[tp].end:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if remaining and time.monotonic() - last_progress > STALL_SECONDS:
                stuck = ", ".join(
                    f"{tp.partition}@{covered[tp]} (to {by_tp[tp].end})" for tp in sorted(remaining)
                )
                raise ReplayError(
                    f"no records for {STALL_SECONDS:.0f}s from partition(s) {stuck} of {summary.topic};"
                    " was the topic deleted or truncated meanwhile?"
                )
        await sink.flush()
    finally:
        summary.seconds = time.perf_counter() - started
        if progress is not None:
            progress.finish()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop (as the engine's other batch processes do), also from inside a running loop."""
    import uvloop

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return uvloop.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(uvloop.run, coro).result()


def replay(
    settings: Settings, request: ReplayRequest, progress: ReplayProgress | None = None
) -> ReplaySummary:
    """Run one replay to its end; the summary says what was read, matched and written per partition."""
    return _run(_replay(settings, request, progress))
