"""Crash and recovery: the engine's processes killed with SIGKILL mid-work, and PostgreSQL and the
broker restarted under load. Every process runs as a real ``ledgerflow <command>`` subprocess.

What must hold afterwards (the issue's words): "after restart every invoice is on the topic and in
the projection exactly once" (the topic is at-least-once by design, so it may hold an event twice,
with the same ``ce_id``; the projection may not), and "processes recover by themselves, nothing
accepted is lost".
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from engine.application import Ledger, LedgerService, build_invoice, open_ledger
from engine.commands import IssueInvoice
from engine.config import Settings, load_settings
from engine.domain.invoice import Invoice, invoice_id_for
from engine.tax.india_gst import financial_year
from ops import stack
from tests.conftest import wait_for
from tests.integration.helpers import create_ingest_key, ingest_command, invoice_body, register_tenant
from tests.integration.processes import Processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T = TypeVar("T")

INVOICE_TOPIC = "ledger.invoice.v1"
INGEST_TOPIC = "ingest.invoice.v1"
ISSUED_TOPIC = f"{Invoice.__module__}:{Invoice.__qualname__}.Issued"


@pytest.fixture
def processes(settings: Settings, topics: list[str], tmp_path: Path) -> Iterator[Processes]:
    group = Processes(settings, tmp_path)
    yield group
    group.close()


# -- reading the three places an invoice must reach -------------------------------------------


def query(settings: Settings, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(
        settings.database_url, connect_timeout=5, options=f"-c search_path={settings.db_schema}"
    ) as conn:
        return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]


def scalar(settings: Settings, statement: str) -> Any:
    return query(settings, statement)[0][0]


def tolerant(read: Callable[[], T], default: T) -> T:
    """For polling while PostgreSQL restarts: a refused connection reads as ``default``."""
    try:
        return read()
    except psycopg.OperationalError:
        return default


def relay_position(settings: Settings) -> int:
    return int(scalar(settings, "SELECT coalesce(max(notification_id), 0) FROM relay_position"))


def last_notification(settings: Settings) -> int:
    return int(scalar(settings, "SELECT coalesce(max(notification_id), 0) FROM ledger_events"))


def register_count(settings: Settings) -> int:
    return int(scalar(settings, "SELECT count(*) FROM invoice_register"))


def issued_count(settings: Settings) -> int:
    return int(scalar(settings, f"SELECT count(*) FROM ledger_events WHERE topic = '{ISSUED_TOPIC}'"))


def stored_issued(ledger: Ledger) -> dict[UUID, Any]:
    """Every ``Invoice.Issued`` event in the event store, by invoice id, read through the library.
    Fails on a second Issued event for the same invoice (which the store's unique key forbids)."""
    found: dict[UUID, Any] = {}
    start: int | None = None
    while True:
        page = ledger.recorder.select_notifications(
            start=start, limit=2000, topics=[ISSUED_TOPIC], inclusive_of_start=False
        )
        for notification in page:
            event = ledger.mapper.to_domain_event(notification)
            assert event.originator_id not in found, f"invoice {event.originator_id} issued twice"
            found[event.originator_id] = event
        if len(page) < 2000:
            return found
        start = page[-1].id


def stored_issued_in(settings: Settings) -> dict[UUID, Any]:
    """``stored_issued`` through a fresh connection to the event store (closed afterwards)."""
    ledger = open_ledger(settings)
    try:
        return stored_issued(ledger)
    finally:
        ledger.close()


def register_rows(settings: Settings) -> dict[UUID, tuple[str, Decimal, str]]:
    """invoice_register as {invoice id: (number, total, status)}; fails on a repeated id."""
    rows = query(settings, "SELECT invoice_id, number, total, status FROM invoice_register")
    by_id = {row[0]: (row[1], row[2], row[3]) for row in rows}
    assert len(by_id) == len(rows), "invoice_register holds an invoice twice"
    return by_id


@dataclass
class TopicContents:
    messages: int = 0
    ce_ids: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    ce_id_to_key: dict[str, str] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return self.messages - len(self.ce_ids)


def read_whole_topic(settings: Settings, topic: str, timeout: float = 60) -> TopicContents:
    """Every message on ``topic`` up to the high watermark of each partition at the time of the
    call, read with confluent-kafka (librdkafka), a client independent of the engine's."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    contents = TopicContents()
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
        remaining = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in remaining])

        def consume() -> bool:
            for msg in consumer.consume(2000, timeout=0.5):
                if msg.error() is not None:
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    continue
                if msg.offset() >= ends[msg.partition()]:
                    continue
                contents.messages += 1
                headers = dict(msg.headers() or [])
                ce_id = headers["ce_id"].decode()
                key = msg.key().decode()
                assert contents.ce_id_to_key.setdefault(ce_id, key) == key, f"{ce_id} under two keys"
                contents.ce_ids.add(ce_id)
                contents.keys.add(key)
                if msg.offset() >= ends[msg.partition()] - 1:
                    remaining.discard(msg.partition())
            return not remaining

        wait_for(consume, timeout=timeout, interval=0, what=f"reading {topic} to its end")
    finally:
        consumer.close()
    return contents


# -- the backlog --------------------------------------------------------------------------------


def store_backlog(service: LedgerService, tenant_id: str, count: int, batch: int = 1000) -> list[Invoice]:
    """``count`` invoices built by the service layer's own builder, saved ``batch`` aggregates per
    transaction (the API's path, one by one, would take minutes for 10,000)."""
    tenant = service.get_tenant(UUID(tenant_id))
    invoices = []
    for i in range(count):
        quantity = str(1 + i % 97)  # different totals, so a row with the wrong total is visible
        body = invoice_body(f"BL-{i}", lines=[{**invoice_body()["lines"][0], "quantity": quantity}])
        issue = IssueInvoice.model_validate(body)
        invoices.append(build_invoice(tenant, issue, None, issue.fingerprint(), "test", None))
    for start in range(0, count, batch):
        service.ledger.save(*invoices[start : start + batch])
    return invoices


def test_killing_the_relay_and_projector_mid_backlog_loses_and_duplicates_nothing(
    settings: Settings, service: LedgerService, processes: Processes
) -> None:
    tenant_id, _ = register_tenant(service)
    backlog = store_backlog(service, tenant_id, 10_000)
    expected = {invoice.id: invoice for invoice in backlog}
    last = last_notification(settings)

    relay = processes.start("relay")
    projector = processes.start("projector")
    # Kill each one as soon as it has durably done part of the work, i.e. in the middle of it.
    published = processes.wait_for(
        lambda: relay_position(settings),
        timeout=60,
        interval=0.01,
        what="the relay storing a position",
        watch=[relay],
    )
    relay.kill()
    projected = processes.wait_for(
        lambda: register_count(settings),
        timeout=60,
        interval=0.01,
        what="the projector applying a batch",
        watch=[projector],
    )
    projector.kill()
    assert published < last, "the relay finished before it was killed: the test proves nothing"
    assert projected < len(backlog), "the projector finished before it was killed: the test proves nothing"

    # Second round: restarted, then killed again while catching up.
    relay = processes.start("relay")
    projector = processes.start("projector")
    processes.wait_for(
        lambda: relay_position(settings) > published,
        timeout=60,
        interval=0.01,
        what="the restarted relay moving on",
        watch=[relay],
    )
    relay.kill()
    processes.wait_for(
        lambda: register_count(settings) > projected,
        timeout=60,
        interval=0.01,
        what="the restarted projector moving on",
        watch=[projector],
    )
    projector.kill()

    relay = processes.start("relay")
    projector = processes.start("projector")
    processes.wait_for(
        lambda: relay_position(settings) == last,
        timeout=90,
        what=f"the relay publishing up to notification {last}",
        watch=[relay],
    )
    processes.wait_for(
        lambda: register_count(settings) == len(backlog),
        timeout=90,
        what=f"all {len(backlog)} invoices in the register",
        watch=[projector],
    )
    processes.assert_alive(relay, projector)

    # The topic: every invoice's Issued event, under the invoice's key; repeats only of the same
    # event (same ce_id), never a second event for one invoice.
    topic = read_whole_topic(settings, settings.topic(INVOICE_TOPIC))
    assert len(topic.ce_ids) == len(backlog)
    assert topic.keys == {str(i) for i in expected}
    assert topic.messages >= len(backlog)

    # The event store: exactly the backlog, once each.
    stored = stored_issued(service.ledger)
    assert set(stored) == set(expected)

    # The projection: each invoice exactly once, with the totals of the event store.
    rows = register_rows(settings)
    assert set(rows) == set(expected)
    mismatched = [
        (invoice_id, rows[invoice_id], event.totals["total"])
        for invoice_id, event in stored.items()
        if rows[invoice_id][1] != Decimal(event.totals["total"]) or rows[invoice_id][0] != event.number
    ]
    assert not mismatched, mismatched[:5]
    assert sum(r[1] for r in rows.values()) == sum(Decimal(e.totals["total"]) for e in stored.values())
    assert {r[2] for r in rows.values()} == {"issued"}


def test_killing_the_worker_mid_stream_turns_each_command_into_exactly_one_invoice(
    settings: Settings, service: LedgerService, processes: Processes
) -> None:
    total = 2000
    tenant_id, _ = register_tenant(service)
    key = create_ingest_key(settings, tenant_id)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for i in range(total):
        headers, value = ingest_command(tenant_id, f"cmd-{i}", invoice_body(f"ING-{i}"), key)
        producer.produce(settings.topic(INGEST_TOPIC), value=value, headers=headers)
        producer.poll(0)
    assert producer.flush(30) == 0

    worker = processes.start("worker")
    processes.wait_for(
        lambda: issued_count(settings) >= 200,
        timeout=90,
        what="the worker ingesting 200 commands",
        watch=[worker],
    )
    worker.kill()
    done = issued_count(settings)
    assert done < total, "the worker finished before it was killed: the test proves nothing"

    worker = processes.start("worker")
    processes.wait_for(
        lambda: issued_count(settings) >= total,
        timeout=120,
        what=f"all {total} commands ingested",
        watch=[worker],
    )
    processes.assert_alive(worker)

    stored = stored_issued_in(settings)
    assert len(stored) == total
    assert sorted(e.number for e in stored.values()) == sorted(f"ING-{i}" for i in range(total))
    keys = query(settings, "SELECT key, invoice_id FROM idempotency_keys WHERE tenant_id = %s", (tenant_id,))
    assert {k for k, _ in keys} == {f"cmd-{i}" for i in range(total)}
    assert {invoice_id for _, invoice_id in keys} == set(stored)
    # Nothing was poison: a redelivered command must not end up in the DLQ.
    assert not read_whole_topic(settings, settings.topic("ingest.invoice.dlq.v1")).messages


# -- restarting PostgreSQL and Kafka under load ---------------------------------------------------


class IngestFeeder(threading.Thread):
    """An upstream system publishing invoice commands; a command is accepted once Kafka acks it."""

    def __init__(self, settings: Settings, tenant_id: str, pace: float) -> None:
        super().__init__(name="ingest-feeder", daemon=True)
        self.settings = settings
        self.tenant_id = tenant_id
        self.key = create_ingest_key(settings, tenant_id)
        self.pace = pace
        self.stop = threading.Event()
        self.accepted: set[str] = set()
        self.failed: dict[str, str] = {}
        self.sent = 0
        self.error: BaseException | None = None

    def _delivered(self, number: str, err: Any, _msg: Any) -> None:
        if err is None:
            self.accepted.add(number)
        else:
            self.failed[number] = str(err)

    def run(self) -> None:
        try:
            producer = Producer(
                {
                    "bootstrap.servers": self.settings.kafka_bootstrap,
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    # Keep retrying through a broker restart rather than failing the delivery.
                    "message.timeout.ms": 180_000,
                    # librdkafka logs every refused connection while the broker restarts; the
                    # delivery reports say all that matters.
                    "log_level": 2,
                }
            )
            while not self.stop.is_set():
                number = f"K-{self.sent}"
                headers, value = ingest_command(
                    self.tenant_id, f"cmd-{self.sent}", invoice_body(number), self.key
                )
                producer.produce(
                    self.settings.topic(INGEST_TOPIC),
                    value=value,
                    headers=headers,
                    on_delivery=lambda err, msg, n=number: self._delivered(n, err, msg),
                )
                self.sent += 1
                producer.poll(0)
                self.stop.wait(self.pace)
            assert producer.flush(180) == 0, "commands still undelivered after 180s"
        except BaseException as exc:
            self.error = exc


class ApiFeeder(threading.Thread):
    """A client of ``POST /v1/invoices``: an invoice is accepted when the API answers 201. Each
    request carries an Idempotency-Key and is retried with it (503, connection refused, timeout)
    until it is accepted, as the API asks clients to do."""

    def __init__(self, base_url: str, api_key: str, pace: float) -> None:
        super().__init__(name="api-feeder", daemon=True)
        self.base_url = base_url
        self.api_key = api_key
        self.pace = pace
        self.stop = threading.Event()
        self.accepted: dict[str, str] = {}  # number -> invoice id
        self.retried: dict[str, int] = {}  # why a request was retried -> how often
        self.unexpected: list[tuple[str, int, str]] = []
        self.error: BaseException | None = None

    def _note(self, reason: str) -> None:
        self.retried[reason] = self.retried.get(reason, 0) + 1

    def _submit(self, client: httpx.Client, number: str, key: str) -> None:
        backoff = threading.Event()  # never set: a pause between retries that ends on its timeout
        for _ in range(600):
            try:
                response = client.post(
                    "/v1/invoices", json=invoice_body(number), headers={"Idempotency-Key": key}
                )
            except httpx.TransportError as exc:
                self._note(type(exc).__name__)
            else:
                if response.status_code == 201:
                    self.accepted[number] = response.json()["id"]
                    return
                if response.status_code != 503:
                    self.unexpected.append((number, response.status_code, response.text[:300]))
                    return
                self._note("503")
            backoff.wait(0.2)
        self.unexpected.append((number, 0, "not accepted after 600 attempts"))

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self.base_url, timeout=10, headers={"Authorization": f"Bearer {self.api_key}"}
            ) as client:
                i = 0
                while not self.stop.is_set():
                    self._submit(client, f"A-{i}", f"api-{i}")
                    i += 1
                    self.stop.wait(self.pace)
        except BaseException as exc:
            self.error = exc


class EngineUnderLoad:
    """The API, relay, projector and a stream worker as processes, fed steadily through the API and
    the ingest topic while a test breaks something under them; then checks that every accepted
    invoice is stored, published and projected once. Used as a context manager: the feeders run
    inside the ``with`` block."""

    def __init__(
        self,
        settings: Settings,
        service: LedgerService,
        processes: Processes,
        *,
        api_timeout: float,
        state: Callable[[], str] = lambda: "",
    ) -> None:
        self.settings = settings
        self.processes = processes
        self.state = state  # more to say when invoices stop flowing (e.g. the brokers' statuses)
        self.tenant_id, api_key = register_tenant(service)
        self.relay = processes.start("relay")
        self.projector = processes.start("projector")
        self.worker = processes.start("worker")
        self.api, http = processes.start_api(timeout=api_timeout)
        self.everyone = (self.relay, self.projector, self.worker, self.api)
        self.ingest = IngestFeeder(settings, self.tenant_id, pace=0.03)
        self.clients = ApiFeeder(str(http.base_url).rstrip("/"), api_key, pace=0.03)
        self.feeders = (self.ingest, self.clients)

    def __enter__(self) -> EngineUnderLoad:
        for feeder in self.feeders:
            feeder.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for feeder in self.feeders:
            feeder.stop.set()
        for feeder in self.feeders:
            feeder.join(timeout=240)

    def register_count(self) -> int:
        return register_count(self.settings)

    def flowing(self, since: int, what: str) -> None:
        """Wait until invoices from both feeders are accepted, stored and projected beyond ``since``."""
        clients, ingest, settings = self.clients, self.ingest, self.settings
        start_api, start_ingest = len(clients.accepted), len(ingest.accepted)

        def progress() -> str:
            return (
                f"API accepted {len(clients.accepted)} (from {start_api}), Kafka acked"
                f" {len(ingest.accepted)} (from {start_ingest}), register"
                f" {tolerant(lambda: register_count(settings), -1)} (from {since}){self.state()}"
            )

        self.processes.wait_for(
            lambda: (
                len(clients.accepted) >= start_api + 20
                and len(ingest.accepted) >= start_ingest + 20
                and tolerant(lambda: register_count(settings), 0) >= since + 40
                and all(p.alive() for p in self.everyone)
            ),
            timeout=120,
            interval=0.2,
            what=what,
            watch=self.everyone,
            explain=progress,
        )
        self.processes.assert_alive(*self.everyone)

    def accepted(self) -> set[UUID]:
        """The invoices the feeders were told were accepted (a 201, or Kafka's ack of a command)."""
        for feeder in self.feeders:
            assert not feeder.is_alive(), f"{feeder.name} did not finish"
            assert feeder.error is None, f"{feeder.name} failed: {feeder.error!r}"
        ingest, clients = self.ingest, self.clients
        assert not ingest.failed, f"commands Kafka did not accept: {list(ingest.failed.items())[:5]}"
        assert not clients.unexpected, f"the API answered neither 201 nor 503: {clients.unexpected[:5]}"
        fy = financial_year(IssueInvoice.model_validate(invoice_body()).date)
        accepted = {UUID(i) for i in clients.accepted.values()} | {
            invoice_id_for(UUID(self.tenant_id), fy, number) for number in ingest.accepted
        }
        assert len(accepted) == len(clients.accepted) + len(ingest.accepted)
        return accepted

    def wait_until_stored(self, accepted: set[UUID], timeout: float) -> dict[UUID, Any]:
        """Every accepted invoice in the event store (the worker may still be draining the topic);
        returns the stored issued events, failing on an invoice issued twice."""
        settings = self.settings

        def stored_ids() -> set[UUID]:
            rows = query(settings, f"SELECT originator_id FROM ledger_events WHERE topic = '{ISSUED_TOPIC}'")
            return {row[0] for row in rows}

        self.processes.wait_for(
            lambda: stored_ids() >= accepted,
            timeout=timeout,
            interval=0.2,
            what="every accepted invoice in the event store",
            watch=[self.worker, self.api],
            explain=lambda: f"{len(accepted - stored_ids())} missing",
        )
        return stored_issued_in(settings)

    def published_and_projected(self, stored: dict[UUID, Any], timeout: float) -> TopicContents:
        """Once the relay and projector caught up: the ledger topic holds each stored invoice (under
        one ce_id) and the register one row per invoice with its total; no command dead-lettered."""
        settings = self.settings
        last = last_notification(settings)
        self.processes.wait_for(
            lambda: relay_position(settings) == last,
            timeout=timeout,
            interval=0.2,
            what=f"the relay publishing up to notification {last}",
            watch=[self.relay],
        )
        self.processes.wait_for(
            lambda: register_count(settings) == len(stored),
            timeout=timeout,
            interval=0.2,
            what=f"all {len(stored)} stored invoices in the register",
            watch=[self.projector],
        )
        topic = read_whole_topic(settings, settings.topic(INVOICE_TOPIC))
        assert topic.keys == {str(i) for i in stored}
        assert len(topic.ce_ids) == len(stored)
        rows = register_rows(settings)  # fails on an invoice projected twice
        assert set(rows) == set(stored)
        assert all(rows[i][1] == Decimal(e.totals["total"]) for i, e in stored.items())
        assert not read_whole_topic(settings, settings.topic("ingest.invoice.dlq.v1")).messages
        # They recovered by themselves: the very processes started at the beginning still run.
        self.processes.assert_alive(*self.everyone)
        return topic


# It restarts the PostgreSQL and Kafka every test uses: `make test` runs it alone (marker `serial`).
@pytest.mark.serial
def test_restarting_postgres_and_kafka_under_load_loses_nothing(
    settings: Settings, service: LedgerService, processes: Processes
) -> None:
    # The stack is managed with the default settings: the test settings name the test database,
    # and `stack.start_postgres` would take that for the application database.
    stack_settings = load_settings()
    engine = EngineUnderLoad(settings, service, processes, api_timeout=60)
    try:
        with engine:
            engine.flowing(0, "invoices flowing through the engine")

            before = engine.register_count()
            stack.restart_postgres(stack_settings)
            engine.flowing(before, "invoices flowing again after the PostgreSQL restart")

            before = engine.register_count()
            stack.restart_kafka(stack_settings)
            engine.flowing(before, "invoices flowing again after the Kafka restart")
    finally:
        stack.up(stack_settings)

    expected = engine.accepted()
    # An API request whose answer was lost in a restart may be stored without being "accepted".
    stored = engine.wait_until_stored(expected, timeout=120)
    assert expected <= set(stored)
    topic = engine.published_and_projected(stored, timeout=90)
    print(
        f"accepted: {len(engine.clients.accepted)} via the API, {len(engine.ingest.accepted)} via Kafka; "
        f"API retries {engine.clients.retried}; topic duplicates {topic.duplicates}"
    )
