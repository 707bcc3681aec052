"""Upstream systems publishing invoice commands to Kafka: the faust ingest agent, as a real worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer

from engine.application import LedgerService
from engine.cli import main
from engine.config import Settings
from engine.security.ingest_keys import IssuedIngestKey
from tests.conftest import wait_for
from tests.integration.helpers import (
    client_for,
    create_ingest_key,
    ingest_command,
    invoice_body,
    register_tenant,
)

pytestmark = pytest.mark.integration


def settings_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "LEDGERFLOW_DATABASE_URL": settings.database_url,
        "LEDGERFLOW_DB_SCHEMA": settings.db_schema,
        "LEDGERFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "LEDGERFLOW_KAFKA": settings.kafka_bootstrap,
        "LEDGERFLOW_PARTITIONS": str(settings.partitions),
        # The agent reads a key on every message, so a revocation is seen at once (the default
        # 30 s cache and its expiry are covered by tests/unit/test_ingest_signing.py).
        "LEDGERFLOW_INGEST_KEY_CACHE_S": "0",
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
    key = create_ingest_key(settings, tenant_id)
    publish(
        settings,
        [
            ingest_command(tenant_id, "cmd-1", invoice_body("ING-1"), key),
            ingest_command(tenant_id, "cmd-bad-json", b"{not json", key),
            ingest_command(
                tenant_id,
                "cmd-bad-gstin",
                invoice_body("ING-3", buyer={**invoice_body()["buyer"], "gstin": "X"}),
                key,
            ),
            ingest_command(tenant_id, "cmd-1", invoice_body("ING-1"), key),  # redelivery of the first
            ingest_command(tenant_id, "cmd-2", invoice_body("ING-2"), key),
        ],
    )

    letters = dead_letters(settings, expected=2)
    by_id = {dict(m.headers())["ce_id"].decode(): m for m in letters}
    assert set(by_id) == {"cmd-bad-json", "cmd-bad-gstin"}
    bad_json = dict(by_id["cmd-bad-json"].headers())
    assert bad_json["error-code"] == b"malformed_json"
    assert bad_json["original-topic"].decode() == settings.topic("ingest.invoice.v1")
    assert int(bad_json["original-offset"]) >= 0 and int(bad_json["original-partition"]) >= 0
    assert by_id["cmd-bad-json"].value() == b"{not json"  # the original bytes, untouched
    assert dict(by_id["cmd-bad-gstin"].headers())["error-code"] == b"validation_failed"

    # The agent kept going after the poison: both good commands applied, the redelivery ignored.
    numbers = wait_for(
        lambda: issued_numbers(settings) if len(issued_numbers(settings)) >= 2 else None,
        timeout=60,
        what="both valid ingest commands stored",
    )
    assert numbers == ["ING-1", "ING-2"]
    assert worker.poll() is None, "the worker died"


def issued_by_tenant(settings: Settings) -> dict[str, list[str]]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute("SELECT state FROM ledger_events WHERE topic LIKE '%Invoice.Issued'").fetchall()
    found: dict[str, list[str]] = {}
    for (state,) in rows:
        event = orjson.loads(bytes(state))
        tenant = str(UUID(event["tenant_id"]["_data_"]))  # eventsourcing stores a UUID as hex
        found.setdefault(tenant, []).append(event["number"])
    return {tenant: sorted(numbers) for tenant, numbers in found.items()}


def with_header(message: tuple[list[tuple[str, bytes]], bytes], name: str, value: bytes) -> Any:
    headers, body = message
    return [*headers, (name, value)], body


def issued_key(created: dict[str, str]) -> IssuedIngestKey:
    """A key as ``POST /v1/tenant/ingest-keys`` answered it."""
    return IssuedIngestKey(
        created["key_id"], created["secret"], datetime.fromisoformat(created["created_at"])
    )


def error_codes(letters: list[Any]) -> dict[str, str]:
    return {dict(m.headers())["ce_id"].decode(): dict(m.headers())["error-code"].decode() for m in letters}


def test_only_commands_signed_with_an_active_key_of_the_named_tenant_issue_invoices(
    service: LedgerService, settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    tenant_a, api_key_a = register_tenant(service)
    tenant_b, api_key_b = register_tenant(service, state="29", gstin="29AAGCB7383J1Z4")
    client = client_for(settings)
    as_a = {"Authorization": f"Bearer {api_key_a}"}
    # Keys made through the API, as a tenant would: two of A's (a rotation in progress), one of B's.
    old_a, new_a, key_b = (
        client.post("/v1/tenant/ingest-keys", headers=auth).json()
        for auth in (as_a, as_a, {"Authorization": f"Bearer {api_key_b}"})
    )

    old, new, of_b = issued_key(old_a), issued_key(new_a), issued_key(key_b)
    wrong_secret = replace(old, secret=of_b.secret)
    unknown = replace(old, key_id="ik_0000000000000000")
    publish(
        settings,
        [
            ingest_command(tenant_a, "old-key", invoice_body("AUTH-1"), old),
            ingest_command(tenant_a, "new-key", invoice_body("AUTH-2"), new),
            ingest_command(tenant_a, "unsigned", invoice_body("BAD-1"), None),
            ingest_command(tenant_a, "bad-signature", invoice_body("BAD-2"), wrong_secret),
            ingest_command(tenant_a, "unknown-key", invoice_body("BAD-3"), unknown),
            # B's own, valid key used to issue for A.
            ingest_command(tenant_a, "other-tenants-key", invoice_body("BAD-4"), of_b),
            # A's own key with ce_source naming B: the forgery the security probe found.
            ingest_command(tenant_b, "forged-source", invoice_body("BAD-5"), old),
            # Correctly signed for A, with a second ce_source naming B appended.
            with_header(
                ingest_command(tenant_a, "two-sources", invoice_body("BAD-6"), old),
                "ce_source",
                f"/tenants/{tenant_b}".encode(),
            ),
        ],
    )
    first = error_codes(dead_letters(settings, expected=6))
    assert first == {
        "unsigned": "unauthenticated",
        "bad-signature": "unauthenticated",
        "unknown-key": "unauthenticated",
        "other-tenants-key": "unauthenticated",
        "forged-source": "unauthenticated",
        "two-sources": "duplicate_header",
    }
    wait_for(
        lambda: issued_by_tenant(settings) == {tenant_a: ["AUTH-1", "AUTH-2"]},
        timeout=60,
        what="both of A's keys issuing an invoice each (and nothing else issued)",
    )

    # The rotation completes: the old key is revoked and stops working, the new one goes on.
    assert client.delete(f"/v1/tenant/ingest-keys/{old.key_id}", headers=as_a).status_code == 200
    publish(
        settings,
        [
            ingest_command(tenant_a, "revoked-key", invoice_body("BAD-7"), old),
            ingest_command(tenant_a, "after-rotation", invoice_body("AUTH-3"), new),
        ],
    )
    second = error_codes(dead_letters(settings, expected=7))
    assert second == {**first, "revoked-key": "unauthenticated"}
    wait_for(
        lambda: issued_by_tenant(settings) == {tenant_a: ["AUTH-1", "AUTH-2", "AUTH-3"]},
        timeout=60,
        what="the new key issuing after the old one was revoked",
    )
    listed = {k["key_id"]: k for k in client.get("/v1/tenant/ingest-keys", headers=as_a).json()["items"]}
    assert listed[new.key_id]["last_used_at"] is not None
    assert listed[old.key_id]["active"] is False
    assert worker.poll() is None, "the worker died"


def test_a_tenant_manages_its_ingest_keys_and_sees_each_secret_only_once(
    service: LedgerService, settings: Settings
) -> None:
    _, api_key_a = register_tenant(service)
    _, api_key_b = register_tenant(service, state="29", gstin="29AAGCB7383J1Z4")
    client = client_for(settings)
    as_a = {"Authorization": f"Bearer {api_key_a}"}
    as_b = {"Authorization": f"Bearer {api_key_b}"}

    first = client.post("/v1/tenant/ingest-keys", headers=as_a)
    assert first.status_code == 201, first.text
    created = first.json()
    assert set(created) == {"key_id", "secret", "created_at"}
    assert created["secret"].startswith("lfis_") and len(created["secret"]) == 69

    second = client.post("/v1/tenant/ingest-keys", headers=as_a)
    assert second.status_code == 201
    third = client.post("/v1/tenant/ingest-keys", headers=as_a)
    assert third.status_code == 409
    error = third.json()["error"]
    assert error["code"] == "too_many_ingest_keys"
    assert "at most 2" in error["message"] and error["request_id"] and error["timestamp"]
    assert sorted(error["details"]["active"]) == sorted([created["key_id"], second.json()["key_id"]])

    listing = client.get("/v1/tenant/ingest-keys", headers=as_a)
    assert listing.status_code == 200
    items = listing.json()["items"]
    assert [k["key_id"] for k in items] == [created["key_id"], second.json()["key_id"]]
    assert all(set(k) == {"key_id", "active", "created_at", "revoked_at", "last_used_at"} for k in items)
    assert created["secret"] not in listing.text and second.json()["secret"] not in listing.text
    # Nor is it anywhere in PostgreSQL in the clear: only sealed with the key ring.
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        stored = str(conn.execute("SELECT * FROM ingest_keys").fetchall())
    assert created["key_id"] in stored and created["secret"] not in stored

    # Another tenant neither sees nor revokes A's keys: they do not exist for it.
    assert client.get("/v1/tenant/ingest-keys", headers=as_b).json()["items"] == []
    foreign = client.delete(f"/v1/tenant/ingest-keys/{created['key_id']}", headers=as_b)
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "not_found"
    assert all(k["active"] for k in client.get("/v1/tenant/ingest-keys", headers=as_a).json()["items"])

    revoked = client.delete(f"/v1/tenant/ingest-keys/{created['key_id']}", headers=as_a)
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False and revoked.json()["revoked_at"] is not None
    again = client.delete(f"/v1/tenant/ingest-keys/{created['key_id']}", headers=as_a)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # revoking twice changes nothing
    # With one key revoked there is room for the next one.
    assert client.post("/v1/tenant/ingest-keys", headers=as_a).status_code == 201

    assert client.delete("/v1/tenant/ingest-keys/ik_nope", headers=as_a).status_code == 404
    assert client.get("/v1/tenant/ingest-keys").status_code == 401
    assert (
        client.post("/v1/tenant/ingest-keys", headers={"Authorization": "Bearer lf_x_y"}).status_code == 401
    )


def test_an_operator_creates_lists_and_revokes_a_tenants_ingest_keys_from_the_cli(
    service: LedgerService, settings: Settings
) -> None:
    tenant_id, api_key = register_tenant(service)
    env = {"LEDGERFLOW_DATABASE_URL": settings.database_url, "LEDGERFLOW_DB_SCHEMA": settings.db_schema}

    def cli(*args: str) -> Any:
        return CliRunner().invoke(main, ["tenants", "ingest-keys", *args], env=env)

    created = cli("create", tenant_id, "--json")
    assert created.exit_code == 0, created.output
    key = orjson.loads(created.output)
    assert key["secret"].startswith("lfis_")
    assert cli("create", tenant_id).exit_code == 0
    refused = cli("create", tenant_id)
    assert refused.exit_code == 1 and "at most 2" in refused.output

    listed = cli("list", tenant_id)
    assert listed.exit_code == 0 and key["key_id"] in listed.output and key["secret"] not in listed.output
    assert listed.output.count("active") == 2

    revoked = cli("revoke", tenant_id, key["key_id"])
    assert revoked.exit_code == 0, revoked.output
    # The API sees what the operator did: the tenant's key list shows the revocation.
    as_tenant = {"Authorization": f"Bearer {api_key}"}
    items = client_for(settings).get("/v1/tenant/ingest-keys", headers=as_tenant).json()["items"]
    assert {k["key_id"]: k["active"] for k in items}[key["key_id"]] is False

    assert cli("revoke", tenant_id, "ik_nope").exit_code == 1
    unknown = cli("list", str(uuid.uuid4()))
    assert unknown.exit_code == 1 and "no tenant" in unknown.output
