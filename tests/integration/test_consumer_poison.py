"""Every consumer goes on past a record it cannot process (dead-lettered with context) and waits out
an outage (never dead-lettered): the e-invoicing router and the connector job runner, on the real
Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.publishing import headers_for
from schemas import registry
from streams.connectors import ConnectorSpec, Job, JobHandler, JobResult, RetryPolicy, dlq_list
from streams.dlq import dead_letter_headers
from streams.router import ROUTER_DLQ_TOPIC, ConnectorRouter
from tests.conftest import wait_for
from tests.integration.helpers import invoice_body, register_irp_tenant
from tests.integration.test_connector_runtime import TENANT, job, publish, run_workers  # noqa: F401
from tests.integration.test_projection_poison import read_topic, stored_invoice_events

pytestmark = pytest.mark.integration

# -- the e-invoicing router -------------------------------------------------------------------------


def ledger_records(service: LedgerService, settings: Settings) -> dict[str, dict[str, Any]]:
    """Records for the router, as the relay would publish them: a good issued event of an e-invoicing
    tenant, and broken variants of it."""
    tenant = register_irp_tenant(service, settings, "http://127.0.0.1:9")
    issued = service.issue_invoice(tenant.tenant_id, IssueInvoice.model_validate(invoice_body("R-1")))
    (outbound,) = [o for o in stored_invoice_events(settings) if o.key == str(issued.invoice.id)]
    value, schema = registry.encode_event(outbound.ce_type, outbound.record)
    headers = headers_for(outbound, schema.fingerprint_hex)
    key = outbound.key.encode()
    bad_tenant = {**outbound.record, "tenant_id": "not-a-tenant"}
    bad_value, _ = registry.encode_event(outbound.ce_type, bad_tenant)
    return {
        "good": {"key": key, "value": value, "headers": headers},
        "undecodable": {"key": key, "value": b"\xc3\x01garbage", "headers": headers},
        "no ce_id": {"key": key, "value": value, "headers": [(k, v) for k, v in headers if k != "ce_id"]},
        "no ce_type": {"key": key, "value": value, "headers": [(k, v) for k, v in headers if k != "ce_type"]},
        "bad tenant id": {"key": key, "value": bad_value, "headers": headers},
    }


async def _route_all(settings: Settings, records: list[dict[str, Any]], send_job: Any) -> list[Job | None]:
    """Produce ``records`` on the ledger topic, read them back and hand each to a router whose dead
    letters go to the router DLQ topic, as the faust agent wires it."""
    topic = settings.topic("ledger.invoice.v1")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        for r in records:
            await producer.send_and_wait(topic, partition=0, **r)

        async def dead_letter(message: Any, code: str, text: str) -> None:
            await producer.send_and_wait(
                settings.topic(ROUTER_DLQ_TOPIC),
                key=message.key,
                value=message.value,
                headers=dead_letter_headers(
                    message.headers,
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    code=code,
                    message=text,
                ),
            )

        router = ConnectorRouter(settings, send_job, dead_letter)
        results: list[list[Job]] = []
        while len(results) < len(records):
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                for message in sorted(batch, key=lambda m: m.offset):
                    results.append(await router.route(message))
        return results
    finally:
        await consumer.stop()
        await producer.stop()


def test_the_router_dead_letters_what_it_cannot_route_and_goes_on(
    service: LedgerService, settings: Settings, topics: list[str]
) -> None:
    records = ledger_records(service, settings)
    sent: list[Job] = []

    async def send_job(j: Job, headers: list[tuple[str, bytes]]) -> None:
        sent.append(j)

    order = ["undecodable", "no ce_id", "no ce_type", "bad tenant id", "good"]
    results = asyncio.run(_route_all(settings, [records[name] for name in order], send_job))

    assert results[:4] == [[], [], [], []]
    assert [j.kind for j in results[4]] == ["generate_irn"] and [j.kind for j in sent] == ["generate_irn"]
    letters = {int(dict(m.headers())["original-offset"]): m for m in read_topic(settings, ROUTER_DLQ_TOPIC)}
    codes = {offset: dict(m.headers())["error-code"].decode() for offset, m in letters.items()}
    assert [codes.get(i) for i in range(5)] == [
        "undecodable_event",
        "missing_header",
        "missing_header",
        "invalid_event",
        None,
    ]
    first = dict(letters[0].headers())
    assert first["original-topic"] == settings.topic("ledger.invoice.v1").encode()
    assert first["ce_id"] and letters[0].value() == records["undecodable"]["value"]


def test_the_router_waits_out_kafka_and_gives_up_on_its_own_bug_after_three_tries(
    service: LedgerService, settings: Settings, topics: list[str]
) -> None:
    records = ledger_records(service, settings)
    calls: list[str] = []

    async def send_job(j: Job, headers: list[tuple[str, bytes]]) -> None:
        calls.append(j.job_id)
        if len(calls) <= 2:
            raise KafkaConnectionError("broker away")  # an outage: waited out, however often
        if len(calls) >= 4:
            raise RuntimeError("a bug of ours")  # not the record's fault, not an outage: 3 tries

    results = asyncio.run(_route_all(settings, [records["good"], records["good"]], send_job))

    # The first record: two outages, then delivered on the third call.
    assert [j.kind for j in results[0]] == ["generate_irn"]
    # The second: three failures of ours in a row, then dead-lettered as processing_failed.
    assert results[1] == [] and len(calls) == 6
    (letter,) = read_topic(settings, ROUTER_DLQ_TOPIC)
    headers = dict(letter.headers())
    assert (
        headers["error-code"] == b"processing_failed"
        and b"RuntimeError: a bug of ours" in headers["error-message"]
    )
    assert headers["original-offset"] == b"1"


# -- the connector job runner -----------------------------------------------------------------------


class OutageThenSuccess(JobHandler):
    """PostgreSQL drops the handler's session once, then the job succeeds."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    async def __call__(self, j: Job, attempt: int) -> JobResult:
        with self.lock:
            self.calls.append((j.job_id, attempt))
            first = len(self.calls) == 1
        if first:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return JobResult({"ok": True})


class Accepting(JobHandler):
    def __init__(self) -> None:
        self.done: list[str] = []

    async def __call__(self, j: Job, attempt: int) -> JobResult:
        self.done.append(j.job_id)
        return JobResult({"ok": True})


def test_a_job_postgresql_refuses_is_dead_lettered_after_three_tries_and_its_partition_goes_on(
    settings: Settings,
    run_workers: Any,  # noqa: F811 (the fixture, imported from the connector runtime tests)
) -> None:
    provider = Accepting()
    run_workers(ConnectorSpec("fake", provider, RetryPolicy((1.0,))))
    subject = str(uuid.uuid4())
    # A NUL byte in the tenant id: the attempt bookkeeping (PostgreSQL text) refuses it every time.
    poison = Job("poison", "fake", "generate_irn", TENANT[:8] + "\x00" + TENANT[9:], subject, {})

    publish(settings, poison, job("after", subject))  # same subject, same partition, in this order

    letters = wait_for(lambda: dlq_list(settings, "fake"), timeout=120, what="the poison job dead-lettered")
    (letter,) = letters
    assert letter.error_code == "processing_failed" and "DataError" in letter.error_message
    assert "NUL" in letter.error_message and letter.job_id == "poison"
    wait_for(lambda: provider.done == ["after"], timeout=60, what="the next job of the partition running")


def test_a_handler_that_meets_a_database_outage_is_retried_not_dead_lettered(
    settings: Settings,
    run_workers: Any,  # noqa: F811 (the fixture, imported from the connector runtime tests)
) -> None:
    handler = OutageThenSuccess()
    run_workers(ConnectorSpec("fake", handler, RetryPolicy((1.0,))))

    publish(settings, job("j1"))

    wait_for(lambda: len(handler.calls) == 2, timeout=60, what="the job tried again after the outage")
    # The same delivery again (attempt 1): an outage uses no attempt and no delay topic.
    assert handler.calls == [("j1", 1), ("j1", 1)]
    assert dlq_list(settings, "fake") == []
