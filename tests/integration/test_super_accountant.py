"""The consolidating accountant end to end on the real stack: expenses approved through the API,
batched by the planner, queued on Kafka and sent by the connector worker to the sandbox over real
HTTP, under a lost answer (not doubled), an outage (waited out) and a refusal (dead-lettered with
context); the monthly P&L built from the read models and submitted once; the daily schedule; tenants
kept apart and hostile input refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi.testclient import TestClient

from connectors import super_accountant
from connectors.super_accountant.client import EXPENSE_SYNC_PATH, REPORT_SUBMIT_PATH
from connectors.super_accountant.sandbox import SandboxAccount, create_app
from connectors.super_accountant.sync import run_due
from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from engine.security.secrets import load_key_ring
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from streams.catalogue import connector_specs
from streams.connectors import ConnectorWorker
from tests.conftest import BackgroundLoop, wait_for
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for, invoice_body, register_tenant
from tests.integration.test_backbone import read_topic

pytestmark = pytest.mark.integration

ACCOUNT = SandboxAccount()
BASE = "/v1/integrations/super-accountant"
Auth = dict[str, str]


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return replace(settings, retry_delays=(0, 1, 1, 1, 1, 1, 1, 1), breaker_open_seconds=1)


@pytest.fixture
def accountant() -> Iterator[tuple[str, Operator]]:
    with LiveServer(create_app(ACCOUNT)) as server:
        yield server.url, Operator(server.url)


def configure(http: TestClient, auth: Auth, url: str) -> None:
    body = {"enabled": True, "environment": "sandbox", "base_url": url, "credentials": ACCOUNT.credentials()}
    saved = http.put(f"{BASE}", json=body, headers=auth)
    assert saved.status_code == 200, saved.text


def college(service: LedgerService, http: TestClient, url: str | None) -> Auth:
    _, key = register_tenant(service)
    auth = {"Authorization": f"Bearer {key}"}
    if url is not None:
        configure(http, auth, url)
    return auth


def expense(
    http: TestClient, auth: Auth, amount: str, category: str = "supplies", day: str = "2024-01-15"
) -> Any:
    body = {
        "amount": amount,
        "category": category,
        "date": day,
        "description": "lab",
        "vendor_name": "Office Mart",
        "receipt_url": "https://receipts.example/1.pdf",
    }
    answer = http.post("/v1/expenses", json=body, headers=auth)
    assert answer.status_code == 201, answer.text
    return answer.json()


def batches(http: TestClient, auth: Auth) -> list[dict[str, Any]]:
    answer = http.get(f"{BASE}/batches", headers=auth)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["batches"])


def received(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/_sandbox/expenses", timeout=5).json()["expenses"])


def start_worker(settings: Settings, service: LedgerService, background: BackgroundLoop) -> Any:
    specs, handlers = connector_specs(
        settings, service, load_key_ring(settings.var_dir), [super_accountant.CONNECTOR]
    )
    background.start(ConnectorWorker(settings, specs).run)
    return handlers


def test_expenses_reach_the_accountant_once_through_a_lost_answer_an_outage_and_a_refusal(
    fast: Settings, service: LedgerService, background: BackgroundLoop, accountant: tuple[str, Operator]
) -> None:
    url, operator = accountant
    http = client_for(fast)
    auth = college(service, http, url)
    spent = [expense(http, auth, a) for a in ("1200.50", "4999.99", "0.01")]
    pending = expense(http, auth, "75000", category="salaries")  # needs the principal: not synced
    assert [e["status"] for e in spent] == ["approved"] * 3 and pending["status"] == "pending_approval"
    handlers = start_worker(fast, service, background)
    try:
        # 1. The accountant stores the batch and the answer is lost: the retry is a duplicate, not a double.
        operator.faults(after_effect_failure_rate=1.0, max_faults=1, paths=[EXPENSE_SYNC_PATH])
        run = http.post(f"{BASE}/sync-runs", headers=auth)
        assert run.status_code == 202, run.text
        [planned] = run.json()["batches"]
        assert (planned["expense_count"], planned["total_amount"]) == (3, "6200.50")
        [sent] = wait_for(
            lambda: [b for b in batches(http, auth) if b["status"] == "sent"], what="the first batch sent"
        )
        assert (sent["accepted"], sent["duplicate"]) == (3, True)
        assert operator.stats()["effects"]["batch_received"] == 1
        kept = httpx.get(f"{url}/_sandbox/batches", timeout=5).json()["batches"]
        assert sorted(e["amount"] for e in kept[0]["expenses"]) == [1, 120050, 499999]
        assert sorted(received(url)) == sorted(e["expense_number"] for e in spent)
        assert http.post(f"{BASE}/sync-runs", headers=auth).json()["batches"] == []  # nothing new

        # 2. The accountant is down: the batch waits in the retry tiers and goes when it is back.
        operator.faults(outage=True, retry_after_s=1)
        later = expense(http, auth, "300")
        http.post(f"{BASE}/sync-runs", headers=auth)
        wait_for(
            lambda: operator.stats()["faults_injected"].get("outage", 0) >= 2, what="two attempts refused"
        )
        assert batches(http, auth)[0]["status"] == "queued"
        operator.faults()
        wait_for(lambda: batches(http, auth)[0]["status"] == "sent", what="the batch sent after the outage")
        assert later["expense_number"] in received(url)

        # 3. A refusal (4xx) is not retried: dead-lettered with its context, the batch marked failed.
        httpx.post(f"{url}/_sandbox/refusals", json={"count": 1, "status": 422, "code": "invalid_payload"})
        expense(http, auth, "10")
        http.post(f"{BASE}/sync-runs", headers=auth)
        failed = wait_for(
            lambda: [b for b in batches(http, auth) if b["status"] == "failed"],
            what="the refused batch failed",
        )
        assert failed[0]["error"]["code"] == "invalid_payload"
        assert (failed[0]["error"]["error_class"], failed[0]["error"]["attempts"]) == ("permanent", 1)
        [dead] = read_topic(fast, fast.topic("connector.super-accountant.dlq.v1"), expected=1)
        headers = {k: (v or b"").decode() for k, v in dead.headers()}
        assert headers["error-class"] == "permanent" and headers["error-code"] == "invalid_payload"
        assert headers["connector"] == "super-accountant"
        assert operator.stats()["effects"]["batch_received"] == 2
    finally:
        asyncio.run_coroutine_threadsafe(handlers.close(), background.loop).result(timeout=10)


def test_the_monthly_pl_is_built_from_the_read_models_and_submitted_once(
    fast: Settings,
    service: LedgerService,
    background: BackgroundLoop,
    accountant: tuple[str, Operator],
    topics: list[str],
) -> None:
    url, operator = accountant
    http = client_for(fast)
    auth = college(service, http, url)
    sold = http.post("/v1/invoices", json=invoice_body("INV-PL-1", date="2024-01-20"), headers=auth)
    void = http.post("/v1/invoices", json=invoice_body("INV-PL-2", date="2024-01-21"), headers=auth)
    assert sold.status_code == 201 and void.status_code == 201, sold.text + void.text
    cancelled = http.post(
        f"/v1/invoices/{void.json()['id']}/cancel", json={"reason": "order_cancelled"}, headers=auth
    )
    assert cancelled.status_code == 200, cancelled.text
    taxable = Decimal(sold.json()["totals"]["taxable"])
    background.start(Relay(fast).run)
    background.start(ProjectionRunner(fast, InvoiceRegister()).run)
    wait_for(
        lambda: (
            [i["status"] for i in http.get("/v1/invoices", headers=auth).json()["items"]]
            in (["issued", "cancelled"], ["cancelled", "issued"])
        ),
        timeout=120,
        what="both invoices, one cancelled, in the invoice register",
    )
    fees = (
        ("FEE-1", "50000", "2024-01-10"),
        ("FEE-2", "1250.50", "2024-01-31"),
        ("FEE-3", "999", "2024-02-01"),
    )
    for receipt, amount, day in fees:
        body = {
            "receipt_number": receipt,
            "student_id": 1,
            "student_name": "Jane Student",
            "amount": amount,
            "payment_mode": "upi",
            "payment_date": day,
            "fee_type": "tuition",
            "academic_year": "2023-24",
        }
        assert http.post("/v1/fee-collections", json=body, headers=auth).status_code == 201
    expense(http, auth, "1200.50", "supplies")
    expense(http, auth, "300", "utilities")
    expense(http, auth, "4000", "supplies", day="2024-02-02")  # another month
    expense(http, auth, "80000", "salaries")  # pending approval: not spent
    handlers = start_worker(fast, service, background)
    try:
        operator.faults(after_effect_failure_rate=1.0, max_faults=1, paths=[REPORT_SUBMIT_PATH])
        queued = http.post("/v1/financial-reports/submit", json={"period": "2024-01"}, headers=auth)
        assert queued.status_code == 202, queued.text
        report = queued.json()
        assert report["status"] == "queued"
        income = (
            Decimal("51250.50") + taxable
        )  # the GST on the invoice is not income; the cancelled one is none
        assert report["report"]["income"] == {
            "fees_collected": "51250.50",
            "invoices_issued": f"{taxable:.2f}",
            "total": f"{income:.2f}",
        }
        assert report["report"]["expenditure"]["by_category"] == {
            "supplies": "1200.50",
            "utilities": "300.00",
        }
        assert report["report"]["expenditure"]["by_gl_code"] == {"5200": "1200.50", "5300": "300.00"}
        assert report["report"]["net_income"] == f"{income - Decimal('1500.50'):.2f}"
        done = wait_for(
            lambda: (
                (r := http.get(f"/v1/financial-reports/{report['id']}", headers=auth).json())["status"]
                == "submitted"
                and r
            ),
            what="the report submitted",
        )
        assert done["submission_id"] and done["duplicate"] is True
        [kept] = httpx.get(f"{url}/_sandbox/reports", timeout=5).json()["reports"]
        net = income - Decimal("1500.50")
        assert kept["report"]["data"]["revenue"] == int(income * 100)
        assert kept["report"]["data"]["net_income"] == int(net * 100)
        assert kept["report"]["data"]["revenue_by_source"]["invoices_issued"] == int(taxable * 100)
        assert kept["report"]["data"]["expenses"] == {"supplies": 120050, "utilities": 30000}
        assert kept["report"]["period"] == "2024-01" and kept["report"]["college_id"] == ACCOUNT.college_id
        assert operator.stats()["effects"]["report_received"] == 1

        stranger = college(service, http, None)
        assert http.get(f"/v1/financial-reports/{report['id']}", headers=stranger).status_code == 404
        assert http.get(f"{BASE}/batches", headers=stranger).json() == {"batches": [], "refused": []}
        refused = http.post("/v1/financial-reports/submit", json={"period": "2024-01"}, headers=stranger)
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "integration_not_configured")
        assert http.post(f"{BASE}/sync-runs", headers=stranger).status_code == 409
    finally:
        asyncio.run_coroutine_threadsafe(handlers.close(), background.loop).result(timeout=10)


def test_hostile_report_and_schedule_input_is_a_clear_422(
    settings: Settings, service: LedgerService, accountant: tuple[str, Operator]
) -> None:
    url, _ = accountant
    http = client_for(settings)
    auth = college(service, http, url)
    periods = ["2024-13", "2024-1", "２０２４-01", "2024-01\u0000", "9999-12", "x" * 10_000, 202401]
    answers = [http.post("/v1/financial-reports/submit", json={"period": p}, headers=auth) for p in periods]
    schedules = [
        {"run_at": "25:00"},
        {"run_at": "2:00"},
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": "../../etc/passwd"},
        {"enabled": "yes"},
        {"college_id": 2},
    ]
    refused = [http.put(f"{BASE}/schedule", json=s, headers=auth) for s in schedules]

    assert [a.status_code for a in answers] == [422] * len(periods), [a.text[:200] for a in answers]
    assert [a.status_code for a in refused] == [422] * len(schedules), [a.text[:200] for a in refused]
    assert all("error" in a.json() for a in answers + refused)
    assert http.get(f"/v1/financial-reports/{UUID(int=5)}", headers=auth).status_code == 404


def test_the_daily_run_plans_once_a_local_day_and_only_for_enabled_colleges(
    settings: Settings, service: LedgerService, accountant: tuple[str, Operator]
) -> None:
    url, _ = accountant
    http = client_for(settings)
    auth = college(service, http, url)
    off = college(service, http, url)
    expense(http, auth, "100")
    expense(http, off, "100")
    saved = http.put(f"{BASE}/schedule", json={"run_at": "02:00", "timezone": "Asia/Kolkata"}, headers=auth)
    http.put(f"{BASE}/schedule", json={"enabled": False}, headers=off)
    assert saved.json() == {
        "enabled": True,
        "run_at": "02:00",
        "timezone": "Asia/Kolkata",
        "last_run_on": None,
    }
    ring = load_key_ring(settings.var_dir)

    early = asyncio.run(run_due(settings, ring, datetime(2024, 1, 15, 20, 0, tzinfo=UTC)))  # 01:30 IST
    first = asyncio.run(run_due(settings, ring, datetime(2024, 1, 15, 20, 31, tzinfo=UTC)))  # 02:01 IST
    again = asyncio.run(run_due(settings, ring, datetime(2024, 1, 15, 22, 0, tzinfo=UTC)))  # same IST day

    assert (early, again) == ([], [])
    assert [len(r.batches) for r in first] == [1]
    assert http.get(f"{BASE}/schedule", headers=auth).json()["last_run_on"] == "2024-01-16"
    assert [b["trigger"] for b in batches(http, auth)] == ["schedule"]
    assert batches(http, off) == []
    assert Decimal(batches(http, auth)[0]["total_amount"]) == Decimal("100")


def test_a_thousand_and_one_expenses_are_two_batches_and_each_expense_is_in_one(
    settings: Settings, service: LedgerService, accountant: tuple[str, Operator]
) -> None:
    from engine.expenses import Actor, ExpenseBook, SubmitInput

    url, _ = accountant
    http = client_for(settings)
    tenant, key = register_tenant(service)
    tenant_id, auth = UUID(tenant), {"Authorization": f"Bearer {key}"}
    configure(http, auth, url)
    book = ExpenseBook(service)
    actor = Actor(actor="api_key:test", role="admin")
    for n in range(1001):
        given = SubmitInput(
            amount=Decimal("1.01") + n,
            category="supplies",
            expense_date=datetime(2024, 1, 15, tzinfo=UTC).date(),
            description=f"item {n}",
            vendor_name="Office Mart",
            vendor_pan=None,
            gl_code=None,
            receipt_url=None,
        )
        book.submit(tenant_id, given, actor, None)

    runs = [http.post(f"{BASE}/sync-runs", headers=auth) for _ in range(2)]

    first, second = (r.json() for r in runs)
    assert [b["expense_count"] for b in first["batches"]] == [1000, 1]
    assert second["batches"] == []  # everything is in a batch already
    total = sum(Decimal("1.01") + n for n in range(1001))
    assert sum(Decimal(b["total_amount"]) for b in first["batches"]) == total
    listed = batches(http, auth)
    assert sorted(b["seq"] for b in listed) == [1, 2] and {b["status"] for b in listed} == {"queued"}
