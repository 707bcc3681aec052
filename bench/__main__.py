"""``python -m bench``: run the scenarios against the local stack and print one table.

Stages (``--only`` takes any of them, repeatable): ``raw``, ``relay``, ``projection``, ``replay``,
``rebuild``, ``api``, ``latency``, ``worker``, ``scaling``, ``irn``, ``etims``, ``gstr1``,
``webhooks``, ``reconciliation``, ``webhook_intake``. Peak RSS is
reported for every process a run started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import api as api_stage
from bench import etims as etims_stage
from bench import gstr1 as gstr1_stage
from bench import irn as irn_stage
from bench import notification_log, raw_kafka, read_model_writes, workload
from bench import rebuild as rebuild_stage
from bench import reconciliation as reconciliation_stage
from bench import replay as replay_stage
from bench import scaling as scaling_stage
from bench import webhook_intake as webhook_intake_stage
from bench import webhooks as webhooks_stage
from bench import worker as worker_stage
from bench.env import BenchEnv, CpuPerEvent, Poller, free_port, retry, topic_size
from bench.report import Row, print_table, write_json
from connectors import registry as connector_registry
from ops import schema as outer_schema
from ops.projector_pool import default_processes
from projections.catalogue import PROJECTIONS
from streams.connectors.jobs import jobs_topic as jobs_topic_of

STAGES = [
    "raw",
    "relay",
    "projection",
    "replay",
    "rebuild",
    "api",
    "latency",
    "worker",
    "scaling",
    "irn",
    "etims",
    "gstr1",
    "webhooks",
    "reconciliation",
    "webhook_intake",
]
MB = 1024 * 1024
# Per process (issue 15): an API with N workers is N + 1 processes, each measured on its own.
RSS_LIMIT_MB = 300.0


@dataclass(frozen=True)
class Sizes:
    backlog: int
    api_seconds: float
    api_concurrency: int
    latency_rate: float
    latency_seconds: float
    worker_messages: int
    # uvicorn worker processes for the API stage: `ledgerflow api --workers N`.
    api_workers: int = 2
    # IRN stage: invoices for the unlimited (and the faulty) run, and for the run at the 10/s limit.
    irn_unlimited: int = 1_000
    irn_limited: int = 200
    # `ledgerflow connectors run` processes in the IRN stage.
    irn_connector_workers: int = 1
    # Events on the topic the rebuild stage rebuilds invoice_register from.
    rebuild_events: int = 1_000_000
    # eTIMS stage: branches (one sequential sale stream each, as KRA takes them), sales per branch
    # with no limit, and with the sandbox's congestion profile (1.5 s an answer).
    etims_branches: int = 4
    etims_per_branch: int = 250
    etims_congested_per_branch: int = 10
    # GSTR-1 stage: documents in the month the return is generated over.
    gstr1_invoices: int = 100_000
    # Webhook stage: invoices delivered to the fast receiver (the slow one gets the same).
    webhook_deliveries: int = 1_000
    # Reconciliation stage: bank lines in the month.
    reconciliation_lines: int = 100_000
    # Webhook intake stage: signed Razorpay deliveries posted to the receiver.
    intake_deliveries: int = 5_000


FULL = Sizes(
    backlog=50_000,
    api_seconds=20,
    api_concurrency=16,
    latency_rate=50,
    latency_seconds=20,
    worker_messages=2_000,
)
QUICK = Sizes(
    backlog=5_000,
    api_seconds=5,
    api_concurrency=16,
    latency_rate=50,
    latency_seconds=5,
    worker_messages=300,
    irn_unlimited=200,
    irn_limited=50,
    rebuild_events=50_000,
    etims_per_branch=50,
    etims_congested_per_branch=3,
    gstr1_invoices=5_000,
    webhook_deliveries=200,
    reconciliation_lines=5_000,
    intake_deliveries=500,
)

# A table of seven columns needs more than the 80 columns rich assumes when output is not a terminal.
console = Console(width=None if Console().is_terminal else 180)


@contextmanager
def bar(description: str, total: int | None) -> Iterator[Any]:
    with Progress(
        TextColumn("[bold]{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        def update(completed: int) -> None:
            progress.update(task, completed=completed)

        advance.update = update  # type: ignore[attr-defined]
        yield advance


def cpu_note(measured: dict[str, Any]) -> str:
    cpu = measured["cpu_ms_per_irn"]
    return ", ".join(
        f"{name} {ms:.1f} ms" for name, ms in cpu.items() if name in ("connectors", "irp-sandbox")
    )


class Run:
    def __init__(self, env: BenchEnv, sizes: Sizes, stages: list[str]) -> None:
        self.env = env
        self.projectors = 1
        self.sizes = sizes
        self.stages = stages
        self.rows: list[Row] = []
        self.extra: dict[str, Any] = {"sizes": sizes.__dict__, "stages": stages}
        self.poll = Poller(env)
        self.service: Any = None
        self.tenant: Any = None
        self.api_key = ""
        self.shape: dict[str, Any] = {}
        self.raw_produce: float | None = None
        self.raw_consume: float | None = None
        self.api_url = ""
        self.disrupted = False
        self.keep = False  # --keep: also keep the IRN stage's schema, topics and logs

    # -- set-up -----------------------------------------------------------------------------

    def setup(self) -> None:
        from engine.bootstrap import build_service

        self.env.ensure_topics([raw_kafka.RAW_TOPIC, raw_kafka.WARM_UP_TOPIC])
        self.service = retry(lambda: build_service(self.env.settings, pool_size=4))
        self.tenant, self.api_key = retry(lambda: workload.register_tenant(self.service))

    def message_shape(self) -> dict[str, Any]:
        if not self.shape:
            self.shape = workload.message_shape([workload.build(self.tenant, f"M{i}") for i in range(200)])
        return self.shape

    # -- stages -----------------------------------------------------------------------------

    def seed(self) -> None:
        n = self.sizes.backlog
        with bar(f"seed {n:,} events", n) as advance:
            stored, shape, seconds = workload.seed(self.service, self.tenant, n, progress=advance)
        self.shape = shape
        self.extra["seed"] = {"events": stored, "seconds": seconds, "events_per_s": stored / seconds}
        self.extra["message_bytes"] = {k: v for k, v in shape.items() if k != "headers"}

    def warm_up(self) -> None:
        """Produce and consume a backlog's worth of messages on a topic of their own, untimed, before
        any Kafka stage. On a broker just started, the relay stage (the first to send) ran while the
        broker's JIT compilers still took CPU and the raw baseline (timed after it) did not: on a
        fresh stack the relay measured 0.39 of raw produce with the same CPU per event (43 us) as
        its 0.48 on a broker running a few minutes (docs/performance.md, "bench-warm-up")."""
        shape = self.message_shape()
        n = self.sizes.backlog
        started = time.monotonic()
        with bar(f"broker warm-up: produce and consume {n:,}", 2 * n) as advance:
            settings = self.env.settings
            topic = raw_kafka.WARM_UP_TOPIC
            asyncio.run(raw_kafka.produce(settings, n, shape, progress=advance, logical_topic=topic))
            asyncio.run(raw_kafka.consume(settings, n, progress=advance, logical_topic=topic))
        self.extra["broker_warm_up"] = {"messages": n, "seconds": time.monotonic() - started}

    def raw(self) -> None:
        shape = self.message_shape()
        n = self.sizes.backlog
        with bar(f"raw aiokafka produce {n:,}", n) as advance:
            self.raw_produce = asyncio.run(raw_kafka.produce(self.env.settings, n, shape, progress=advance))
        with bar(f"raw aiokafka consume {n:,}", n) as advance:
            self.raw_consume = asyncio.run(raw_kafka.consume(self.env.settings, n, progress=advance))
        size = shape["value_bytes"] + shape["key_bytes"] + shape["header_bytes"]
        note = f"{size:,} B/msg (value {shape['value_bytes']:,} + key + headers)"
        self.rows.append(
            Row("raw aiokafka", "produce (acks=all, idempotent)", self.raw_produce, "msg/s", note=note)
        )
        self.rows.append(Row("raw aiokafka", "consume (getmany)", self.raw_consume, "msg/s", note=note))

    def relay(self) -> None:
        target = self.poll.max_notification()
        events = target - self.poll.relay_position()
        with bar(f"relay catch-up {events:,} events", events) as advance:
            proc = self.env.start("relay", "relay")
            ready = proc.wait_log(r"relay \S+ starting after notification")
            cpu_at_ready = proc.cpu_seconds()
            while True:
                position = self.poll.relay_position()
                advance.update(events - (target - position))
                if position >= target:
                    break
                proc.check()
                time.sleep(0.02)
            done = time.monotonic()
            # The relay's CPU (its encoder processes included) per event: steadier than the rate on
            # a shared machine.
            cpu_us = (proc.cpu_seconds() - cpu_at_ready) / max(events, 1) * 1e6
        rate = events / (done - ready)
        # The PostgreSQL side alone, beside it (issue 15): the same pages, nothing encoded or sent.
        read, read_rate = notification_log.read_rate(self.env.settings)
        self.extra["relay"] = {
            "events": events,
            "seconds_from_ready": done - ready,
            "seconds_from_spawn": done - proc.started,
            "notification_log_read_per_s": read_rate,
            "cpu_us_per_event": cpu_us,
        }
        self.rows.append(
            Row(
                "relay catch-up",
                f"events/s over {events:,}",
                rate,
                "ev/s",
                5_000,
                raw=self.raw_produce,
                note=f"store -> Kafka; relay CPU {cpu_us:.0f} µs/event (with its encoders)",
            )
        )
        self.rows.append(
            Row(
                "relay catch-up",
                f"notification log read alone, {read:,} events",
                read_rate,
                "ev/s",
                note="the relay's reader and pages: PostgreSQL side only",
            )
        )

    def projection(self) -> None:
        self.env.start("relay", "relay")
        self.wait_relayed()
        topic = self.env.settings.topic("ledger.invoice.v1")
        total = topic_size(self.env, "ledger.invoice.v1")
        already = self.poll.projected(topic)
        events = total - already
        with bar(f"projection catch-up {events:,} events", events) as advance:
            proc = self.start_projectors()
            ready = proc.wait_log(r"\binvoice_register\b.*assigned")
            cpu = CpuPerEvent(proc)
            done = self._caught_up(proc, topic, total, already, advance)
            projector_us, postgres_us = cpu.since(events)
        rate = events / (done - ready)
        # Issue 15: a quarter of raw consume in the same run (without `raw`: the old floor).
        target = 0.25 * self.raw_consume if self.raw_consume else 10_000
        self.env.stop("projector")
        every = [p.table for p in PROJECTIONS if "ledger.invoice.v1" in p.topics]
        bare = self.bare_writes(every, events, "every projection")
        self.extra["projection"] = {
            "events": events,
            "seconds_from_ready": done - ready,
            "seconds_from_spawn": done - proc.started,
            "projector_cpu_us_per_event": projector_us,
            "postgres_cpu_us_per_event": postgres_us,
            "postgres_alone": bare.summary(),
        }
        self.rows.append(
            Row(
                "projection catch-up",
                f"events/s over {events:,}",
                rate,
                "ev/s",
                target,
                raw=self.raw_consume,
                note=(f"{self.projectors} projector processes; " if self.projectors > 1 else "")
                + "Kafka -> every projection of the invoice topic; target: 25% of raw consume (same"
                f" run); CPU µs/event: projector {projector_us:.0f}, PostgreSQL {postgres_us:.0f}",
            )
        )
        self.bare_rows("every projection", rate, bare)
        alone = self.register_alone(topic, total)
        self.rows.append(
            Row(
                "projection catch-up",
                f"invoice_register alone, events/s over {alone['events']:,}",
                alone["rate"],
                "ev/s",
                target,
                raw=self.raw_consume,
                note="Kafka -> invoice_register: the stage as issue 15 measured it when filed, before "
                f"four more projections of the invoice topic existed; CPU µs/event: projector"
                f" {alone['projector_us']:.0f}, PostgreSQL {alone['postgres_us']:.0f}",
            )
        )
        bare = self.bare_writes(["invoice_register"], total, "invoice_register")
        self.extra["projection_register_alone"]["postgres_alone"] = bare.summary()
        self.bare_rows("invoice_register alone", alone["rate"], bare)

    def bare_writes(self, tables: list[str], events: int, label: str) -> read_model_writes.BareWrites:
        """PostgreSQL alone storing the rows the stage just wrote again, as many writers as the
        projector had processes: the stage's ceiling with these read models, in the same run."""
        writers = self.projectors if self.projectors > 1 else default_processes(self.env.settings)
        with bar(f"{label}: PostgreSQL alone, the same rows", events) as advance:
            return read_model_writes.store_again(self.env.connect, tables, events, writers, advance)

    def bare_rows(self, label: str, rate: float, bare: read_model_writes.BareWrites) -> None:
        self.rows.append(
            Row(
                "projection catch-up",
                f"{label}: PostgreSQL alone storing the same rows, events/s",
                bare.rate,
                "ev/s",
                raw=self.raw_consume,
                note=f"{bare.rows:,} rows, {bare.writers} writers, binary COPY of 2,500 a transaction;"
                f" PostgreSQL {bare.postgres_us_per_event:.0f} µs/event; no Kafka, no Python per row:"
                " the stage's ceiling with these read models",
            )
        )
        self.rows.append(
            Row(
                "projection catch-up",
                f"{label} / PostgreSQL alone",
                rate / bare.rate,
                "",
                note="the share of the database's own rate the projector keeps",
            )
        )

    def _caught_up(
        self, proc: Any, topic: str, total: int, already: int, advance: Any, only: str | None = None
    ) -> float:
        """Poll until ``topic`` is applied up to ``total``; the moment it was."""
        while True:
            projected = self.poll.projected(topic, only)
            advance.update(projected - already)
            if projected >= total:
                return time.monotonic()
            proc.check()
            time.sleep(0.02)

    def register_alone(self, topic: str, total: int) -> dict[str, float]:
        """The register projected again from an empty table by a projector of it alone (issue 15's
        stage as filed). The full projector stops meanwhile; later stages start it again."""
        self.env.stop("projector")
        with self.env.connect() as conn:
            conn.execute("TRUNCATE invoice_register")
            conn.execute("DELETE FROM projection_tracking WHERE projection = 'invoice_register'")
            conn.execute("DELETE FROM projection_dead_letters WHERE projection = 'invoice_register'")
        with bar(f"invoice_register alone {total:,} events", total) as advance:
            extra = ["--processes", str(self.projectors)] if self.projectors > 1 else []
            proc = self.env.start(
                "projector-register", "projector", "--projection", "invoice_register", *extra
            )
            ready = proc.wait_log(r"\binvoice_register\b.*assigned")
            cpu = CpuPerEvent(proc)
            done = self._caught_up(proc, topic, total, 0, advance, "invoice_register")
            projector_us, postgres_us = cpu.since(total)
        self.env.stop("projector-register")
        self.extra["projection_register_alone"] = {
            "events": total,
            "seconds_from_ready": done - ready,
            "projector_cpu_us_per_event": projector_us,
            "postgres_cpu_us_per_event": postgres_us,
        }
        return {
            "events": total,
            "rate": total / (done - ready),
            "projector_us": projector_us,
            "postgres_us": postgres_us,
        }

    def replay(self) -> None:
        """`ledgerflow replay --into-topic` beside a plain aiokafka consume+produce of the same records."""
        self.env.ensure_topics(replay_stage.TOPICS)
        n = max(self.sizes.backlog, replay_stage.MIN_RECORDS)
        with bar(f"replay source: produce {n:,}", n) as advance:
            replay_stage.fill(self.env.settings, n, self.message_shape(), advance)
        with bar(f"raw aiokafka consume+produce {n:,}", n) as advance:
            raw = replay_stage.raw_copy(self.env.settings, n, advance)
        with bar(f"ledgerflow replay --into-topic {n:,}", n) as advance:
            summary = replay_stage.replay_copy(self.env.settings, advance)
        if summary.written != n:
            raise RuntimeError(f"replay wrote {summary.written} of {n} records")
        self.extra["replay"] = {"records": n, "seconds": summary.seconds, "raw_copy_per_s": raw}
        self.rows.append(
            Row("raw aiokafka", "consume+produce (getmany -> send)", raw, "msg/s", note="same records")
        )
        self.rows.append(
            Row(
                "replay into topic",
                f"events/s over {n:,}",
                summary.rate,
                "ev/s",
                0.5 * raw,
                raw=raw,
                note="target: 50% of raw consume+produce (same run, same records)",
            )
        )

    def rebuild(self) -> None:
        """`ledgerflow projections rebuild invoice_register` over a topic of `rebuild_events` invoices."""
        for name in list(self.env.procs):  # the other stages' processes would share the cores
            self.env.stop(name)
        n = self.sizes.rebuild_events
        env = BenchEnv.create(self.env.settings.partitions)
        try:
            env.ensure_topics()
            with bar(f"rebuild source: produce {n:,}", n) as advance:
                started = time.monotonic()
                rebuild_stage.fill(env, self.tenant, n, advance)
                produced = n / (time.monotonic() - started)
            with bar(f"projections rebuild {n:,} events", n) as advance:
                summary = rebuild_stage.run_rebuild(env, n, advance)
            largest = env.procs["rebuild"].peak_single_rss
        finally:
            env.close(keep=self.keep)
            for name, peak in env.peak_rss.items():
                self.env.peak_rss[name] = max(self.env.peak_rss.get(name, 0), peak)
        if summary["events_applied"] != n or summary["rows"] != n:
            raise RuntimeError(
                f"rebuild applied {summary['events_applied']} events, {summary['rows']} rows of {n}"
            )
        self.extra["rebuild"] = {**summary, "produce_per_s": produced}
        note = (
            f"fill {summary['fill_seconds']:.0f} s, indexes {summary['index_seconds']:.1f} s,"
            f" swap {summary['swap_seconds']:.2f} s; peak RSS {largest / MB:.0f} MB per process"
        )
        self.rows.append(
            Row(
                "projection rebuild",
                f"events/s over {n:,} (fill)",
                summary["events_per_s"],
                "ev/s",
                raw=self.raw_consume,
                note="Kafka -> shadow table",
            )
        )
        self.rows.append(
            Row(
                "projection rebuild",
                f"wall time, {n:,} events",
                summary["wall_seconds"],
                "s",
                60,
                op="<",
                note=note,
            )
        )
        self.rows.append(
            Row(
                "peak RSS",
                "ledgerflow projections rebuild",
                largest / MB,
                "MB",
                RSS_LIMIT_MB,
                op="<",
                note=f"largest process; with its fill workers {env.peak_rss.get('rebuild', 0) / MB:.0f} MB",
            )
        )

    def gstr1(self) -> None:
        """GSTR-1 over a month of `gstr1_invoices` documents, beside a bare SQL aggregation of them."""
        n = self.sizes.gstr1_invoices
        settings = self.env.settings
        with self.env.connect() as conn:
            with bar(f"gstr1: load {n:,} documents", n) as advance:
                gstr1_stage.load(conn, self.tenant.id, n, advance)
            sql_seconds, sql_sums = gstr1_stage.bare_sql(conn, self.tenant.id)
        with bar("gstr1: generate the return", None):
            result = gstr1_stage.generate_in_child(settings.database_url, settings.db_schema, self.tenant.id)
        if (Decimal(result["txval"]), Decimal(result["tax"])) != (sql_sums["txval"], sql_sums["tax"]):
            raise RuntimeError(f"the return's totals {result} differ from the bare SQL's {sql_sums}")
        self.extra["gstr1"] = {**result, "sql_seconds": sql_seconds, "invoices": n}
        ratio = result["seconds"] / sql_seconds if sql_seconds else float("nan")
        self.rows.append(
            Row(
                "GSTR-1 generation",
                f"seconds, a month of {n:,} documents",
                result["seconds"],
                "s",
                note=(f"{result['parts']} part(s), items {result['items']}; {ratio:.0f}x the bare SQL below"),
            )
        )
        self.rows.append(
            Row(
                "GSTR-1 generation",
                "bare SQL aggregation, same rows",
                sql_seconds,
                "s",
                note="per section, place and rate over the jsonb lines; same taxable value and tax",
            )
        )
        self.rows.append(
            Row("peak RSS", "GSTR-1 generation process", result["peak_rss_mb"], "MB", RSS_LIMIT_MB, op="<")
        )

    def start_api(self) -> None:
        if "api" in self.env.procs and self.env.procs["api"].popen.poll() is None:
            return
        port = free_port()
        proc = self.env.start("api", "api", "--port", str(port), "--workers", str(self.sizes.api_workers))
        # Every worker, not just the first: on a loaded machine the second one may still be
        # importing when the first answers, and its start-up would fall inside the measurement.
        workers = self.sizes.api_workers
        proc.wait_log(rf"(?s)(?:Application startup complete.*?){{{workers}}}", timeout=120)
        self.api_url = f"http://127.0.0.1:{port}"

    def start_projectors(self) -> Any:
        """``ledgerflow projector`` (``--projectors N``: N processes sharing the partitions)."""
        # One `ledgerflow projector`: its own pool of processes (ops/projector_pool.py), one per
        # core by default, N with --projectors N.
        extra = ["--processes", str(self.projectors)] if self.projectors > 1 else []
        return self.env.start("projector", "projector", *extra)

    def start_pipeline(self) -> None:
        self.env.start("relay", "relay")
        proc = self.start_projectors()
        proc.wait_log(r"\binvoice_register\b.*assigned")
        self.start_api()

    def wait_relayed(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.poll.relay_position() < self.poll.max_notification():
            self.env.check()
            if time.monotonic() > deadline:
                raise TimeoutError("the relay did not catch up")
            time.sleep(0.05)

    def wait_drained(self, timeout: float = 300) -> None:
        """Relay and projection caught up with everything stored so far."""
        self.wait_relayed(timeout)
        topic = self.env.settings.topic("ledger.invoice.v1")
        total = topic_size(self.env, "ledger.invoice.v1")
        deadline = time.monotonic() + timeout
        while self.poll.projected(topic) < total:
            self.env.check()
            if time.monotonic() > deadline:
                raise TimeoutError("the projection did not catch up")
            time.sleep(0.05)

    def api(self) -> None:
        self.start_pipeline()
        seconds = self.sizes.api_seconds
        concurrency = self.sizes.api_concurrency
        cpu_before = {name: proc.cpu_seconds() for name, proc in self.env.procs.items()}
        console.print(f"API ingest: {seconds:g}s, {concurrency} connections…")
        result = api_stage.ingest_wrk(self.api_url, self.api_key, seconds=seconds, connections=concurrency)
        client = "wrk"
        if result is None:
            client = "python client (install wrk for a client that leaves the CPU to the API)"
            with bar(f"API ingest {seconds:g}s, {concurrency} in flight", None) as advance:
                result = asyncio.run(
                    api_stage.ingest(
                        self.api_url, self.api_key, seconds=seconds, concurrency=concurrency, progress=advance
                    )
                )
        cpu = {name: proc.cpu_seconds() - cpu_before[name] for name, proc in self.env.procs.items()}
        if result.error_samples:
            console.print(f"[yellow]API errors ({result.errors}):[/] {result.error_samples}")
        self.extra["api"] = {
            "created": result.created,
            "errors": result.errors,
            "seconds": result.seconds,
            "concurrency": concurrency,
            "client": client,
            "request_p50_ms": result.request_percentile(50),
            "request_p99_ms": result.request_percentile(99),
            "cpu_ms_per_invoice": {n: 1000 * c / max(result.created, 1) for n, c in cpu.items()},
            "cpu_utilisation": {n: c / result.seconds for n, c in cpu.items()},
        }
        self.rows.append(
            Row(
                "API ingest",
                f"invoices/s ({workload.LINES_PER_INVOICE} lines, {concurrency} conns, {client.split()[0]})",
                result.rate,
                "inv/s",
                200,
                note=f"{result.errors} errors; request p50 {self.extra['api']['request_p50_ms']:.0f} ms,"
                f" p99 {self.extra['api']['request_p99_ms']:.0f} ms",
            )
        )
        # The API's ceiling in the same conditions (relay and projector still running).
        writers = self.sizes.api_workers
        with console.status(f"bare event-store saves: {writers} writers"):
            bare = api_stage.bare_saves(
                self.env.settings, self.tenant.id, writers=writers, seconds=min(seconds, 10)
            )
        self.extra["api"]["bare_saves"] = {"saved": bare.saved, "seconds": bare.seconds, "writers": writers}
        self.rows.append(
            Row(
                "API ingest",
                f"bare event-store saves/s ({writers} writers, 1 invoice per transaction)",
                bare.rate,
                "inv/s",
                note=f"ledger.save of pre-built {workload.LINES_PER_INVOICE}-line invoices, as many"
                " writer processes as API workers",
            )
        )
        self.rows.append(
            Row(
                "API ingest",
                "API / bare event-store saves",
                result.rate / bare.rate if bare.rate else 0.0,
                "",
                0.60,
                note="the share of the event store's rate the HTTP path keeps",
            )
        )

    def latency(self) -> None:
        self.start_pipeline()
        with console.status("waiting for the relay and projection to drain"):
            self.wait_drained()
        rate, seconds = self.sizes.latency_rate, self.sizes.latency_seconds
        total = int(rate * seconds)
        with bar(f"end-to-end at {rate:g}/s for {seconds:g}s", total) as advance:
            result = asyncio.run(
                api_stage.end_to_end(
                    self.api_url,
                    self.api_key,
                    self.env.settings,
                    rate=rate,
                    seconds=seconds,
                    progress=advance,
                )
            )
        self.extra["latency"] = {
            "sent": result.sent,
            "created": result.created,
            "seen_in_register": result.seen,
            "errors": result.errors,
            "offered_rate": result.offered_rate,
            "p50_ms": result.p50,
            "p99_ms": result.p99,
            "max_ms": max(result.latencies_ms, default=float("nan")),
            "request_p50_ms": api_stage.percentile(result.request_ms, 50),
            "request_p99_ms": api_stage.percentile(result.request_ms, 99),
        }
        note = f"{result.seen}/{result.sent} seen at {result.offered_rate:.1f}/s"
        self.rows.append(Row("end-to-end", "201 -> register row, p50", result.p50, "ms", note=note))
        self.rows.append(
            Row("end-to-end", "201 -> register row, p99", result.p99, "ms", 500, op="<", note=note)
        )
        if result.seen < result.created:
            self.rows.append(
                Row("end-to-end", "invoices never seen", result.created - result.seen, "", 0, op="<")
            )

    def worker(self) -> None:
        # The earlier stages' relay and projectors (and the idle API) are stopped, as the scaling
        # stage does: left running, the relay published each ingested invoice again during the
        # timed window, the projector shares projected it and the worker's own router routed it
        # back in the same process, so on 2 cores the stage measured that whole pipeline and
        # the worker's CPU per command doubled (docs/performance.md, "ingest1000").
        for name in ("relay", "projector", "api"):
            if name in self.env.procs:
                self.env.stop(name)
        proc = self.env.start("worker", "worker")
        tenant_id = self.tenant.id
        warm = worker_stage.new_prefix()
        with console.status("starting the faust worker"):
            asyncio.run(worker_stage.publish(self.env, tenant_id, warm, 1))
            worker_stage.wait_applied(self.env, warm, 1, timeout=120)
        with console.status("waiting for the worker's router to catch up with ledger.invoice.v1"):
            router_s = worker_stage.wait_router_idle(self.env)
        n = self.sizes.worker_messages
        prefix = worker_stage.new_prefix()
        with bar(f"faust ingest worker {n:,} commands", n) as advance:
            cpu_before = proc.cpu_seconds()
            own_before = time.process_time()
            started = time.monotonic()
            asyncio.run(worker_stage.publish(self.env, tenant_id, prefix, n))
            published = time.monotonic()
            own_published = time.process_time()
            done = worker_stage.wait_applied(self.env, prefix, n, timeout=600, progress=advance)
            cpu_ms = (proc.cpu_seconds() - cpu_before) * 1000 / n
        proc.check()
        rate = n / (done - started)
        self.extra["worker"] = {
            "messages": n,
            "seconds": done - started,
            "router_catch_up_s": router_s,
            # Where the timed window goes: the bench publishing in it, and the worker's CPU.
            "publish_s": published - started,
            "publisher_cpu_s": own_published - own_before,
            "worker_cpu_ms_per_command": cpu_ms,
            "load_average": os.getloadavg()[0],
        }
        self.rows.append(
            Row(
                "ingest worker",
                "invoices/s (faust agent, batches)",
                rate,
                "inv/s",
                1_000,
                note=f"Kafka -> event store; worker {cpu_ms:.2f} ms CPU/command",
            )
        )

    def scaling(self) -> None:
        """One stream worker, then two, on the same size of ingest backlog (bench/scaling.py)."""
        for name in list(self.env.procs):  # the other stages' processes would share the cores
            self.env.stop(name)
        drains = scaling_stage.measure(self.env, self.tenant.id, self.sizes.worker_messages, bar)
        self.extra["scaling"] = scaling_stage.as_json(drains)
        self.rows.extend(scaling_stage.rows(drains))
        peak = max(mb for d in drains for mb in d.peak_rss_mb.values())
        self.rows.append(
            Row("peak RSS", "ledgerflow worker (scaling stage)", peak, "MB", RSS_LIMIT_MB, op="<")
        )

    # -- e-invoicing ------------------------------------------------------------------------

    def irn(self) -> None:
        """IRNs through the runtime against the IRP sandbox: no limit, the 10/s limit, 20 % errors."""
        # The other stages' processes would share the two cores with this one's.
        for name in list(self.env.procs):
            self.env.stop(name)
        env = BenchEnv.create(self.env.settings.partitions)
        console.print(f"IRN stage: schema [cyan]{env.settings.db_schema}[/]; logs in {env.workdir}")
        try:
            self._irn(env)
        except BaseException:
            for proc in env.procs.values():
                if proc.popen.poll() is not None and proc.popen.returncode not in (0, -15):
                    console.print(f"[red]{proc.name} exited {proc.popen.returncode}[/]\n{proc.tail()}")
            raise
        finally:
            hit = env.disrupted({})
            env.close(keep=self.keep)
            for name, peak in env.peak_rss.items():
                self.env.peak_rss[name] = max(self.env.peak_rss.get(name, 0), peak)
        if hit:
            self.disrupted = True
            console.print(f"[yellow]outage logged by {', '.join(hit)} during the IRN stage: re-run it[/]")
            for row in self.rows:
                if row.stage == "IRN pipeline":
                    row.note = f"DISRUPTED ({', '.join(hit)} lost a connection); {row.note}"

    def _irn(self, env: BenchEnv) -> None:
        from engine.bootstrap import build_service
        from ops.topics import ensure_all

        env.ensure_topics()
        retry(lambda: ensure_all(irn_stage.connector_settings(env.settings)))
        service = retry(lambda: build_service(env.settings, pool_size=4))
        sandbox = irn_stage.Sandbox(env)
        try:
            tenant = retry(lambda: irn_stage.register_tenant(service, env.settings, sandbox.url))
            env.start("relay", "relay")
            n, limited = self.sizes.irn_unlimited, self.sizes.irn_limited
            free = self._irn_measure(env, service, tenant, sandbox, "no limit", n, "none", None, "U")
            capped = self._irn_measure(
                env, service, tenant, sandbox, "10/s limit", limited, f"{irn_stage.RATE_LIMIT:g}", None, "L"
            )
            faulty = self._irn_measure(
                env, service, tenant, sandbox, "20% errors", n, "none", irn_stage.FAULTS, "F"
            )
        finally:
            sandbox.close()
        self.extra["irn"] = {"no_limit": free, "limit_10": capped, "errors_20": faulty}
        workers = self.sizes.irn_connector_workers
        self.rows.append(
            Row(
                "IRN pipeline",
                f"IRNs/s, no provider limit ({free['jobs']:,} jobs)",
                free["irn_per_s"],
                "IRN/s",
                note=f"first attempt -> last IRN {free['seconds']:.1f} s; {workers} connector worker(s);"
                f" router {free['router_jobs_per_s']:.0f} jobs/s; {free['requests_per_irn']:.3f} req/IRN;"
                f" CPU/IRN: {cpu_note(free)}",
            )
        )
        self.rows.append(
            Row(
                "IRN pipeline",
                f"IRNs/s at the 10/s limit ({capped['jobs']:,} jobs)",
                capped["irn_per_s"],
                "IRN/s",
                note=f"{capped['requests']:,} requests in {capped['seconds']:.1f} s"
                f" ({capped['requests'] / capped['seconds']:.2f} req/s)",
            )
        )
        self.rows.append(
            Row(
                "IRN pipeline",
                "achieved / limit (IRNs/s / 10)",
                capped["irn_per_s"] / irn_stage.RATE_LIMIT,
                "",
                1.0,
                op="≈",
                note="slots are spaced 1.05 / limit apart, so at most 0.95",
            )
        )
        self.rows.append(
            Row(
                "IRN pipeline",
                "sandbox peak requests/s at the 10/s limit",
                capped["peak_rps"],
                "req/s",
                irn_stage.RATE_LIMIT,
                op="<=",
                note="busiest 1 s sliding window seen by the sandbox",
            )
        )
        self.rows.append(
            Row(
                "IRN pipeline",
                f"IRNs/s with 20% errors, retried ({faulty['jobs']:,} jobs)",
                faulty["irn_per_s"],
                "IRN/s",
                note=f"{faulty['retryable_attempts']:,} retryable attempts;"
                f" circuit opened: {'yes' if faulty['circuit_opened'] else 'no'};"
                f" {faulty['dead_letters']} other failures",
            )
        )
        self.rows.append(
            Row(
                "IRN pipeline",
                "requests per IRN with 20% errors",
                faulty["requests_per_irn"],
                "req/IRN",
                note=f"fault-free {free['requests_per_irn']:.3f}; 1 / 0.8 = 1.25 expected",
            )
        )
        extra = faulty["seconds"] - free["seconds"]
        self.rows.append(
            Row(
                "IRN pipeline",
                "extra wall time from retries",
                extra,
                "s",
                note=f"{faulty['seconds']:.1f} s vs {free['seconds']:.1f} s fault-free"
                f" ({100 * extra / free['seconds']:+.0f}%)",
            )
        )

    def _irn_measure(
        self,
        env: BenchEnv,
        service: Any,
        tenant: Any,
        sandbox: irn_stage.Sandbox,
        label: str,
        n: int,
        rate: str,
        faults: dict[str, Any] | None,
        prefix: str,
    ) -> dict[str, Any]:
        """Issue ``n`` invoices, route them all to jobs, then time the connector until each has its IRN."""
        process_env = irn_stage.process_env(rate)
        workers = [
            "connectors",
            *(f"connectors-{i + 2}" for i in range(self.sizes.irn_connector_workers - 1)),
        ]
        for name in ["worker", *workers]:  # the rate limit and retry settings are read at start
            env.stop(name)
        sandbox.reset(faults)
        jobs_topic = env.settings.topic(jobs_topic_of(irn_stage.CONNECTOR))
        jobs_before = irn_stage.topic_end(env, jobs_topic)
        irns_before = irn_stage.recorded(env)
        mark = irn_stage.attempt_mark(env)
        with console.status(f"IRN {label}: issuing {n:,} invoices"):
            issue_seconds = irn_stage.issue(service, tenant, n, prefix)
        with bar(f"IRN {label}: router, {n:,} jobs", n) as advance:
            env.start("worker", "worker", env=process_env)
            first_job, routed = irn_stage.wait_topic(
                env,
                jobs_topic,
                jobs_before + n,
                timeout=300,
                progress=lambda end: advance.update(end - jobs_before),
            )
        circuit_opened = False
        cpu_before = {name: proc.cpu_seconds() for name, proc in env.procs.items() if name not in workers}
        with bar(f"IRN {label}: connector, {n:,} IRNs", n) as advance:
            for name in workers:
                env.start(name, "connectors", "run", env=process_env)
            deadline = time.monotonic() + max(300.0, 3 * n / irn_stage.RATE_LIMIT)
            while True:
                done = irn_stage.recorded(env) - irns_before
                advance.update(done)
                if done >= n:
                    break
                circuit_opened = circuit_opened or irn_stage.circuits_open(env) > 0
                if time.monotonic() > deadline:
                    raise TimeoutError(f"IRN {label}: {done} of {n} IRNs recorded")
                env.check()
                time.sleep(0.1)
        cpu = {
            name: proc.cpu_seconds() - cpu_before.get(name, 0.0)
            for name, proc in env.procs.items()
            if proc.popen.poll() is None
        }
        attempts = irn_stage.attempts_since(env, mark)
        stats = sandbox.stats()
        effects = int(stats["effects"].get("irn_generated", 0))
        if effects != n:
            console.print(f"[red]IRN {label}: the sandbox generated {effects} IRNs for {n} invoices[/]")
        return {
            "jobs": n,
            "issue_seconds": issue_seconds,
            "router_seconds": routed - first_job,
            "router_jobs_per_s": n / max(routed - first_job, 1e-3),
            "seconds": attempts.seconds,
            "irn_per_s": n / attempts.seconds,
            "attempts": attempts.total,
            "retryable_attempts": attempts.retryable,
            "dead_letters": attempts.other_failures,
            "circuit_opened": circuit_opened,
            "requests": int(stats["requests"]),
            "paths": stats.get("paths", {}),
            "irn_generated": effects,
            "requests_per_irn": int(stats["requests"]) / max(effects, 1),
            "peak_rps": float(stats["peak_rps"]),
            "faults_injected": stats.get("faults_injected", {}),
            # CPU while the connector ran (connectors: from its start, so with its start-up).
            "cpu_ms_per_irn": {name: 1000 * c / n for name, c in cpu.items()},
        }

    # -- outbound webhooks -------------------------------------------------------------------

    def webhooks(self) -> None:
        """Deliveries/s to a fast receiver with a slow endpoint present, beside a bare httpx loop."""
        for name in list(self.env.procs):  # the other stages' processes would share the two cores
            self.env.stop(name)
        env = BenchEnv.create(self.env.settings.partitions)
        console.print(f"webhook stage: schema [cyan]{env.settings.db_schema}[/]; logs in {env.workdir}")
        try:
            figures = webhooks_stage.measure(env, self.sizes.webhook_deliveries)
        finally:
            env.close(keep=self.keep)
        slow = webhooks_stage.SLOW_DELAY_S
        note = f"{figures.deliveries} invoices; slow endpoint ({slow:g} s an answer) present"
        self.rows += [
            Row(
                "webhooks",
                "deliveries/s (fast receiver)",
                figures.per_s,
                "/s",
                raw=figures.bare_per_s,
                note=note,
            ),
            Row("webhooks", "bare httpx POST/s (same body, signed)", figures.bare_per_s, "/s"),
            Row("webhooks", "slow receiver deliveries meanwhile", figures.slow_delivered, "deliveries"),
        ]
        self.extra["webhooks"] = figures.__dict__

    # -- reconciliation and webhook intake (issue 12) -------------------------------------------

    def reconciliation(self) -> None:
        """Bank lines judged per second over a month, beside a bare SQL join of the same rows."""
        n = self.sizes.reconciliation_lines
        with self.env.connect() as conn:
            with bar(f"reconciliation: {n:,} bank lines", n) as advance:
                seconds, events, expected = reconciliation_stage.catch_up(conn, self.tenant.id, n, advance)
            found = reconciliation_stage.counts(conn, self.tenant.id)
            # Fresh statistics for the bare join's plan (autovacuum would take its time to notice).
            conn.execute("ANALYZE reconciliation")
            sql_seconds, candidates = reconciliation_stage.bare_sql(conn, self.tenant.id)
        if found.get("matched", 0) != expected or sum(found.values()) != n:
            raise RuntimeError(
                f"reconciliation found {found}, the month was built for {expected} of {n} matched"
            )
        per_s = n / seconds if seconds else float("nan")
        sql_per_s = n / sql_seconds if sql_seconds else float("nan")
        self.extra["reconciliation"] = {
            "lines": n,
            "events": events,
            "seconds": seconds,
            "statuses": found,
            "sql_seconds": sql_seconds,
            "sql_candidates": candidates,
        }
        self.rows += [
            Row(
                "reconciliation",
                f"bank lines matched/s, a month of {n:,}",
                per_s,
                "/s",
                raw=sql_per_s,
                note=f"{events:,} events in {seconds:.1f} s; {found.get('matched', 0):,} matched as built",
            ),
            Row(
                "reconciliation",
                "bare SQL join, lines/s (same rows)",
                sql_per_s,
                "/s",
                note=f"{sql_seconds:.2f} s, {candidates:,} lines with a candidate",
            ),
        ]

    def webhook_intake(self) -> None:
        """Verified Razorpay deliveries/s through the inbound receiver, and p99 to the 200."""
        self.start_api()
        n = self.sizes.intake_deliveries

        def stored() -> int:
            # The inbox table exists once the API has opened the inbox (at its first delivery).
            found = self.env.scalar("SELECT to_regclass('inbox_events') IS NOT NULL")
            return int(self.env.scalar("SELECT count(*) FROM inbox_events")) if found else 0

        with bar(f"webhook intake: {n:,} deliveries", None):
            figures = webhook_intake_stage.measure(self.api_url, self.api_key, self.tenant.id, n, stored)
        self.extra["webhook_intake"] = figures.__dict__
        in_flight = webhook_intake_stage.IN_FLIGHT
        note = f"{n:,} signed deliveries, {in_flight} in flight, {self.sizes.api_workers} API workers"
        self.rows += [
            Row("webhook intake", "verified deliveries/s (Razorpay)", figures.per_s, "/s", note=note),
            Row(
                "webhook intake",
                "p99 delivery to its 200",
                figures.p99_ms,
                "ms",
                note=f"p50 {figures.p50_ms:.1f} ms",
            ),
        ]

    # -- eTIMS -------------------------------------------------------------------------------

    def etims(self) -> None:
        """Sales signed per second through the engine against the eTIMS sandbox, beside the sandbox's
        own ceiling (bare httpx, one sequential loop per branch): no limit, then its congestion profile."""
        for name in list(self.env.procs):  # the other stages' processes would share the two cores
            self.env.stop(name)
        env = BenchEnv.create(self.env.settings.partitions)
        console.print(f"eTIMS stage: schema [cyan]{env.settings.db_schema}[/]; logs in {env.workdir}")
        branches = etims_stage.branch_ids(self.sizes.etims_branches)
        conditions = (
            ("none", self.sizes.etims_per_branch),
            ("congestion", self.sizes.etims_congested_per_branch),
        )
        try:
            sandbox = etims_stage.Sandbox(env)
            try:
                pipeline = self._etims_pipeline(env, sandbox, branches, conditions)
                for name in list(env.procs):  # the ceiling runs alone with the sandbox
                    if name != "etims-sandbox":
                        env.stop(name)
                ceilings = {}
                for profile, per_branch in conditions:
                    sandbox.reset(profile)
                    with console.status(
                        f"eTIMS sandbox ceiling, {profile}: {per_branch * len(branches):,} sales"
                    ):
                        ceilings[profile] = asyncio.run(
                            etims_stage.ceiling(sandbox.url, branches, per_branch)
                        )
                    signed = int(sandbox.stats()["effects"].get("sales_signed", 0))
                    if signed != ceilings[profile].sales or ceilings[profile].refused:
                        console.print(
                            f"[red]eTIMS ceiling {profile}: {signed} signed, {ceilings[profile].refused}"
                            f" refused of {ceilings[profile].sales}[/]"
                        )
            finally:
                sandbox.close()
        except BaseException:
            for proc in env.procs.values():
                if proc.popen.poll() is not None and proc.popen.returncode not in (0, -15):
                    console.print(f"[red]{proc.name} exited {proc.popen.returncode}[/]\n{proc.tail()}")
            raise
        finally:
            hit = env.disrupted({})
            env.close(keep=self.keep)
            for name, peak in env.peak_rss.items():
                self.env.peak_rss[name] = max(self.env.peak_rss.get(name, 0), peak)
        free, congested = ceilings["none"], ceilings["congestion"]
        self.extra["etims"] = {
            "branches": len(branches),
            "pipeline": {
                profile: {
                    "sales": run.sales,
                    "seconds": run.seconds,
                    "per_s": run.per_s,
                    "issue_seconds": run.issue_seconds,
                    "sandbox_signed": run.sandbox_signed,
                }
                for profile, run in pipeline.items()
            },
            "ceiling": {
                profile: {"sales": c.sales, "seconds": c.seconds, "per_s": c.per_s}
                for profile, c in ceilings.items()
            },
            "congestion_latency_ms": etims_stage.CONGESTION_LATENCY_MS,
        }
        latency = etims_stage.CONGESTION_LATENCY_MS
        for profile, label, ceiling in (("none", "no limit", free), ("congestion", "congestion", congested)):
            run = pipeline[profile]
            self.rows.append(
                Row(
                    "eTIMS",
                    f"sales signed/s through the engine, {label} ({run.sales:,} sales)",
                    run.per_s,
                    "sales/s",
                    raw=ceiling.per_s,
                    note=f"first sale issued -> last receipt recorded {run.seconds:.1f} s (issuing"
                    f" {run.issue_seconds:.1f} s); {len(branches)} branches; ratio: / the sandbox ceiling",
                )
            )
        self.rows.append(
            Row(
                "eTIMS",
                f"sandbox ceiling, no limit ({free.sales:,} sales)",
                free.per_s,
                "sales/s",
                note=f"bare httpx, {len(branches)} branches, one sale in flight per branch",
            )
        )
        self.rows.append(
            Row(
                "eTIMS",
                f"sandbox ceiling, congestion ({congested.sales:,} sales)",
                congested.per_s,
                "sales/s",
                len(branches) * 1000 / latency,
                op="≈",
                note=f"{latency} ms an answer: at most {len(branches)} / {latency / 1000:g} s",
            )
        )
        if hit:
            self.disrupted = True
            console.print(f"[yellow]outage logged by {', '.join(hit)} during the eTIMS stage: re-run it[/]")
            for row in self.rows:
                if row.stage == "eTIMS":
                    row.note = f"DISRUPTED ({', '.join(hit)} lost a connection); {row.note}"

    def _etims_pipeline(
        self,
        env: BenchEnv,
        sandbox: etims_stage.Sandbox,
        branches: list[str],
        conditions: tuple[tuple[str, int], ...],
    ) -> dict[str, etims_stage.PipelineRun]:
        """The engine's processes against the sandbox: API, relay, router, connectors."""
        from engine.bootstrap import build_service
        from ops.topics import ensure_all

        env.ensure_topics()
        retry(lambda: ensure_all(env.settings))
        service = retry(lambda: build_service(env.settings, pool_size=4))
        try:
            port = free_port()
            env.start("api", "api", "--port", str(port), "--workers", "1").wait_log(
                r"Application startup complete"
            )
            env.start("relay", "relay")
            env.start("worker", "worker", env=etims_stage.PROCESS_ENV)
            env.start("connectors", "connectors", "run", env=etims_stage.PROCESS_ENV)
            with console.status(f"eTIMS: onboarding a Kenyan tenant with {len(branches)} branches"):
                tenant = etims_stage.onboard(
                    service, env.settings, f"http://127.0.0.1:{port}", sandbox.url, branches
                )
            runs: dict[str, etims_stage.PipelineRun] = {}
            for profile, per_branch in conditions:
                sandbox.profile(profile)
                n = per_branch * len(branches)
                with bar(f"eTIMS {profile}: {n:,} sales signed", n) as advance:
                    runs[profile] = etims_stage.issue_and_wait(
                        env,
                        service,
                        tenant,
                        sandbox,
                        branches,
                        per_branch,
                        f"B{profile[0].upper()}",
                        progress=advance.update,
                    )
                if runs[profile].sandbox_signed != n:
                    console.print(
                        f"[red]eTIMS {profile}: the sandbox signed {runs[profile].sandbox_signed} of {n}[/]"
                    )
            return runs
        finally:
            service.close()

    def rss(self) -> None:
        for name in list(self.env.procs):
            self.env.stop(name)
        more = sorted(n for n in self.env.peak_rss if n.startswith("projector-"))
        for name in ("api", "relay", "projector", *more, "worker", "connectors"):
            if (
                name in ("api", "relay", "projector") or name.startswith("projector-")
            ) and self.env.peak_each.get(name):
                # uvicorn's parent and each worker process on its own (the resource tracker too);
                # the relay and each of its encoder processes; the projector pool and each process.
                main_label = {"api": "uvicorn parent", "relay": "relay process"}.get(
                    name, "projector process"
                )
                for role, peak in sorted(self.env.peak_each[name].items()):
                    label = main_label if role == "main" else role
                    self.rows.append(
                        Row("peak RSS", f"ledgerflow {name}: {label}", peak / MB, "MB", RSS_LIMIT_MB, op="<")
                    )
            elif name in self.env.peak_rss:
                mb = self.env.peak_rss[name] / MB
                self.rows.append(Row("peak RSS", f"ledgerflow {name}", mb, "MB", RSS_LIMIT_MB, op="<"))
        self.extra["peak_rss_mb"] = {k: v / MB for k, v in self.env.peak_rss.items()}
        self.extra["peak_rss_each_mb"] = {
            name: {role: v / MB for role, v in each.items()} for name, each in self.env.peak_each.items()
        }

    # -- driver -----------------------------------------------------------------------------

    def measured(self, stage: Any) -> None:
        """Run a stage; mark its rows when a broker or database outage was logged meanwhile."""
        before = len(self.rows)
        marks = self.env.log_marks()
        stage()
        hit = self.env.disrupted(marks)
        if hit:
            self.disrupted = True
            console.print(f"[yellow]outage logged by {', '.join(hit)} during this stage: re-run it[/]")
            for row in self.rows[before:]:
                row.note = f"DISRUPTED ({', '.join(hit)} lost a connection); {row.note}"

    def run(self) -> None:
        try:
            self._stages()
        finally:
            # Also after a failed stage: the peaks sampled so far are still measurements.
            self.rss()
        order = ["API ingest", "relay catch-up", "projection catch-up", "end-to-end", "raw aiokafka"]
        self.rows.sort(key=lambda r: order.index(r.stage) if r.stage in order else len(order))

    def _stages(self) -> None:
        self.setup()
        selected = set(self.stages)
        if selected & {"relay", "projection", "raw"}:
            self.warm_up()
        if selected & {"relay", "projection"}:
            self.seed()
            self.measured(self.relay)
        if "raw" in selected:
            self.measured(self.raw)
            # The raw rates are the baseline of the relay and projection rows measured before them.
            for row in self.rows:
                if row.stage == "relay catch-up" and row.metric.startswith("events/s"):
                    row.raw = self.raw_produce
        if "projection" in selected:
            self.measured(self.projection)
        if "replay" in selected:
            self.measured(self.replay)
        if "rebuild" in selected:
            self.measured(self.rebuild)
        if "api" in selected:
            self.measured(self.api)
        if "latency" in selected:
            self.measured(self.latency)
        if "worker" in selected:
            self.measured(self.worker)
        if "scaling" in selected:
            self.measured(self.scaling)
        if "irn" in selected:
            self.measured(self.irn)
        if "etims" in selected:
            self.measured(self.etims)
        if "gstr1" in selected:
            self.measured(self.gstr1)
        if "webhooks" in selected:
            self.measured(self.webhooks)
        if "reconciliation" in selected:
            self.measured(self.reconciliation)
        if "webhook_intake" in selected:
            self.measured(self.webhook_intake)


def main(argv: list[str] | None = None) -> int:
    connector_registry.register()  # the bench is a composition root (connectors/registry.py)
    outer_schema.register()  # ... and hands over the outer packages' tables (ops/schema.py)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (~1 minute)")
    parser.add_argument(
        "--only",
        action="append",
        choices=STAGES,
        metavar="STAGE",
        help=f"run only these ({', '.join(STAGES)})",
    )
    parser.add_argument("--backlog", type=int, help="events in the relay/projection backlog")
    parser.add_argument(
        "--projectors",
        type=int,
        default=1,
        help="projector processes (default: `ledgerflow projector`'s, one per core)",
    )
    parser.add_argument("--api-concurrency", type=int, help="requests in flight in the API ingest stage")
    parser.add_argument("--api-workers", type=int, help="API worker processes (default 2)")
    parser.add_argument(
        "--connector-workers",
        type=int,
        help="`ledgerflow connectors run` processes in the IRN stage (default 1)",
    )
    parser.add_argument(
        "--worker-messages", type=int, help="ingest commands in the worker and scaling stages (default 2,000)"
    )
    parser.add_argument("--gstr1-invoices", type=int, help="documents in the GSTR-1 stage's month")
    parser.add_argument("--reconciliation-lines", type=int, help="bank lines in the reconciliation month")
    parser.add_argument("--intake-deliveries", type=int, help="deliveries in the webhook intake stage")
    parser.add_argument("--partitions", type=int, help="partitions of the run's topics (default: settings)")
    parser.add_argument("--keep", action="store_true", help="keep the schema, topics and logs afterwards")
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    if args.backlog:
        sizes = Sizes(**{**sizes.__dict__, "backlog": args.backlog})
    if args.api_concurrency:
        sizes = Sizes(**{**sizes.__dict__, "api_concurrency": args.api_concurrency})
    if args.api_workers:
        sizes = Sizes(**{**sizes.__dict__, "api_workers": args.api_workers})
    if args.connector_workers:
        sizes = Sizes(**{**sizes.__dict__, "irn_connector_workers": args.connector_workers})
    if args.worker_messages:
        sizes = Sizes(**{**sizes.__dict__, "worker_messages": args.worker_messages})
    if args.gstr1_invoices:
        sizes = Sizes(**{**sizes.__dict__, "gstr1_invoices": args.gstr1_invoices})
    if args.reconciliation_lines:
        sizes = Sizes(**{**sizes.__dict__, "reconciliation_lines": args.reconciliation_lines})
    if args.intake_deliveries:
        sizes = Sizes(**{**sizes.__dict__, "intake_deliveries": args.intake_deliveries})
    stages = args.only or STAGES
    env = BenchEnv.create(args.partitions)
    s = env.settings
    console.print(
        f"[bold]Ledgerflow bench[/] ({'quick' if args.quick else 'full'}): schema [cyan]{s.db_schema}[/] in "
        f"{s.database_url.rsplit('/', 1)[-1]}, topic prefix [cyan]{s.topic_prefix}[/], "
        f"{s.partitions} partitions; logs in {env.workdir}"
    )
    run = Run(env, sizes, stages)
    run.keep = args.keep
    run.projectors = max(1, args.projectors)
    started = time.monotonic()
    failed: BaseException | None = None
    try:
        run.run()
    except BaseException as exc:  # still stop the processes and report what was measured
        failed = exc
        for proc in env.procs.values():
            if proc.popen.poll() is not None and proc.popen.returncode not in (0, -15):
                console.print(f"[red]{proc.name} exited {proc.popen.returncode}[/]\n{proc.tail()}")
    finally:
        run.poll.close()
        env.close(keep=args.keep)
    run.extra["quick"] = args.quick
    run.extra["seconds"] = time.monotonic() - started
    run.extra["partitions"] = s.partitions
    run.extra["disrupted"] = run.disrupted
    if run.rows:
        print_table(console, run.rows, f"Ledgerflow bench — {time.monotonic() - started:.0f}s")
        path = write_json(run.rows, run.extra)
        console.print(f"results: {path}")
        if run.disrupted:
            console.print(
                "[yellow]Kafka or PostgreSQL restarted during a measured stage: re-run for clean figures[/]"
            )
    if failed is not None:
        raise failed
    return 0 if all(r.passed is not False for r in run.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
