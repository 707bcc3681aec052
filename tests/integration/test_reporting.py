"""Analysts' reporting: the views' contract and figures, tenant roles isolated by row-level security
(logging in with their own password), the views following a rebuilt invoice_register, /v1/reports
in JSON and CSV, and `ledgerflow export` to CSV and Parquet."""

from __future__ import annotations

import csv
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from engine import db
from engine.application import IST, LedgerService
from engine.commands import CancelInvoice, IssueInvoice
from engine.config import Settings
from engine.relay import Relay
from projections import reporting
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from tests.conftest import TEST_DATABASE_URL, BackgroundLoop, wait_for
from tests.integration.helpers import client_for, invoice_body, register_tenant
from tests.integration.processes import settings_env

pytestmark = pytest.mark.integration

SELLER_A = "27AAGCB7383J1Z8"  # Maharashtra
SELLER_B = "29AAGCB7383J1Z4"  # Karnataka
KARNATAKA_BUYER = {
    "name": "Bengaluru Components LLP",
    "gstin": "29AAGCB7383J1Z4",
    "state": "29",
    "address": {"line1": "4 Residency Road", "city": "Bengaluru", "pincode": "560025"},
}
UNREGISTERED_BUYER = {"name": "Asha Patil", "state": "27"}


def line(hsn: str, quantity: str, unit_price: str, description: str = "Goods") -> dict[str, str]:
    return {
        "description": description,
        "hsn": hsn,
        "quantity": quantity,
        "unit": "NOS",
        "unit_price": unit_price,
        "gst_rate": "18",
    }


@dataclass
class Ledger:
    """Two tenants' invoices, projected: A has five (one cancelled, three with IRN outcomes), B one."""

    settings: Settings
    service: LedgerService
    tenant_a: UUID
    key_a: str
    tenant_b: UUID
    ids: dict[str, UUID]


@pytest.fixture(autouse=True)
def drop_reporting_schema(settings: Settings) -> Iterator[None]:
    """The settings fixture drops the test's schema; the reporting schema beside it goes here."""
    yield
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.reporting_schema))
        )


@pytest.fixture
def role_names() -> Iterator[list[str]]:
    """Unique role names for this test; roles are cluster-wide, so each is dropped afterwards."""
    names: list[str] = []
    yield names
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        for name in names:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def new_role(role_names: list[str]) -> str:
    name = f"lf_test_{uuid.uuid4().hex[:12]}"
    role_names.append(name)
    return name


def connect_as(role: str, password: str) -> psycopg.Connection:
    params = {**conninfo_to_dict(TEST_DATABASE_URL), "user": role, "password": password}
    return psycopg.connect(make_conninfo(**params), autocommit=True, connect_timeout=5)


def grant(settings: Settings, tenant: str, role: str, password: str) -> subprocess.CompletedProcess[str]:
    """`ledgerflow reporting grant` with a chosen password."""
    return cli(settings, "reporting", "grant", "--tenant", tenant, "--role", role, "--password", password)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def owner_rows(settings: Settings, view: str, tenant_id: UUID | None = None) -> list[dict[str, Any]]:
    """The view as the engine's own role reads it, in key order."""
    chosen = reporting.REPORTS[view]
    order = sql.SQL(", ").join(map(sql.Identifier, ("tenant_id", *chosen.key)))
    query = sql.SQL("SELECT * FROM {}.{}").format(
        sql.Identifier(settings.reporting_schema), sql.Identifier(view)
    )
    params: list[Any] = []
    if tenant_id is not None:
        query += sql.SQL(" WHERE tenant_id = %s")
        params.append(tenant_id)
    with db.connect(settings) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(query + sql.SQL(" ORDER BY ") + order, params).fetchall()


@pytest.fixture
def ledger(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> Ledger:
    tenant_a, key_a = register_tenant(service, state="27", gstin=SELLER_A)
    tenant_b, _ = register_tenant(service, state="29", gstin=SELLER_B)
    a, b = UUID(tenant_a), UUID(tenant_b)
    bodies = {
        "A-1": invoice_body(
            "A-1",
            date="2026-01-05",
            lines=[line("8504", "10", "100.00", "Transformer coil"), line("8471", "1", "500.00", "Laptop")],
        ),
        "A-2": invoice_body(
            "A-2",
            date="2026-01-10",
            buyer=KARNATAKA_BUYER,
            place_of_supply="29",
            lines=[line("8504", "5", "100")],
        ),
        "A-3": invoice_body(
            "A-3",
            date="2026-01-20",
            buyer=UNREGISTERED_BUYER,
            lines=[line("998314", "2", "1000", "Website design")],
        ),
        "A-4": invoice_body("A-4", date="2026-01-25", lines=[line("8504", "1", "100")]),
        "A-5": invoice_body("A-5", date="2026-02-03", lines=[line("8504", "3", "100")]),
    }
    ids = {
        number: service.issue_invoice(a, IssueInvoice.model_validate(body)).invoice.id
        for number, body in bodies.items()
    }
    ids["B-1"] = service.issue_invoice(
        b, IssueInvoice.model_validate(invoice_body("B-1", date="2026-01-07"))
    ).invoice.id
    service.cancel_invoice(a, ids["A-4"], CancelInvoice(reason="order_cancelled"))
    acknowledged = datetime(2026, 1, 5, 11, 30, 15, tzinfo=IST).strftime("%Y-%m-%d %H:%M:%S")
    for number, irn in (("A-1", "a" * 64), ("A-5", "b" * 64)):
        service.record_irn(
            a,
            ids[number],
            job_id=f"job-{number}",
            irn=irn,
            ack_no="112010000000001",
            ack_date=acknowledged,
            signed_invoice="x.y.z",
            signed_qr_code="q.r.s",
            adopted_existing=False,
            traceparent=None,
        )
    service.record_irn_failure(
        a,
        ids["A-2"],
        job_id="job-A-2",
        operation="generate",
        error_class="permanent",
        code="2172",
        message="GSTIN of the buyer is not active",
        attempts=1,
        traceparent=None,
    )
    service.record_irn_cancellation(
        a,
        ids["A-5"],
        job_id="job-A-5-cancel",
        irn="b" * 64,
        cancel_date="2026-02-03 18:00:00",
        reason_code=3,
        remark=None,
        traceparent=None,
    )
    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)

    def projected() -> dict[str, tuple[str, str]] | None:
        background.check()
        rows = owner_rows(settings, "einvoice_status")
        states = {r["invoice_number"]: (r["invoice_status"], r["einvoice_status"]) for r in rows}
        final = {
            "A-1": ("issued", "generated"),
            "A-2": ("issued", "failed"),
            "A-3": ("issued", "none"),
            "A-4": ("cancelled", "none"),
            "A-5": ("issued", "cancelled"),
            "B-1": ("issued", "none"),
        }
        return states if states == final else None

    wait_for(projected, what="six invoices projected with their cancellation and IRN outcomes")
    return Ledger(settings, service, a, key_a, b, ids)


# -- the contract -----------------------------------------------------------------------------------


def test_the_views_have_exactly_the_documented_columns_types_and_comments(
    service: LedgerService, settings: Settings
) -> None:
    with db.connect(settings) as conn:
        for chosen in reporting.REPORTS.values():
            name = (
                sql.SQL("{}.{}")
                .format(sql.Identifier(settings.reporting_schema), sql.Identifier(chosen.name))
                .as_string(conn)
            )
            found = conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum)"
                " FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
                " ORDER BY attnum",
                (name,),
            ).fetchall()
            assert found == [(c.name, c.type, c.description) for c in chosen.columns], chosen.name
            options = conn.execute(
                "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (name,)
            ).fetchone()
            assert options == (["security_invoker=true"],), chosen.name


def test_installing_again_changes_nothing_and_does_not_wait_for_readers(
    service: LedgerService, settings: Settings
) -> None:
    installation = sql.SQL("SELECT installed_at FROM {}.installation").format(
        sql.Identifier(settings.reporting_schema)
    )
    with db.connect(settings) as conn:
        before = conn.execute(installation).fetchall()
    with db.connect(settings) as reader, db.connect(settings) as installer:
        reader.execute(
            sql.SQL("SELECT count(*) FROM {}.invoices").format(sql.Identifier(settings.reporting_schema))
        )  # the reader's transaction stays open and keeps its lock on the view
        with installer.transaction():
            # Replacing a view or a policy would need an exclusive lock and wait for the reader.
            installer.execute("SET LOCAL lock_timeout = '3s'")
            reporting.install(installer, settings)
            reporting.install(installer, settings)
        reader.rollback()
    db.ensure_schema(settings)
    with db.connect(settings) as conn:
        assert conn.execute(installation).fetchall() == before  # built once, when the service started


# -- the figures ------------------------------------------------------------------------------------


def test_the_views_show_invoices_lines_tax_summary_hsn_summary_and_irn_state(ledger: Ledger) -> None:
    settings, a = ledger.settings, ledger.tenant_a
    invoices = {r["invoice_number"]: r for r in owner_rows(settings, "invoices", a)}
    assert list(invoices) == ["A-1", "A-2", "A-3", "A-4", "A-5"]
    first = invoices["A-1"]
    assert first["period"] == date(2026, 1, 1) and first["supply_type"] == "B2B"
    assert first["place_of_supply_name"] == "Maharashtra" and first["intra_state"] is True
    assert (first["taxable"], first["cgst"], first["sgst"], first["igst"]) == (
        Decimal("1500.00"),
        Decimal("135.00"),
        Decimal("135.00"),
        Decimal("0.00"),
    )
    assert (first["total_tax"], first["total"]) == (Decimal("270.00"), Decimal("1770.00"))
    assert (first["irn"], first["einvoice_status"]) == ("a" * 64, "generated")
    assert invoices["A-2"]["intra_state"] is False and invoices["A-2"]["igst"] == Decimal("90.00")
    assert invoices["A-3"]["supply_type"] == "B2C" and invoices["A-3"]["buyer_gstin"] is None
    assert (
        invoices["A-4"]["status"] == "cancelled"
        and invoices["A-4"]["cancellation_reason"] == "order_cancelled"
    )
    assert invoices["A-4"]["cancelled_at"] is not None and invoices["A-3"]["cancelled_at"] is None

    lines = owner_rows(settings, "invoice_lines", a)
    assert [(r["invoice_number"], r["line_no"], r["hsn"]) for r in lines] == [
        ("A-1", 1, "8504"),
        ("A-1", 2, "8471"),
        ("A-2", 1, "8504"),
        ("A-3", 1, "998314"),
        ("A-4", 1, "8504"),
        ("A-5", 1, "8504"),
    ]
    assert (lines[1]["quantity"], lines[1]["unit_price"], lines[1]["gst_rate"]) == (
        Decimal("1.000"),
        Decimal("500.000"),
        Decimal("18.000"),
    )
    assert (lines[1]["taxable_value"], lines[1]["cgst"], lines[1]["total"]) == (
        Decimal("500.00"),
        Decimal("45.00"),
        Decimal("590.00"),
    )

    # One line per row: the key, then the figures, as the CSV export would print them.
    def lines_of(view: str, columns: str) -> list[str]:
        return [
            " ".join(reporting.text_value(row[c]) for c in columns.split())
            for row in owner_rows(settings, view, a)
        ]

    figures = "invoice_count taxable cgst sgst igst total_tax total cancelled_count cancelled_total"
    assert lines_of("invoice_tax_summary", "period supply_type place_of_supply " + figures) == [
        "2026-01-01 B2B 27 1 1500.00 135.00 135.00 0.00 270.00 1770.00 1 118.00",
        "2026-01-01 B2B 29 1 500.00 0.00 0.00 90.00 90.00 590.00 0 0.00",
        "2026-01-01 B2C 27 1 2000.00 180.00 180.00 0.00 360.00 2360.00 0 0.00",
        "2026-02-01 B2B 27 1 300.00 27.00 27.00 0.00 54.00 354.00 0 0.00",
    ]
    figures = "invoice_count quantity taxable_value cgst sgst igst cess total"
    assert lines_of("hsn_summary", "period supply_type hsn unit gst_rate " + figures) == [
        "2026-01-01 B2B 8471 NOS 18.000 1 1.000 500.00 45.00 45.00 0.00 0.00 590.00",
        # the cancelled A-4 is left out.
        "2026-01-01 B2B 8504 NOS 18.000 2 15.000 1500.00 90.00 90.00 90.00 0.00 1770.00",
        "2026-01-01 B2C 998314 NOS 18.000 1 2.000 2000.00 180.00 180.00 0.00 0.00 2360.00",
        "2026-02-01 B2B 8504 NOS 18.000 1 3.000 300.00 27.00 27.00 0.00 0.00 354.00",
    ]

    irn = {r["invoice_number"]: r for r in owner_rows(settings, "einvoice_status", a)}
    assert irn["A-1"]["einvoice_status"] == "generated" and irn["A-1"]["ack_no"] == "112010000000001"
    assert irn["A-1"]["acknowledged_at"] == datetime(2026, 1, 5, 6, 0, 15, tzinfo=UTC)  # 11:30:15 IST
    assert irn["A-1"]["adopted_existing"] is False and irn["A-1"]["failure_code"] is None
    assert (irn["A-2"]["einvoice_status"], irn["A-2"]["irn"]) == ("failed", None)
    assert (irn["A-2"]["failure_operation"], irn["A-2"]["failure_class"], irn["A-2"]["failure_code"]) == (
        "generate",
        "permanent",
        "2172",
    )
    assert irn["A-2"]["failure_attempts"] == 1
    assert irn["A-3"]["einvoice_status"] == "none"
    assert irn["A-5"]["einvoice_status"] == "cancelled" and irn["A-5"]["irn_cancel_reason_code"] == 3
    assert irn["A-5"]["irn_cancelled_at"] == datetime(2026, 2, 3, 12, 30, tzinfo=UTC)  # 18:00 IST


# -- tenant roles -----------------------------------------------------------------------------------


def test_a_tenant_role_logs_in_and_reads_only_its_tenants_rows_and_nothing_else(
    ledger: Ledger, role_names: list[str]
) -> None:
    settings = ledger.settings
    role, password = new_role(role_names), "correct horse battery staple"
    granted = grant(settings, str(ledger.tenant_a), role, password)
    assert granted.returncode == 0, granted.stderr
    assert f"role {role} created" in granted.stdout

    with connect_as(role, password) as conn:
        # search_path is the reporting schema: the views need no qualification.
        for view in reporting.REPORTS:
            seen = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(view))).fetchall()
            assert len(seen) == len(owner_rows(settings, view, ledger.tenant_a)) > 0, view
            tenants = conn.execute(sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(sql.Identifier(view)))
            assert tenants.fetchall() == [(ledger.tenant_a,)], view
        # Under the views, the projection table itself shows only the tenant's rows.
        table = sql.SQL("{}.invoice_register").format(sql.Identifier(settings.db_schema))
        assert conn.execute(sql.SQL("SELECT DISTINCT tenant_id FROM ") + table).fetchall() == [
            (ledger.tenant_a,)
        ]
        assert conn.execute(
            sql.SQL("SELECT count(*) FROM {}.invoices WHERE tenant_id = %s").format(
                sql.Identifier(settings.reporting_schema)
            ),
            (ledger.tenant_b,),
        ).fetchone() == (0,)
        mapping = sql.SQL("SELECT role_name FROM {}.tenant_roles").format(
            sql.Identifier(settings.reporting_schema)
        )
        assert conn.execute(mapping).fetchall() == [(role,)]
        for secret in (
            "ledger_events",
            "api_keys",
            "idempotency_keys",
            "integrations",
            "projection_tracking",
        ):
            with pytest.raises(pg_errors.InsufficientPrivilege):
                conn.execute(
                    sql.SQL("SELECT 1 FROM {}.{}").format(
                        sql.Identifier(settings.db_schema), sql.Identifier(secret)
                    )
                )
        with pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute(sql.SQL("DELETE FROM ") + table)
        with pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute("SET ROLE ledgerflow")

    # Another deployment's schema in the same database is out of reach too.
    other = f"{settings.db_schema}_other"
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as owner:
        owner.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(other)))
        owner.execute(
            sql.SQL("CREATE TABLE {}.invoice_register (tenant_id uuid)").format(sql.Identifier(other))
        )
    try:
        with connect_as(role, password) as conn, pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT * FROM {}.invoice_register").format(sql.Identifier(other)))
    finally:
        with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as owner:
            owner.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(other)))

    listed = cli(settings, "reporting", "list")
    assert role in listed.stdout and str(ledger.tenant_a) in listed.stdout

    # Granting again changes the password; the role stays bound to its tenant.
    again = grant(settings, str(ledger.tenant_a), role, "new-password")
    assert again.returncode == 0 and f"role {role} updated" in again.stdout
    with pytest.raises(psycopg.OperationalError):
        connect_as(role, password).close()
    connect_as(role, "new-password").close()
    other_tenant = cli(settings, "reporting", "grant", "--tenant", str(ledger.tenant_b), "--role", role)
    assert other_tenant.returncode == 1 and f"already reads tenant {ledger.tenant_a}" in other_tenant.stderr

    revoked = cli(settings, "reporting", "revoke", "--role", role)
    assert revoked.returncode == 0 and "revoked and dropped" in revoked.stdout, revoked.stderr
    with pytest.raises(psycopg.OperationalError):
        connect_as(role, "new-password").close()


def test_grant_refuses_roles_it_did_not_create_bad_names_and_unknown_tenants(
    service: LedgerService, settings: Settings, role_names: list[str]
) -> None:
    tenant, _ = register_tenant(service)
    # The engine's own role must never be turned into (or dropped as) a tenant role.
    taken = grant(settings, tenant, "ledgerflow", "x")
    assert taken.returncode == 1 and "was not created by `ledgerflow reporting grant`" in taken.stderr
    bad = cli(settings, "reporting", "grant", "--tenant", tenant, "--role", 'Robert"; DROP TABLE x; --')
    assert bad.returncode == 2 and "not a usable role name" in bad.stderr
    unknown = cli(
        settings, "reporting", "grant", "--tenant", str(uuid.uuid4()), "--role", new_role(role_names)
    )
    assert unknown.returncode == 1 and "no tenant" in unknown.stderr
    not_mapped = cli(settings, "reporting", "revoke", "--role", "ledgerflow")
    assert not_mapped.returncode == 1 and "reads no tenant" in not_mapped.stderr

    # Without --password a new role gets a generated one, shown once, that logs in.
    role = new_role(role_names)
    created = cli(settings, "reporting", "grant", "--tenant", tenant, "--role", role)
    assert created.returncode == 0, created.stderr
    password = next(
        p.removeprefix("password: ") for p in created.stdout.splitlines() if p.startswith("password: ")
    )
    with connect_as(role, password) as conn:
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (0,)


# -- a rebuild swaps invoice_register ---------------------------------------------------------------


@pytest.mark.parametrize("swap", ["rename-then-drop", "drop-cascade-then-rename"])
def test_after_a_rebuild_swaps_the_table_the_views_policy_and_grants_follow_it(
    ledger: Ledger, role_names: list[str], swap: str
) -> None:
    settings = ledger.settings
    role, password = new_role(role_names), "pw-rebuild"
    granted = grant(settings, str(ledger.tenant_a), role, password)
    assert granted.returncode == 0, granted.stderr
    with db.connect(settings) as conn, conn.transaction():
        # A shadow table built afresh (here: every row but A-5's), then swapped in as one transaction.
        conn.execute("CREATE TABLE invoice_register_shadow (LIKE invoice_register INCLUDING ALL)")
        conn.execute(
            "INSERT INTO invoice_register_shadow SELECT * FROM invoice_register WHERE number <> 'A-5'"
        )
        if swap == "rename-then-drop":
            conn.execute("ALTER TABLE invoice_register RENAME TO invoice_register_old")
            conn.execute("ALTER TABLE invoice_register_shadow RENAME TO invoice_register")
            reporting.install(conn, settings)
            # No CASCADE: this fails if a view or policy still depends on the old table.
            conn.execute("DROP TABLE invoice_register_old")
        else:
            conn.execute("DROP TABLE invoice_register CASCADE")
            conn.execute("ALTER TABLE invoice_register_shadow RENAME TO invoice_register")
            reporting.install(conn, settings)

    numbers = [r["invoice_number"] for r in owner_rows(settings, "invoices", ledger.tenant_a)]
    assert numbers == ["A-1", "A-2", "A-3", "A-4"]
    with connect_as(role, password) as conn:
        assert conn.execute("SELECT DISTINCT tenant_id FROM invoices").fetchall() == [(ledger.tenant_a,)]
        assert conn.execute("SELECT count(*) FROM hsn_summary").fetchone() == (3,)
        table = sql.SQL("{}.invoice_register").format(sql.Identifier(settings.db_schema))
        assert conn.execute(sql.SQL("SELECT DISTINCT tenant_id FROM ") + table).fetchall() == [
            (ledger.tenant_a,)
        ]


# -- /v1/reports ------------------------------------------------------------------------------------


def test_the_reports_api_pages_json_and_csv_through_the_callers_rows_only(ledger: Ledger) -> None:
    client = client_for(ledger.settings)
    auth = {"Authorization": f"Bearer {ledger.key_a}"}

    listed = client.get("/v1/reports", headers=auth)
    assert listed.status_code == 200
    by_name = {r["name"]: r for r in listed.json()["items"]}
    assert list(by_name) == list(reporting.REPORTS)
    assert by_name["invoices"]["key"] == ["invoice_date", "invoice_number", "invoice_id"]
    assert {
        "name": "total",
        "type": "numeric(18,2)",
        "description": "Invoice total: taxable + total_tax, INR.",
    } in (by_name["invoices"]["columns"])

    numbers: list[str] = []
    url = "/v1/reports/invoices?limit=2"
    pages = 0
    while url:
        body = client.get(url, headers=auth).json()
        numbers += [item["invoice_number"] for item in body["items"]]
        pages += 1
        url = f"/v1/reports/invoices?limit=2&cursor={body['next']}" if body["next"] else ""
    assert (numbers, pages) == (["A-1", "A-2", "A-3", "A-4", "A-5"], 3)

    first = client.get("/v1/reports/invoices?limit=1", headers=auth).json()["items"][0]
    assert first["total"] == "1770.00" and first["cgst"] == "135.00" and first["invoice_date"] == "2026-01-05"
    assert first["tenant_id"] == str(ledger.tenant_a) and first["intra_state"] is True

    january = client.get("/v1/reports/invoices?from=2026-01-06&to=2026-01-31", headers=auth).json()
    assert [i["invoice_number"] for i in january["items"]] == ["A-2", "A-3", "A-4"]
    # Monthly reports: from/to select the months they touch.
    february = client.get("/v1/reports/invoice_tax_summary?from=2026-02-15", headers=auth).json()
    assert [(i["period"], i["total"]) for i in february["items"]] == [("2026-02-01", "354.00")]

    # CSV: the same rows, the next page's cursor in headers.
    csv_rows: list[dict[str, str]] = []
    url = "/v1/reports/invoice_lines?format=csv&limit=4"
    while url:
        response = client.get(url, headers=auth)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        csv_rows += list(csv.DictReader(response.text.splitlines()))
        cursor = response.headers.get("x-next-cursor")
        if cursor:
            assert response.headers["link"].endswith(f'cursor={cursor}>; rel="next"')
        url = f"/v1/reports/invoice_lines?format=csv&limit=4&cursor={cursor}" if cursor else ""
    expected = owner_rows(ledger.settings, "invoice_lines", ledger.tenant_a)
    assert csv_rows == [{k: reporting.text_value(v) for k, v in row.items()} for row in expected]
    assert csv_rows[0]["quantity"] == "10.000" and csv_rows[0]["total"] == "1180.00"


def test_the_reports_api_answers_bad_requests_with_the_error_shape(ledger: Ledger) -> None:
    client = client_for(ledger.settings)
    auth = {"Authorization": f"Bearer {ledger.key_a}"}

    def error(url: str, status: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = client.get(url, headers=auth if headers is None else headers)
        assert response.status_code == status, response.text
        body = response.json()["error"]
        assert set(body) == {"code", "message", "details", "timestamp", "request_id"}
        return body

    assert error("/v1/reports/invoices", 401, {})["code"] == "unauthorized"
    assert error("/v1/reports", 401, {})["code"] == "unauthorized"
    missing = error("/v1/reports/ledger_events", 404)
    assert missing["code"] == "not_found" and "invoices" in missing["details"]["reports"]

    def field(url: str) -> dict[str, str]:
        body = error(url, 422)
        assert body["code"] == "validation_failed"
        return body["details"]["fields"][0]

    assert field("/v1/reports/invoices?format=xml")["path"] == "format"
    assert field("/v1/reports/invoices?limit=0")["path"] == "limit"
    assert field("/v1/reports/invoices?limit=1001")["path"] == "limit"
    assert field("/v1/reports/invoices?from=2026-13-01")["path"] == "from"
    assert field("/v1/reports/invoices?from=2026-02-01&to=2026-01-01") == {
        "path": "from",
        "code": "invalid_range",
        "message": "from (2026-02-01) is after to (2026-01-01)",
    }
    assert field("/v1/reports/invoices?cursor=garbage")["code"] == "invalid_cursor"
    other_report = client.get("/v1/reports/einvoice_status?limit=1", headers=auth).json()["next"]
    wrong = field(f"/v1/reports/invoices?cursor={other_report}")
    assert (wrong["path"], wrong["code"]) == ("cursor", "invalid_cursor")
    assert "einvoice_status" in wrong["message"]


# -- ledgerflow export ------------------------------------------------------------------------------


def test_export_writes_parquet_and_csv_that_read_back_as_the_view(ledger: Ledger, tmp_path: Path) -> None:
    settings = ledger.settings
    parquet_file = tmp_path / "lines.parquet"
    done = cli(
        settings,
        "export",
        "invoice_lines",
        "--format",
        "parquet",
        "--out",
        str(parquet_file),
        "--tenant",
        str(ledger.tenant_a),
        "--chunk-rows",
        "4",
    )
    assert done.returncode == 0, done.stderr
    assert f"6 rows of invoice_lines written to {parquet_file}" in done.stdout
    table = pq.read_table(parquet_file)
    assert table.schema.field("taxable_value").type == pa.decimal128(18, 2)
    assert table.schema.field("quantity").type == pa.decimal128(18, 3)
    assert table.schema.field("invoice_date").type == pa.date32()
    assert pq.ParquetFile(parquet_file).metadata.num_row_groups == 2  # written in chunks of 4
    expected = owner_rows(settings, "invoice_lines", ledger.tenant_a)
    assert table.to_pylist() == [
        {k: str(v) if isinstance(v, UUID) else v for k, v in row.items()} for row in expected
    ]

    csv_file = tmp_path / "invoices.csv"
    done = cli(
        settings, "export", "invoices", "--format", "csv", "--out", str(csv_file), "--to", "2026-01-31"
    )
    assert done.returncode == 0, done.stderr
    with csv_file.open(newline="") as f:
        exported = list(csv.DictReader(f))
    everyone = [r for r in owner_rows(settings, "invoices") if r["invoice_date"] <= date(2026, 1, 31)]
    assert exported == [{k: reporting.text_value(v) for k, v in row.items()} for row in everyone]
    assert {r["tenant_id"] for r in exported} == {str(ledger.tenant_a), str(ledger.tenant_b)}
    assert not (tmp_path / "invoices.csv.partial").exists()

    unknown = cli(settings, "export", "ledger_events", "--format", "csv", "--out", str(tmp_path / "x.csv"))
    assert unknown.returncode == 2 and "no report named 'ledger_events'" in unknown.stderr
    nowhere = cli(settings, "export", "invoices", "--format", "csv", "--out", str(tmp_path / "no" / "x.csv"))
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr
