"""The ingest agent's batch path (engine.ingest.apply_ingest_batch) on the real event store.

A batch must give every message the outcome it would get alone and in order, while the accepted
ones are stored with one event-store transaction. That one transaction is visible in PostgreSQL:
every row a transaction inserts carries its id in the system column ``xmin``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from confluent_kafka import Producer

from engine import db
from engine.application import LedgerService
from engine.config import Settings
from engine.ingest import IngestRejected, IngestResult, apply_ingest_batch
from engine.security import ingest_keys
from engine.security.secrets import load_key_ring
from tests.conftest import wait_for
from tests.integration.helpers import create_ingest_key, ingest_command, invoice_body, register_tenant
from tests.integration.processes import Processes
from tests.integration.test_crash_recovery import read_whole_topic
from tests.integration.test_ingest import dead_letters, error_codes, settings_env

pytestmark = pytest.mark.integration

Message = tuple[list[tuple[str, bytes]], bytes]


def signing_keys(service: LedgerService, settings: Settings) -> ingest_keys.SigningKeys:
    """The agent's key cache (streams/ingest.py), on the test's schema."""

    def find(key_id: str) -> ingest_keys.StoredIngestKey | None:
        with db.transaction(service.pool) as conn:
            return ingest_keys.find(conn, key_id)

    def record_use(key_id: str) -> None:
        with db.transaction(service.pool) as conn:
            ingest_keys.record_use(conn, key_id)

    return ingest_keys.SigningKeys(find, record_use, load_key_ring(settings.var_dir), ttl=0)


def query(settings: Settings, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        return conn.execute(statement).fetchall()  # type: ignore[arg-type]


def issued(settings: Settings) -> list[tuple[str, str]]:
    """(invoice number, the transaction that stored it) for every Issued event, in store order."""
    rows = query(
        settings,
        "SELECT convert_from(state, 'UTF8')::jsonb->>'number', xmin::text FROM ledger_events"
        " WHERE topic LIKE '%Invoice.Issued' ORDER BY notification_id",
    )
    return [(str(number), str(xid)) for number, xid in rows]


def outcome_codes(outcomes: list[IngestResult | IngestRejected]) -> list[str]:
    return [
        o.code if isinstance(o, IngestRejected) else ("created" if o.created else "existed") for o in outcomes
    ]


@pytest.fixture
def tenant(service: LedgerService, settings: Settings) -> tuple[str, ingest_keys.IssuedIngestKey]:
    tenant_id, _ = register_tenant(service)
    return tenant_id, create_ingest_key(settings, tenant_id)


def test_a_batch_stores_its_valid_commands_in_one_transaction_and_each_bad_one_is_refused_alone(
    service: LedgerService, settings: Settings, tenant: tuple[str, ingest_keys.IssuedIngestKey]
) -> None:
    tenant_id, key = tenant
    messages: list[Message] = [
        ingest_command(tenant_id, f"ok-{i}", invoice_body(f"B-{i}"), key) for i in range(40)
    ]
    messages[5] = ingest_command(tenant_id, "bad-json", b"{not json", key)
    messages[17] = ingest_command(
        tenant_id, "bad-gstin", invoice_body("B-17", buyer={**invoice_body()["buyer"], "gstin": "X"}), key
    )
    messages[30] = ingest_command(tenant_id, "unsigned", invoice_body("B-30"), None)

    outcomes = apply_ingest_batch(service, messages, signing_keys(service, settings))

    codes = outcome_codes(outcomes)
    assert (
        codes[5] == "malformed_json" and codes[17] == "validation_failed" and codes[30] == "unauthenticated"
    )
    assert codes.count("created") == 37
    bad_gstin = outcomes[17]
    assert isinstance(bad_gstin, IngestRejected) and bad_gstin.fields[0]["path"] == "buyer.gstin"
    stored = issued(settings)
    assert sorted(n for n, _ in stored) == sorted(f"B-{i}" for i in range(40) if i not in (5, 17, 30))
    assert len({xid for _, xid in stored}) == 1, "the batch's invoices were not stored in one transaction"
    keys = {row[0] for row in query(settings, "SELECT key FROM idempotency_keys")}
    assert keys == {f"ok-{i}" for i in range(40) if i not in (5, 17, 30)}


def test_a_command_repeated_inside_one_batch_issues_one_invoice(
    service: LedgerService, settings: Settings, tenant: tuple[str, ingest_keys.IssuedIngestKey]
) -> None:
    tenant_id, key = tenant
    messages = [
        ingest_command(tenant_id, "cmd-1", invoice_body("D-1"), key),
        ingest_command(tenant_id, "cmd-2", invoice_body("D-2"), key),
        ingest_command(tenant_id, "cmd-1", invoice_body("D-1"), key),  # a redelivery
        ingest_command(tenant_id, "cmd-2", invoice_body("D-2-other"), key),  # the key, another body
    ]

    outcomes = apply_ingest_batch(service, messages, signing_keys(service, settings))

    assert outcome_codes(outcomes) == ["created", "created", "existed", "idempotency_key_reused"]
    first, again = outcomes[0], outcomes[2]
    assert isinstance(first, IngestResult) and isinstance(again, IngestResult)
    assert again.invoice_id == first.invoice_id
    assert sorted(n for n, _ in issued(settings)) == ["D-1", "D-2"]


def test_the_same_invoice_twice_in_one_batch_keeps_the_first_and_refuses_the_second(
    service: LedgerService, settings: Settings, tenant: tuple[str, ingest_keys.IssuedIngestKey]
) -> None:
    tenant_id, key = tenant
    messages = [
        ingest_command(tenant_id, "first", invoice_body("SAME-1"), key),
        ingest_command(tenant_id, "neighbour", invoice_body("N-1"), key),
        # Another command (ce_id) for the same invoice number: the same aggregate.
        ingest_command(
            tenant_id,
            "second",
            invoice_body("SAME-1", buyer={**invoice_body()["buyer"], "name": "Other"}),
            key,
        ),
        ingest_command(tenant_id, "last", invoice_body("N-2"), key),
    ]

    outcomes = apply_ingest_batch(service, messages, signing_keys(service, settings))

    assert outcome_codes(outcomes) == ["created", "created", "duplicate_invoice_number", "created"]
    rows = query(
        settings,
        "SELECT convert_from(state, 'UTF8')::jsonb->'buyer'->>'name' FROM ledger_events"
        " WHERE topic LIKE '%Invoice.Issued' AND convert_from(state, 'UTF8')::jsonb->>'number' = 'SAME-1'",
    )
    assert rows == [(invoice_body()["buyer"]["name"],)], "the first command of the invoice must win"
    keys = {row[0] for row in query(settings, "SELECT key FROM idempotency_keys")}
    assert keys == {"first", "neighbour", "last"}


def test_a_batch_meeting_an_invoice_number_stored_before_gives_each_command_its_own_outcome(
    service: LedgerService, settings: Settings, tenant: tuple[str, ingest_keys.IssuedIngestKey]
) -> None:
    tenant_id, key = tenant
    keys = signing_keys(service, settings)
    apply_ingest_batch(service, [ingest_command(tenant_id, "earlier", invoice_body("OLD-1"), key)], keys)
    messages = [
        ingest_command(tenant_id, "new-1", invoice_body("NEW-1"), key),
        ingest_command(tenant_id, "clash", invoice_body("OLD-1"), key),
        ingest_command(tenant_id, "new-2", invoice_body("NEW-2"), key),
    ]

    outcomes = apply_ingest_batch(service, messages, keys)

    assert outcome_codes(outcomes) == ["created", "duplicate_invoice_number", "created"]
    stored = issued(settings)
    assert sorted(n for n, _ in stored) == ["NEW-1", "NEW-2", "OLD-1"]
    # Only the clash went one at a time: the others were still stored together.
    assert len({xid for n, xid in stored if n.startswith("NEW-")}) == 1


def test_a_batch_delivered_again_creates_nothing_new(
    service: LedgerService, settings: Settings, tenant: tuple[str, ingest_keys.IssuedIngestKey]
) -> None:
    tenant_id, key = tenant
    keys = signing_keys(service, settings)
    messages = [ingest_command(tenant_id, f"r-{i}", invoice_body(f"R-{i}"), key) for i in range(20)]
    first = apply_ingest_batch(service, messages, keys)
    # As after a crash that lost the claims but not the events (a claim is committed without
    # waiting for its WAL flush): the event store alone must stop the doubles.
    query_commit(settings, "DELETE FROM idempotency_keys WHERE key LIKE 'r-1%'")

    again = apply_ingest_batch(service, messages, keys)

    assert outcome_codes(first) == ["created"] * 20
    assert outcome_codes(again) == ["existed"] * 20
    assert [o.invoice_id for o in again if isinstance(o, IngestResult)] == [
        o.invoice_id for o in first if isinstance(o, IngestResult)
    ]
    assert len(issued(settings)) == 20
    assert len(query(settings, "SELECT key FROM idempotency_keys")) == 20


def query_commit(settings: Settings, statement: str) -> None:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        conn.execute(statement)  # type: ignore[arg-type]


# -- the worker process -------------------------------------------------------------------------


@pytest.fixture
def worker(settings: Settings, topics: list[str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
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


def test_the_worker_applies_a_large_batch_around_its_poison_repeats_and_clashes(
    service: LedgerService, settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    tenant_id, _ = register_tenant(service)
    key = create_ingest_key(settings, tenant_id)
    messages = [ingest_command(tenant_id, f"w-{i}", invoice_body(f"W-{i}"), key) for i in range(600)]
    messages[100] = ingest_command(tenant_id, "w-bad", b"[1, 2", key)
    messages[200] = ingest_command(tenant_id, "w-50", invoice_body("W-50"), key)  # a repeat
    messages[300] = ingest_command(tenant_id, "w-clash", invoice_body("W-10"), key)  # number taken
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for headers, value in messages:
        # One partition: the whole backlog arrives in the same few batches, in this order.
        producer.produce(settings.topic("ingest.invoice.v1"), value=value, headers=headers, partition=0)
    assert producer.flush(30) == 0

    assert error_codes(dead_letters(settings, expected=2)) == {
        "w-bad": "malformed_json",
        "w-clash": "duplicate_invoice_number",
    }
    expected = sorted(f"W-{i}" for i in range(600) if i not in (100, 200, 300))
    wait_for(
        lambda: sorted(n for n, _ in issued(settings)) == expected,
        timeout=120,
        what="the 597 good commands stored once each",
    )
    assert len({xid for _, xid in issued(settings)}) < 100, "the worker did not store in batches"
    assert worker.poll() is None, "the worker died"


def test_unknown_tenant_in_a_batch_is_refused_alone(
    service: LedgerService, settings: Settings, tenant: tuple[str, ingest_keys.IssuedIngestKey]
) -> None:
    tenant_id, key = tenant
    ghost = str(uuid.uuid4())
    # A key row for a tenant whose aggregate does not exist (deleted data, a restore gone wrong).
    ghost_key = create_ingest_key(settings, ghost)
    messages = [
        ingest_command(tenant_id, "a", invoice_body("G-1"), key),
        ingest_command(ghost, "b", invoice_body("G-2"), ghost_key),
        ingest_command(tenant_id, "c", invoice_body("G-3"), key),
    ]

    outcomes = apply_ingest_batch(service, messages, signing_keys(service, settings))

    assert outcome_codes(outcomes) == ["created", "unknown_tenant", "created"]
    assert sorted(n for n, _ in issued(settings)) == ["G-1", "G-3"]


# -- SIGKILL or SIGTERM in the middle of a batch ------------------------------------------------


def stored_count(settings: Settings) -> int:
    return int(query(settings, "SELECT count(*) FROM ledger_events WHERE topic LIKE '%Invoice.Issued'")[0][0])


def claims_held_by(settings: Settings, pid: int) -> bool:
    """Whether process ``pid`` holds a batch's claims open right now: the moment between claiming
    a batch's keys and committing them, while its invoices are written to the event store."""
    ports = {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr}
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT client_port FROM pg_stat_activity WHERE state = 'idle in transaction'"
            " AND query LIKE 'INSERT INTO idempotency_keys%unnest%'"
        ).fetchall()
    return any(port in ports for (port,) in rows)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_killing_or_stopping_the_worker_in_the_middle_of_a_batch_loses_and_doubles_nothing(
    how: str, service: LedgerService, settings: Settings, topics: list[str], tmp_path: Path
) -> None:
    total = 3000
    tenant_id, _ = register_tenant(service)
    key = create_ingest_key(settings, tenant_id)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for i in range(total):
        headers, value = ingest_command(tenant_id, f"k-{i}", invoice_body(f"K-{i}"), key)
        producer.produce(settings.topic("ingest.invoice.v1"), value=value, headers=headers)
        producer.poll(0)
    assert producer.flush(30) == 0
    processes = Processes(settings, tmp_path)
    try:
        worker = processes.start("worker")
        processes.wait_for(
            lambda: stored_count(settings) >= 500,
            timeout=120,
            what="the worker storing its first full batch",
            watch=[worker],
        )
        # Killed while the next batch's claims are held: its events are being written (or just
        # were) and neither its claims nor its offsets are committed, nor perhaps the previous
        # batch's offsets (committed once a second).
        processes.wait_for(
            lambda: claims_held_by(settings, worker.pid),
            timeout=120,
            interval=0.005,
            what="the worker holding a batch's claims",
            watch=[worker],
        )
        if how == "SIGKILL":
            worker.kill()
        else:  # a clean stop must not commit the offsets of a batch it has not stored
            worker.stop()
        assert len(issued(settings)) < total, (
            "the worker finished before it was killed: the test proves nothing"
        )

        worker = processes.start("worker")
        processes.wait_for(
            lambda: (
                len(issued(settings)) >= total
                and len(query(settings, "SELECT key FROM idempotency_keys")) >= total
            ),
            timeout=180,
            what=f"all {total} commands ingested after the restart",
            watch=[worker],
        )
        processes.assert_alive(worker)
    finally:
        processes.close()

    numbers = [n for n, _ in issued(settings)]
    assert len(numbers) == total and set(numbers) == {f"K-{i}" for i in range(total)}, "lost or doubled"
    keys = query(settings, "SELECT key FROM idempotency_keys")
    assert sorted(k for (k,) in keys) == sorted(f"k-{i}" for i in range(total))
    dead = read_whole_topic(settings, settings.topic("ingest.invoice.dlq.v1"))
    assert dead.messages == 0, "a redelivered command was dead-lettered"
