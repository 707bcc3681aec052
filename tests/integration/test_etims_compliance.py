"""The eTIMS compliance report: Kenyan sales' eTIMS events -> the ``etims_compliance`` projection ->
``GET /v1/etims/compliance`` (JSON, CSV) and ``ledgerflow etims report``; replays count nothing twice
and a rebuild gives the same report."""

from __future__ import annotations

import csv
import io
import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import pytest
from click.testing import CliRunner

from engine import db
from engine.application import LedgerService
from engine.cli import main
from engine.config import Settings
from projections import etims_compliance
from projections.dead_letters import apply_isolating
from projections.etims_compliance import EtimsCompliance
from projections.events import ProjectedEvent
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import client_for, register_tenant
from tests.integration.processes import settings_env

pytestmark = pytest.mark.integration

DAY = date(2026, 1, 19)
AT = datetime(2026, 1, 19, 7, 30, tzinfo=UTC)  # 10:30 in Nairobi
_offsets = itertools.count()


class Sales:
    """Builds the invoice events of Kenyan sales as the projection reads them off ledger.invoice.v1."""

    def __init__(self, tenant_id: UUID, environment: str = "sandbox") -> None:
        self.tenant_id = tenant_id
        self.environment = environment
        self.clock = AT

    def _event(self, ce_type: str, invoice_id: UUID, branch_id: str, **fields: Any) -> ProjectedEvent:
        self.clock += timedelta(seconds=1)
        event_id = str(uuid.uuid4())
        record = {
            "event_id": event_id,
            "invoice_id": invoice_id,
            "tenant_id": self.tenant_id,
            "environment": self.environment,
            "branch_id": branch_id,
            "occurred_at": self.clock,
            **fields,
        }
        # The CloudEvents headers the relay writes: a dead letter takes its tenant and subject from them.
        headers = (
            ("ce_id", event_id.encode()),
            ("ce_type", ce_type.encode()),
            ("ce_source", f"/tenants/{self.tenant_id}".encode()),
            ("ce_subject", str(invoice_id).encode()),
        )
        return ProjectedEvent(
            "ledger.invoice.v1", 0, next(_offsets), ce_type, event_id, record, invoice_id.bytes, b"", headers
        )

    def issued(
        self,
        invoice_id: UUID,
        branch_id: str,
        *,
        day: date = DAY,
        country: str = "KE",
        credit_note: bool = False,
    ) -> ProjectedEvent:
        return self._event(
            "ledgerflow.invoice.issued",
            invoice_id,
            branch_id,
            number=f"KE-{invoice_id.hex[:6]}",
            date=day.isoformat(),
            country=country,
            document_type="credit_note" if credit_note else "invoice",
        )

    def numbered(self, invoice_id: UUID, branch_id: str, invc_no: int) -> ProjectedEvent:
        return self._event(
            "ledgerflow.invoice.etims_numbered",
            invoice_id,
            branch_id,
            job_id="job",
            invc_no=invc_no,
            device_type="oscu",
        )

    def signed(self, invoice_id: UUID, branch_id: str, invc_no: int) -> ProjectedEvent:
        return self._event(
            "ledgerflow.invoice.etims_signed",
            invoice_id,
            branch_id,
            job_id="job",
            invc_no=invc_no,
            receipt_no=invc_no,
            total_receipt_no=invc_no,
            internal_data="INTERNAL",
            receipt_signature="SIGNATURE",
            sdc_id="KRACU0100000001",
            mrc_no="WIS00000001",
            sdc_datetime="20260119103000",
            qr_url="https://etims-sbx.kra.go.ke/common/link/etims/receipt/indexEtimsReceiptData?Data=X",
            device_type="oscu",
            adopted_existing=False,
        )

    def failed(
        self, invoice_id: UUID, branch_id: str, invc_no: int, code: str, message: str
    ) -> ProjectedEvent:
        return self._event(
            "ledgerflow.invoice.etims_failed",
            invoice_id,
            branch_id,
            job_id="job",
            invc_no=invc_no,
            result_code=code,
            error_class="permanent",
            message=message,
        )

    def voided(self, invoice_id: UUID, branch_id: str, invc_no: int) -> ProjectedEvent:
        return self._event(
            "ledgerflow.invoice.etims_voided",
            invoice_id,
            branch_id,
            invc_no=invc_no,
            reason="Customer PIN not registered; re-issued as a new sale",
            voided_by="api-key:accounts",
        )


def project(settings: Settings, events: list[ProjectedEvent], table: str = "etims_compliance") -> None:
    """Apply a batch the way the runner does (poison set aside as dead letters)."""
    with db.connect(settings) as conn, conn.transaction():
        apply_isolating(conn, EtimsCompliance(table), events, dead_letters_of="etims_compliance")


@pytest.fixture
def tenant(settings: Settings, service: LedgerService) -> Iterator[tuple[UUID, str]]:
    db.ensure_schema(settings)
    tenant_id, key = register_tenant(service)
    yield UUID(tenant_id), key


def a_day_of_sales(sales: Sales) -> tuple[list[ProjectedEvent], dict[str, UUID]]:
    """Branch 00: two signed, one pending, one failed twice then signed, one failed (blocked), one
    voided; branch 01: a signed credit note and a sale still waiting for its number. Plus an Indian
    invoice and a Kenyan sale of the next day, neither of which belongs in the report."""
    ids = {
        name: uuid.uuid4()
        for name in ("s1", "s2", "p", "retried", "blocked", "void", "cn", "new", "in", "next")
    }
    events = [
        sales.issued(ids["s1"], "00"),
        sales.numbered(ids["s1"], "00", 1),
        sales.signed(ids["s1"], "00", 1),
        sales.issued(ids["s2"], "00"),
        sales.numbered(ids["s2"], "00", 2),
        sales.signed(ids["s2"], "00", 2),
        sales.issued(ids["p"], "00"),
        sales.numbered(ids["p"], "00", 3),
        sales.issued(ids["retried"], "00"),
        sales.numbered(ids["retried"], "00", 4),
        sales.failed(ids["retried"], "00", 4, "910", "Parameter error: itemClsCd"),
        sales.failed(ids["retried"], "00", 4, "910", "Parameter error: pkgUnitCd"),
        sales.signed(ids["retried"], "00", 4),
        sales.issued(ids["blocked"], "00"),
        sales.numbered(ids["blocked"], "00", 5),
        sales.failed(ids["blocked"], "00", 5, "+cmd|' /C calc'!A0", '=HYPERLINK("http://x")'),
        sales.issued(ids["void"], "00"),
        sales.numbered(ids["void"], "00", 6),
        sales.failed(ids["void"], "00", 6, "921", "Declared sales data cannot be received"),
        sales.voided(ids["void"], "00", 6),
        sales.issued(ids["cn"], "01", credit_note=True),
        sales.numbered(ids["cn"], "01", 1),
        sales.signed(ids["cn"], "01", 1),
        sales.issued(ids["new"], "01"),
        sales.issued(ids["in"], "00", country="IN"),
        sales.issued(ids["next"], "00", day=DAY + timedelta(days=1)),
    ]
    return events, ids


EXPECTED_BRANCHES = [
    {
        "environment": "sandbox",
        "branch_id": "00",
        "submitted": 6,
        "signed": 3,
        "pending": 1,
        "failed": 1,
        "voided": 1,
        "credit_notes": 0,
    },
    {
        "environment": "sandbox",
        "branch_id": "01",
        "submitted": 2,
        "signed": 1,
        "pending": 1,
        "failed": 0,
        "voided": 0,
        "credit_notes": 1,
    },
]


def counts(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in b.items() if k != "failure_reasons"} for b in report["branches"]]


def test_the_daily_report_counts_each_sale_once_by_where_it_stands_with_the_failure_reasons(
    settings: Settings, tenant: tuple[UUID, str]
) -> None:
    tenant_id, key = tenant
    events, _ = a_day_of_sales(Sales(tenant_id))
    project(settings, events)

    answer = client_for(settings).get(
        "/v1/etims/compliance", params={"date": DAY.isoformat()}, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["date"] == "2026-01-19" and report["timezone"] == "Africa/Nairobi"
    assert counts(report) == EXPECTED_BRANCHES
    assert report["totals"] == {
        "submitted": 8,
        "signed": 4,
        "pending": 2,
        "failed": 1,
        "voided": 1,
        "credit_notes": 1,
    }
    assert report["incomplete"] is False
    reasons = {r["result_code"]: r for r in report["branches"][0]["failure_reasons"]}
    # Two refusals of one sale (later signed), one of the blocked sale, one of the voided sale.
    assert reasons["910"]["refusals"] == 2 and reasons["910"]["sales"] == 1
    assert reasons["910"]["last_message"] == "Parameter error: pkgUnitCd"
    assert reasons["921"]["refusals"] == 1 and reasons["921"]["sales"] == 1
    assert reasons["+cmd|' /C calc'!A0"]["last_message"] == '=HYPERLINK("http://x")'
    assert report["branches"][1]["failure_reasons"] == []


def test_replaying_the_events_or_applying_a_stale_refusal_after_the_signature_changes_nothing(
    settings: Settings, tenant: tuple[UUID, str]
) -> None:
    tenant_id, _ = tenant
    sales = Sales(tenant_id)
    events, ids = a_day_of_sales(sales)
    project(settings, events)
    with db.connect(settings) as conn:
        before = etims_compliance.as_json(etims_compliance.daily(conn, tenant_id, DAY))

    project(settings, events)  # a replay: the same events, the same event ids
    project(settings, events[10:13])  # and a stretch of it again: 910, 910, signed
    # A refusal applied after the signature it preceded (a replayed range) does not unsign the sale.
    project(settings, [events[10]])
    with db.connect(settings) as conn:
        after = etims_compliance.as_json(etims_compliance.daily(conn, tenant_id, DAY))
        status = conn.execute(
            "SELECT status, failure_code FROM etims_compliance WHERE invoice_id = %s", (ids["retried"],)
        ).fetchone()
    assert after == before
    assert status == ("signed", None)


def test_an_issued_event_set_aside_and_redriven_later_still_puts_its_sale_in_its_day(
    settings: Settings, tenant: tuple[UUID, str]
) -> None:
    tenant_id, _ = tenant
    sales = Sales(tenant_id)
    sale = uuid.uuid4()
    issued = sales.issued(sale, "02")
    project(settings, [sales.numbered(sale, "02", 1), sales.signed(sale, "02", 1)])
    with db.connect(settings) as conn:
        assert etims_compliance.daily(conn, tenant_id, DAY).branches == []
    project(settings, [issued])
    with db.connect(settings) as conn:
        (branch,) = etims_compliance.daily(conn, tenant_id, DAY).branches
    assert (branch.branch_id, branch.submitted, branch.signed) == ("02", 1, 1)


def test_an_event_the_projection_cannot_store_is_set_aside_and_the_report_says_it_is_incomplete(
    settings: Settings, tenant: tuple[UUID, str]
) -> None:
    tenant_id, _ = tenant
    sales = Sales(tenant_id)
    good, bad = uuid.uuid4(), uuid.uuid4()
    poison = sales.issued(bad, "00")
    poison.record["number"] = "KE\x00-1"  # PostgreSQL text cannot hold NUL: a DataError
    project(settings, [sales.issued(good, "00"), poison, sales.numbered(good, "00", 1)])

    with db.connect(settings) as conn:
        report = etims_compliance.daily(conn, tenant_id, DAY)
        (letter,) = conn.execute("SELECT projection, ce_id, state FROM projection_dead_letters").fetchall()
    assert letter == ("etims_compliance", poison.ce_id, "pending")
    assert [(b.branch_id, b.submitted, b.pending) for b in report.branches] == [("00", 1, 1)]
    assert report.incomplete is True


def test_the_report_filters_by_branch_and_environment_and_shows_only_the_callers_sales(
    settings: Settings, service: LedgerService, tenant: tuple[UUID, str]
) -> None:
    tenant_id, key = tenant
    other_id, other_key = register_tenant(service, gstin="29AAGCB7383J1Z4", state="29")
    events, _ = a_day_of_sales(Sales(tenant_id))
    production = Sales(tenant_id, environment="production")
    sale = uuid.uuid4()
    events += [production.issued(sale, "00"), production.numbered(sale, "00", 1)]
    project(settings, events)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}

    branch = client.get("/v1/etims/compliance", params={"date": "2026-01-19", "bhf_id": "01"}, headers=auth)
    assert counts(branch.json()) == EXPECTED_BRANCHES[1:]
    both = client.get("/v1/etims/compliance", params={"date": "2026-01-19", "bhf_id": "00"}, headers=auth)
    assert [(b["environment"], b["submitted"]) for b in both.json()["branches"]] == [
        ("production", 1),
        ("sandbox", 6),
    ]
    prod = client.get(
        "/v1/etims/compliance", params={"date": "2026-01-19", "environment": "production"}, headers=auth
    )
    assert counts(prod.json())[0]["pending"] == 1 and len(prod.json()["branches"]) == 1
    others = client.get(
        "/v1/etims/compliance",
        params={"date": "2026-01-19"},
        headers={"Authorization": f"Bearer {other_key}"},
    )
    assert others.status_code == 200 and others.json()["branches"] == []
    assert other_id != str(tenant_id)


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({}, "date"),
        ({"date": "19/01/2026"}, "date"),
        ({"date": "2026-01-19", "bhf_id": "00;DROP"}, "bhf_id"),
        ({"date": "2026-01-19", "environment": "staging"}, "environment"),
        ({"date": "2026-01-19", "format": "xlsx"}, "format"),
    ],
)
def test_a_bad_query_is_refused_with_the_error_shape(
    settings: Settings, tenant: tuple[UUID, str], params: dict[str, str], path: str
) -> None:
    _, key = tenant
    answer = client_for(settings).get(
        "/v1/etims/compliance", params=params, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "validation_failed"
    assert any(f["path"].endswith(path) for f in error["details"]["fields"]), error


def test_the_report_needs_an_api_key(settings: Settings, tenant: tuple[UUID, str]) -> None:
    answer = client_for(settings).get("/v1/etims/compliance", params={"date": "2026-01-19"})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"


def test_the_csv_export_has_a_row_per_branch_and_neutralises_formulas_from_kra_messages(
    settings: Settings, tenant: tuple[UUID, str]
) -> None:
    tenant_id, key = tenant
    events, _ = a_day_of_sales(Sales(tenant_id))
    project(settings, events)

    answer = client_for(settings).get(
        "/v1/etims/compliance",
        params={"date": "2026-01-19", "format": "csv"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert rows[0] == [
        "date",
        "environment",
        "branch_id",
        "submitted",
        "signed",
        "pending",
        "failed",
        "voided",
        "credit_notes",
        "failure_reasons",
    ]
    assert [r[:9] for r in rows[1:]] == [
        ["2026-01-19", "sandbox", "00", "6", "3", "1", "1", "1", "0"],
        ["2026-01-19", "sandbox", "01", "2", "1", "1", "0", "0", "1"],
    ]
    reasons = rows[1][9]
    # The reasons cell starts with a result code chosen by whoever answered: neutralised like
    # every text cell of the exports (docs/reporting.md).
    assert reasons.startswith("'+cmd|")
    assert "910 x2 (1 sale): Parameter error: pkgUnitCd" in reasons
    assert "921 x1 (1 sale): Declared sales data cannot be received" in reasons
    assert rows[2][9] == ""


def test_the_cli_prints_the_daily_report_and_its_json(settings: Settings, tenant: tuple[UUID, str]) -> None:
    tenant_id, key = tenant
    events, _ = a_day_of_sales(Sales(tenant_id))
    project(settings, events)
    runner = CliRunner()
    env = settings_env(settings)

    shown = runner.invoke(
        main, ["etims", "report", "--tenant", str(tenant_id), "--date", "2026-01-19"], env=env
    )
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "for 2026-01-19 (Africa/Nairobi)" in lines[0]
    assert lines[2].split() == ["sandbox", "00", "6", "3", "1", "1", "1", "0"]
    assert lines[3].split() == ["sandbox", "01", "2", "1", "1", "0", "0", "1"]
    assert lines[4].split() == ["total", "8", "4", "2", "1", "1", "1"]
    assert any("result code 910, 2 refusal(s) of 1 sale(s)" in line for line in lines)

    as_json = runner.invoke(
        main, ["etims", "report", "--tenant", str(tenant_id), "--date", "2026-01-19", "--json"], env=env
    )
    assert as_json.exit_code == 0, as_json.output
    api = client_for(settings).get(
        "/v1/etims/compliance", params={"date": "2026-01-19"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert orjson.loads(as_json.output) == api.json()

    empty = runner.invoke(
        main, ["etims", "report", "--tenant", str(tenant_id), "--date", "2026-01-18"], env=env
    )
    assert empty.exit_code == 0 and "No eTIMS sales that day." in empty.output


# -- the real path: the API, the event store, the relay, Kafka, the projector, a rebuild ---------------


RECEIPT = {
    "receipt_no": 1,
    "total_receipt_no": 1,
    "internal_data": "INTERNAL",
    "receipt_signature": "SIGNATURE",
    "sdc_id": "KRACU0100000001",
    "mrc_no": "WIS00000001",
    "sdc_datetime": "20260119103000",
    "qr_url": "https://etims-sbx.kra.go.ke/common/link/etims/receipt/indexEtimsReceiptData?Data=X",
    "device_type": "oscu",
    "adopted_existing": False,
}


def kenyan_sale(number: str, day: date, **changes: Any) -> dict[str, Any]:
    return {
        "number": number,
        "date": day.isoformat(),
        "buyer": {"name": "Wanjiku Stores"},
        "lines": [
            {
                "item_code": "KE2NTXU0000001",
                "description": "Maize flour 2kg",
                "quantity": "3",
                "unit_price": "200.00",
                "tax_type": "B",
            }
        ],
        **changes,
    }


def test_kenyan_sales_and_their_etims_results_reach_the_report_through_kafka_and_rebuilds_give_the_same(
    settings: Settings, service: LedgerService, topics: list[str], background: BackgroundLoop
) -> None:
    from connectors import etims
    from connectors.catalogue import endpoint_policy
    from engine.relay import Relay
    from engine.security.secrets import load_key_ring
    from projections.rebuild import rebuild
    from projections.runner import ProjectionRunner

    db.ensure_schema(settings)
    registered = service.register_tenant(
        name="Duka Bora",
        legal_name="Duka Bora Limited",
        country="KE",
        gstin=None,
        state=None,
        kra_pin=etims.DEMO_KRA_PIN,
    )
    tenant_id = registered.tenant_id
    service.save_integration(
        load_key_ring(settings.var_dir),
        tenant_id,
        "etims",
        changed_by="operator:test",
        enabled=True,
        environment="sandbox",
        base_url="http://127.0.0.1:9103",
        credentials=etims.demo_credentials(),
        endpoints=endpoint_policy(etims.PROVIDER),
        mode=settings.mode,
    )
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {registered.api_key}"}
    day = datetime.now(etims_compliance.NAIROBI).date() - timedelta(days=1)
    ids = {}
    for name, changes in (("signed", {}), ("refused", {}), ("void", {}), ("other", {"branch_id": "02"})):
        answer = client.post(
            "/v1/invoices",
            json=kenyan_sale(f"KE-{name}", day, **changes),
            headers={**auth, "Idempotency-Key": name},
        )
        assert answer.status_code == 201, answer.text
        ids[name] = UUID(answer.json()["id"])
    branch = etims.DEMO_BRANCH_ID
    where = {"environment": "sandbox", "branch_id": branch}
    for invc_no, name in enumerate(("signed", "refused", "void"), start=1):
        service.record_etims_numbered(
            tenant_id, ids[name], job_id=f"job-{name}", invc_no=invc_no, device_type="oscu", **where
        )
    service.record_etims_signed(
        tenant_id, ids["signed"], job_id="job-signed", receipt={**RECEIPT, "invc_no": 1}, **where
    )
    for name, invc_no in (("refused", 2), ("void", 3)):
        service.record_etims_failed(
            tenant_id,
            ids[name],
            job_id=f"job-{name}",
            invc_no=invc_no,
            result_code="910",
            error_class="permanent",
            message="Request parameter error",
            **where,
        )
    service.record_etims_voided(
        tenant_id, ids["void"], invc_no=3, reason="Sold twice by mistake", voided_by="api_key:k1", **where
    )

    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, EtimsCompliance()).run)
    expected = [
        {
            "environment": "sandbox",
            "branch_id": branch,
            "submitted": 3,
            "signed": 1,
            "pending": 0,
            "failed": 1,
            "voided": 1,
            "credit_notes": 0,
        },
        {
            "environment": "sandbox",
            "branch_id": "02",
            "submitted": 1,
            "signed": 0,
            "pending": 1,
            "failed": 0,
            "voided": 0,
            "credit_notes": 0,
        },
    ]

    def report() -> dict[str, Any]:
        answer = client.get("/v1/etims/compliance", params={"date": day.isoformat()}, headers=auth)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def projected_as_expected() -> dict[str, Any] | None:
        found = report()
        return found if counts(found) == expected else None

    projected = wait_for(
        projected_as_expected,
        timeout=120,
        what="the four sales and their eTIMS results in the compliance report",
    )
    (reason,) = projected["branches"][0]["failure_reasons"]
    assert (reason["result_code"], reason["refusals"], reason["sales"]) == ("910", 2, 2)

    # An operator's replay of the whole topic into the projection counts nothing twice.
    replayed = CliRunner().invoke(
        main,
        ["replay", "--topic", "ledger.invoice.v1", "--projection", "etims_compliance"],
        env=settings_env(settings),
    )
    assert replayed.exit_code == 0, replayed.output
    assert "written 11" in replayed.output  # 4 issued, 3 numbered, 1 signed, 2 failed, 1 voided
    assert report() == projected

    from_kafka = rebuild(settings, "etims_compliance", batch=3)
    assert from_kafka.rows == 4
    assert report() == projected
    rebuild(settings, "etims_compliance", from_event_store=True)
    assert report() == projected
