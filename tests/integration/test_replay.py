"""``ledgerflow replay`` against the real broker and database: into a topic, into a projection."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner, Result

from engine import db
from engine.application import LedgerService
from engine.cli import main
from engine.commands import CancelInvoice, IssueInvoice
from engine.config import Settings
from engine.relay import Relay
from ops import stack
from ops.replay import ReplaySummary, parse_request, replay
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from projections.status import status
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import invoice_body, register_tenant

pytestmark = pytest.mark.integration

INVOICE_TOPIC = "ledger.invoice.v1"


# -- helpers ----------------------------------------------------------------------------------------


def cli(settings: Settings, *args: str) -> Result:
    """``ledgerflow <args>`` in-process, with the test's schema and topic prefix."""
    env = {
        "LEDGERFLOW_DATABASE_URL": settings.database_url,
        "LEDGERFLOW_DB_SCHEMA": settings.db_schema,
        "LEDGERFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "LEDGERFLOW_KAFKA": settings.kafka_bootstrap,
        "LEDGERFLOW_PARTITIONS": str(settings.partitions),
    }
    return CliRunner().invoke(main, list(args), env=env)


def partition_count(settings: Settings, logical: str) -> int:
    async def run() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([settings.topic(logical)])
            return len(described["partitions"])
        finally:
            await admin.close()

    return asyncio.run(run())


def read_all(settings: Settings, logical: str) -> list[Any]:
    """Every record now on an existing topic, in partition then offset order (no consumer group)."""
    topic = settings.topic(logical)
    tps = [TopicPartition(topic, p) for p in range(partition_count(settings, logical))]

    async def run() -> list[Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            ends = await consumer.end_offsets(tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            found: list[Any] = []
            while any([await consumer.position(tp) < ends[tp] for tp in tps]):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend(records)
            return sorted(found, key=lambda r: (r.partition, r.offset))
        finally:
            await consumer.stop()

    return asyncio.run(run())


def listed(settings: Settings) -> set[str]:
    async def run() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(run())


def topic_exists(settings: Settings, logical: str) -> bool:
    return settings.topic(logical) in listed(settings)


def create_topic(settings: Settings, logical: str, partitions: int) -> None:
    stack.ensure_topics(settings, [settings.topic(logical)], partitions)
    # Creation returns before every broker's metadata lists the topic.
    wait_for(lambda: topic_exists(settings, logical), what=f"{logical} listed by the broker")


@pytest.fixture
def engine_topics(settings: Settings, topics: list[str]) -> list[str]:
    """The engine's topics, created and listed by the broker."""
    wait_for(lambda: set(topics) <= listed(settings), what="the engine's topics listed by the broker")
    return topics


def header(record: Any, name: str) -> bytes | None:
    return dict(record.headers).get(name)


def as_published(record: Any) -> tuple[Any, ...]:
    """What a consumer of the record relies on: key, value bytes and every header, in order."""
    return (record.key, record.value, tuple(record.headers))


def publish_invoices(
    service: LedgerService, settings: Settings, background: BackgroundLoop, count: int, tenants: int = 1
) -> tuple[list[str], list[UUID]]:
    """Issue ``count`` invoices per tenant and let the real relay publish them; (tenant ids, invoice ids)."""
    tenant_ids = [register_tenant(service)[0] for _ in range(tenants)]
    invoice_ids = []
    for t, tenant_id in enumerate(tenant_ids):
        for i in range(count):
            issued = service.issue_invoice(
                UUID(tenant_id), IssueInvoice.model_validate(invoice_body(f"RP-{t}-{i}"))
            )
            invoice_ids.append(issued.invoice.id)
    background.start(Relay(settings).run)
    expected = count * tenants
    wait_for(
        lambda: len(read_all(settings, INVOICE_TOPIC)) == expected,
        what=f"the relay publishing {expected} invoice events",
    )
    return tenant_ids, invoice_ids


def produce(settings: Settings, logical: str, records: Sequence[dict[str, Any]]) -> None:
    """Write records as given (partition, key, value, headers, timestamp) with plain aiokafka."""

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for r in records:
                await producer.send_and_wait(settings.topic(logical), **r)
        finally:
            await producer.stop()

    asyncio.run(run())


def millis(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


class RecordingProgress:
    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0
        self.finished = False

    def start(self, description: str, total: int) -> None:
        self.total = total

    def advance(self, offsets: int) -> None:
        self.done += offsets

    def finish(self) -> None:
        self.finished = True


# -- into a topic -----------------------------------------------------------------------------------


def test_into_topic_republishes_every_record_with_its_key_value_and_headers(
    service: LedgerService, settings: Settings, engine_topics: list[str], background: BackgroundLoop
) -> None:
    publish_invoices(service, settings, background, count=5, tenants=2)
    create_topic(settings, "replayed.invoice.v1", settings.partitions)

    result = cli(settings, "replay", "--topic", INVOICE_TOPIC, "--into-topic", "replayed.invoice.v1")

    assert result.exit_code == 0, result.output
    source = read_all(settings, INVOICE_TOPIC)
    copied = read_all(settings, "replayed.invoice.v1")
    # Same partition, same order, same bytes: ce_id included, so deduplicating consumers skip them.
    assert [(r.partition, *as_published(r)) for r in copied] == [
        (r.partition, *as_published(r)) for r in source
    ]
    assert len({header(r, "ce_id") for r in copied}) == 10
    assert "read 10, matched 10, skipped 0 (other tenants), written 10" in result.output
    assert (
        f"replay of {settings.topic(INVOICE_TOPIC)} into topic {settings.topic('replayed.invoice.v1')}"
        in (result.output)
    )


def test_into_a_topic_with_fewer_partitions_keeps_each_keys_order(
    service: LedgerService, settings: Settings, engine_topics: list[str], background: BackgroundLoop
) -> None:
    tenant_ids, invoice_ids = publish_invoices(service, settings, background, count=4)
    for invoice_id in invoice_ids[:2]:
        service.cancel_invoice(UUID(tenant_ids[0]), invoice_id, CancelInvoice(reason="duplicate"))
    wait_for(lambda: len(read_all(settings, INVOICE_TOPIC)) == 6, what="the relay publishing 2 cancellations")
    create_topic(settings, "narrow.invoice.v1", 1)

    summary = replay(settings, parse_request(INVOICE_TOPIC, into_topic="narrow.invoice.v1"))

    assert summary.written == 6
    copied = read_all(settings, "narrow.invoice.v1")
    assert {r.partition for r in copied} == {0}
    by_key: dict[bytes, list[bytes | None]] = defaultdict(list)
    for r in copied:
        by_key[r.key].append(header(r, "ce_type"))
    for invoice_id in invoice_ids[:2]:
        assert by_key[str(invoice_id).encode()] == [
            b"ledgerflow.invoice.issued",
            b"ledgerflow.invoice.cancelled",
        ]
    assert sorted(as_published(r) for r in copied) == sorted(
        as_published(r) for r in read_all(settings, INVOICE_TOPIC)
    )


def test_tenant_filter_replays_only_that_tenants_records(
    service: LedgerService, settings: Settings, engine_topics: list[str], background: BackgroundLoop
) -> None:
    (_, second), _ = publish_invoices(service, settings, background, count=3, tenants=2)
    create_topic(settings, "one-tenant.invoice.v1", settings.partitions)

    result = cli(
        settings,
        "replay",
        "--topic",
        INVOICE_TOPIC,
        "--into-topic",
        "one-tenant.invoice.v1",
        "--tenant",
        second,
    )

    assert result.exit_code == 0, result.output
    copied = read_all(settings, "one-tenant.invoice.v1")
    assert {header(r, "ce_source") for r in copied} == {f"/tenants/{second}".encode()}
    theirs = [
        r
        for r in read_all(settings, INVOICE_TOPIC)
        if header(r, "ce_source") == f"/tenants/{second}".encode()
    ]
    assert [as_published(r) for r in copied] == [as_published(r) for r in theirs]
    assert "read 6, matched 3, skipped 3 (other tenants), written 3" in result.output
    assert f"tenant {second} only" in result.output


# -- bounds -----------------------------------------------------------------------------------------


def timed_records(settings: Settings) -> None:
    """Three records per partition on ``timed.v1``, written at 09:00, 10:00 and 11:00 UTC."""
    create_topic(settings, "timed.v1", 3)
    produce(
        settings,
        "timed.v1",
        [
            {
                "partition": partition,
                "key": f"k{partition}".encode(),
                "value": f"{partition}@{hour}".encode(),
                "headers": [("ce_id", f"{partition}-{hour}".encode())],
                "timestamp_ms": millis(f"2026-11-26T{hour}:00:00+00:00"),
            }
            for hour in ("09", "10", "11")
            for partition in range(3)
        ],
    )
    create_topic(settings, "timed-out.v1", 3)


def copied_values(settings: Settings) -> list[bytes]:
    return sorted(r.value for r in read_all(settings, "timed-out.v1"))


def test_from_an_offset_starts_every_partition_there(settings: Settings) -> None:
    timed_records(settings)
    progress = RecordingProgress()

    summary = replay(settings, parse_request("timed.v1", "1", into_topic="timed-out.v1"), progress)

    assert copied_values(settings) == sorted(f"{p}@{h}".encode() for p in range(3) for h in ("10", "11"))
    assert [(p.partition, p.first, p.last, p.read) for p in summary.partitions] == [
        (0, 1, 2, 2),
        (1, 1, 2, 2),
        (2, 1, 2, 2),
    ]
    assert (progress.total, progress.done, progress.finished) == (6, 6, True)


def test_from_partition_offsets_replays_only_the_partitions_named(settings: Settings) -> None:
    timed_records(settings)

    result = cli(
        settings, "replay", "--topic", "timed.v1", "--from", "2:1,0:2", "--into-topic", "timed-out.v1"
    )

    assert result.exit_code == 0, result.output
    assert copied_values(settings) == [b"0@11", b"2@10", b"2@11"]
    assert "not named in --from" in result.output


def test_timestamps_bound_the_range_per_partition(settings: Settings) -> None:
    timed_records(settings)

    # 15:30 at +05:30 is 10:00 UTC; --to is exclusive, so the 11:00 records stay out.
    result = cli(
        settings,
        "replay",
        "--topic",
        "timed.v1",
        "--from",
        "2026-11-26T15:30:00+05:30",
        "--to",
        "2026-11-26T11:00:00Z",
        "--into-topic",
        "timed-out.v1",
    )

    assert result.exit_code == 0, result.output
    assert copied_values(settings) == [b"0@10", b"1@10", b"2@10"]
    assert "read 3, matched 3" in result.output


def test_a_time_after_the_last_record_replays_nothing(settings: Settings) -> None:
    timed_records(settings)

    summary = replay(settings, parse_request("timed.v1", "2026-11-26T12:00:00Z", into_topic="timed-out.v1"))

    # Nothing at or after 12:00: an empty range is a successful replay of nothing.
    assert (summary.read, summary.written) == (0, 0)
    assert all(p.note == "nothing in range" for p in summary.partitions)
    assert copied_values(settings) == []


def end_offsets(settings: Settings, logical: str) -> dict[int, int]:
    topic = settings.topic(logical)
    tps = [TopicPartition(topic, p) for p in range(partition_count(settings, logical))]

    async def run() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
        await consumer.start()
        try:
            return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(run())


async def keep_writing(settings: Settings, logical: str, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        i = 0
        while not stop.is_set():
            await producer.send_and_wait(settings.topic(logical), key=f"k{i % 7}".encode(), value=b"%d" % i)
            i += 1
    finally:
        await producer.stop()


def test_to_latest_ends_at_the_offsets_seen_at_the_start_while_producers_keep_writing(
    settings: Settings, background: BackgroundLoop
) -> None:
    create_topic(settings, "busy.v1", 3)
    create_topic(settings, "busy-out.v1", 3)
    background.start(lambda stop: keep_writing(settings, "busy.v1", stop))
    wait_for(lambda: sum(end_offsets(settings, "busy.v1").values()) >= 200, what="200 records written")
    before = end_offsets(settings, "busy.v1")

    summary = replay(settings, parse_request("busy.v1", into_topic="busy-out.v1"))

    wait_for(
        lambda: sum(end_offsets(settings, "busy.v1").values()) > sum(p.end for p in summary.partitions),
        what="the producer writing past the replay's end offsets",
    )
    source = read_all(settings, "busy.v1")
    for p in summary.partitions:
        assert p.start == 0 and p.end >= before[p.partition]
        assert p.read == p.end
    assert [(r.partition, r.key, r.value) for r in read_all(settings, "busy-out.v1")] == [
        (r.partition, r.key, r.value) for r in source if r.offset < summary.partitions[r.partition].end
    ]
    background.check()


# -- dry run ----------------------------------------------------------------------------------------


def test_dry_run_counts_per_partition_and_writes_nothing(
    service: LedgerService, settings: Settings, engine_topics: list[str], background: BackgroundLoop
) -> None:
    (first, _), _ = publish_invoices(service, settings, background, count=3, tenants=2)
    create_topic(settings, "dry.invoice.v1", settings.partitions)
    source = read_all(settings, INVOICE_TOPIC)
    mine = f"/tenants/{first}".encode()

    summary = replay(
        settings, parse_request(INVOICE_TOPIC, into_topic="dry.invoice.v1", tenant=first, dry_run=True)
    )
    register = replay(settings, parse_request(INVOICE_TOPIC, projection="invoice_register", dry_run=True))

    assert read_all(settings, "dry.invoice.v1") == []
    for p in summary.partitions:
        on_partition = [r for r in source if r.partition == p.partition]
        assert p.read == len(on_partition)
        assert p.matched == sum(1 for r in on_partition if header(r, "ce_source") == mine)
    assert (summary.read, summary.matched, summary.written) == (6, 3, 0)
    assert (register.read, register.written, register.undecodable) == (6, 0, 0)
    with db.connect(settings) as conn:
        assert conn.execute("SELECT count(*) FROM invoice_register").fetchone() == (0,)


# -- into a projection ------------------------------------------------------------------------------


def register_row(settings: Settings, invoice_id: UUID) -> tuple[Any, ...] | None:
    with db.connect(settings) as conn:
        return conn.execute(
            "SELECT status, cancellation, total, last_event_id FROM invoice_register WHERE invoice_id = %s",
            (invoice_id,),
        ).fetchone()


def register_lag(settings: Settings) -> tuple[int, int]:
    """(lag, records on the topic) of invoice_register."""
    (s,) = status(settings, ["invoice_register"])
    return s.lag, sum(p.end for p in s.partitions)


def tracking_rows(settings: Settings) -> list[tuple[Any, ...]]:
    with db.connect(settings) as conn:
        return conn.execute(
            'SELECT projection, topic, partition, "offset", updated_at FROM projection_tracking'
            " ORDER BY projection, topic, partition"
        ).fetchall()


def test_projection_replay_restores_rows_without_moving_the_projectors_positions(
    service: LedgerService, settings: Settings, engine_topics: list[str], background: BackgroundLoop
) -> None:
    (tenant_id,), invoice_ids = publish_invoices(service, settings, background, count=4)
    deleted, altered = invoice_ids[0], invoice_ids[1]
    service.cancel_invoice(UUID(tenant_id), altered, CancelInvoice(reason="other", remark="replay test"))
    # A record no schema can decode: the replay counts it and carries on.
    produce(
        settings,
        INVOICE_TOPIC,
        [{"key": b"junk", "value": b"not avro", "headers": [("ce_type", b"ledgerflow.invoice.issued")]}],
    )
    # The projector catches up, then stops: whatever is restored below, the replay restored.
    projector = BackgroundLoop()
    runner = ProjectionRunner(settings, InvoiceRegister())
    projector.start(runner.run)
    try:
        wait_for(lambda: register_lag(settings) == (0, 6), what="the projection applying all 6 records")
        projector.check()
    finally:
        projector.close()
    assert runner.stats.dead_lettered >= 1
    expected_deleted = register_row(settings, deleted)
    expected_altered = register_row(settings, altered)
    assert expected_deleted is not None
    assert expected_altered is not None and expected_altered[0] == "cancelled"
    with db.connect(settings) as conn, conn.transaction():
        conn.execute("DELETE FROM invoice_register WHERE invoice_id = %s", (deleted,))
        conn.execute(
            "UPDATE invoice_register SET status = 'issued', cancellation = NULL, cancelled_at = NULL"
            " WHERE invoice_id = %s",
            (altered,),
        )
    tracked = tracking_rows(settings)

    result = cli(settings, "replay", "--topic", INVOICE_TOPIC, "--projection", "invoice_register")

    assert result.exit_code == 0, result.output
    assert register_row(settings, deleted) == expected_deleted
    assert register_row(settings, altered) == expected_altered
    assert tracking_rows(settings) == tracked
    assert "read 6, matched 6, skipped 0 (other tenants), written 5" in result.output
    assert "undecodable 1 (not applied)" in result.output
    background.check()


# -- bad arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["--topic", "nope.v1", "--into-topic", "ledger.tenant.v1"], 1, "--topic: no topic {prefix}nope.v1"),
        (
            ["--topic", INVOICE_TOPIC, "--into-topic", "nowhere.v1"],
            1,
            "--into-topic: no topic {prefix}nowhere.v1",
        ),
        (["--topic", INVOICE_TOPIC, "--projection", "ledger"], 2, "no projection named 'ledger'; known:"),
        (
            ["--topic", "ledger.tenant.v1", "--projection", "invoice_register"],
            2,
            "reads {prefix}ledger.invoice.v1",
        ),
        (["--topic", INVOICE_TOPIC], 2, "name exactly one target"),
        (
            ["--topic", INVOICE_TOPIC, "--into-topic", "a.v1", "--projection", "invoice_register"],
            2,
            "name exactly one target",
        ),
        (["--topic", INVOICE_TOPIC, "--into-topic", INVOICE_TOPIC], 2, "is the topic being read"),
        (
            [
                "--topic",
                INVOICE_TOPIC,
                "--into-topic",
                "ledger.tenant.v1",
                "--from",
                "2026-11-27T00:00:00Z",
                "--to",
                "2026-11-26T00:00:00Z",
            ],
            2,
            "--from 2026-11-27T00:00:00Z is after --to 2026-11-26T00:00:00Z",
        ),
        (
            ["--topic", INVOICE_TOPIC, "--into-topic", "ledger.tenant.v1", "--from", "yesterday"],
            2,
            "--from 'yesterday' is not earliest, an offset, P:OFFSET,... or an ISO-8601 time",
        ),
        (
            ["--topic", INVOICE_TOPIC, "--into-topic", "ledger.tenant.v1", "--to", "2026-11-26T10:00:00"],
            2,
            "has no time zone",
        ),
        (
            ["--topic", INVOICE_TOPIC, "--into-topic", "ledger.tenant.v1", "--from", "-3"],
            2,
            "offsets start at 0",
        ),
        (
            ["--topic", INVOICE_TOPIC, "--into-topic", "ledger.tenant.v1", "--to", "10"],
            2,
            "offsets are accepted",
        ),
        (
            ["--topic", INVOICE_TOPIC, "--into-topic", "ledger.tenant.v1", "--to", "soon"],
            2,
            "--to 'soon' is not latest or an ISO-8601 time",
        ),
        (
            ["--topic", INVOICE_TOPIC, "--into-topic", "ledger.tenant.v1", "--from", "7:0"],
            2,
            "--from names partition(s) 7, but",
        ),
        (
            ["--topic", INVOICE_TOPIC, "--into-topic", "ledger.tenant.v1", "--tenant", "acme"],
            2,
            "is not a tenant id",
        ),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(
    settings: Settings, engine_topics: list[str], args: list[str], exit_code: int, message: str
) -> None:
    result = cli(settings, "replay", *args)

    assert result.exit_code == exit_code, result.output
    assert message.format(prefix=settings.topic_prefix) in result.output
    assert "Traceback" not in result.output


def test_a_missing_topic_is_reported_not_created(settings: Settings, engine_topics: list[str]) -> None:
    result = cli(settings, "replay", "--topic", INVOICE_TOPIC, "--into-topic", "typo.invoice.v1")

    assert result.exit_code == 1
    # The broker auto-creates topics it is asked about by name; the replay must not ask. Creating the
    # topic now succeeds only if it did not exist (the controller's answer, not a metadata listing).
    typo = settings.topic("typo.invoice.v1")
    assert stack.ensure_topics(settings, [typo], 1) == [typo]


def summary_of(result: ReplaySummary) -> tuple[int, int, int]:
    return result.read, result.matched, result.written


def test_an_empty_topic_replays_nothing(settings: Settings, engine_topics: list[str]) -> None:
    create_topic(settings, "empty-out.v1", settings.partitions)

    summary = replay(settings, parse_request(INVOICE_TOPIC, into_topic="empty-out.v1"))

    assert summary_of(summary) == (0, 0, 0)
    assert len(summary.partitions) == settings.partitions
