"""Canary secrets: set through the real API, carried through a full flow, found nowhere at rest.

A provider password (a right one and a wrong one), a tenant's API key and the key ring's key
material are known values. After an invoice is issued, relayed, projected and given an IRN by the
IRP sandbox, connections are tested and the key ring is rotated, every table of the test's schemas,
every record of its topics (keys, values, headers), every process's log and what the shared
PostgreSQL and Kafka wrote to their server logs meanwhile are searched for the canaries' bytes: as
they are, in hex, and in base64 at every byte alignment. Hashes and ciphertext are fine; the
canaries themselves must not appear.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from connectors.gst_irp.sandbox import SandboxAccount
from connectors.gst_irp.sandbox import create_app as create_irp_sandbox
from engine.bootstrap import build_service
from engine.config import Settings
from engine.security import api_keys
from engine.security.ingest_keys import IssuedIngestKey
from engine.security.secrets import KeySet, key_ring_file
from tests.connectors.contract import LiveServer
from tests.integration.helpers import IRP_SELLER_ADDRESS, IRP_SELLER_GSTIN, ingest_command, invoice_body
from tests.integration.processes import Processes, settings_env
from tests.integration.test_ingest import publish

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CANARY_PASSWORD = f"canary-pw-{uuid.uuid4().hex}"
CANARY_WRONG_PASSWORD = f"canary-wrong-{uuid.uuid4().hex}"
CANARY_CLIENT_SECRET = f"canary-cs-{uuid.uuid4().hex}"
ACCOUNT = SandboxAccount(gstin=IRP_SELLER_GSTIN, password=CANARY_PASSWORD, client_secret=CANARY_CLIENT_SECRET)


def forms(secret: bytes) -> list[bytes]:
    """The byte strings that betray ``secret``: itself, hex, and base64 (standard and URL-safe)
    fragments at each of the three byte alignments it can have inside a longer encoded value."""
    found = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + secret)
            # Only the 4-character groups made of the secret's bytes alone, none of the padding's.
            start = (offset + 2) // 3 * 4
            end = (offset + len(secret)) // 3 * 4
            if end - start >= 12:
                found.append(encoded[start:end])
    return found


@dataclass(frozen=True)
class Canary:
    name: str
    value: bytes

    def found_in(self, haystack: bytes) -> bytes | None:
        return next((form for form in forms(self.value) if form in haystack), None)


def scan(canaries: list[Canary], where: str, haystack: bytes, leaks: list[str]) -> None:
    for canary in canaries:
        form = canary.found_in(haystack)
        if form is not None:
            at = haystack.find(form)
            leaks.append(f"{canary.name} in {where}: ...{haystack[max(0, at - 60) : at + 80]!r}...")


def scan_postgres(settings: Settings, canaries: list[Canary], leaks: list[str]) -> int:
    """Every row of every table of the test's schemas, cast to text and, for bytea, as raw bytes."""
    rows = 0
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN (%s, %s) AND table_type = 'BASE TABLE'",
            (settings.db_schema, settings.reporting_schema),
        ).fetchall()
        assert len(tables) > 5, tables
        for schema, table in tables:
            name = sql.Identifier(schema, table)
            for (text,) in conn.execute(sql.SQL("SELECT t::text FROM {} AS t").format(name)):
                rows += 1
                scan(canaries, f"{schema}.{table}", text.encode(), leaks)
            for record in conn.execute(sql.SQL("SELECT * FROM {}").format(name)):
                for value in record:
                    if isinstance(value, bytes | memoryview):
                        scan(canaries, f"{schema}.{table} (bytea)", bytes(value), leaks)
    return rows


def scan_kafka(settings: Settings, canaries: list[Canary], leaks: list[str]) -> int:
    """Every record of every topic of the test's prefix (the faust app's own topics included)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)]
    assert topics, "no topic of the test's prefix"
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"canary-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    records = 0
    try:
        wanted: dict[tuple[str, int], int] = {}
        metadata = consumer.list_topics(timeout=10).topics
        for topic in topics:
            for partition in metadata[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                if high > low:
                    wanted[(topic, partition)] = high
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in wanted])
        done: set[tuple[str, int]] = set()
        idle = 0
        while len(done) < len(wanted) and idle < 100:
            msg = consumer.poll(0.5)
            if msg is None:
                idle += 1
                continue
            if msg.error():
                continue
            records += 1
            where = f"topic {msg.topic()}[{msg.partition()}]@{msg.offset()}"
            scan(canaries, f"{where} key", msg.key() or b"", leaks)
            scan(canaries, f"{where} value", msg.value() or b"", leaks)
            for header, value in msg.headers() or []:
                scan(canaries, f"{where} header {header}", header.encode() + b"=" + (value or b""), leaks)
            if msg.offset() + 1 >= wanted[(msg.topic(), msg.partition())]:
                done.add((msg.topic(), msg.partition()))
        assert len(done) == len(wanted), f"read to the end of {len(done)} of {len(wanted)} partitions"
    finally:
        consumer.close()
    return records


def scan_logs(paths: list[Path], canaries: list[Canary], leaks: list[str]) -> int:
    for path in paths:
        scan(canaries, f"log {path.name}", path.read_bytes(), leaks)
    return len(paths)


def server_logs(var_dir: Path) -> dict[Path, int]:
    """The shared stack's own logs (PostgreSQL logs failed statements with their text), with their
    current sizes: only what is written after this point is the test's."""
    logs = [var_dir / "postgres" / "postgres.log", var_dir / "kafka" / "server.log"]
    return {path: path.stat().st_size for path in logs if path.is_file()}


def scan_server_logs(since: dict[Path, int], canaries: list[Canary], leaks: list[str]) -> None:
    for path, offset in since.items():
        with path.open("rb") as handle:
            handle.seek(offset)
            scan(canaries, f"server log {path}", handle.read(), leaks)


@pytest.fixture
def irp_url() -> Iterator[str]:
    with LiveServer(create_irp_sandbox(account=ACCOUNT)) as server:
        yield server.url


def test_canary_secrets_appear_in_no_table_topic_or_log_after_a_full_flow_and_a_rotation(
    settings: Settings, topics: list[str], irp_url: str, tmp_path: Path
) -> None:
    stack_logs = server_logs(settings.var_dir)
    settings = replace(settings, var_dir=tmp_path / "var", retry_delays=(0, 1, 1, 2), breaker_open_seconds=2)
    service = build_service(settings, pool_size=2)
    try:
        registered = service.register_tenant(
            name="Canary",
            legal_name="Canary Electricals Private Limited",
            country="IN",
            gstin=IRP_SELLER_GSTIN,
            state="29",
            einvoicing_enabled=True,
            address=IRP_SELLER_ADDRESS,
        )
    finally:
        service.close()
    parsed = api_keys.parse(registered.api_key)
    assert parsed is not None
    api_key_secret = parsed[1]

    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    processes = Processes(settings, logs_dir)
    cli_logs: list[Path] = []

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            env=settings_env(settings),
            capture_output=True,
            timeout=300,
        )
        log = logs_dir / f"cli-{len(cli_logs)}.log"
        log.write_bytes(done.stdout + done.stderr)
        cli_logs.append(log)
        assert done.returncode == 0, done.stderr.decode()
        return done

    try:
        engine = [
            processes.start("relay"),
            processes.start("projector"),
            processes.start("worker"),
            processes.start("connectors", "run", name="connectors"),
        ]
        api, http = processes.start_api(registered.api_key, client_timeout=15)
        engine.append(api)

        def put_credentials(password: str) -> None:
            saved = http.put(
                "/v1/integrations/gst-irp",
                json={
                    "enabled": True,
                    "environment": "sandbox",
                    "base_url": irp_url,
                    "credentials": {**ACCOUNT.credentials(), "password": password},
                },
            )
            assert saved.status_code == 200, saved.text
            assert CANARY_PASSWORD not in saved.text and CANARY_WRONG_PASSWORD not in saved.text

        # A wrong password first: the failure path (provider error, logs) must not echo it either.
        put_credentials(CANARY_WRONG_PASSWORD)
        failed = http.post("/v1/integrations/gst-irp/test")
        assert failed.status_code == 200 and failed.json()["ok"] is False, failed.text
        put_credentials(CANARY_PASSWORD)
        tested = http.post("/v1/integrations/gst-irp/test")
        assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text

        def issue_and_wait_for_irn(number: str) -> None:
            created = http.post(
                "/v1/invoices", json=invoice_body(number), headers={"Idempotency-Key": number}
            )
            assert created.status_code == 201, created.text
            invoice_id = UUID(created.json()["id"])
            processes.wait_for(
                lambda: bool(http.get(f"/v1/invoices/{invoice_id}").json().get("einvoice")),
                timeout=120,
                what=f"the IRN of {number}",
                watch=engine,
            )

        issue_and_wait_for_irn("CANARY-1")

        # An ingest signing key made through the API signs a command on the ingest topic.
        created_key = http.post("/v1/tenant/ingest-keys")
        assert created_key.status_code == 201, created_key.text
        ingest_key = IssuedIngestKey(
            created_key.json()["key_id"], created_key.json()["secret"], datetime.now(UTC)
        )
        assert ingest_key.secret not in http.get("/v1/tenant/ingest-keys").text
        publish(
            settings,
            [ingest_command(str(registered.tenant_id), "canary-cmd-1", invoice_body("CANARY-3"), ingest_key)],
        )
        ring_before = KeySet.parse(key_ring_file(settings.var_dir).read_text())
        cli("keys", "rotate")
        issue_and_wait_for_irn("CANARY-2")
        assert http.post("/v1/integrations/gst-irp/test").json()["ok"] is True
        cli("keys", "status")
        ring_after = KeySet.parse(key_ring_file(settings.var_dir).read_text())
        processes.wait_for(
            lambda: all(
                n in http.get("/v1/reports/invoices", params={"format": "csv"}).text
                for n in ("CANARY-2", "CANARY-3")
            ),
            timeout=120,
            what="the second invoice and the ingested one projected",
            watch=engine,
        )
        processes.assert_alive(*engine)
    finally:
        processes.close()

    canaries = [
        Canary("provider password", CANARY_PASSWORD.encode()),
        Canary("wrong provider password", CANARY_WRONG_PASSWORD.encode()),
        Canary("provider client secret", CANARY_CLIENT_SECRET.encode()),
        Canary("API key secret", api_key_secret.encode()),
        Canary("ingest signing key secret", ingest_key.secret.encode()),
        *(Canary(f"key ring key {kid}", key) for kid, key in {**ring_before.keys, **ring_after.keys}.items()),
    ]
    assert len(canaries) == 7  # the ring's first key and the one the rotation added
    leaks: list[str] = []
    rows = scan_postgres(settings, canaries, leaks)
    records = scan_kafka(settings, canaries, leaks)
    logs = scan_logs(sorted(logs_dir.glob("*.log")), canaries, leaks)
    scan_server_logs(stack_logs, canaries, leaks)
    print(
        f"\ncanary scan: {len(canaries)} secrets in plain, hex and base64 over {rows} rows,"
        f" {records} Kafka records and {logs} logs; found: {len(leaks)}"
    )
    assert rows > 0 and records > 0 and logs >= 7, (rows, records, logs)
    assert not leaks, "canary secrets found:\n" + "\n".join(leaks)


def test_the_scan_finds_a_canary_in_each_form_it_can_take() -> None:
    canary = Canary("c", b"s3cret-value-for-the-scanner")
    for haystack in (
        b'{"password": "s3cret-value-for-the-scanner"}',
        b"prefix " + canary.value.hex().encode(),
        *(base64.b64encode(pad + canary.value + b"tail") for pad in (b"", b"a", b"ab")),
        base64.urlsafe_b64encode(b"xy" + canary.value),
    ):
        assert canary.found_in(haystack) is not None, haystack
    assert canary.found_in(b"s3cret-value-for-the-scan") is None
