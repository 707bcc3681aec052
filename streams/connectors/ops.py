"""What operators see and do: connector status, and the dead-letter queue (list, show, redrive, discard).

Counts of jobs come from Kafka (a topic's end offset minus the connector group's committed offset),
so they are exact whichever worker holds a partition; attempts, circuits and DLQ actions come from
PostgreSQL. Each function opens its own connections and may be called from the CLI or from a test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

import psycopg
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from engine import db, kafka
from engine.config import Settings
from engine.kafka_clients import aiokafka_kwargs
from streams.connectors.jobs import TRACEPARENT, Delivery, Job, jobs_topic
from streams.connectors.spec import dlq_topic, group_id
from streams.connectors.worker import carried_headers

T = TypeVar("T")
REDRIVEN_FROM = "redriven-from"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# -- status -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CircuitStatus:
    tenant_id: str
    state: str
    consecutive_failures: int
    opened_at: datetime | None


@dataclass(frozen=True)
class ConnectorStatus:
    name: str
    queued: int
    """Jobs on the jobs topic not yet done (includes the ones in flight)."""
    in_flight: int
    """Attempts started and not finished (an attempt of a worker that died counts until pruned)."""
    waiting: dict[str, int]
    """Jobs waiting in each delay topic, by its label (``1m``, ``5m``...)."""
    dlq_depth: int
    """Dead letters neither redriven nor discarded."""
    circuits: list[CircuitStatus]
    """Circuits that are not closed."""
    attempts_last_hour: int
    success_rate: float | None
    p95_latency_ms: float | None


async def _kafka_counts(settings: Settings, names: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    prefix = re.escape(settings.topic_prefix)
    pattern = re.compile(rf"^{prefix}connector\.([a-z][a-z0-9_-]*)\.(jobs|retry\.([0-9a-z]+)|dlq)\.v1$")
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    await admin.start()
    try:
        found: dict[str, dict[str, Any]] = {}
        by_topic: dict[str, tuple[str, str]] = {}
        partitions = await kafka.topic_partitions(settings, pattern)
        for topic in partitions:
            m = pattern.match(topic)
            if not m or (names is not None and m.group(1) not in names):
                continue
            part = "jobs" if m.group(2) == "jobs" else "dlq" if m.group(2) == "dlq" else m.group(3)
            by_topic[topic] = (m.group(1), part)
            found.setdefault(m.group(1), {"queued": 0, "waiting": {}, "dlq": [], "dlq_records": 0})
        tps = [tp for t in by_topic for tp in partitions[t]]
        begin, end = await kafka.offsets(settings, tps)
        for name in found:
            committed = await admin.list_consumer_group_offsets(group_id(settings, name))
            for tp in tps:
                connector, part = by_topic[tp.topic]
                if connector != name:
                    continue
                if part == "dlq":
                    found[name]["dlq_records"] += end[tp] - begin[tp]
                    found[name]["dlq"].append((tp.partition, begin[tp]))
                    continue
                done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else begin[tp]
                lag = max(0, end[tp] - max(done, begin[tp]))
                if part == "jobs":
                    found[name]["queued"] += lag
                else:
                    found[name]["waiting"][part] = found[name]["waiting"].get(part, 0) + lag
        return found
    finally:
        await admin.close()


def _tier_seconds(label: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", label)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)] if m else float("inf")


def status(settings: Settings, connectors: Sequence[str] | None = None) -> list[ConnectorStatus]:
    """The state of every connector that has topics (or of the ones named)."""
    db.ensure_schema(settings)
    kafka = _run(_kafka_counts(settings, connectors))
    out: list[ConnectorStatus] = []
    with db.connect(settings) as conn:
        for name in sorted(kafka):
            k = kafka[name]
            handled = 0
            for partition, earliest in k["dlq"]:
                row = conn.execute(
                    """SELECT count(*) FROM connector_dlq_actions
                        WHERE connector = %s AND partition = %s AND "offset" >= %s""",
                    (name, partition, earliest),
                ).fetchone()
                handled += row[0] if row else 0
            in_flight_row = conn.execute(
                """SELECT count(*) FROM connector_attempts WHERE connector = %s AND finished_at IS NULL
                      AND started_at > now() - interval '1 hour'""",
                (name,),
            ).fetchone()
            stats = conn.execute(
                """SELECT count(*), avg((outcome = 'success')::int)::float8,
                          percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
                     FROM connector_attempts
                    WHERE connector = %s AND finished_at IS NOT NULL
                      AND started_at > now() - interval '1 hour'""",
                (name,),
            ).fetchone()
            circuits = [
                CircuitStatus(*row)
                for row in conn.execute(
                    """SELECT tenant_id, state, consecutive_failures, opened_at FROM connector_breakers
                        WHERE connector = %s AND state <> 'closed' ORDER BY tenant_id""",
                    (name,),
                )
            ]
            assert in_flight_row is not None and stats is not None
            out.append(
                ConnectorStatus(
                    name=name,
                    queued=k["queued"],
                    in_flight=in_flight_row[0],
                    waiting=dict(sorted(k["waiting"].items(), key=lambda kv: _tier_seconds(kv[0]))),
                    dlq_depth=max(0, k["dlq_records"] - handled),
                    circuits=circuits,
                    attempts_last_hour=stats[0],
                    success_rate=stats[1],
                    p95_latency_ms=stats[2],
                )
            )
    return out


def render_status(statuses: Sequence[ConnectorStatus]) -> str:
    """The table ``ledgerflow connectors status`` prints, one connector per line (circuits below it)."""
    if not statuses:
        return "no connectors (no connector.*.jobs.v1 topics)"
    header = (
        f"{'connector':<16} {'queued':>7} {'in flight':>9}  {'waiting (per retry tier)':<28} {'dlq':>5}  "
    )
    header += f"{'circuits':<18} {'success (1h)':>14} {'p95 (1h)':>9}"
    lines = [header]
    for s in statuses:
        waiting = " ".join(f"{label}:{n}" for label, n in s.waiting.items()) or "-"
        opened = sum(c.state == "open" for c in s.circuits)
        half = sum(c.state == "half_open" for c in s.circuits)
        circuits = "all closed" if not s.circuits else f"{opened} open, {half} half-open"
        rate = "-" if s.success_rate is None else f"{s.success_rate:.1%} of {s.attempts_last_hour}"
        p95 = "-" if s.p95_latency_ms is None else f"{s.p95_latency_ms:.0f} ms"
        lines.append(
            f"{s.name:<16} {s.queued:>7} {s.in_flight:>9}  {waiting:<28} {s.dlq_depth:>5}  "
            f"{circuits:<18} {rate:>14} {p95:>9}"
        )
        for c in s.circuits:
            since = c.opened_at.isoformat(timespec="seconds") if c.opened_at else "?"
            lines.append(
                f"  circuit {c.state:<9} tenant {c.tenant_id}  since {since}, "
                f"{c.consecutive_failures} consecutive failures"
            )
    return "\n".join(lines)


# -- dead letters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    connector: str
    partition: int
    offset: int
    job_id: str
    kind: str
    tenant_id: str
    subject: str
    error_class: str
    error_code: str
    error_message: str
    attempts: int
    first_failure_at: str | None
    failed_at: str
    original: str
    """topic[partition]@offset the job was read from when it was given up."""
    state: str
    """``pending``, ``redriven`` or ``discarded``."""
    key: bytes | None = field(repr=False, default=None)
    value: bytes = field(repr=False, default=b"")
    headers: list[tuple[str, bytes]] = field(repr=False, default_factory=list)


def render_dlq_list(letters: Sequence[DeadLetter]) -> str:
    """What ``ledgerflow dlq list`` prints: one line per dead letter, oldest first."""
    if not letters:
        return "the DLQ is empty"
    lines = [
        f"{'offset':>6}  {'state':<9} {'failed at':<20} {'job':<28} {'kind':<16} {'tenant':<36} "
        f"{'class':<15} {'code':<16} {'att':>3}  message"
    ]
    for d in letters:
        lines.append(
            f"{d.offset:>6}  {d.state:<9} {d.failed_at[:19]:<20} {d.job_id[:28]:<28} {d.kind[:16]:<16} "
            f"{d.tenant_id:<36} {d.error_class:<15} {d.error_code[:16]:<16} {d.attempts:>3}  "
            + d.error_message[:80]
        )
    return "\n".join(lines)


def render_dead_letter(d: DeadLetter) -> str:
    """What ``ledgerflow dlq show`` prints: the record's state, every header and the job value."""
    lines = [
        f"{d.connector} DLQ partition {d.partition} offset {d.offset}: {d.state}",
        f"job {d.job_id} ({d.kind}) tenant {d.tenant_id} subject {d.subject}",
        f"{d.error_class} {d.error_code}: {d.error_message}",
        f"{d.attempts} attempt(s), first failure {d.first_failure_at or '-'}, given up {d.failed_at}",
        f"read from {d.original}",
        "headers:",
        *(f"  {k}: {v.decode(errors='replace')}" for k, v in d.headers),
        "value:",
        "  " + d.value.decode(errors="replace"),
    ]
    return "\n".join(lines)


@dataclass
class DlqReport:
    """What a DLQ operation did, record by record."""

    connector: str
    action: Literal["redrive", "discard"]
    done: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    """offset -> why it was left alone (already redriven/discarded)."""
    missing: list[int] = field(default_factory=list)
    """Offsets asked for that are not in the DLQ (never existed or expired)."""

    def __str__(self) -> str:
        past = "redriven" if self.action == "redrive" else "discarded"
        lines = [
            f"{self.connector}: {len(self.done)} {past}" + (f": {_ranges(self.done)}" if self.done else "")
        ]
        lines += [f"  offset {o}: skipped, {why}" for o, why in sorted(self.skipped.items())]
        lines += [f"  offset {o}: not in the DLQ" for o in self.missing]
        return "\n".join(lines)


def _ranges(offsets: list[int]) -> str:
    return ", ".join(str(o) for o in sorted(offsets))


def _dead_letter(connector: str, message: Any, state: str) -> DeadLetter:
    h = {k: (v or b"").decode(errors="replace") for k, v in message.headers or []}
    try:
        job: Job | None = Job.decode(message.value)
    except ValueError:
        job = None
    return DeadLetter(
        connector=connector,
        partition=message.partition,
        offset=message.offset,
        job_id=job.job_id if job else "",
        kind=job.kind if job else "",
        tenant_id=job.tenant_id if job else "",
        subject=job.subject if job else "",
        error_class=h.get("error-class", ""),
        error_code=h.get("error-code", ""),
        error_message=h.get("error-message", ""),
        attempts=int(h.get("attempts", "0") or 0),
        first_failure_at=h.get("first-failure-at"),
        failed_at=h.get("failed-at", ""),
        original="{}[{}]@{}".format(
            h.get("original-topic", "?"), h.get("original-partition", "?"), h.get("original-offset", "?")
        ),
        state=state,
        key=message.key,
        value=message.value or b"",
        headers=[(k, v or b"") for k, v in message.headers or []],
    )


async def _read_dlq(settings: Settings, connector: str) -> list[Any]:
    topic = settings.topic(dlq_topic(connector))
    consumer = kafka.consumer(settings)
    await consumer.start()
    try:
        tps = (await kafka.topic_partitions(settings, re.compile(re.escape(topic) + "$"))).get(topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        messages: list[Any] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in tps])

        while await behind():
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                messages += [m for m in batch if m.offset < end[TopicPartition(m.topic, m.partition)]]
        return sorted(messages, key=lambda m: (m.partition, m.offset))
    finally:
        await consumer.stop()


def _actions(conn: psycopg.Connection, connector: str) -> dict[tuple[int, int], str]:
    rows = conn.execute(
        'SELECT partition, "offset", action FROM connector_dlq_actions WHERE connector = %s', (connector,)
    )
    return {(p, o): a for p, o, a in rows}


def dlq_list(settings: Settings, connector: str) -> list[DeadLetter]:
    """Every record in the connector's DLQ, oldest first, with what was done with it."""
    db.ensure_schema(settings)
    messages = _run(_read_dlq(settings, connector))
    with db.connect(settings) as conn:
        acted = _actions(conn, connector)
    return [_dead_letter(connector, m, acted.get((m.partition, m.offset), "pending")) for m in messages]


def dlq_show(settings: Settings, connector: str, offset: int) -> DeadLetter | None:
    """One dead letter (all its headers and its job), or None when no record has that offset."""
    return next((d for d in dlq_list(settings, connector) if d.offset == offset), None)


def _chosen(
    letters: list[DeadLetter], offsets: Sequence[int] | Literal["all"], report: DlqReport
) -> list[DeadLetter]:
    if offsets == "all":
        wanted = letters
    else:
        present = {d.offset for d in letters}
        report.missing = [o for o in offsets if o not in present]
        wanted = [d for d in letters if d.offset in set(offsets)]
    chosen = []
    for d in wanted:
        if d.state != "pending":
            report.skipped[d.offset] = f"already {d.state}"
        else:
            chosen.append(d)
    return chosen


async def _claim(settings: Settings, d: DeadLetter, action: str) -> tuple[psycopg.AsyncConnection, bool]:
    """Open a transaction holding the action row for ``d``; False if someone else took it meanwhile."""
    conn = await psycopg.AsyncConnection.connect(
        settings.database_url, options=f"-c search_path={settings.db_schema}", connect_timeout=5
    )
    cur = await conn.execute(
        """INSERT INTO connector_dlq_actions (connector, partition, "offset", action, job_id)
           VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING action""",
        (d.connector, d.partition, d.offset, action, d.job_id),
    )
    return conn, (await cur.fetchone()) is not None


async def _redrive(settings: Settings, letters: list[DeadLetter], report: DlqReport) -> None:
    producer = await kafka.start_producer(settings, "reliable")
    try:
        for d in letters:
            conn, claimed = await _claim(settings, d, "redriven")
            async with conn:
                if not claimed:
                    report.skipped[d.offset] = "already handled by someone else"
                    continue
                # Attempt count reset; the router's headers and the trace kept; where it came from noted.
                traceparent = dict(d.headers).get(TRACEPARENT, b"").decode() or None
                carried = [(k, v or b"") for k, v in carried_headers(d.headers) if k != REDRIVEN_FROM]
                headers = carried + Delivery(traceparent=traceparent).headers()
                headers.append(
                    (
                        REDRIVEN_FROM,
                        f"{settings.topic(dlq_topic(d.connector))}:{d.partition}:{d.offset}".encode(),
                    )
                )
                await producer.send_and_wait(
                    settings.topic(jobs_topic(d.connector)), value=d.value, key=d.key, headers=headers
                )
                # Committed only once Kafka has the job: a crash in between redrives it again,
                # which the job id (the provider's idempotency key) makes harmless.
                await conn.commit()
                report.done.append(d.offset)
    finally:
        await producer.stop()


async def _discard(settings: Settings, letters: list[DeadLetter], report: DlqReport) -> None:
    for d in letters:
        conn, claimed = await _claim(settings, d, "discarded")
        async with conn:
            if claimed:
                await conn.commit()
                report.done.append(d.offset)
            else:
                report.skipped[d.offset] = "already handled by someone else"


def dlq_redrive(settings: Settings, connector: str, offsets: Sequence[int] | Literal["all"]) -> DlqReport:
    """Put pending dead letters back on the jobs topic as attempt 1; each record at most once."""
    report = DlqReport(connector, "redrive")
    chosen = _chosen(dlq_list(settings, connector), offsets, report)
    _run(_redrive(settings, chosen, report))
    return report


def dlq_discard(settings: Settings, connector: str, offsets: Sequence[int] | Literal["all"]) -> DlqReport:
    """Mark pending dead letters as dealt with, without running them again."""
    report = DlqReport(connector, "discard")
    chosen = _chosen(dlq_list(settings, connector), offsets, report)
    _run(_discard(settings, chosen, report))
    return report
