"""``ledgerflow projections rebuild`` against the real broker and database.

The live projector and the write side keep running during every rebuild here, as they would in
production: the rebuilt table must hold every invoice, including the ones issued while it was
being built, and the live projector must carry on against the swapped-in table.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

import orjson
import psycopg
import pytest
from click.testing import CliRunner

from engine import db
from engine.application import LedgerService
from engine.cli import main
from engine.commands import CancelInvoice, IssueInvoice
from engine.config import Settings
from engine.relay import Relay
from projections.invoice_register import InvoiceRegister
from projections.rebuild import RebuildError, pending, rebuild
from projections.runner import ProjectionRunner
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import invoice_body, register_tenant
from tests.integration.processes import settings_env

pytestmark = pytest.mark.integration


def issue(service: LedgerService, tenant_id: UUID, prefix: str, n: int) -> list[UUID]:
    return [
        service.issue_invoice(
            tenant_id, IssueInvoice.model_validate(invoice_body(f"{prefix}-{i}"))
        ).invoice.id
        for i in range(n)
    ]


def register(settings: Settings) -> dict[UUID, tuple[str, str, str]]:
    """invoice_id -> (number, status, total) of every row of the live table."""
    with db.connect(settings) as conn:
        rows = conn.execute("SELECT invoice_id, number, status, total::text FROM invoice_register").fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def projected_count(settings: Settings) -> int:
    with db.connect(settings) as conn:
        row = conn.execute("SELECT count(*) FROM invoice_register").fetchone()
    return int(row[0]) if row else 0


def expected(service: LedgerService, tenant_id: UUID, ids: list[UUID]) -> dict[UUID, tuple[str, str, str]]:
    """What the register must show, from the event store itself."""
    out = {}
    for invoice_id in ids:
        invoice = service.get_invoice(tenant_id, invoice_id)
        out[invoice_id] = (invoice.number, invoice.status, str(invoice.totals["total"]))
    return out


def table_shape(settings: Settings) -> tuple[set[str], set[str], set[str]]:
    """(tables, indexes, constraints) of the test's schema whose names start with invoice_register."""
    with db.connect(settings) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE 'invoice_register%%'",
            (settings.db_schema,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'invoice_register'",
            (settings.db_schema,),
        ).fetchall()
        constraints = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'invoice_register'::regclass"
        ).fetchall()
    return {t for (t,) in tables}, {i for (i,) in indexes}, {c for (c,) in constraints}


def tracking_names(settings: Settings) -> set[str]:
    with db.connect(settings) as conn:
        return {p for (p,) in conn.execute("SELECT DISTINCT projection FROM projection_tracking").fetchall()}


@pytest.fixture
def pipeline(settings: Settings, topics: list[str], background: BackgroundLoop) -> BackgroundLoop:
    """The relay and the live projector, running for the whole test."""
    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, InvoiceRegister(), max_records=50).run)
    return background


# One process, and the partitions shared out between two (projections/rebuild.py, _fill_share).
@pytest.mark.parametrize("workers", [1, 2])
def test_rebuild_while_live_writes_continue_restores_the_truth_and_swaps_in(
    service: LedgerService, settings: Settings, pipeline: BackgroundLoop, workers: int
) -> None:
    tenant_id = UUID(register_tenant(service)[0])
    ids = issue(service, tenant_id, "RB", 40)
    for invoice_id in ids[:5]:
        service.cancel_invoice(tenant_id, invoice_id, CancelInvoice(reason="other", remark="test"))
    wait_for(lambda: register(settings) == expected(service, tenant_id, ids), what="the live projection")
    shape_before = table_shape(settings)

    # Damage the live table the way a projection bug would: a lost row and a wrong total.
    with db.connect(settings) as conn, conn.transaction():
        conn.execute("DELETE FROM invoice_register WHERE invoice_id = %s", (ids[10],))
        conn.execute("UPDATE invoice_register SET total = 0 WHERE invoice_id = %s", (ids[11],))
    assert register(settings) != expected(service, tenant_id, ids)

    # Invoices keep arriving during the rebuild (and after it), through the live projector.
    during: list[UUID] = []
    done = threading.Event()

    def keep_issuing() -> None:
        for i in range(60):
            if done.is_set():
                return
            during.extend(issue(service, tenant_id, f"LIVE{i}", 1))

    writer = threading.Thread(target=keep_issuing)
    writer.start()
    try:
        report = rebuild(settings, "invoice_register", batch=7, workers=workers)
    finally:
        done.set()
        writer.join()
    assert not report.resumed and report.source == "kafka"
    assert report.events_applied >= len(ids) + 5
    assert report.undecodable == 0

    more = issue(service, tenant_id, "AFTER", 5)  # the live projector carries on against the new table
    everything = ids + during + more
    truth = expected(service, tenant_id, everything)
    wait_for(lambda: register(settings) == truth, what="the rebuilt register matching the event store")

    # The swapped-in table has the live names, nothing of the rebuild is left behind.
    assert table_shape(settings) == shape_before
    assert "invoice_register_tenant_date" in shape_before[1] and "invoice_register_pkey" in shape_before[2]
    assert tracking_names(settings) == {"invoice_register"}
    assert pending(settings) == []
    # The reporting views were dropped with the old table and re-created over the new one.
    with db.connect(settings) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{settings.reporting_schema}".invoices').fetchone()
    assert row is not None and row[0] == len(truth)
    pipeline.check()


def test_an_interrupted_rebuild_resumes_where_it_stopped(
    service: LedgerService, settings: Settings, pipeline: BackgroundLoop
) -> None:
    tenant_id = UUID(register_tenant(service)[0])
    ids = issue(service, tenant_id, "RS", 30)
    wait_for(lambda: projected_count(settings) == 30, what="the live projection")

    first = rebuild(settings, "invoice_register", batch=5, stop_after=10, workers=2)
    assert first.events_applied < 30  # stopped part-way: nothing swapped
    (left,) = pending(settings)
    assert left["projection"] == "invoice_register" and left["events_applied"] == first.events_applied
    assert "invoice_register__rebuild" in table_shape(settings)[0]
    assert projected_count(settings) == 30  # the live table serves on, untouched

    # The other source cannot silently take over a pending rebuild.
    with pytest.raises(RebuildError, match="pending: run it again without --from-event-store"):
        rebuild(settings, "invoice_register", from_event_store=True)

    second = rebuild(settings, "invoice_register", batch=5, workers=2)
    assert second.resumed
    assert first.events_applied + second.events_applied == 30  # nothing read twice
    assert register(settings) == expected(service, tenant_id, ids)
    assert pending(settings) == [] and tracking_names(settings) == {"invoice_register"}


def _truncate(settings: Settings, topic: str) -> None:
    """Delete every record of ``topic`` (what retention or compaction does to old history)."""
    from confluent_kafka import TopicPartition as Partition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    # OFFSET_END: up to the current end of each partition.
    wanted = [Partition(topic, p, -1) for p in partitions]
    for future in admin.delete_records(wanted).values():
        future.result(timeout=30)


def _retained(settings: Settings, topic: str) -> int:
    """Records still on ``topic`` (end minus earliest offset, summed over partitions)."""
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as Partition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "unused"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = [consumer.get_watermark_offsets(Partition(topic, p), timeout=10) for p in partitions]
    finally:
        consumer.close()
    return sum(high - low for low, high in marks)


def test_rebuild_from_the_event_store_after_the_topic_was_truncated(
    service: LedgerService, settings: Settings, pipeline: BackgroundLoop
) -> None:
    tenant_id = UUID(register_tenant(service)[0])
    ids = issue(service, tenant_id, "ES", 25)
    service.cancel_invoice(tenant_id, ids[0], CancelInvoice(reason="duplicate"))
    wait_for(lambda: register(settings) == expected(service, tenant_id, ids), what="the live projection")
    positions_before = _positions(settings)

    _truncate(settings, settings.topic("ledger.invoice.v1"))
    assert _retained(settings, settings.topic("ledger.invoice.v1")) == 0
    with db.connect(settings) as conn, conn.transaction():
        conn.execute("DELETE FROM invoice_register")  # a table lost together with its topic's history

    # From Kafka the deleted events cannot come back: refused, and nothing is left pending.
    with pytest.raises(RebuildError, match=r"no longer holds every event .*--from-event-store"):
        rebuild(settings, "invoice_register")
    assert pending(settings) == []
    # The event store still has everything.
    report = rebuild(settings, "invoice_register", from_event_store=True, batch=8)
    assert report.source == "event-store" and report.events_applied == 26
    assert register(settings) == expected(service, tenant_id, ids)
    assert _positions(settings) == positions_before  # the live projector continues where it was

    more = issue(service, tenant_id, "ES-AFTER", 3)
    truth = expected(service, tenant_id, ids + more)
    wait_for(lambda: register(settings) == truth, what="new invoices after the event-store rebuild")


def _positions(settings: Settings) -> dict[tuple[str, int], int]:
    with db.connect(settings) as conn:
        rows = conn.execute(
            'SELECT topic, partition, "offset" FROM projection_tracking WHERE projection = %s',
            ("invoice_register",),
        ).fetchall()
    return {(t, p): o for t, p, o in rows}


def test_rebuild_command_reports_and_refuses_clearly(settings: Settings, topics: list[str]) -> None:
    runner = CliRunner()
    env = settings_env(settings)

    unknown = runner.invoke(main, ["projections", "rebuild", "nope"], env=env)
    assert unknown.exit_code == 1
    assert (
        "no projection named 'nope' (known: invoice_register, etims_compliance, gst_outward_supplies"
        in unknown.output
    )

    # A second rebuild of the same projection while one runs is refused, not interleaved.
    key = f"ledgerflow.rebuild.{settings.db_schema}.invoice_register"
    with psycopg.connect(settings.database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        busy = runner.invoke(main, ["projections", "rebuild", "invoice_register"], env=env)
    assert busy.exit_code == 1
    assert "another rebuild of invoice_register is running" in busy.output

    ok = runner.invoke(main, ["projections", "rebuild", "invoice_register", "--json"], env=env)
    assert ok.exit_code == 0, ok.output
    summary: dict[str, Any] = orjson.loads(ok.output)
    assert summary["projection"] == "invoice_register" and summary["events_applied"] == 0
    assert summary["rows"] == 0 and pending(settings) == []


def test_the_swap_waits_for_a_long_reader_then_swaps(
    service: LedgerService, settings: Settings, pipeline: BackgroundLoop
) -> None:
    tenant_id = UUID(register_tenant(service)[0])
    ids = issue(service, tenant_id, "LR", 10)
    wait_for(lambda: projected_count(settings) == 10, what="the live projection")

    # An analyst's long transaction holds the live table (ACCESS SHARE) for as long as it runs.
    reader = psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}")
    reader.execute("SELECT count(*) FROM invoice_register").fetchone()
    finished: list[Any] = []
    worker = threading.Thread(target=lambda: finished.append(rebuild(settings, "invoice_register")))
    worker.start()
    try:

        def swap_waiting() -> bool:
            with db.connect(settings) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_locks"
                    " WHERE NOT granted AND relation = 'invoice_register'::regclass"
                ).fetchone()
            return bool(row and row[0])

        wait_for(swap_waiting, what="the swap waiting for the reader's lock")
        assert not finished and "invoice_register__rebuild" in table_shape(settings)[0]
    finally:
        reader.rollback()  # the reader ends; the swap's next attempt gets the lock
        reader.close()
    worker.join(timeout=120)
    (report,) = finished
    assert report.rows == 10
    assert register(settings) == expected(service, tenant_id, ids)
    assert pending(settings) == []
