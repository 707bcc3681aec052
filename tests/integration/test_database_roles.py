"""Least-privilege database roles: the owner changes the schema, the runtime role only reads and
writes rows, and the engine's processes run end to end as the runtime role."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import psycopg
import pytest

from connectors.gst_irp.sandbox import create_app as create_irp_sandbox
from engine import db
from engine.bootstrap import build_service, migrate
from engine.commands import IssueInvoice
from engine.config import Settings
from ops import stack
from tests.connectors.contract import LiveServer
from tests.integration.helpers import (
    IRP_ACCOUNT,
    create_ingest_key,
    ingest_command,
    invoice_body,
    register_irp_tenant,
    register_tenant,
)
from tests.integration.processes import Processes, settings_env
from tests.integration.test_ingest import publish

pytestmark = [pytest.mark.integration]

RUNTIME_ROLE, RUNTIME_PASSWORD = stack.DEFAULT_RUNTIME_ROLE


def with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port or 5432}"))


@pytest.fixture
def runtime(settings: Settings) -> Settings:
    """The test's settings as a runtime process sees them: the runtime role's URL and no owner URL.

    The role is created exactly as `ledgerflow stack up` does (idempotently; it only adds a role)."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        stack.ensure_runtime_role(conn, RUNTIME_ROLE, RUNTIME_PASSWORD, owner="ledgerflow")
    return replace(
        settings,
        database_url=with_user(settings.database_url, RUNTIME_ROLE, RUNTIME_PASSWORD),
        owner_database_url="",
    )


def migrated(settings: Settings, runtime: Settings) -> None:
    """`ledgerflow db migrate` with both URLs, as an operator runs it."""
    migrate(replace(runtime, owner_database_url=settings.database_url))


def refused(conn: psycopg.Connection, statement: str) -> str:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught, conn.transaction():
        conn.execute(statement)
    return str(caught.value)


def test_the_runtime_role_reads_and_writes_rows_but_cannot_change_the_schema_or_create_roles(
    settings: Settings, runtime: Settings
) -> None:
    with pytest.raises(db.SchemaNotMigrated, match="ledgerflow db migrate"):
        db.ensure_schema(runtime)  # nothing migrated yet, and the runtime role may not do it
    migrated(settings, runtime)
    db.ensure_schema(runtime)  # now only checks, and passes

    with db.connect(runtime, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO integrations (tenant_id, provider, enabled, environment, base_url,"
            " credentials_sealed) VALUES (gen_random_uuid(), 'gst-irp', true, 'sandbox',"
            " 'http://127.0.0.1:9', 'k:x')"
        )
        conn.execute("UPDATE integrations SET enabled = false")
        assert conn.execute("SELECT count(*) FROM integrations").fetchone() == (1,)
        conn.execute("DELETE FROM integrations")
        assert conn.execute("SELECT count(*) FROM ledger_events").fetchone() == (0,)

        refused(conn, "CREATE TABLE sneaky (id int)")
        refused(conn, "DROP TABLE integrations")
        refused(conn, "ALTER TABLE integrations ADD COLUMN sneaky int")
        refused(conn, "TRUNCATE integrations")
        refused(conn, "CREATE ROLE sneaky_role")
        refused(conn, "CREATE SCHEMA sneaky_schema")
        attributes = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles"
            " WHERE rolname = current_user"
        ).fetchone()
        assert attributes == (False, False, False, False)

    # A table the owner adds later (another module's migration) is usable without a grant of its own.
    with db.connect(settings, autocommit=True) as owner:
        owner.execute("CREATE TABLE added_later (id int PRIMARY KEY)")
    with db.connect(runtime, autocommit=True) as conn:
        conn.execute("INSERT INTO added_later VALUES (1)")
        assert conn.execute("SELECT id FROM added_later").fetchone() == (1,)


def test_migrating_again_and_creating_the_runtime_role_again_change_nothing(
    settings: Settings, runtime: Settings
) -> None:
    migrated(settings, runtime)
    migrated(settings, runtime)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        assert not stack.ensure_runtime_role(conn, RUNTIME_ROLE, RUNTIME_PASSWORD, owner="ledgerflow")
        with pytest.raises(stack.StackError):
            stack.ensure_runtime_role(conn, "ledgerflow", "x", owner="ledgerflow")
        policies = conn.execute(
            "SELECT count(*) FROM pg_policy WHERE polname = 'ledgerflow_runtime'"
            " AND polrelid = to_regclass(%s)",
            (f"{settings.db_schema}.invoice_register",),
        ).fetchone()
    assert policies == (1,)


@pytest.fixture
def irp_url() -> Iterator[str]:
    with LiveServer(create_irp_sandbox(account=IRP_ACCOUNT)) as server:
        yield server.url


def test_api_relay_projector_worker_and_connector_run_as_the_runtime_role_end_to_end(
    settings: Settings, runtime: Settings, topics: list[str], irp_url: str, tmp_path: Path
) -> None:
    migrated(settings, runtime)
    service = build_service(runtime, pool_size=2)  # the write side as the runtime role, in-process too
    try:
        tenant = register_irp_tenant(service, runtime, irp_url)
    finally:
        service.close()

    processes = Processes(runtime, tmp_path)
    try:
        engine = [
            processes.start("relay"),
            processes.start("projector"),
            processes.start("worker"),
            processes.start("connectors", "run", name="connectors"),
        ]
        api, http = processes.start_api(tenant.api_key)
        engine.append(api)

        created = http.post(
            "/v1/invoices", json=invoice_body("ROLE-1"), headers={"Idempotency-Key": "role-1"}
        )
        assert created.status_code == 201, created.text
        invoice_id = created.json()["id"]
        # The runtime role can create an ingest key (the API does so as that role) and the worker
        # accepts the command it signs.
        signing = create_ingest_key(runtime, str(tenant.tenant_id))
        command = ingest_command(str(tenant.tenant_id), "role-cmd-1", invoice_body("ROLE-2"), signing)
        publish(runtime, [command])

        def projected() -> set[str]:
            with db.connect(runtime) as conn:
                rows = conn.execute("SELECT number FROM invoice_register").fetchall()
            return {r[0] for r in rows}

        processes.wait_for(
            lambda: {"ROLE-1", "ROLE-2"} <= projected(),
            timeout=120,
            what="both invoices (HTTP and Kafka ingest) relayed and projected",
            watch=engine,
        )

        def irn() -> bool:
            body = http.get(f"/v1/invoices/{invoice_id}").json()
            return bool(body.get("einvoice"))

        processes.wait_for(irn, timeout=120, what="the IRN from the IRP sandbox on the invoice", watch=engine)
        report = http.get("/v1/reports/invoices", params={"format": "json"})
        assert report.status_code == 200, report.text
        assert http.get("/v1/integrations").status_code == 200
        processes.assert_alive(*engine)
    finally:
        processes.close()


def test_after_a_rebuild_swap_by_the_owner_the_runtime_role_still_writes_and_reads_the_new_table(
    settings: Settings, runtime: Settings
) -> None:
    from projections.rebuild import rebuild

    migrated(settings, runtime)
    service = build_service(runtime, pool_size=2)
    try:
        tenant_id, _ = register_tenant(service)
        service.issue_invoice(UUID(tenant_id), IssueInvoice.model_validate(invoice_body("RB-1")))
    finally:
        service.close()
    with db.connect(runtime) as conn:
        before = conn.execute("SELECT to_regclass('invoice_register')::oid").fetchone()

    # What `ledgerflow projections rebuild` does: every connection as the owner.
    report = rebuild(
        replace(runtime, owner_database_url=settings.database_url).as_owner(),
        "invoice_register",
        from_event_store=True,
    )
    assert report.rows == 1, report

    with db.connect(runtime, autocommit=True) as conn:
        after = conn.execute("SELECT to_regclass('invoice_register')::oid").fetchone()
        assert after != before, "the rebuild swapped in a new table"
        assert conn.execute("SELECT number FROM invoice_register").fetchall() == [("RB-1",)]
        conn.execute("UPDATE invoice_register SET buyer_name = 'Renamed'")
        conn.execute("DELETE FROM invoice_register")
        refused(conn, "DROP TABLE invoice_register")


def test_a_schema_changing_command_without_the_owner_url_is_refused_with_what_to_set(
    settings: Settings, runtime: Settings
) -> None:
    migrated(settings, runtime)
    for args in (
        ["projections", "rebuild", "invoice_register"],
        ["reporting", "revoke", "--role", "nobody_bi"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            env=settings_env(runtime),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode != 0
        assert "LEDGERFLOW_OWNER_DATABASE_URL" in done.stderr and "Traceback" not in done.stderr, done.stderr
