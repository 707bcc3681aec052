"""What the kit keeps for a connector beyond its settings row: runtime secrets and its own tables."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest

from connectors import catalogue, etims, gstin_lookup, registry
from connectors.etims.sandbox import create_app as create_etims_sandbox
from connectors.kit import Connector, SandboxLaunch
from engine import db, integrations
from engine.application import LedgerService
from engine.bootstrap import build_service
from engine.config import Settings
from engine.security import connector_secrets, rotation
from engine.security.egress import EndpointPolicy
from engine.security.secrets import SecretError, load_key_ring
from ops.supervisor import (
    DEMO_COUNTRY_OF,
    DEMO_GSTIN,
    DEMO_ITEM_CODE,
    DEMO_KE_BODY,
    announce_kenyan_demo,
    demo_kenyan_tenant,
    demo_tenant,
)
from streams.connectors.context import HandlerContext
from tests.conftest import wait_for
from tests.connectors.contract import LiveServer
from tests.integration.helpers import client_for
from tests.integration.processes import free_port

pytestmark = [pytest.mark.integration]


def messages_on(settings: Settings, topic: str) -> int:
    """How many messages ``topic`` holds (high minus low watermark, every partition)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"count-{uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions]
    finally:
        consumer.close()
    return sum(high - low for low, high in marks)


def context(settings: Settings, service: LedgerService, connector: str = "gstin-lookup") -> HandlerContext:
    ring = load_key_ring(settings.var_dir)
    return HandlerContext(settings, service, ring, connector=connector, request_rate_per_s=None)


def sealed(settings: Settings) -> list[tuple[str, str, str]]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute("SELECT provider, scope, secret_sealed FROM connector_secrets ORDER BY scope")
        return [(r[0], r[1], r[2]) for r in rows.fetchall()]


def test_a_runtime_secret_is_kept_sealed_per_tenant_connector_and_scope(
    settings: Settings, service: LedgerService
) -> None:
    db.ensure_schema(settings)
    tenant, other = uuid4(), uuid4()
    lookup, irp = context(settings, service), context(settings, service, "gst-irp")
    later = datetime.now(UTC) + timedelta(hours=1)

    async def scenario() -> list[bytes | None]:
        await lookup.store_secret(tenant, "oauth:refresh", b"refresh-token-1", expires_at=later)
        await lookup.store_secret(tenant, "device:branch-01", b"cmc-key")
        await lookup.store_secret(tenant, "oauth:refresh", b"refresh-token-2", expires_at=later)  # replaced
        return [
            await lookup.secret(tenant, "oauth:refresh"),
            await lookup.secret(tenant, "device:branch-01"),
            await lookup.secret(other, "oauth:refresh"),  # another tenant
            await irp.secret(tenant, "oauth:refresh"),  # another connector
        ]

    assert asyncio.run(scenario()) == [b"refresh-token-2", b"cmc-key", None, None]
    stored = sealed(settings)
    assert [(p, s) for p, s, _ in stored] == [
        ("gstin-lookup", "device:branch-01"),
        ("gstin-lookup", "oauth:refresh"),
    ]
    assert all(b"cmc-key" not in v.encode() and "refresh-token" not in v for _, _, v in stored)


def test_a_sealed_secret_moved_to_another_scope_does_not_open_and_an_expired_one_reads_as_absent(
    settings: Settings, service: LedgerService
) -> None:
    tenant = uuid4()
    ring = load_key_ring(settings.var_dir)
    db.ensure_schema(settings)
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        connector_secrets.put(conn, ring, tenant, "gstin-lookup", "device:a", b"key-a")
        connector_secrets.put(
            conn,
            ring,
            tenant,
            "gstin-lookup",
            "oauth:access",
            b"tok",
            expires_at=datetime.now(UTC) - timedelta(1),
        )
        conn.execute(
            "INSERT INTO connector_secrets (tenant_id, provider, scope, secret_sealed)"
            " SELECT tenant_id, provider, 'device:b', secret_sealed FROM connector_secrets"
            " WHERE scope = 'device:a'"
        )
        assert connector_secrets.get(conn, ring, tenant, "gstin-lookup", "oauth:access") is None
        assert connector_secrets.get(conn, ring, tenant, "gstin-lookup", "device:a") == b"key-a"
        with pytest.raises(SecretError):
            connector_secrets.get(conn, ring, tenant, "gstin-lookup", "device:b")
        assert connector_secrets.delete(conn, tenant, "gstin-lookup", "device:a")
        assert connector_secrets.get(conn, ring, tenant, "gstin-lookup", "device:a") is None
        with pytest.raises(ValueError):
            connector_secrets.put(conn, ring, tenant, "gstin-lookup", "no spaces allowed", b"x")


def test_keys_rotate_reencrypts_runtime_secrets_and_they_still_open(
    settings: Settings, tmp_path: Path
) -> None:
    own = replace(settings, var_dir=tmp_path / "var")  # the test's own key ring: the shared one is everyone's
    db.ensure_schema(own)
    tenant = uuid4()
    with psycopg.connect(own.database_url, options=f"-c search_path={own.db_schema}") as conn:
        for scope in ("device:1", "device:2", "oauth:refresh"):
            connector_secrets.put(
                conn, load_key_ring(own.var_dir), tenant, "gstin-lookup", scope, scope.encode()
            )
    old = load_key_ring(own.var_dir).active

    new = rotation.add_key(own, "k-connector-secrets")
    done = rotation.reencrypt(own, load_key_ring(own.var_dir))
    rotation.retire(own, old)

    assert done.get("connector_secrets.secret_sealed") == 3, done
    ring = load_key_ring(own.var_dir)
    assert set(ring.keys) == {new}
    with psycopg.connect(own.database_url, options=f"-c search_path={own.db_schema}") as conn:
        for scope in ("device:1", "device:2", "oauth:refresh"):
            assert connector_secrets.get(conn, ring, tenant, "gstin-lookup", scope) == scope.encode()
    assert all(v.startswith(f"{new}:") for _, _, v in sealed(own))


def test_a_connectors_own_tables_are_created_by_the_migration(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_devices = Connector(
        name="example-devices",
        settings=gstin_lookup.SETTINGS,
        endpoints=EndpointPolicy(provider="example-devices"),
        connection_test=gstin_lookup.test_connection,
        migrations=(("tests.integration", "connector_devices.sql"),),
    )
    # What the session registered comes back after the test (register() replaces, never mutates).
    monkeypatch.setattr(db, "_registered_migrations", db._registered_migrations)
    monkeypatch.setattr(integrations._PROVIDERS, "_registered", integrations._PROVIDERS._registered)
    before = db.schema_fingerprint()
    monkeypatch.setattr(registry, "CONNECTORS", (*registry.CONNECTORS, with_devices))
    registry.register()  # what a process's composition root does at start

    assert db.schema_fingerprint() != before  # a connector's new table is a schema change to migrate
    db.ensure_schema(settings)

    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        conn.execute(
            "INSERT INTO example_connector_devices VALUES (%s, 'branch-01', 'KRACU0100000001')",
            (UUID(int=1),),
        )
        found = conn.execute("SELECT device_id FROM example_connector_devices").fetchall()
    assert found == [("KRACU0100000001",)]


def test_the_demo_tenant_gets_every_indian_connectors_sandbox_and_each_connection_test_passes(
    settings: Settings, tmp_path: Path
) -> None:
    own = replace(settings, var_dir=tmp_path / "var")  # demo-tenant.json and the ring: the test's own
    db.ensure_schema(own)

    demo = demo_tenant(own)

    tenant, ring = UUID(demo["tenant_id"]), load_key_ring(own.var_dir)
    with psycopg.connect(own.database_url, options=f"-c search_path={own.db_schema}") as conn:
        configured = {
            c.name: integrations.load(conn, ring, tenant, c.name)
            for c in registry.CONNECTORS
            # `ledgerflow run` configures a connector for the demo tenant when its sandbox knows demo
            # credentials (ops/supervisor.py); the others (razorpay, stripe: webhook secrets) stay unset.
            if c.name not in DEMO_COUNTRY_OF
            and c.sandbox is not None
            and c.sandbox.demo_credentials is not None
        }
        # Kenya's eTIMS belongs to the demo Kenyan tenant (demo_kenyan_tenant), not to this one.
        assert all(integrations.load(conn, ring, tenant, name) is None for name in DEMO_COUNTRY_OF)
    assert demo_tenant(own) == demo  # kept in var/: the same tenant on every start
    answers = {}
    for name, loaded in configured.items():
        declared = registry.connector(name).sandbox
        assert loaded is not None and loaded.enabled and loaded.environment == "sandbox", name
        assert declared is not None and loaded.base_url == f"http://127.0.0.1:{declared.port}"
        # The sandbox `ledgerflow run` starts, with the same arguments, on a free port.
        with sandbox_process(declared, tmp_path / f"{name}.log") as url:
            answers[name] = asyncio.run(catalogue.test_connection(replace(loaded, base_url=url), own.mode))
    assert {name: answer["ok"] for name, answer in answers.items()} == dict.fromkeys(configured, True)
    assert {"gst-irp", "gstin-lookup", "gstn-returns", "bank"} <= set(answers)


@contextlib.contextmanager
def sandbox_process(launch: SandboxLaunch, log_path: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", launch.module, "--port", str(port), *launch.extra_args(DEMO_GSTIN)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:

            def listening() -> bool:
                assert process.poll() is None, log_path.read_text(errors="replace")[-2000:]
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
                return False

            wait_for(listening, timeout=30, what=f"{launch.module} listening on {port}")
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_the_demo_kenyan_tenant_has_a_kra_pin_and_its_etims_integration_on_the_etims_sandbox(
    settings: Settings, tmp_path: Path, topics: list[str]
) -> None:
    own = replace(settings, var_dir=tmp_path / "var", mode="development")
    db.ensure_schema(own)

    demo = demo_kenyan_tenant(own)

    assert demo is not None and demo_kenyan_tenant(own) == demo  # kept in var/demo-tenant-ke.json
    assert demo_tenant(own)["tenant_id"] != demo["tenant_id"]
    tenant, ring = UUID(demo["tenant_id"]), load_key_ring(own.var_dir)
    with psycopg.connect(own.database_url, options=f"-c search_path={own.db_schema}") as conn:
        loaded = integrations.load(conn, ring, tenant, "etims")
        indian = [integrations.load(conn, ring, tenant, name) for name in ("gst-irp", "gstin-lookup")]
    assert loaded is not None and loaded.enabled and loaded.environment == "sandbox"
    assert loaded.base_url == f"http://127.0.0.1:{etims.SANDBOX_PORT}"
    assert loaded.credentials["tin"] == etims.DEMO_KRA_PIN
    assert loaded.credentials["bhf_id"] == etims.DEMO_BRANCH_ID
    assert indian == [None, None]
    service = build_service(own, pool_size=1)
    try:
        profile = service.get_tenant(tenant)
    finally:
        service.close()
    assert (profile.country, profile.kra_pin, profile.gstin) == ("KE", etims.DEMO_KRA_PIN, None)
    with LiveServer(create_etims_sandbox()) as live:  # the sandbox `ledgerflow run` starts, on a free port
        answer = asyncio.run(catalogue.test_connection(replace(loaded, base_url=live.url), own.mode))
    assert answer["ok"] is True, answer
    # The item of the printed curl is registered with KRA (the sandbox) by a queued saveItem job.
    with psycopg.connect(own.database_url, options=f"-c search_path={own.db_schema}") as conn:
        items = conn.execute(
            "SELECT item_code, environment, bhf_id FROM etims_items WHERE tenant_id = %s", (tenant,)
        )
        assert items.fetchall() == [(DEMO_ITEM_CODE, "sandbox", etims.DEMO_BRANCH_ID)]
    assert messages_on(own, own.topic("connector.etims.jobs.v1")) == 1
    # The curl `ledgerflow run` prints for it is a Kenyan sale the API takes.
    issued = client_for(own).post(
        "/v1/invoices",
        content=DEMO_KE_BODY,
        headers={"Authorization": f"Bearer {demo['api_key']}", "Content-Type": "application/json"},
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["totals"] == {"taxable": "600.00", "vat": "96.00", "total": "696.00"}
    # Production refuses sandbox integrations: no demo there.
    assert demo_kenyan_tenant(replace(own, mode="production")) is None


def test_ledgerflow_run_prints_the_kenyan_demo_once_its_device_is_ready_and_its_item_registered(
    settings: Settings, tmp_path: Path, topics: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from connectors.etims import devices as etims_devices

    own = replace(settings, var_dir=tmp_path / "var", mode="development")
    db.ensure_schema(own)
    demo = demo_kenyan_tenant(own)
    assert demo is not None
    tenant = UUID(demo["tenant_id"])
    base = "http://127.0.0.1:8080"

    # Device still pending: nothing printed but, after the deadline, the curl with what is missing.
    announce_kenyan_demo(own, demo, base, threading.Event(), timeout=1.5)
    waited = capsys.readouterr().out
    assert demo["api_key"] in waited and f"item {DEMO_ITEM_CODE} is not registered" in waited
    assert messages_on(own, own.topic("connector.etims.jobs.v1")) == 1  # only the first start's job

    # The device initialised: the item's job is queued again at once, then the item registered.
    with psycopg.connect(own.database_url, options=f"-c search_path={own.db_schema}") as conn:
        etims_devices.register_device(
            conn,
            tenant,
            environment="sandbox",
            bhf_id=etims.DEMO_BRANCH_ID,
            device_serial=etims.DEMO_DEVICE_SERIAL,
            device_type="oscu",
        )
        conn.execute("UPDATE etims_devices SET status = 'initialized' WHERE tenant_id = %s", (tenant,))
    announce_kenyan_demo(own, demo, base, threading.Event(), timeout=1.5)
    assert messages_on(own, own.topic("connector.etims.jobs.v1")) == 2
    capsys.readouterr()
    with psycopg.connect(own.database_url, options=f"-c search_path={own.db_schema}") as conn:
        conn.execute("UPDATE etims_items SET status = 'registered' WHERE tenant_id = %s", (tenant,))
    announce_kenyan_demo(own, demo, base, threading.Event(), timeout=60)
    ready = capsys.readouterr().out
    assert "is ready" in ready and "not registered" not in ready and DEMO_ITEM_CODE in ready
