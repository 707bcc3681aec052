"""One trace across every hop: HTTP request -> event-store write -> relay publish -> e-invoicing router ->
connector call -> result event, against the real Kafka, PostgreSQL and the IRP sandbox.

The first test runs every piece in this process under one OpenTelemetry tracer provider whose spans
land in an in-memory exporter: the API through its ASGI app, the relay and the connector worker as
they run in production (``Relay.run``, ``ConnectorWorker.run``), and the router through a plain
aiokafka consumer handing each ``ledger.invoice.v1`` record to ``ConnectorRouter.route``, the
method the faust agent ``route-einvoicing`` calls for each record. The last test runs the real
processes (``ledgerflow relay``, ``worker``, ``connectors run``) with the console exporter and reads
the spans and JSON log lines they print.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

from connectors.gst_irp.handler import CONNECTOR
from connectors.gst_irp.sandbox import create_app
from engine import telemetry
from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from engine.security.secrets import load_key_ring
from streams.catalogue import connector_specs
from streams.connectors.jobs import Job, jobs_topic
from streams.connectors.worker import ConnectorWorker
from streams.router import ConnectorRouter
from tests.conftest import BackgroundLoop, wait_for
from tests.connectors.contract import LiveServer
from tests.integration.helpers import (
    IRP_ACCOUNT,
    IRP_SELLER_GSTIN,
    client_for,
    invoice_body,
    register_irp_tenant,
)
from tests.integration.processes import LedgerflowProcess, Processes

pytestmark = pytest.mark.integration

SELLER_GSTIN = IRP_SELLER_GSTIN
ACCOUNT = IRP_ACCOUNT
CLIENT_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider for this test only.

    OpenTelemetry lets a process set its global tracer provider once. Left in place, it would turn
    tracing on for every later test of the same pytest worker, and the relay and the consumers take
    their traced paths (not their encoder pools or direct paths) when tracing is on: a CI run
    failed that way. So the global is put back as it was (its private attributes: no public API
    resets it, see opentelemetry-test-utils' reset_trace_globals).
    """
    assert trace._TRACER_PROVIDER is None, "another test left a global tracer provider installed"
    trace.set_tracer_provider(_provider)
    _exporter.clear()
    try:
        yield _exporter
    finally:
        _exporter.clear()
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE = Once()


def irp_tenant(
    service: LedgerService, settings: Settings, base_url: str, gstin: str = SELLER_GSTIN
) -> tuple[str, str]:
    registered = register_irp_tenant(service, settings, base_url, gstin=gstin)
    return str(registered.tenant_id), registered.api_key


async def run_router(settings: Settings, routed: list[Job], stop: asyncio.Event) -> None:
    """Feed every ``ledger.invoice.v1`` record to the router, as the faust agent does."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    consumer = AIOKafkaConsumer(
        settings.topic("ledger.invoice.v1"),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.topic_prefix}trace-router",
        auto_offset_reset="earliest",
    )
    await producer.start()
    await consumer.start()

    async def send_job(job: Job, headers: list[tuple[str, bytes]]) -> None:
        await producer.send_and_wait(
            settings.topic(jobs_topic(CONNECTOR)),
            value=job.encode(),
            key=job.subject.encode(),
            headers=headers,
        )

    router = ConnectorRouter(settings, send_job)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    routed.extend(await router.route(record))
    finally:
        await consumer.stop()
        await producer.stop()


async def _ledger_records(settings: Settings) -> list[Any]:
    consumer = AIOKafkaConsumer(
        settings.topic("ledger.invoice.v1"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=2000)
        return [r for records in batches.values() for r in records]
    finally:
        await consumer.stop()


def header(record: Any, name: str) -> str:
    return next((v or b"").decode() for k, v in record.headers if k == name)


def trace_and_span(traceparent: str) -> tuple[int, int]:
    _, trace_id, span_id, _ = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16)


def one(found: list[ReadableSpan], what: str) -> ReadableSpan:
    assert len(found) == 1, (
        f"expected one {what}, found {[(s.name, dict(s.attributes or {})) for s in found]}"
    )
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def start_engine_in_process(
    settings: Settings, service: LedgerService, background: BackgroundLoop
) -> list[Job]:
    """The relay, the router and the gst-irp connector worker in ``background``; returns the jobs routed."""
    specs, handlers = connector_specs(settings, service, load_key_ring(settings.var_dir))
    worker = ConnectorWorker(settings, specs)
    routed: list[Job] = []

    async def connectors(stop: asyncio.Event) -> None:
        try:
            await worker.run(stop)
        finally:
            await handlers.close()

    background.start(Relay(settings, idle_wait=0.02).run)
    background.start(lambda stop: run_router(settings, routed, stop))
    background.start(connectors)
    wait_for(
        lambda: background.check() or worker.assigned().get(CONNECTOR),
        what="the connector worker holding partitions",
    )
    return routed


def wait_for_record(settings: Settings, background: BackgroundLoop, ce_type: str) -> Any:
    def found() -> Any:
        background.check()
        records = asyncio.run(_ledger_records(settings))
        return next((r for r in records if header(r, "ce_type") == ce_type), None)

    return wait_for(found, timeout=60, what=f"a {ce_type} record on ledger.invoice.v1")


def test_one_trace_runs_from_the_http_request_to_the_irn_event_on_kafka(
    settings: Settings,
    service: LedgerService,
    topics: list[str],
    background: BackgroundLoop,
    spans: InMemorySpanExporter,
) -> None:
    with LiveServer(create_app(account=ACCOUNT)) as irp:
        tenant_id, api_key = irp_tenant(service, settings, irp.url)
        routed = start_engine_in_process(settings, service, background)
        api = client_for(settings)
        response = api.post(
            "/v1/invoices",
            json=invoice_body("TR-1"),
            headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": "trace-1"},
        )
        assert response.status_code == 201, response.text
        invoice_id = response.json()["id"]
        record = wait_for_record(settings, background, "ledgerflow.invoice.irn_generated")

    def finished() -> list[ReadableSpan] | None:
        found = list(spans.get_finished_spans())
        publishes = [s for s in found if s.name == "publish ledger.invoice.v1"]
        return found if len(publishes) >= 2 else None

    # The relay ends its publish spans once the batch is acknowledged, just after the record is readable.
    finished_spans = wait_for(finished, what="the publish span of the irn_generated event")
    by_type = {
        (s.name, (s.attributes or {}).get("cloudevents.event_type")): s
        for s in finished_spans
        if s.name in ("publish ledger.invoice.v1", "process ledger.invoice.v1")
    }

    http = one([s for s in finished_spans if s.name == "POST /v1/invoices"], "HTTP span")
    trace_id = http.context.trace_id
    in_trace = [s for s in finished_spans if s.context.trace_id == trace_id]
    stores = [s for s in in_trace if s.name == "event store write"]
    publish_issued = by_type[("publish ledger.invoice.v1", "ledgerflow.invoice.issued")]
    router = by_type[("process ledger.invoice.v1", "ledgerflow.invoice.issued")]
    attempt = one([s for s in in_trace if s.name == f"connector {CONNECTOR} generate_irn"], "attempt")
    publish_irn = by_type[("publish ledger.invoice.v1", "ledgerflow.invoice.irn_generated")]

    # The client sent no trace context: the request's span starts the trace.
    assert http.kind is SpanKind.SERVER and http.parent is None
    assert (http.attributes or {})["http.route"] == "/v1/invoices"
    assert (http.attributes or {})["ledgerflow.tenant_id"] == tenant_id
    assert (http.attributes or {})["http.response.status_code"] == 201
    # Every hop is in it, each the child of the one before.
    chain = [http, publish_issued, router, attempt, publish_irn]
    assert all(s.context.trace_id == trace_id for s in chain), [(s.name, s.context.trace_id) for s in chain]
    assert parent_of(publish_issued) == http.context.span_id
    assert parent_of(router) == publish_issued.context.span_id
    assert parent_of(attempt) == router.context.span_id
    assert parent_of(publish_irn) == attempt.context.span_id
    assert [s.kind for s in chain] == [
        SpanKind.SERVER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.CLIENT,
        SpanKind.PRODUCER,
    ]
    # Two event-store writes: the issued invoice within the request (under FastAPI's endpoint span),
    # the IRN within the attempt.
    by_id = {s.context.span_id: s for s in in_trace}

    def ancestors(span: ReadableSpan) -> list[int]:
        found = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            found.append(span.context.span_id)
        return found

    assert len(stores) == 2, [(s.name, s.parent) for s in stores]
    issued_write, irn_write = sorted(stores, key=lambda s: s.start_time or 0)
    assert http.context.span_id in ancestors(issued_write)
    assert parent_of(irn_write) == attempt.context.span_id
    assert (router.attributes or {})["ledgerflow.job_id"] == routed[0].job_id
    assert (attempt.attributes or {})["ledgerflow.outcome"] == "success"
    assert (publish_irn.attributes or {})["messaging.kafka.message.key"] == invoice_id

    # Downstream consumers see the same trace on the result event's record.
    assert trace_and_span(header(record, "traceparent")) == (trace_id, publish_irn.context.span_id)


def test_a_clients_traceparent_is_the_parent_of_the_request_span_and_reaches_the_event(
    settings: Settings, service: LedgerService, topics: list[str], spans: InMemorySpanExporter
) -> None:
    from tests.integration.helpers import register_tenant

    _, api_key = register_tenant(service)
    api = client_for(settings)
    response = api.post(
        "/v1/invoices",
        json=invoice_body("TR-2"),
        headers={"Authorization": f"Bearer {api_key}", "traceparent": CLIENT_TRACEPARENT},
    )
    assert response.status_code == 201, response.text
    http = one([s for s in spans.get_finished_spans() if s.name == "POST /v1/invoices"], "HTTP span")
    client_trace, client_span = trace_and_span(CLIENT_TRACEPARENT)
    assert http.context.trace_id == client_trace
    assert parent_of(http) == client_span
    # The stored event names the request's span, so that the relay continues from it.
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        row = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb ->> 'traceparent' FROM ledger_events"
            " WHERE topic LIKE '%Invoice.Issued'"
        ).fetchone()
    assert row is not None
    assert trace_and_span(row[0]) == (client_trace, http.context.span_id)


def test_a_refused_irn_is_recorded_and_published_under_the_failed_attempts_span(
    settings: Settings,
    service: LedgerService,
    topics: list[str],
    background: BackgroundLoop,
    spans: InMemorySpanExporter,
) -> None:
    with LiveServer(create_app(account=ACCOUNT)) as irp:
        # A GSTIN the sandbox account does not own: the IRP refuses the document (2143, permanent),
        # the job is dead-lettered and the failure recorded on the invoice by the failure sink.
        _, api_key = irp_tenant(service, settings, irp.url, gstin="29AABCT1332L1ZA")
        start_engine_in_process(settings, service, background)
        response = client_for(settings).post(
            "/v1/invoices", json=invoice_body("TR-5"), headers={"Authorization": f"Bearer {api_key}"}
        )
        assert response.status_code == 201, response.text
        record = wait_for_record(settings, background, "ledgerflow.invoice.irn_failed")

    def failed_publish() -> ReadableSpan | None:
        return next(
            (
                s
                for s in spans.get_finished_spans()
                if (s.attributes or {}).get("cloudevents.event_type") == "ledgerflow.invoice.irn_failed"
            ),
            None,
        )

    publish = wait_for(failed_publish, what="the publish span of the irn_failed event")
    [attempt] = [s for s in spans.get_finished_spans() if s.name == f"connector {CONNECTOR} generate_irn"]
    [http] = [s for s in spans.get_finished_spans() if s.name == "POST /v1/invoices"]
    assert (attempt.attributes or {})["ledgerflow.outcome"] == "permanent"
    assert attempt.context.trace_id == http.context.trace_id
    assert publish.parent is not None and publish.parent.span_id == attempt.context.span_id
    assert trace_and_span(header(record, "traceparent")) == (http.context.trace_id, publish.context.span_id)


def exported_spans(process: LedgerflowProcess) -> list[dict[str, Any]]:
    """The spans a process printed with LEDGERFLOW_OTEL_EXPORTER=console (one JSON object per line)."""
    return [line for line in json_lines(process) if "context" in line and "kind" in line]


def json_lines(process: LedgerflowProcess) -> list[dict[str, Any]]:
    found = []
    for text in process.log_path.read_text(errors="replace").splitlines():
        # faust's spinner may leave a terminal control sequence in front of a line.
        start = text.find("{")
        if start < 0:
            continue
        try:
            found.append(orjson.loads(text[start:]))
        except orjson.JSONDecodeError:
            continue  # a line still being written, or not JSON
    return found


@pytest.mark.slow
def test_the_engines_processes_export_one_trace_and_log_its_id(
    settings: Settings,
    service: LedgerService,
    topics: list[str],
    spans: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real processes (faust router included), each exporting its spans to the console."""
    monkeypatch.setenv("LEDGERFLOW_OTEL_EXPORTER", "console")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("LEDGERFLOW_LOG_FORMAT", "json")
    processes = Processes(settings, tmp_path)
    try:
        with LiveServer(create_app(account=ACCOUNT)) as irp:
            tenant_id, api_key = irp_tenant(service, settings, irp.url)
            relay = processes.start("relay")
            router = processes.start("worker")
            connectors = processes.start("connectors", "run", name="connectors")
            engine = [relay, router, connectors]
            response = client_for(settings).post(
                "/v1/invoices",
                json=invoice_body("TR-3"),
                headers={"Authorization": f"Bearer {api_key}", "traceparent": CLIENT_TRACEPARENT},
            )
            assert response.status_code == 201, response.text
            invoice_id = UUID(response.json()["id"])
            processes.wait_for(
                lambda: service.get_invoice(UUID(tenant_id), invoice_id).einvoice,
                what="the IRN recorded on the invoice",
                watch=engine,
                timeout=90,
            )
        client_trace, client_span = trace_and_span(CLIENT_TRACEPARENT)
        trace_hex = f"0x{client_trace:032x}"

        def in_trace(process: LedgerflowProcess) -> list[dict[str, Any]]:
            return [s for s in exported_spans(process) if s["context"]["trace_id"] == trace_hex]

        publishes = processes.wait_for(
            lambda: len(found := in_trace(relay)) >= 2 and found,
            what="the relay exporting both publish spans of the trace",
            watch=engine,
        )
        [routed] = [s for s in in_trace(router) if s["name"] == "process ledger.invoice.v1"]
        [attempt] = [s for s in in_trace(connectors) if s["name"] == f"connector {CONNECTOR} generate_irn"]
        [irn_write] = [s for s in in_trace(connectors) if s["name"] == "event store write"]
        issued, irn = sorted(publishes, key=lambda s: s["start_time"])
        [http] = [s for s in spans.get_finished_spans() if s.name == "POST /v1/invoices"]
        assert http.parent is not None and http.parent.span_id == client_span
        assert issued["parent_id"] == f"0x{http.context.span_id:016x}"
        assert routed["parent_id"] == issued["context"]["span_id"]
        assert attempt["parent_id"] == routed["context"]["span_id"]
        assert irn_write["parent_id"] == attempt["context"]["span_id"]
        assert irn["parent_id"] == attempt["context"]["span_id"]
        assert irn["attributes"]["cloudevents.event_type"] == "ledgerflow.invoice.irn_generated"
        assert {s["resource"]["attributes"]["service.name"] for s in (issued, routed, attempt)} == {
            "ledgerflow-relay",
            "ledgerflow-worker",
            "ledgerflow-connectors",
        }
        # The router's log line names the tenant and the trace, in JSON.
        queued = [
            line
            for line in json_lines(router)
            if line.get("logger") == "ledgerflow.router" and "queued generate_irn" in line["message"]
        ]
        assert [(q["tenant_id"], q["trace_id"]) for q in queued] == [(tenant_id, f"{client_trace:032x}")]
    finally:
        processes.close()


def test_a_malformed_client_traceparent_is_not_stored_on_the_event(
    settings: Settings, service: LedgerService, topics: list[str]
) -> None:
    from tests.integration.helpers import register_tenant

    _, api_key = register_tenant(service)
    response = client_for(settings).post(
        "/v1/invoices",
        json=invoice_body("TR-4"),
        headers={"Authorization": f"Bearer {api_key}", "traceparent": "00-not-a-trace-context"},
    )
    assert response.status_code == 201, response.text
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        row = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb ->> 'traceparent' FROM ledger_events"
            " WHERE topic LIKE '%Invoice.Issued'"
        ).fetchone()
    assert row is not None and telemetry.valid_traceparent(row[0]) == row[0]


def test_an_unknown_exporter_is_refused_with_the_accepted_names(settings: Settings) -> None:
    with pytest.raises(telemetry.TelemetryConfigError, match="one of none, console, otlp; got 'jaeger'"):
        telemetry.configure("ledgerflow-test", replace(settings, otel_exporter="jaeger"))
