"""Upstream systems publishing invoice commands to Kafka: the faust ingest agent, as a real worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from engine.application import LedgerService
from engine.config import Settings
from tests.conftest import wait_for
from tests.integration.helpers import invoice_body, register_tenant

pytestmark = pytest.mark.integration


def settings_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "LEDGERFLOW_DATABASE_URL": settings.database_url,
        "LEDGERFLOW_DB_SCHEMA": settings.db_schema,
        "LEDGERFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "LEDGERFLOW_KAFKA": settings.kafka_bootstrap,
        "LEDGERFLOW_PARTITIONS": str(settings.partitions),
    }


@pytest.fixture
def worker(settings: Settings, topics: list[str], tmp_path: Any) -> Iterator[subprocess.Popen[bytes]]:
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "worker"], env=settings_env(settings), stdout=log, stderr=log
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def publish(settings: Settings, messages: list[tuple[list[tuple[str, bytes]], bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for headers, value in messages:
        producer.produce(settings.topic("ingest.invoice.v1"), value=value, headers=headers)
    assert producer.flush(30) == 0


def command(
    tenant_id: str, ce_id: str, body: dict[str, Any] | bytes
) -> tuple[list[tuple[str, bytes]], bytes]:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_source", f"/tenants/{tenant_id}".encode()),
        ("ce_type", b"ledgerflow.invoice.issue"),
        ("content-type", b"application/json"),
    ]
    return headers, body if isinstance(body, bytes) else orjson.dumps(body)


def dead_letters(settings: Settings, expected: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"dlq-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic("ingest.invoice.dlq.v1")])
    found: list[Any] = []

    def poll() -> bool:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            found.append(msg)
        return len(found) >= expected

    try:
        wait_for(poll, timeout=90, interval=0, what=f"{expected} dead letters")
    finally:
        consumer.close()
    return found


def issued_numbers(settings: Settings) -> list[str]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT state FROM ledger_events WHERE topic LIKE '%Invoice.Issued' ORDER BY notification_id"
        ).fetchall()
    return sorted(orjson.loads(bytes(r[0]))["number"] for r in rows)


def test_ingested_commands_become_invoices_once_and_poison_goes_to_the_dlq(
    service: LedgerService, settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    tenant_id, _ = register_tenant(service)
    unknown_tenant = str(uuid.uuid4())
    publish(
        settings,
        [
            command(tenant_id, "cmd-1", invoice_body("ING-1")),
            command(tenant_id, "cmd-bad-json", b"{not json"),
            command(unknown_tenant, "cmd-unknown-tenant", invoice_body("ING-2")),
            command(
                tenant_id,
                "cmd-bad-gstin",
                invoice_body("ING-3", buyer={**invoice_body()["buyer"], "gstin": "X"}),
            ),
            command(tenant_id, "cmd-1", invoice_body("ING-1")),  # redelivery of the first command
            command(tenant_id, "cmd-2", invoice_body("ING-2")),
        ],
    )

    letters = dead_letters(settings, expected=3)
    by_id = {dict(m.headers())["ce_id"].decode(): m for m in letters}
    assert set(by_id) == {"cmd-bad-json", "cmd-unknown-tenant", "cmd-bad-gstin"}
    bad_json = dict(by_id["cmd-bad-json"].headers())
    assert bad_json["error-code"] == b"malformed_json"
    assert bad_json["original-topic"].decode() == settings.topic("ingest.invoice.v1")
    assert int(bad_json["original-offset"]) >= 0 and int(bad_json["original-partition"]) >= 0
    assert by_id["cmd-bad-json"].value() == b"{not json"  # the original bytes, untouched
    assert dict(by_id["cmd-unknown-tenant"].headers())["error-code"] == b"unknown_tenant"
    assert dict(by_id["cmd-bad-gstin"].headers())["error-code"] == b"validation_failed"

    # The agent kept going after the poison: both good commands applied, the redelivery ignored.
    numbers = wait_for(
        lambda: issued_numbers(settings) if len(issued_numbers(settings)) >= 2 else None,
        timeout=60,
        what="both valid ingest commands stored",
    )
    assert numbers == ["ING-1", "ING-2"]
    assert worker.poll() is None, "the worker died"
