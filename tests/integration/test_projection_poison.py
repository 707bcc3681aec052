"""A poison event on a ledger topic must not stop the read side: the projector isolates it, records it
as a dead letter (table + projection.<name>.dlq.v1), applies everything else with exact positions,
and an operator redrives or discards it. Outages are waited out, never dead-lettered.

The poison records are produced straight onto the ledger topic exactly as the relay writes them
(Avro single-object value, CloudEvents headers): the write side refuses such input, but the read
side must survive whatever got onto the topic."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from engine import db
from engine.application import LedgerService, open_ledger
from engine.cli import main
from engine.commands import CancelInvoice, IssueInvoice
from engine.config import Settings
from engine.publishing import OutboundEvent, event_id, headers_for, outbound_from_stored
from ops.lag import consumer_health, render_health
from projections import dead_letters
from projections.invoice_register import InvoiceRegister
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from schemas import registry
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import client_for, invoice_body, register_tenant
from tests.integration.processes import Processes

INVOICE_TOPIC = "ledger.invoice.v1"
DLQ_TOPIC = "projection.invoice_register.dlq.v1"


# -- building records the way the relay does ---------------------------------------------------------


def stored_invoice_events(settings: Settings) -> list[OutboundEvent]:
    """Every stored invoice event, as the relay turns it into a message."""
    ledger = open_ledger(settings)
    try:
        notifications = ledger.recorder.select_notifications(start=1, limit=10_000)
    finally:
        ledger.close()
    found = [
        outbound_from_stored(n.originator_id, n.originator_version, n.topic, n.state) for n in notifications
    ]
    return [o for o in found if o.topic == INVOICE_TOPIC]


def relay_record(outbound: OutboundEvent) -> dict[str, Any]:
    value, schema = registry.encode_event(outbound.ce_type, outbound.record)
    return {
        "key": outbound.key.encode(),
        "value": value,
        "headers": headers_for(outbound, schema.fingerprint_hex),
    }


def for_invoice(template: OutboundEvent, invoice_id: UUID, version: int, **changes: Any) -> OutboundEvent:
    """``template``'s event for another invoice (a new aggregate id and event id), fields changed."""
    record = copy.deepcopy(template.record)
    ce_id = str(event_id(invoice_id, version))
    record.update(invoice_id=str(invoice_id), event_id=ce_id, **changes)
    return dataclasses.replace(
        template, key=str(invoice_id), subject=str(invoice_id), ce_id=ce_id, record=record
    )


def retyped(template: OutboundEvent, ce_type: str, version: int, record: dict[str, Any]) -> OutboundEvent:
    """Another event type for the same invoice as ``template``."""
    invoice_id = UUID(template.key)
    ce_id = str(event_id(invoice_id, version))
    full = {
        "event_id": ce_id,
        "tenant_id": template.record["tenant_id"],
        "occurred_at": template.record["occurred_at"],
        "invoice_id": template.key,
        **record,
    }
    return dataclasses.replace(template, ce_type=ce_type, ce_id=ce_id, record=full)


def produce(settings: Settings, records: Sequence[dict[str, Any]]) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for r in records:
                await producer.send_and_wait(settings.topic(INVOICE_TOPIC), **r)
        finally:
            await producer.stop()

    asyncio.run(run())


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"poison-test-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )


def read_topic(settings: Settings, logical: str) -> list[Any]:
    """Every record of a topic (confluent-kafka messages), partition by partition."""
    topic = settings.topic(logical)
    consumer = _consumer(settings)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        out: list[Any] = []
        for p in sorted(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            while not out or out[-1].partition() != p or out[-1].offset() < high - 1:
                message = consumer.poll(10)
                assert message is not None and message.error() is None, f"reading {topic}[{p}]"
                out.append(message)
        return out
    finally:
        consumer.close()


def end_offsets(settings: Settings) -> dict[int, int]:
    topic = settings.topic(INVOICE_TOPIC)
    consumer = _consumer(settings)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
    finally:
        consumer.close()


# -- reading the read side --------------------------------------------------------------------------


def tracked(settings: Settings) -> dict[int, int]:
    with db.connect(settings) as conn:
        rows = conn.execute(
            "SELECT partition, \"offset\" FROM projection_tracking WHERE projection = 'invoice_register'"
            " AND topic = %s",
            (settings.topic(INVOICE_TOPIC),),
        ).fetchall()
    return {int(p): int(o) for p, o in rows}


def caught_up(settings: Settings) -> bool:
    """Tracking has reached the last record of every non-empty partition."""
    ends = end_offsets(settings)
    return tracked(settings) == {p: end - 1 for p, end in ends.items() if end > 0}


def row(settings: Settings, invoice_id: UUID | str) -> tuple[Any, ...] | None:
    with db.connect(settings) as conn:
        return conn.execute(
            "SELECT status, irn, number FROM invoice_register WHERE invoice_id = %s", (str(invoice_id),)
        ).fetchone()


def letters(settings: Settings) -> list[dead_letters.DeadLetter]:
    with db.connect(settings) as conn:
        return dead_letters.select(conn, "invoice_register")


def cli(settings: Settings, *args: str) -> Result:
    env = {
        "LEDGERFLOW_DATABASE_URL": settings.database_url,
        "LEDGERFLOW_DB_SCHEMA": settings.db_schema,
        "LEDGERFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "LEDGERFLOW_KAFKA": settings.kafka_bootstrap,
        "LEDGERFLOW_PARTITIONS": str(settings.partitions),
    }
    return CliRunner().invoke(main, list(args), env=env)


def issue(service: LedgerService, tenant_id: str, number: str, **changes: Any) -> UUID:
    issued = service.issue_invoice(
        UUID(tenant_id), IssueInvoice.model_validate(invoice_body(number, **changes))
    )
    return issued.invoice.id


# -- the scenario -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Poisoned:
    good: list[UUID]
    nul_buyer: UUID
    overflow: UUID
    irn_nul: UUID
    """Issued fine; its irn_generated event has a NUL byte in the IRN; then it is cancelled."""
    records: int
    api_key: str


def poisoned_topic(service: LedgerService, settings: Settings) -> Poisoned:
    """Good events with three poison events among them, in one stretch of the topic."""
    tenant_id, api_key = register_tenant(service)
    good = [issue(service, tenant_id, f"GOOD-{i}") for i in range(4)]
    irn_nul = issue(service, tenant_id, "IRN-NUL")
    service.cancel_invoice(UUID(tenant_id), irn_nul, CancelInvoice(reason="other", remark="poison test"))
    stored = stored_invoice_events(settings)
    issued = {UUID(o.key): o for o in stored if o.ce_type == "ledgerflow.invoice.issued"}
    cancelled = next(o for o in stored if o.ce_type == "ledgerflow.invoice.cancelled")
    template = issued[good[0]]

    nul_buyer, overflow = uuid.uuid4(), uuid.uuid4()
    nul = for_invoice(
        template,
        nul_buyer,
        1,
        number="NUL-1",
        buyer={**template.record["buyer"], "name": "Reliable\x00Traders"},
    )
    huge = {**template.record["totals"], "total": "1" + "0" * 20 + ".00"}
    too_big = for_invoice(template, overflow, 1, number="OVERFLOW-1", totals=huge)
    irn_generated = retyped(
        issued[irn_nul],
        "ledgerflow.invoice.irn_generated",
        99,
        {
            "irn": "a" * 30 + "\x00" + "b" * 33,
            "job_id": "job-1",
            "ack_no": "112010000000001",
            "ack_date": "2026-01-19 10:00:00",
            "signed_invoice": "eyJ.sig",
            "signed_qr_code": "eyJ.qr",
            "adopted_existing": False,
        },
    )
    ordered = [
        issued[good[0]],
        issued[good[1]],
        nul,
        issued[irn_nul],
        too_big,
        issued[good[2]],
        irn_generated,
        cancelled,
        issued[good[3]],
    ]
    produce(settings, [relay_record(o) for o in ordered])
    return Poisoned(good, nul_buyer, overflow, irn_nul, len(ordered), api_key)


def test_poison_events_are_dead_lettered_while_every_good_event_applies_with_exact_tracking(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    scene = poisoned_topic(service, settings)
    runner = ProjectionRunner(settings, InvoiceRegister())
    background.start(runner.run)

    wait_for(lambda: caught_up(settings), timeout=120, what="the projector passing every record")
    background.check()  # still running, no error

    for invoice_id in scene.good:
        assert row(settings, invoice_id) is not None
    assert row(settings, scene.nul_buyer) is None
    assert row(settings, scene.overflow) is None
    # The event after the poison one applied: cancelled, but without the IRN that could not be stored.
    assert row(settings, scene.irn_nul) == ("cancelled", None, "IRN-NUL")

    found = {d.aggregate_id: d for d in letters(settings)}
    assert set(found) == {str(scene.nul_buyer), str(scene.overflow), str(scene.irn_nul)}
    assert found[str(scene.overflow)].error_class == "NumericValueOutOfRange"
    assert "NUL" in found[str(scene.nul_buyer)].error_message
    irn_letter = found[str(scene.irn_nul)]
    assert irn_letter.ce_type == "ledgerflow.invoice.irn_generated"
    assert irn_letter.ce_id == str(event_id(scene.irn_nul, 99))
    assert irn_letter.state == "pending" and irn_letter.tenant_id
    assert all(d.topic == settings.topic(INVOICE_TOPIC) and d.offset >= 0 for d in found.values())

    # The same letters on the DLQ topic, with the original bytes and the context headers.
    wait_for(lambda: len(read_topic(settings, DLQ_TOPIC)) == 3, timeout=60, what="3 records on the DLQ topic")
    by_ce_id = {dict(m.headers())["ce_id"].decode(): m for m in read_topic(settings, DLQ_TOPIC)}
    copied = by_ce_id[irn_letter.ce_id]
    headers = {k: v.decode() for k, v in copied.headers()}
    assert copied.value() == irn_letter.value and copied.key() == str(scene.irn_nul).encode()
    assert headers["original-topic"] == settings.topic(INVOICE_TOPIC)
    assert (headers["original-partition"], headers["original-offset"]) == (
        str(irn_letter.partition),
        str(irn_letter.offset),
    )
    assert headers["error-code"] == "apply_failed" and headers["error-class"] == "DataError"
    assert "NUL" in headers["error-message"] and headers["dead-letter-id"] == str(irn_letter.id)
    # (At least: a rebalance while a batch is being written makes the runner read it again; the
    # letters are recorded once per record all the same, as the table and the topic show.)
    assert runner.stats.dead_lettered >= 3


def test_the_api_marks_a_row_incomplete_until_its_dead_letter_is_discarded(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    scene = poisoned_topic(service, settings)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)
    wait_for(lambda: caught_up(settings), timeout=120, what="the projector passing every record")
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {scene.api_key}"}

    shown = client.get(f"/v1/invoices/{scene.irn_nul}", headers=auth).json()
    assert shown["status"] == "cancelled" and shown["incomplete"] is True
    assert "incomplete" not in client.get(f"/v1/invoices/{scene.good[0]}", headers=auth).json()
    listed = {i["id"]: i for i in client.get("/v1/invoices", headers=auth).json()["items"]}
    assert listed[str(scene.irn_nul)]["incomplete"] is True

    irn_letter = next(d for d in letters(settings) if d.aggregate_id == str(scene.irn_nul))
    listing = cli(settings, "dlq", "list", "--projection", "invoice_register")
    assert listing.exit_code == 0, listing.output
    assert str(scene.irn_nul) in listing.output and "ledgerflow.invoice.irn_generated" in listing.output
    assert len(listing.output.strip().splitlines()) == 1 + 3
    shown_letter = cli(settings, "dlq", "show", "--projection", "invoice_register", str(irn_letter.id))
    assert shown_letter.exit_code == 0, shown_letter.output
    assert f"dead letter {irn_letter.id}: pending" in shown_letter.output
    assert "ce_type: 'ledgerflow.invoice.irn_generated'" in shown_letter.output
    assert "NUL" in shown_letter.output

    discarded = cli(settings, "dlq", "discard", "--projection", "invoice_register", str(irn_letter.id))
    assert discarded.exit_code == 0, discarded.output
    assert f"1 discarded: {irn_letter.id}" in discarded.output
    assert "incomplete" not in client.get(f"/v1/invoices/{scene.irn_nul}", headers=auth).json()
    assert {d.id: d.state for d in letters(settings)}[irn_letter.id] == "discarded"
    again = cli(settings, "dlq", "discard", "--projection", "invoice_register", str(irn_letter.id), "999999")
    assert again.exit_code == 1
    assert "already discarded" in again.output and "id 999999: no such dead letter" in again.output


def test_a_redrive_fails_while_the_cause_remains_and_applies_the_event_and_its_successors_once_fixed(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    db.ensure_schema(settings)
    with db.connect(settings) as conn, conn.transaction():
        # A cause that an operator can remove: a constraint this invoice breaks.
        conn.execute(
            "ALTER TABLE invoice_register ADD CONSTRAINT no_blocked CHECK (number NOT LIKE 'BLOCK%')"
        )
    tenant_id, _ = register_tenant(service)
    blocked = issue(service, tenant_id, "BLOCK-1")
    service.cancel_invoice(UUID(tenant_id), blocked, CancelInvoice(reason="other", remark="after the block"))
    fine = issue(service, tenant_id, "FINE-1")
    produce(settings, [relay_record(o) for o in stored_invoice_events(settings)])
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)
    wait_for(lambda: caught_up(settings), timeout=120, what="the projector passing every record")
    assert row(settings, fine) is not None and row(settings, blocked) is None
    (letter,) = letters(settings)
    assert letter.error_class == "CheckViolation" and letter.ce_type == "ledgerflow.invoice.issued"

    refused = cli(settings, "dlq", "redrive", "--projection", "invoice_register", "--all")
    assert refused.exit_code == 1, refused.output
    assert f"id {letter.id}: FAILED again, still pending: CheckViolation" in refused.output
    (still,) = letters(settings)
    assert still.state == "pending" and still.attempts == 2

    with db.connect(settings) as conn, conn.transaction():
        conn.execute("ALTER TABLE invoice_register DROP CONSTRAINT no_blocked")
    redriven = cli(settings, "dlq", "redrive", "--projection", "invoice_register", str(letter.id))
    assert redriven.exit_code == 0, redriven.output
    assert f"1 redriven: {letter.id}" in redriven.output
    # Issued, then the cancellation the projector had applied to no row: the row ends cancelled.
    assert row(settings, blocked) == ("cancelled", None, "BLOCK-1")
    (done,) = letters(settings)
    assert done.state == "redriven" and done.resolved_at is not None
    assert dead_letters.pending_counts_of(settings) == {}


def test_a_terminated_database_session_is_waited_out_not_dead_lettered(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    tenant_id, _ = register_tenant(service)
    issue(service, tenant_id, "FIRST-1")
    produce(settings, [relay_record(o) for o in stored_invoice_events(settings)])
    runner = ProjectionRunner(settings, InvoiceRegister())
    background.start(runner.run)
    wait_for(lambda: caught_up(settings), timeout=120, what="the first invoice projected")
    assert runner._conn is not None
    victim = runner._conn.info.backend_pid

    with db.connect(settings) as blocker:
        # Hold the table so the projector's next transaction waits inside PostgreSQL, then end its
        # session from outside while it is in the middle of that transaction.
        blocker.execute("LOCK TABLE invoice_register IN EXCLUSIVE MODE")
        more = [issue(service, tenant_id, f"MORE-{i}") for i in range(5)]
        already = {o.ce_id for o in stored_invoice_events(settings)[:1]}
        produce(
            settings, [relay_record(o) for o in stored_invoice_events(settings) if o.ce_id not in already]
        )

        def waiting_for_the_lock() -> bool:
            row = blocker.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (victim,)
            ).fetchone()
            return bool(row and row[0] == "Lock")

        wait_for(waiting_for_the_lock, timeout=60, what="the projector waiting for the table")
        with psycopg.connect(settings.database_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (victim,)).fetchone() == (True,)
        blocker.rollback()

    wait_for(lambda: caught_up(settings), timeout=120, what="the projector applying after reconnecting")
    background.check()
    assert all(row(settings, i) is not None for i in more)
    assert letters(settings) == []
    assert runner.stats.dead_lettered == 0


def test_the_projector_process_survives_a_poison_event(
    service: LedgerService, settings: Settings, topics: list[str], tmp_path: Path
) -> None:
    scene = poisoned_topic(service, settings)
    processes = Processes(settings, tmp_path)
    try:
        projector = processes.start("projector")
        processes.wait_for(
            lambda: caught_up(settings),
            timeout=120,
            what="the projector process passing every record",
            watch=[projector],
        )
        processes.assert_alive(projector)
        assert len(letters(settings)) == 3
        assert all(row(settings, i) is not None for i in scene.good)
        # A restart does not trip over them again: it resumes after them.
        assert projector.stop() == 0
        restarted = processes.start("projector")
        issue(service, register_tenant(service)[0], "AFTER-RESTART")
        produce(settings, [relay_record(stored_invoice_events(settings)[-1])])
        processes.wait_for(
            lambda: caught_up(settings),
            timeout=120,
            what="the restarted projector catching up",
            watch=[restarted],
        )
        processes.assert_alive(restarted)
        assert len(letters(settings)) == 3
    finally:
        processes.close()


def test_a_rebuild_survives_poison_and_records_it_once(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    scene = poisoned_topic(service, settings)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)
    wait_for(lambda: caught_up(settings), timeout=120, what="the projector passing every record")
    before = {d.id: (d.topic, d.partition, d.offset) for d in letters(settings)}

    report = rebuild(settings, "invoice_register")

    assert report.dead_lettered == 3 and report.events_applied == scene.records
    assert all(row(settings, i) is not None for i in scene.good)
    assert row(settings, scene.irn_nul) == ("cancelled", None, "IRN-NUL")
    # The live projector's letters, not new ones: the same records, still pending.
    assert {d.id: (d.topic, d.partition, d.offset) for d in letters(settings)} == before
    assert dead_letters.pending_counts_of(settings) == {"invoice_register": 3}


def test_pending_dead_letters_are_counted_by_metrics_lag_and_the_consumer_health_check(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    poisoned_topic(service, settings)
    runner = ProjectionRunner(settings, InvoiceRegister())
    background.start(runner.run)
    wait_for(lambda: caught_up(settings), timeout=120, what="the projector passing every record")

    api = client_for(dataclasses.replace(settings, metrics_cache_seconds=0))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for s in family.samples
    }
    gauge = "ledgerflow_projection_dead_letters_pending"
    assert samples[(gauge, (("projection", "invoice_register"),))] == 3

    def group_seen() -> Any:
        report = consumer_health(settings, [runner.group_id])
        return report if report.groups and report.groups[0].lag.total == 0 else None

    report = wait_for(group_seen, timeout=60, what="the projector's group committed in Kafka")
    (group,) = report.groups
    assert group.dead_letters == 3 and group.status == "ok"
    assert (
        "  dead letters: 3 pending (ledgerflow dlq list --projection invoice_register)"
        in render_health(report).splitlines()
    )
    health = api.get("/healthz/consumers", params={"group": runner.group_id})
    # Set aside and kept up with: nothing a restart would fix, so the probe stays 200.
    assert health.status_code == 200, health.text
    assert health.json()["projection_dead_letters"] == {"invoice_register": 3}
    assert health.json()["groups"][0]["dead_letters"] == 3

    projections_status = cli(settings, "projections", "status")
    assert projections_status.exit_code == 0, projections_status.output
    assert "  3 pending dead letter(s): ledgerflow dlq list --projection invoice_register" in (
        projections_status.output
    )

    assert cli(settings, "dlq", "discard", "--projection", "invoice_register", "--all").exit_code == 0
    samples_after = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for s in family.samples
    }
    assert samples_after[(gauge, (("projection", "invoice_register"),))] == 0


def test_a_replay_into_the_projection_leaves_poison_out_and_reports_it(
    service: LedgerService, settings: Settings, topics: list[str]
) -> None:
    scene = poisoned_topic(service, settings)
    db.ensure_schema(settings)

    result = cli(settings, "replay", "--topic", INVOICE_TOPIC, "--projection", "invoice_register")

    assert result.exit_code == 0, result.output
    assert f"written {scene.records - 3}" in result.output
    assert "refused 3 (not applied):" in result.output and "NumericValueOutOfRange" in result.output
    assert all(row(settings, i) is not None for i in scene.good)
    assert row(settings, scene.irn_nul) == ("cancelled", None, "IRN-NUL")


def test_a_rebuild_from_the_event_store_records_a_refused_event_once(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    db.ensure_schema(settings)
    with db.connect(settings) as conn, conn.transaction():
        conn.execute(
            "ALTER TABLE invoice_register ADD CONSTRAINT no_blocked CHECK (number NOT LIKE 'BLOCK%')"
        )
    tenant_id, _ = register_tenant(service)
    blocked, fine = issue(service, tenant_id, "BLOCK-1"), issue(service, tenant_id, "FINE-1")
    only_in_store = issue(service, tenant_id, "BLOCK-2")  # never published: met by the rebuild only
    produce(
        settings, [relay_record(o) for o in stored_invoice_events(settings) if o.key != str(only_in_store)]
    )
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)
    wait_for(lambda: caught_up(settings), timeout=120, what="the projector passing every record")
    assert [d.aggregate_id for d in letters(settings)] == [str(blocked)]

    # The shadow table inherits the CHECK, so the rebuild meets the same refusal.
    report = rebuild(settings, "invoice_register", from_event_store=True)

    assert report.dead_lettered == 2
    assert row(settings, fine) is not None and row(settings, blocked) is None
    found = {d.aggregate_id: d for d in letters(settings)}
    assert set(found) == {str(blocked), str(only_in_store)}
    assert found[str(blocked)].partition >= 0  # the projector's letter, not a second one
    assert (
        found[str(only_in_store)].partition == -1
        and found[str(only_in_store)].error_class == "CheckViolation"
    )


def test_an_undecodable_record_joins_the_same_dead_letters(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    tenant_id, _ = register_tenant(service)
    good = issue(service, tenant_id, "GOOD-1")
    junk = {"key": b"junk", "value": b"not avro", "headers": [("ce_type", b"ledgerflow.invoice.issued")]}
    produce(settings, [junk, *(relay_record(o) for o in stored_invoice_events(settings))])
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)
    wait_for(lambda: caught_up(settings), timeout=120, what="the projector passing every record")

    assert row(settings, good) is not None
    (letter,) = letters(settings)
    assert (letter.error_code, letter.ce_type, letter.value) == (
        "undecodable_event",
        "ledgerflow.invoice.issued",
        b"not avro",
    )
    wait_for(lambda: read_topic(settings, DLQ_TOPIC), timeout=60, what="the letter on the DLQ topic")
    (copied,) = read_topic(settings, DLQ_TOPIC)
    assert dict(copied.headers())["error-code"] == b"undecodable_event" and copied.value() == b"not avro"
    redrive = cli(settings, "dlq", "redrive", "--projection", "invoice_register", "--all")
    assert redrive.exit_code == 1 and "FAILED again, still pending" in redrive.output
