"""``GET /metrics``: the engine's state in Prometheus text format, the same from every API process.

The figures are not counted in this process: they are read from the shared state at scrape time
(PostgreSQL: the event store, ``relay_position``, ``projection_tracking``, the connector tables;
Kafka: committed offsets, end offsets, retry and dead-letter topics), so any API worker answers
for the whole deployment and nothing is lost when a process restarts. A scrape within
``Settings.metrics_cache_seconds`` of the previous one is answered from the previous figures, so
scraping stays cheap however many scrapers there are.

Counters are positions and offsets, which only grow; Prometheus derives the per-second rates
(``rate(ledgerflow_events_published_total[1m])``). Metric names, labels and meanings are listed in
``docs/observability.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psycopg
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from engine import db, kafka
from engine.api.ops_token import ops_token_check
from engine.config import Settings
from ops.lag import GroupLag, lag

log = logging.getLogger("ledgerflow.metrics")

# The classic text format (0.0.4): every Prometheus release and most other scrapers read it.
TEXT_FORMAT = CONTENT_TYPE_PLAIN_0_0_4

# Longest a scrape waits for Kafka; a slower answer is used by a later scrape.
KAFKA_WAIT_S = 8.0
# Connector latency and attempt counts are over this window (the attempts table is pruned after 2 h).
ATTEMPT_WINDOW_MINUTES = 5
QUANTILES = (0.5, 0.95, 0.99)
CIRCUIT_STATES = ("closed", "open", "half_open")


# -- reading the shared state --------------------------------------------------------------------


@dataclass
class DatabaseFigures:
    stored: int = 0
    relays: dict[str, int] = field(default_factory=dict)
    projected: dict[tuple[str, str], int] = field(default_factory=dict)
    circuits: list[tuple[str, str, str]] = field(default_factory=list)
    latency_ms: dict[str, tuple[float | None, ...]] = field(default_factory=dict)
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    dlq_actions: list[tuple[str, int, int]] = field(default_factory=list)
    """(connector, partition, offset) of every dead letter redriven or discarded."""
    restarts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(host, process) -> times ``ledgerflow run`` started that process again after it exited."""
    projection_dead_letters: dict[str, int] = field(default_factory=dict)
    """Pending dead letters per projection (0 for a projection that tracks positions and has none)."""


def _exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def read_database(settings: Settings) -> DatabaseFigures:
    """Everything PostgreSQL knows; tables not created yet (a fresh deployment) read as empty."""
    out = DatabaseFigures()
    with db.connect(settings, autocommit=True) as conn:
        if _exists(conn, "ledger_events"):
            # The highest notification id: notification ids only grow, and the relay's position is
            # one of them, so stored - published is exactly the relay's backlog.
            row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events").fetchone()
            out.stored = int(row[0]) if row else 0
        if _exists(conn, "relay_position"):
            for relay, position in conn.execute("SELECT relay, notification_id FROM relay_position"):
                out.relays[relay] = int(position)
        if _exists(conn, "projection_tracking"):
            # Stored offsets are of the last record applied; + 1 makes them counts of records passed.
            for projection, topic, passed in conn.execute(
                'SELECT projection, topic, sum("offset" + 1) FROM projection_tracking GROUP BY 1, 2'
            ):
                out.projected[(projection, topic)] = int(passed)
        for projection, _ in out.projected:
            if not projection.endswith("__rebuild"):  # a rebuild's shadow position, not a projection
                out.projection_dead_letters.setdefault(projection, 0)
        if _exists(conn, "projection_dead_letters"):
            for projection, pending in conn.execute(
                "SELECT projection, count(*) FROM projection_dead_letters WHERE state = 'pending' GROUP BY 1"
            ):
                out.projection_dead_letters[str(projection)] = int(pending)
        if _exists(conn, "connector_breakers"):
            out.circuits = [
                (str(c), str(t), str(s))
                for c, t, s in conn.execute("SELECT connector, tenant_id, state FROM connector_breakers")
            ]
        if _exists(conn, "connector_attempts"):
            window = f"{ATTEMPT_WINDOW_MINUTES} minutes"
            for connector, quantiles in conn.execute(
                "SELECT connector, percentile_cont(%s::float8[]) WITHIN GROUP (ORDER BY latency_ms)"
                " FROM connector_attempts WHERE finished_at > now() - %s::interval GROUP BY connector",
                (list(QUANTILES), window),
            ):
                out.latency_ms[connector] = tuple(quantiles)
            for connector, outcome, count in conn.execute(
                "SELECT connector, outcome, count(*) FROM connector_attempts"
                " WHERE finished_at > now() - %s::interval GROUP BY 1, 2",
                (window,),
            ):
                out.attempts[(connector, outcome)] = int(count)
            # As `ledgerflow connectors status` counts them: an attempt of a worker that died stays
            # unfinished until pruned, so only the last hour's count.
            for connector, count in conn.execute(
                "SELECT connector, count(*) FROM connector_attempts WHERE finished_at IS NULL"
                " AND started_at > now() - interval '1 hour' GROUP BY 1"
            ):
                out.in_flight[connector] = int(count)
        if _exists(conn, "connector_dlq_actions"):
            out.dlq_actions = [
                (str(c), int(p), int(o))
                for c, p, o in conn.execute(
                    'SELECT connector, partition, "offset" FROM connector_dlq_actions'
                )
            ]
        if _exists(conn, "process_restarts"):
            for host, process, restarts in conn.execute(
                "SELECT host, process, restarts FROM process_restarts"
            ):
                out.restarts[(str(host), str(process))] = int(restarts)
    return out


@dataclass
class KafkaFigures:
    groups: list[GroupLag]
    retry_records: dict[tuple[str, str], int]
    """(connector, tier label) -> records ever written to that delay topic (its end offsets)."""
    dlq_records: dict[str, int]
    """Full DLQ topic name -> records retained."""
    dlq_connector: dict[str, str]
    """Full DLQ topic name -> its connector (connector DLQs only)."""
    dlq_begin: dict[tuple[str, int], int]
    """(full DLQ topic name, partition) -> earliest retained offset."""


def _topic_patterns(settings: Settings) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Delay topics, every dead-letter topic (ingest, projections, connectors), connector DLQs."""
    prefix = re.escape(settings.topic_prefix)
    retry = re.compile(rf"^{prefix}connector\.([a-z][a-z0-9_-]*)\.retry\.([0-9a-z]+)\.v1$")
    dlq = re.compile(rf"^{prefix}[a-z][a-z0-9_.-]*\.dlq\.v1$")
    connector_dlq = re.compile(rf"^{prefix}connector\.([a-z][a-z0-9_-]*)\.dlq\.v1$")
    return retry, dlq, connector_dlq


async def _topic_records(settings: Settings) -> KafkaFigures:
    retry, dlq, connector_dlq = _topic_patterns(settings)
    wanted = re.compile(f"{retry.pattern}|{dlq.pattern}")
    partitions = await kafka.topic_partitions(settings, wanted)
    tps = [tp for topic in sorted(partitions) for tp in partitions[topic]]
    out = KafkaFigures([], {}, {}, {}, {})
    if not tps:
        return out
    begin, end = await kafka.offsets(settings, tps)
    for tp in tps:
        records = end[tp] - begin[tp]
        if m := retry.match(tp.topic):
            # A counter must never go down: the end offset counts every retry ever written,
            # while end - begin would fall as retention deletes old records.
            key = (m.group(1), m.group(2))
            out.retry_records[key] = out.retry_records.get(key, 0) + end[tp]
        else:
            out.dlq_records[tp.topic] = out.dlq_records.get(tp.topic, 0) + records
            out.dlq_begin[(tp.topic, tp.partition)] = begin[tp]
            if m := connector_dlq.match(tp.topic):
                out.dlq_connector[tp.topic] = m.group(1)
    return out


def read_kafka(settings: Settings) -> KafkaFigures:
    figures = asyncio.run(_topic_records(settings))
    figures.groups = lag(settings)
    return figures


# -- the collector ---------------------------------------------------------------------------------


class EngineCollector(Collector):
    """Builds the metric families from the shared state, at most once per cache period."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._taken = float("-inf")
        # One Kafka read at a time, off the request thread, so a hung broker cannot pile them up.
        self._kafka_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metrics-kafka")
        self._kafka_pending: concurrent.futures.Future[KafkaFigures] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # no collection at registration time

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._taken >= self.settings.metrics_cache_seconds:
                self._families = list(self._build())
                self._taken = time.monotonic()
            return list(self._families)

    def close(self) -> None:
        self._kafka_pool.shutdown(wait=False, cancel_futures=True)

    def _kafka(self) -> KafkaFigures | None:
        if self._kafka_pending is None:
            self._kafka_pending = self._kafka_pool.submit(read_kafka, self.settings)
        done, _ = concurrent.futures.wait([self._kafka_pending], timeout=KAFKA_WAIT_S)
        if not done:
            # Still running: a later scrape picks its result up instead of starting another read.
            log.warning("metrics: Kafka did not answer within %.0fs; its figures are left out", KAFKA_WAIT_S)
            return None
        pending, self._kafka_pending = self._kafka_pending, None
        try:
            return pending.result()
        except (KafkaError, *kafka.KAFKA_ERRORS, OSError, TimeoutError) as exc:
            log.warning("metrics: Kafka unavailable (%s); its figures are left out", exc)
            return None

    def _build(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ledgerflow_metrics_source_up",
            "1 if this scrape could read the source (postgresql, kafka), else 0: its metrics are missing",
            labels=["source"],
        )
        try:
            database: DatabaseFigures | None = read_database(self.settings)
        except (db.DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("metrics: PostgreSQL unavailable (%s); its figures are left out", exc)
            database = None
        kafka = self._kafka()
        up.add_metric(["postgresql"], 1 if database else 0)
        up.add_metric(["kafka"], 1 if kafka else 0)
        yield up
        if database is not None:
            yield from _database_families(database)
        if kafka is not None:
            yield from _kafka_families(self.settings, kafka, database)


def _database_families(d: DatabaseFigures) -> Iterator[Metric]:
    stored = CounterMetricFamily(
        "ledgerflow_events_stored", "Events written to the event store (its highest notification id)"
    )
    stored.add_metric([], d.stored)
    yield stored
    published = CounterMetricFamily(
        "ledgerflow_events_published",
        "Events the relay published to Kafka and saw acknowledged (its stored position)",
        labels=["relay"],
    )
    relay_lag = GaugeMetricFamily(
        "ledgerflow_relay_lag_events", "Events stored but not yet published by the relay", labels=["relay"]
    )
    for relay, position in sorted(d.relays.items()):
        published.add_metric([relay], position)
        relay_lag.add_metric([relay], max(0, d.stored - position))
    yield published
    yield relay_lag
    projected = CounterMetricFamily(
        "ledgerflow_events_projected",
        "Records of a topic a projection has applied (sum over partitions of its stored offset + 1)",
        labels=["projection", "topic"],
    )
    for (projection, topic), passed in sorted(d.projected.items()):
        projected.add_metric([projection, topic], passed)
    yield projected
    dead_letters = GaugeMetricFamily(
        "ledgerflow_projection_dead_letters_pending",
        "Events a projection could not apply, waiting for an operator (ledgerflow dlq list --projection)",
        labels=["projection"],
    )
    for projection, pending in sorted(d.projection_dead_letters.items()):
        dead_letters.add_metric([projection], pending)
    yield dead_letters
    circuits = GaugeMetricFamily(
        "ledgerflow_circuit_state",
        "1 for the state each (connector, tenant) circuit breaker is in, 0 for the others",
        labels=["connector", "tenant_id", "state"],
    )
    for connector, tenant_id, state in sorted(d.circuits):
        for candidate in CIRCUIT_STATES:
            circuits.add_metric([connector, tenant_id, candidate], 1 if candidate == state else 0)
    yield circuits
    latency = GaugeMetricFamily(
        "ledgerflow_connector_latency_seconds",
        f"Provider answer time of connector attempts finished in the last {ATTEMPT_WINDOW_MINUTES} minutes,"
        " by quantile",
        labels=["connector", "quantile"],
    )
    for connector, values in sorted(d.latency_ms.items()):
        for q, value in zip(QUANTILES, values, strict=True):
            if value is not None:
                latency.add_metric([connector, f"{q:g}"], value / 1000)
    yield latency
    attempts = GaugeMetricFamily(
        "ledgerflow_connector_attempts_recent",
        f"Connector attempts finished in the last {ATTEMPT_WINDOW_MINUTES} minutes, by outcome",
        labels=["connector", "outcome"],
    )
    for (connector, outcome), count in sorted(d.attempts.items()):
        attempts.add_metric([connector, outcome], count)
    yield attempts
    in_flight = GaugeMetricFamily(
        "ledgerflow_connector_in_flight", "Connector attempts started and not finished", labels=["connector"]
    )
    for connector, count in sorted(d.in_flight.items()):
        in_flight.add_metric([connector], count)
    yield in_flight
    restarts = CounterMetricFamily(
        "ledgerflow_process_restarts",
        "Times `ledgerflow run` started a process again after it exited (ops/supervisor.py)",
        labels=["host", "process"],
    )
    for (host, process), count in sorted(d.restarts.items()):
        restarts.add_metric([host, process], count)
    yield restarts


def _kafka_families(settings: Settings, k: KafkaFigures, d: DatabaseFigures | None) -> Iterator[Metric]:
    consumed = CounterMetricFamily(
        "ledgerflow_events_consumed",
        "Records a consumer group has committed past, per topic (sum of its committed offsets)",
        labels=["group", "topic"],
    )
    consumer_lag = GaugeMetricFamily(
        "ledgerflow_consumer_lag_records",
        "Records on a partition the group has not committed yet (end offset - committed offset)",
        labels=["group", "topic", "partition"],
    )
    members = GaugeMetricFamily(
        "ledgerflow_consumer_group_members",
        "Members of each consumer group, labelled with the group's state as Kafka reports it",
        labels=["group", "state"],
    )
    retry, _, _ = _topic_patterns(settings)
    waiting: dict[tuple[str, str], int] = {}
    for group in k.groups:
        members.add_metric([group.group, group.state], group.members)
        per_topic: dict[str, int] = {}
        for p in group.partitions:
            per_topic[p.topic] = per_topic.get(p.topic, 0) + (p.committed or 0)
            consumer_lag.add_metric([group.group, p.topic, str(p.partition)], p.lag)
            if m := retry.match(p.topic):
                waiting[(m.group(1), m.group(2))] = waiting.get((m.group(1), m.group(2)), 0) + p.lag
        for topic, passed in sorted(per_topic.items()):
            consumed.add_metric([group.group, topic], passed)
    yield consumed
    yield consumer_lag
    yield members
    retries = CounterMetricFamily(
        "ledgerflow_connector_retries",
        "Jobs sent to a connector's delay topic (tier) for a later attempt: records ever written to it",
        labels=["connector", "tier"],
    )
    for (connector, tier), count in sorted(k.retry_records.items()):
        retries.add_metric([connector, tier], count)
    yield retries
    waiting_family = GaugeMetricFamily(
        "ledgerflow_connector_retry_waiting",
        "Jobs waiting in a connector's delay topic (tier) for their next attempt",
        labels=["connector", "tier"],
    )
    for (connector, tier), count in sorted(waiting.items()):
        waiting_family.add_metric([connector, tier], count)
    yield waiting_family
    depth = GaugeMetricFamily(
        "ledgerflow_dlq_depth",
        "Dead letters awaiting a person: records retained on the DLQ topic, less those redriven or"
        " discarded (connector DLQs)",
        labels=["topic"],
    )
    for topic, records in sorted(k.dlq_records.items()):
        # As `ledgerflow connectors status` counts: actions on records still retained.
        owner = k.dlq_connector.get(topic)
        handled = sum(
            1
            for connector, partition, offset in (d.dlq_actions if d is not None else [])
            if connector == owner and offset >= k.dlq_begin.get((topic, partition), 0)
        )
        depth.add_metric([topic], max(0, records - handled))
    yield depth


# -- the endpoint ----------------------------------------------------------------------------------


def metrics_router(settings: Settings) -> tuple[APIRouter, EngineCollector]:
    """The ``/metrics`` route and its collector (close it when the app stops)."""
    collector = EngineCollector(settings)
    # A registry of our own: the process's default collectors (GC, memory) would differ between
    # the API's worker processes, and a scrape reaches only one of them.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    router = APIRouter()

    @router.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics of the whole engine (the operators' token when one is set)",
        response_class=Response,
        dependencies=[Depends(ops_token_check(settings))],
        responses={200: {"content": {TEXT_FORMAT: {}}, "description": "Prometheus text format"}},
    )
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=TEXT_FORMAT)

    return router, collector
