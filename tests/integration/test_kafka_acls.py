"""The broker-side control (docs/runbooks/kafka-acls.md): on a broker with SASL/SCRAM users and the
StandardAuthorizer, and the ACL table of engine.kafka_acls, only ingest producers may write to
``ingest.*``, readers may only read ``ledger.*`` with their own groups, and the engine authenticates
with LEDGERFLOW_KAFKA_* and runs end to end.

The broker is the module's own (tests/integration/sasl_broker.py: free ports, a tmp dir, stopped at
the end); PostgreSQL is the shared one with each test's own schema.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka.errors import ClusterAuthorizationFailedError, TopicAuthorizationFailedError
from confluent_kafka import Consumer, KafkaError

from connectors.gst_irp.sandbox import create_app as create_irp_sandbox
from engine import kafka
from engine.application import LedgerService
from engine.config import Settings
from engine.kafka_clients import confluent_config
from ops.topics import ensure_all
from tests.conftest import wait_for
from tests.connectors.contract import LiveServer
from tests.integration.helpers import (
    IRP_ACCOUNT,
    client_for,
    create_ingest_key,
    ingest_command,
    invoice_body,
    register_irp_tenant,
)
from tests.integration.processes import Processes, settings_env
from tests.integration.sasl_broker import ADMIN, SaslBroker, new_sasl_broker

pytestmark = pytest.mark.integration

ENGINE = "engine"
PRODUCER = "ingest-producer"
READER = "ledger-reader"
READER_GROUPS = "ledger-reader."


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    from engine.config import load_settings

    started = new_sasl_broker(tmp_path_factory.mktemp("sasl-broker"), [ENGINE, PRODUCER, READER])
    base = load_settings()
    started.start(base)
    try:
        wait_for(
            lambda: started.answers_as_admin(base), timeout=120, interval=0.5, what="the SASL broker answers"
        )
        yield started
    finally:
        started.stop()


@pytest.fixture
def as_user(broker: SaslBroker, settings: Settings) -> dict[str, Settings]:
    """The test's settings as each principal, after the test's ACLs (under its topic prefix) and
    topics (created by the engine principal) exist."""
    users = {name: broker.settings_for(settings, name) for name in (ADMIN, ENGINE, PRODUCER, READER)}
    # Applied with the command the compose deployment's one-shot `kafka-acls` service runs.
    applied = subprocess.run(
        [
            *(sys.executable, "-m", "engine.cli", "kafka", "acls", "--apply", "--engine", ENGINE),
            *("--ingest-producer", PRODUCER, "--reader", f"{READER}:{READER_GROUPS}"),
        ],
        env=settings_env(users[ADMIN]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "ACL bindings in place" in applied.stdout
    ensure_all(users[ENGINE])
    return users


def produce(
    settings: Settings,
    topic: str,
    value: bytes,
    headers: list[tuple[str, bytes]] | None = None,
    *,
    idempotent: bool = True,
) -> None:
    """One record through the engine's Kafka adapter (its "reliable" profile: acks=all, idempotent)."""

    async def send() -> None:
        producer = await kafka.start_producer(settings, "reliable", enable_idempotence=idempotent)
        try:
            await producer.send_and_wait(settings.topic(topic), value, headers=headers or [])
        finally:
            await producer.stop()

    asyncio.run(send())


def consume(settings: Settings, topic: str, group: str, *, want: int) -> list[Any]:
    """Poll ``topic`` from the start in ``group`` (full name) until ``want`` records arrived; a
    consumer-level error (a refusal) fails the test."""
    consumer = Consumer(confluent_config(settings, **{"group.id": group, "auto.offset.reset": "earliest"}))
    consumer.subscribe([settings.topic(topic)])
    records: list[Any] = []
    errors: list[KafkaError] = []

    def poll() -> bool:
        message = consumer.poll(0.5)
        if message is not None and message.error() is not None:
            errors.append(message.error())
            return True
        if message is not None:
            records.append(message)
        return len(records) >= want

    try:
        wait_for(poll, timeout=60, interval=0, what=f"{want} record(s) of {topic} read by group {group}")
    finally:
        consumer.close()
    assert not errors, f"group {group} on {topic} got {errors[0]}"
    return records


def consumer_error(settings: Settings, topic: str, group: str) -> KafkaError:
    consumer = Consumer(confluent_config(settings, **{"group.id": group, "auto.offset.reset": "earliest"}))
    consumer.subscribe([settings.topic(topic)])

    def refused() -> KafkaError | None:
        message = consumer.poll(0.5)
        return message.error() if message is not None and message.error() is not None else None

    try:
        return wait_for(refused, timeout=60, interval=0, what=f"group {group} refused on {topic}")
    finally:
        consumer.close()


def test_an_ingest_producer_writes_ingest_topics_and_is_refused_on_ledger_topics(
    as_user: dict[str, Settings],
) -> None:
    producer = as_user[PRODUCER]
    produce(producer, "ingest.invoice.v1", b'{"probe": 1}')
    # The engine (not the producer) sees it arrive: the write really happened.
    seen = consume(as_user[ENGINE], "ingest.invoice.v1", f"{producer.topic_prefix}ledgerflow.probe", want=1)
    assert seen[0].value() == b'{"probe": 1}'

    with pytest.raises(TopicAuthorizationFailedError):
        produce(producer, "ledger.invoice.v1", b'{"forged": "fact"}')
    with pytest.raises(TopicAuthorizationFailedError):
        produce(producer, "ledger.tenant.v1", b'{"forged": "tenant"}')


def test_a_reader_consumes_ledger_topics_with_its_own_groups_and_cannot_write(
    as_user: dict[str, Settings],
) -> None:
    reader = as_user[READER]
    produce(as_user[ENGINE], "ledger.invoice.v1", b'{"fact": 1}')

    records = consume(reader, "ledger.invoice.v1", f"{reader.topic_prefix}{READER_GROUPS}erp-sync", want=1)
    assert records[0].value() == b'{"fact": 1}'

    # An idempotent producer of a principal that may write no topic at all is refused its producer
    # id (ClusterAuthorization, KIP-679) when it starts, which the adapter reports as its own
    # KafkaRequestFailed; a plain one gets as far as the topic and is refused there.
    with pytest.raises(kafka.KafkaRequestFailed) as refused:
        produce(reader, "ledger.invoice.v1", b'{"forged": "fact"}')
    assert isinstance(refused.value.__cause__, ClusterAuthorizationFailedError)
    with pytest.raises(TopicAuthorizationFailedError):
        produce(reader, "ledger.invoice.v1", b'{"forged": "fact"}', idempotent=False)
    with pytest.raises(TopicAuthorizationFailedError):
        produce(reader, "ingest.invoice.v1", b'{"not": "a producer"}', idempotent=False)
    # Not its group prefix (the engine's projector group): refused, so a reader cannot move the
    # engine's committed offsets.
    error = consumer_error(
        reader, "ledger.invoice.v1", f"{reader.topic_prefix}ledgerflow.projection.invoice_register"
    )
    assert error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    # Nor can it read the ingest commands.
    error = consumer_error(reader, "ingest.invoice.v1", f"{reader.topic_prefix}{READER_GROUPS}peek")
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def registered_numbers(settings: Settings) -> list[str]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        return [row[0] for row in conn.execute("SELECT number FROM invoice_register ORDER BY number")]


def irn_events(settings: Settings) -> int:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_events WHERE topic LIKE '%Invoice.IrnGenerated'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_engine_authenticates_and_an_ingested_invoice_goes_end_to_end(
    as_user: dict[str, Settings], service: LedgerService, tmp_path: Path
) -> None:
    engine = as_user[ENGINE]
    with LiveServer(create_irp_sandbox(account=IRP_ACCOUNT)) as irp:
        tenant_id = str(register_irp_tenant(service, engine, irp.url).tenant_id)
        key = create_ingest_key(engine, tenant_id)
        processes = Processes(engine, tmp_path)
        try:
            started = [
                processes.start("worker"),
                processes.start("relay"),
                processes.start("projector"),
                processes.start("connectors", "run"),
            ]
            # The upstream system, as the ingest-producer principal, sends a signed command.
            headers, value = ingest_command(tenant_id, f"cmd-{uuid.uuid4()}", invoice_body("SASL-1"), key)
            produce(as_user[PRODUCER], "ingest.invoice.v1", value, headers)

            # worker (faust) -> event store -> relay -> ledger.invoice.v1 -> projector -> read model;
            # the worker's e-invoicing router -> connector jobs -> connector worker -> IRN event.
            numbers = processes.wait_for(
                lambda: registered_numbers(engine) or None,
                what="the ingested invoice in invoice_register",
                watch=started,
                timeout=120,
            )
            assert numbers == ["SASL-1"]
            processes.wait_for(
                lambda: irn_events(engine) == 1, what="the invoice's IRN", watch=started, timeout=120
            )
            processes.assert_alive(*started)
        finally:
            processes.close()

    # A downstream reader sees the relay's facts on ledger.invoice.v1, the issue first.
    reader = as_user[READER]
    facts = consume(reader, "ledger.invoice.v1", f"{reader.topic_prefix}{READER_GROUPS}e2e", want=2)
    types = [dict(fact.headers())["ce_type"].decode() for fact in facts]
    assert types[0].endswith("invoice.issued") and len(types) == 2, types


def test_the_apis_metrics_and_consumer_health_read_kafka_as_the_engine(
    as_user: dict[str, Settings], service: LedgerService
) -> None:
    client = client_for(as_user[ENGINE])
    scraped = client.get("/metrics")
    assert scraped.status_code == 200, scraped.text
    assert 'ledgerflow_metrics_source_up{source="kafka"} 1.0' in scraped.text
    health = client.get("/healthz/consumers")
    assert health.status_code == 200, health.text
