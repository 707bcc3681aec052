"""``ledgerflow lag``: consumer lag per group, topic and partition, each group's state, and whether
it is stalled.

Committed offsets and group states come from Kafka (the admin API), end offsets from a consumer's
``end_offsets``. A group's lag on a partition is the end offset minus its committed offset (minus
the earliest retained offset when the group has committed nothing there yet).

Every sample is also kept in PostgreSQL (``consumer_lag_samples``), because telling a stalled
consumer from a busy one needs history: ``ops/stall.py`` decides from the samples. Samples come
from ``ledgerflow lag``, from ``GET /healthz/consumers`` and from the lag monitor that runs in the
API process (:class:`LagMonitor`); all of them feed, and read, the same history.

Projection runners keep their true positions in PostgreSQL and commit to Kafka only for
visibility: ``ledgerflow projections status`` shows the positions that matter for them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import (
    DescribeGroupsRequest_v0,
    DescribeGroupsRequest_v1,
    DescribeGroupsRequest_v2,
)
from aiokafka.protocol.api import Request

from engine import db, kafka
from engine.config import Settings
from engine.kafka_clients import aiokafka_kwargs
from ops.stall import DEFAULT_STALL_AFTER, Assessment, Sample, Status, assess
from streams.connectors.ops import _run

log = logging.getLogger("ledgerflow.lag")

# How long one sample may take before Kafka counts as unreachable (a health check must answer).
SAMPLE_TIMEOUT = 20.0
# Samples older than this are deleted whenever a new one is written.
RETENTION = timedelta(hours=6)
# The lag monitor in the API process samples this often unless LEDGERFLOW_LAG_SAMPLE_S says otherwise.
DEFAULT_MONITOR_INTERVAL = 15.0


class KafkaUnavailable(KafkaError):
    """The broker did not answer the lag queries in time.

    Also a ``KafkaError``, so that callers which already catch the client's errors around
    :func:`lag` (``engine/api/metrics.py``) keep working."""

    def __str__(self) -> str:
        # KafkaError prefixes the class name; the message already says what happened.
        return str(self.args[0]) if self.args else "Kafka did not answer"


def _seconds_from_env(name: str, default: float, *, allow_zero: bool) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number of seconds") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}={raw!r}: expected seconds {'>= 0' if allow_zero else '> 0'}")
    return value


def stall_after_from_env() -> float:
    """``LEDGERFLOW_STALL_AFTER_S``: seconds without progress, while records wait, that make a stall."""
    return _seconds_from_env("LEDGERFLOW_STALL_AFTER_S", DEFAULT_STALL_AFTER, allow_zero=False)


def monitor_interval_from_env() -> float:
    """``LEDGERFLOW_LAG_SAMPLE_S``: seconds between the lag monitor's samples; 0 turns it off."""
    return _seconds_from_env("LEDGERFLOW_LAG_SAMPLE_S", DEFAULT_MONITOR_INTERVAL, allow_zero=True)


# -- sampling Kafka ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    """Next offset the group will read (Kafka's committed offset); None if it never committed here."""
    end: int
    """Offset of the next record to be written (last record + 1)."""
    lag: int


@dataclass(frozen=True)
class GroupLag:
    group: str
    state: str
    """As Kafka reports it: Stable, Empty, PreparingRebalance, CompletingRebalance or Dead."""
    members: int
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def stable(self) -> bool:
        return self.state == "Stable"


class _DescribeGroups(
    Request[DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]
):
    """DescribeGroups capped at v2.

    aiokafka 0.14's ``describe_consumer_groups`` negotiates v3, whose request class is paired with
    the v2 response schema (no ``authorized_operations``): decoding the broker's answer fails with
    "Buffer underrun" and the connection is dropped. v2 returns the state and members we need.
    """

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups

    def build(
        self,
        request_struct_class: type[
            DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2
        ],
    ) -> DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2:
        return request_struct_class(self.groups)


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, tuple[str, int]]:
    """group id -> (state, number of members)."""
    by_node: dict[int, list[str]] = {}
    for name in names:
        by_node.setdefault(await admin.find_coordinator(name), []).append(name)
    found: dict[str, tuple[str, int]] = {}
    for node, groups in by_node.items():
        response = await admin._send_request(_DescribeGroups(groups), node)
        for g in response.groups:
            # (error_code, group, state, protocol_type, protocol, members)
            found[g[1]] = (g[2] or "Dead", len(g[5]))
    return found


def default_group_prefix(settings: Settings) -> str:
    """The engine's groups (projections, connectors, ...) of this deployment start with this."""
    return f"{settings.topic_prefix}ledgerflow"


async def _lag(settings: Settings, groups: Sequence[str] | None) -> list[GroupLag]:
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    consumer = kafka.consumer(settings)
    try:
        await admin.start()
        await consumer.start()
        if groups is None:
            prefix = default_group_prefix(settings)
            listed = await admin.list_consumer_groups()
            names = sorted({g[0] for g in listed if str(g[0]).startswith(prefix)})
        else:
            names = sorted(set(groups))
        if not names:
            return []
        described = await _describe(admin, names)
        committed: dict[str, dict[TopicPartition, Any]] = {}
        for name in names:
            committed[name] = await admin.list_consumer_group_offsets(name)
        topics = {tp.topic for offsets in committed.values() for tp in offsets}
        # Only topics that exist: engine.kafka never names one in a metadata request (that
        # could create a deleted topic again on a broker that auto-creates).
        partitions = await kafka.topic_partitions(settings, topics) if topics else {}
        tps = [tp for t in sorted(partitions) for tp in partitions[t]]
        if tps:
            # Without the topics in its metadata, end_offsets waits for a periodic metadata refresh
            # (about 2 s per call, measured); asking for them first answers at once.
            await consumer._client.set_topics(list(partitions))
        end = await consumer.end_offsets(tps) if tps else {}
        begin = await consumer.beginning_offsets(tps) if tps else {}
        out: list[GroupLag] = []
        for name in names:
            state, members = described.get(name, ("Dead", 0))
            rows: list[PartitionLag] = []
            for topic in sorted({tp.topic for tp in committed[name]}):
                for tp in partitions.get(topic, []):
                    meta = committed[name].get(tp)
                    done = meta.offset if meta is not None and meta.offset >= 0 else None
                    lag = max(0, end[tp] - max(done if done is not None else 0, begin[tp]))
                    rows.append(PartitionLag(tp.topic, tp.partition, done, end[tp], lag))
            out.append(GroupLag(name, state, members, rows))
        return out
    finally:
        await consumer.stop()
        await admin.close()


async def _lag_or_unavailable(settings: Settings, groups: Sequence[str] | None) -> list[GroupLag]:
    try:
        async with asyncio.timeout(SAMPLE_TIMEOUT):
            return await _lag(settings, groups)
    except (KafkaError, *kafka.KAFKA_ERRORS, OSError, TimeoutError) as exc:
        raise KafkaUnavailable(
            f"Kafka at {settings.kafka_bootstrap} did not answer: {exc or type(exc).__name__}"
        ) from exc


def lag(settings: Settings, groups: list[str] | None = None) -> list[GroupLag]:
    """Lag of the named groups, or of every group whose id starts with ``<prefix>ledgerflow``.

    Raises :class:`KafkaUnavailable` when the broker does not answer within ``SAMPLE_TIMEOUT``.
    """
    return _run(_lag_or_unavailable(settings, groups))


# -- keeping samples --------------------------------------------------------------------------


def record(conn: psycopg.Connection, groups: Sequence[GroupLag]) -> datetime:
    """Store one sample of ``groups`` stamped with the database's clock (one clock for every
    process that samples), drop samples older than ``RETENTION``; returns the sample's time."""
    with conn.transaction():
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        at: datetime = row[0]
        rows = [
            (g.group, p.topic, p.partition, p.committed, p.end, p.lag) for g in groups for p in g.partitions
        ]
        if rows:
            # One statement for the whole sample (a partition a row), whatever the number of groups.
            columns = [list(c) for c in zip(*rows, strict=True)]
            conn.execute(
                "INSERT INTO consumer_lag_samples"
                " (group_id, topic, partition, committed, end_offset, lag, sampled_at)"
                " SELECT g, t, p, c, e, l, %s"
                " FROM unnest(%s::text[], %s::text[], %s::int[], %s::bigint[], %s::bigint[], %s::bigint[])"
                " AS u(g, t, p, c, e, l)"
                " ON CONFLICT DO NOTHING",
                [at, *columns],
            )
        conn.execute("DELETE FROM consumer_lag_samples WHERE sampled_at < %s", (at - RETENTION,))
    return at


History = dict[tuple[str, int], list[Sample]]


def load_history(
    conn: psycopg.Connection,
    groups: Sequence[str],
    *,
    until: datetime,
    stall_after: float,
    grace: dict[str, float],
) -> dict[str, History]:
    """Per group, per (topic, partition): the stored samples up to ``until``, in time order.

    Reaches back twice as far as a partition's stall limit (``stall_after`` + its topic's grace),
    plus five minutes, so that a stall is still seen when samples are sparse."""
    topics = sorted(grace)
    rows = conn.execute(
        """
        SELECT s.group_id, s.topic, s.partition, s.committed, s.lag, s.sampled_at
          FROM consumer_lag_samples s
          LEFT JOIN unnest(%(topics)s::text[], %(grace)s::float8[]) AS g(topic, seconds)
                 ON g.topic = s.topic
         WHERE s.group_id = ANY(%(groups)s)
           AND s.sampled_at <= %(until)s
           AND s.sampled_at >= %(until)s
               - make_interval(secs => 2 * (%(stall_after)s + coalesce(g.seconds, 0)) + 300)
         ORDER BY s.group_id, s.topic, s.partition, s.sampled_at
        """,
        {
            "topics": topics,
            "grace": [grace[t] for t in topics],
            "groups": list(groups),
            "until": until,
            "stall_after": stall_after,
        },
    ).fetchall()
    found: dict[str, History] = {}
    for group, topic, partition, committed, lag_, at in rows:
        found.setdefault(group, {}).setdefault((topic, partition), []).append(Sample(at, committed, lag_))
    return found


def waiting_topics(settings: Settings) -> dict[str, float]:
    """Topics whose consumers hold records back on purpose, with the longest hold in seconds: each
    connector's delay topics (a record waits there up to its tier's delay)."""
    from streams.catalogue import planned_specs
    from streams.connectors.spec import retry_topic

    return {
        settings.topic(retry_topic(spec.name, delay)): delay
        for spec in planned_specs(settings)
        for delay in spec.retry_policy.tiers()
    }


# -- health -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupHealth:
    lag: GroupLag
    assessment: Assessment
    dead_letters: int | None = None
    """A projection group's pending dead letters (None: not a projection, or PostgreSQL unreachable).
    They never make a group stalled: the projector has moved past them and keeps up."""

    @property
    def group(self) -> str:
        return self.lag.group

    @property
    def status(self) -> Status:
        return self.assessment.status

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "status": self.status,
            "reason": self.assessment.reason,
            "state": self.lag.state,
            "members": self.lag.members,
            "lag": self.lag.total,
            **({} if self.dead_letters is None else {"dead_letters": self.dead_letters}),
            "stalled_partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "committed": p.committed,
                    "without_progress_s": round(p.seconds, 1),
                    "since": p.since.isoformat(),
                    "lag_then": p.lag_then,
                    "lag_now": p.lag_now,
                }
                for p in self.assessment.stalled
            ],
        }


@dataclass(frozen=True)
class ConsumerHealth:
    groups: list[GroupHealth]
    stall_after: float
    history_stored: bool
    """False when PostgreSQL was unavailable: only this call's own samples were compared."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    """Pending dead letters per projection (empty when PostgreSQL was unavailable)."""

    @property
    def stalled(self) -> list[GroupHealth]:
        return [g for g in self.groups if g.status == "stalled"]


def _store(settings: Settings, groups: Sequence[GroupLag], *, create_tables: bool) -> datetime | None:
    """Record a sample; None (with a warning) if PostgreSQL cannot take it."""
    try:
        with db.connect(settings) as conn:
            try:
                return record(conn, groups)
            except psycopg.errors.UndefinedTable:
                conn.rollback()
        if not create_tables:
            log.warning(
                "lag sample not stored: consumer_lag_samples does not exist yet in %s", settings.db_schema
            )
            return None
        # A database no process has started against yet: create the tables, as every process does.
        db.ensure_schema(settings)
        with db.connect(settings) as conn:
            return record(conn, groups)
    except (db.DatabaseUnavailable, psycopg.OperationalError) as exc:
        log.warning("lag sample not stored, PostgreSQL unavailable: %s", exc)
        return None


def projection_group(settings: Settings, projection: str) -> str:
    """The consumer group id of a projection's runner (projections/runner.py names it so)."""
    return f"{settings.topic_prefix}ledgerflow.projection.{projection}"


def pending_dead_letters(settings: Settings) -> dict[str, int]:
    """Pending projection dead letters per projection; {} when there is no table yet."""
    with db.connect(settings) as conn:
        if not _table_exists(conn, "projection_dead_letters"):
            return {}
        rows = conn.execute(
            "SELECT projection, count(*) FROM projection_dead_letters WHERE state = 'pending' GROUP BY 1"
        ).fetchall()
    return {str(name): int(count) for name, count in rows}


def _table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def consumer_health(
    settings: Settings,
    groups: list[str] | None = None,
    *,
    stall_after: float = DEFAULT_STALL_AFTER,
    sample_seconds: float = 0.0,
    pause: Callable[[float], None] = time.sleep,
    create_tables: bool = True,
) -> ConsumerHealth:
    """Sample lag now (and again ``sample_seconds`` later if > 0), store the samples and assess every
    group against its stored history. Without PostgreSQL, only this call's samples are compared.

    ``create_tables``: create the engine's tables if the samples table is missing (as the other
    commands do); the monitor does not, so that a sample still in flight while its process shuts
    down cannot bring back a schema that was just dropped."""
    taken: list[tuple[datetime, list[GroupLag]]] = []
    stored = True
    rounds = 2 if sample_seconds > 0 else 1
    for i in range(rounds):
        if i:
            pause(sample_seconds)
        sample = lag(settings, groups)
        at = _store(settings, sample, create_tables=create_tables) if stored else None
        stored = at is not None
        taken.append((at or datetime.now(UTC), sample))
    now, current = taken[-1]
    grace = waiting_topics(settings)

    histories: dict[str, History] = {}
    dead_letters: dict[str, int] = {}
    if stored:
        try:
            with db.connect(settings) as conn:
                histories = load_history(
                    conn, [g.group for g in current], until=now, stall_after=stall_after, grace=grace
                )
            dead_letters = pending_dead_letters(settings)
        except (db.DatabaseUnavailable, psycopg.OperationalError) as exc:
            log.warning("lag history not read, PostgreSQL unavailable: %s", exc)
            stored = False
    if not stored:
        histories = {}
        for at, groups_then in taken:
            for g in groups_then:
                for p in g.partitions:
                    key = (p.topic, p.partition)
                    histories.setdefault(g.group, {}).setdefault(key, []).append(
                        Sample(at, p.committed, p.lag)
                    )

    out: list[GroupHealth] = []
    for g in current:
        history = histories.get(g.group, {})
        # Only the partitions the group has now; each one's history ends with this sample.
        partitions = {
            (p.topic, p.partition): history.get((p.topic, p.partition)) or [Sample(now, p.committed, p.lag)]
            for p in g.partitions
        }
        projection = g.group.removeprefix(projection_group(settings, ""))
        pending = None
        if stored and g.group.startswith(projection_group(settings, "")):
            pending = dead_letters.get(projection, 0)
        assessment = assess(g.members, partitions, stall_after=stall_after, grace=grace)
        out.append(GroupHealth(g, assessment, pending))
    return ConsumerHealth(out, stall_after, stored, dead_letters)


# -- rendering --------------------------------------------------------------------------------


def render_health(report: ConsumerHealth, *, partitions: bool = True) -> str:
    """What ``ledgerflow lag`` prints: one line per group with its STATUS (and why, unless ok), then
    each group's partitions."""
    if not report.groups:
        return "no consumer groups"
    width = max(len("GROUP"), *(len(g.group) for g in report.groups))
    lines = [f"{'GROUP':<{width}}  {'STATUS':<10}  {'STATE':<19} {'MEMBERS':>7} {'LAG':>10}"]
    for g in report.groups:
        lines.append(
            f"{g.group:<{width}}  {g.status:<10}  {g.lag.state:<19} {g.lag.members:>7} {g.lag.total:>10}"
        )
        if g.status != "ok":
            lines.append(f"  why: {g.assessment.reason}")
        if g.dead_letters is not None:
            name = g.group.rsplit(".", 1)[-1]
            hint = f" (ledgerflow dlq list --projection {name})" if g.dead_letters else ""
            lines.append(f"  dead letters: {g.dead_letters} pending{hint}")
    if not partitions:
        return "\n".join(lines)
    for g in report.groups:
        lines.append("")
        lines.append(g.group)
        if not g.lag.partitions:
            lines.append("  (no committed offsets)")
            continue
        lines.append(f"  {'topic':<48} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}")
        for p in g.lag.partitions:
            committed = "-" if p.committed is None else str(p.committed)
            lines.append(f"  {p.topic:<48} {p.partition:>4} {committed:>10} {p.end:>10} {p.lag:>8}")
    return "\n".join(lines)


# -- the monitor ------------------------------------------------------------------------------


class LagMonitor:
    """Samples the engine's groups every ``interval`` seconds, so that stall detection has history
    even when nobody asks, and logs each group that becomes stalled (and when it recovers)."""

    def __init__(self, settings: Settings, *, interval: float, stall_after: float) -> None:
        if interval <= 0:
            raise ValueError(f"the lag monitor's interval must be > 0 seconds, not {interval}")
        self.settings = settings
        self.interval = interval
        self.stall_after = stall_after
        self.last: ConsumerHealth | None = None
        self._status: dict[str, Status] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
                return
            except TimeoutError:
                pass
            await self.sample_once()

    async def sample_once(self) -> None:
        try:
            report = await asyncio.to_thread(
                consumer_health, self.settings, stall_after=self.stall_after, create_tables=False
            )
        except KafkaUnavailable as exc:
            log.warning("lag monitor: %s", exc)
            return
        except Exception:  # the monitor must outlive any one bad sample; the next one retries
            log.exception("lag monitor: sampling failed")
            return
        self.last = report
        for g in report.groups:
            before = self._status.get(g.group)
            if g.status == "stalled" and before != "stalled":
                log.warning("consumer group %s stalled: %s", g.group, g.assessment.reason)
            elif before == "stalled" and g.status != "stalled":
                log.info("consumer group %s no longer stalled: %s", g.group, g.status)
            self._status[g.group] = g.status
