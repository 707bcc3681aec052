"""Tally vouchers against the real stack and the Tally sandbox (a real HTTP server speaking its XML).

The ledger map and ledger sync through the API (tenant-scoped, hostile input refused in our error
shape); a captured payment posted once as a Receipt voucher under faults, timeouts and a slow Tally;
vouchers Tally refuses dead-lettered with Tally's own message, through the running engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi.testclient import TestClient

from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError, RetryableError
from connectors.tally import routes
from connectors.tally.handler import create_handler
from connectors.tally.sandbox import DEMO_COMPANY, DEMO_LEDGER_MAP, create_app
from connectors.tally.vouchers import remote_id
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.payments import PaymentBook, PaymentFact, open_inbox
from engine.publishing import invoice_document
from engine.security.secrets import load_key_ring
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult
from streams.connectors.ops import dlq_list
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for, invoice_body
from tests.integration.processes import Processes

pytestmark = pytest.mark.integration


@pytest.fixture
def tally() -> Iterator[tuple[str, Operator]]:
    with LiveServer(create_app()) as server:
        yield server.url, Operator(server.url)


def tenant(service: LedgerService, name: str = "College") -> tuple[UUID, str]:
    registered = service.register_tenant(
        name=name, legal_name=f"{name} Trust", country="IN", gstin="27AAGCB7383J1Z8", state="27"
    )
    return registered.tenant_id, registered.api_key


def api(settings: Settings, key: str) -> TestClient:
    client = client_for(settings)
    client.headers["Authorization"] = f"Bearer {key}"
    return client


def connect(client: TestClient, url: str, ledgers: dict[str, str] | None = None) -> None:
    body = {
        "enabled": True,
        "environment": "sandbox",
        "base_url": url,
        "credentials": {"company": DEMO_COMPANY},
    }
    saved = client.put("/v1/integrations/tally", json=body)
    assert saved.status_code == 200, saved.text
    mapped = client.put("/v1/tally/ledger-map", json={"ledgers": ledgers or DEMO_LEDGER_MAP})
    assert mapped.status_code == 200, mapped.text


def vouchers(url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = httpx.get(f"{url}/_sandbox/tally/companies/{DEMO_COMPANY}/vouchers").json()[
        "items"
    ]
    return items


def capture(settings: Settings, service: LedgerService, tenant_id: UUID, reference: dict[str, str]) -> UUID:
    book = PaymentBook(service, open_inbox(settings))
    try:
        captured = book.apply(
            PaymentFact(
                tenant_id=tenant_id,
                provider="razorpay",
                provider_payment_id=f"pay_{uuid4().hex[:14]}",
                provider_event_id=f"evt_{uuid4().hex[:10]}",
                occurred_at=datetime.now(UTC),
                amount=Decimal("1180.00"),
                currency="INR",
                paid_at=datetime(2026, 6, 2, 10, 0, tzinfo=UTC),
                status="captured",
                reference=reference,
            )
        )
    finally:
        book.close()
    return UUID(str(captured.id))


def context_for(settings: Settings, service: LedgerService) -> HandlerContext:
    return HandlerContext(
        settings, service, load_key_ring(settings.var_dir), connector="tally", request_rate_per_s=None
    )


def run_until_done(handler: Any, job: Job, limit: int = 40) -> tuple[JobResult, int]:
    """Attempts as the connector runtime makes them (retryable -> again), without its delays."""

    async def attempts() -> tuple[JobResult, int]:
        for attempt in range(1, limit + 1):
            try:
                return await handler(job, attempt), attempt
            except RetryableError:
                continue
        raise AssertionError(f"job {job.kind} never succeeded in {limit} attempts")

    return asyncio.run(attempts())


async def _error_of(handler: Any, job: Job) -> ConnectorError:
    try:
        await handler(job, 1)
    except ConnectorError as exc:
        return exc
    raise AssertionError(f"job {job.kind} succeeded")


def test_the_ledger_map_and_the_synced_ledgers_are_the_tenants_own(
    settings: Settings, service: LedgerService, tally: tuple[str, Operator]
) -> None:
    url, operator = tally
    _, key = tenant(service, "Alpha")
    _, stranger_key = tenant(service, "Beta")
    alpha, beta = api(settings, key), api(settings, stranger_key)
    connect(alpha, url, {**DEMO_LEDGER_MAP, "bank": "HDFC Bank"})

    before = alpha.get("/v1/tally/ledgers").json()
    synced = alpha.post("/v1/tally/ledgers/sync")
    after = alpha.get("/v1/tally/ledgers").json()
    mapped = alpha.get("/v1/tally/ledger-map").json()

    assert before == {"ledgers": [], "synced_at": None}
    assert synced.status_code == 200, synced.text
    assert after == synced.json() and after["synced_at"]
    bank = next(le for le in after["ledgers"] if le["name"] == "ICICI Bank")
    assert bank == {
        "name": "ICICI Bank",
        "type": "bank",
        "group": "Bank Accounts",
        "opening_balance": "0.00",
        "current_balance": "0.00",
    }
    assert {le["name"] for le in after["ledgers"]} >= {"Sales", "Tech Supplies Ltd"}
    assert mapped["ledgers"]["bank"] == "HDFC Bank" and mapped["unknown_ledgers"] == ["HDFC Bank"]
    assert mapped["updated_by"] and "bank" in mapped["roles"]
    # The other tenant sees none of it and cannot sync a Tally it never configured.
    assert beta.get("/v1/tally/ledgers").json() == {"ledgers": [], "synced_at": None}
    assert beta.get("/v1/tally/ledger-map").json()["ledgers"] == {}
    refused = beta.post("/v1/tally/ledgers/sync")
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "integration_not_configured")
    # Tally away: a clear 502, the cache kept.
    operator.faults(outage=True)
    away = alpha.post("/v1/tally/ledgers/sync")
    assert (away.status_code, away.json()["error"]["code"]) == (502, "tally_unavailable")
    assert alpha.get("/v1/tally/ledgers").json() == after


def test_the_connection_test_reads_the_company_and_says_when_tally_does_not_have_it(
    settings: Settings, service: LedgerService, tally: tuple[str, Operator]
) -> None:
    url, operator = tally
    _, key = tenant(service)
    client = api(settings, key)
    body = {
        "enabled": True,
        "environment": "sandbox",
        "base_url": url,
        "credentials": {"company": "Elsewhere"},
    }
    assert client.put("/v1/integrations/tally", json=body).status_code == 200
    wrong = client.post("/v1/integrations/tally/test").json()
    connect(client, url)
    right = client.post("/v1/integrations/tally/test").json()

    assert wrong["ok"] is False and wrong["error"]["code"] == "credentials_refused", wrong
    assert right["ok"] is True, right
    assert operator.stats()["effects"].get("voucher_created", 0) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"ledgers": {"bank": "ICICI\x00Bank"}},
        {"ledgers": {"bank": "ICICI \u202eBank"}},
        {"ledgers": {"Bank Account!": "ICICI Bank"}},
        {"ledgers": {"party:\x1b": "Acme"}},
        {"ledgers": {"bank": ""}},
        {"ledgers": {"bank": "x" * 201}},
        {"ledgers": {"bank": 12}},
        {"ledgers": {f"party:{n}": "Acme" for n in range(501)}},
        {"ledgers": {"bank": "ICICI Bank"}, "tenant_id": str(uuid4())},
        {"ledgers": ["bank"]},
    ],
    ids=["nul", "bidi", "bad-role", "control-party", "empty", "long", "number", "too-many", "extra", "list"],
)
def test_a_hostile_ledger_map_is_a_clear_422_and_changes_nothing(
    settings: Settings, service: LedgerService, body: dict[str, Any]
) -> None:
    _, key = tenant(service)
    client = api(settings, key)
    assert client.put("/v1/tally/ledger-map", json={"ledgers": {"bank": "ICICI Bank"}}).status_code == 200

    answer = client.put("/v1/tally/ledger-map", json=body)

    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] in ("invalid_ledger_map", "validation_failed"), answer.text
    assert client.get("/v1/tally/ledger-map").json()["ledgers"] == {"bank": "ICICI Bank"}


def test_a_payment_is_posted_once_as_a_receipt_under_faults_and_a_slow_tally(
    settings: Settings, service: LedgerService, tally: tuple[str, Operator]
) -> None:
    url, operator = tally
    tenant_id, key = tenant(service)
    client = api(settings, key)
    operator.http.put(
        f"/_sandbox/tally/companies/{DEMO_COMPANY}/ledgers",
        json={"ledgers": [{"name": "Reliable Traders", "parent": "Sundry Debtors"}]},
    )
    connect(client, url, {**DEMO_LEDGER_MAP, "party:Reliable Traders Pvt Ltd": "Reliable Traders"})
    issued = service.issue_invoice(tenant_id, IssueInvoice.model_validate(invoice_body("TLY-1"))).invoice
    payment_id = capture(settings, service, tenant_id, {"invoice_id": str(issued.id)})
    status = {"tenant_id": str(tenant_id), "payment_id": str(payment_id), "status": "captured"}
    [job] = routes.routes(routes.PAYMENT_STATUS_CHANGED, f"ce-{uuid4()}", status)
    handler = create_handler(context_for(settings, service))
    # Tally stalls beyond our timeout once (and finishes the import anyway), then 5xx, answers lost
    # after the import, and requests held without an answer.
    operator.http.post("/_sandbox/tally/load", json={"slow_s": 10.0, "slow_requests": 1})
    operator.faults(error_rate=0.3, after_effect_failure_rate=0.3, timeout_rate=0.1, hang_s=9, seed=3)

    posted, attempts = run_until_done(handler, job)
    again, _ = run_until_done(handler, job)  # a redelivery

    assert attempts > 1, "the slow Tally should have failed the first attempt"
    assert posted.data["voucher_type"] == "Receipt" and again.data["action"] == "altered"
    [voucher] = vouchers(url)
    assert voucher["remote_id"] == remote_id(str(tenant_id), f"receipt:{payment_id}")
    assert (voucher["voucher_type"], voucher["date"], voucher["reference"]) == (
        "Receipt",
        "2026-06-02",
        "TLY-1",
    )
    assert voucher["legs"] == [
        {"ledger": "ICICI Bank", "amount": "-1180.00", "is_deemed_positive": True},
        {"ledger": "Reliable Traders", "amount": "1180.00", "is_deemed_positive": False},
    ]
    assert voucher["party_ledger"] == "Reliable Traders"
    assert operator.stats()["effects"]["voucher_created"] == 1


def test_vouchers_tally_refuses_or_we_cannot_map_stop_with_the_reason(
    settings: Settings, service: LedgerService, tally: tuple[str, Operator]
) -> None:
    url, _ = tally
    tenant_id, key = tenant(service)
    stranger_id, _ = tenant(service, "Stranger")
    client = api(settings, key)
    connect(client, url, {**DEMO_LEDGER_MAP, "bank": "HDFC Bank"})  # not a ledger of the company
    handler = create_handler(context_for(settings, service))
    payment_id = capture(settings, service, tenant_id, {"invoice_number": "X-1"})
    [receipt] = routes.routes(
        routes.PAYMENT_STATUS_CHANGED,
        "ce-r",
        {"tenant_id": str(tenant_id), "payment_id": str(payment_id), "status": "captured"},
    )
    issued = service.issue_invoice(tenant_id, IssueInvoice.model_validate(invoice_body("TLY-2"))).invoice
    record = {"event_id": "e", "tenant_id": str(tenant_id), **invoice_document(issued, issued.id)}
    [sales] = routes.routes(routes.ISSUED, "ce-s", record)
    # Another tenant's payment id in a job of this tenant is not found, never posted.
    strangers = capture(settings, service, stranger_id, {"invoice_number": "S-1"})
    [forged] = routes.routes(
        routes.PAYMENT_STATUS_CHANGED,
        "ce-f",
        {"tenant_id": str(tenant_id), "payment_id": str(strangers), "status": "captured"},
    )

    unknown = asyncio.run(_error_of(handler, receipt))
    client.put("/v1/tally/ledger-map", json={"ledgers": {"bank": "ICICI Bank"}})
    unmapped = asyncio.run(_error_of(handler, sales))

    assert (type(unknown), unknown.code) == (PermanentError, "tally_rejected")
    assert unknown.message == "Ledger 'HDFC Bank' does not exist!"
    assert (type(unmapped), unmapped.code) == (NeedsAttentionError, "ledger_not_mapped")
    assert asyncio.run(_error_of(handler, forged)).code == "payment_not_found"
    assert vouchers(url) == []


def expense_paid_through_the_api(client: TestClient, tds: str | None) -> str:
    """An expense of 4,000.00 (supplies, auto-approved within its budget) paid by NEFT: its id."""
    budget = {"category": "supplies", "financial_year": "2026-27", "allocated_amount": "100000.00"}
    assert client.post("/v1/budgets", json=budget).status_code == 201
    body = {
        "amount": "4000.00",
        "category": "supplies",
        "date": "2026-06-15",
        "description": "Printer paper & toner",
        "vendor_name": "Office Mart",
    }
    submitted = client.post("/v1/expenses", json=body)
    assert submitted.status_code == 201 and submitted.json()["status"] == "approved", submitted.text
    expense_id = str(submitted.json()["id"])
    paid = {"payment_reference": "UTR0012345678", "paid_on": "2026-06-20"}
    answer = client.post(f"/v1/expenses/{expense_id}/pay", json={**paid, "tds_deducted": tds})
    assert answer.status_code == 200, answer.text
    return expense_id


EXPENSE_LEDGERS = {
    **DEMO_LEDGER_MAP,
    "expense:supplies": "Office Supplies",
    "creditors": "Sundry Vendors",
    "vendor:Office Mart": "Office Mart",
    "tds_payable": "TDS Payable",
}


def add_expense_ledgers(operator: Operator) -> None:
    ledgers = [
        {"name": "Office Mart", "parent": "Sundry Creditors"},
        {"name": "TDS Payable", "parent": "Duties & Taxes"},
    ]
    answer = operator.http.put(f"/_sandbox/tally/companies/{DEMO_COMPANY}/ledgers", json={"ledgers": ledgers})
    assert answer.status_code == 200, answer.text


def test_an_approved_and_paid_expense_become_one_purchase_and_one_payment_voucher(
    settings: Settings, service: LedgerService, tally: tuple[str, Operator]
) -> None:
    url, operator = tally
    tenant_id, key = tenant(service)
    _, stranger_key = tenant(service, "Stranger")
    client = api(settings, key)
    add_expense_ledgers(operator)
    connect(client, url, EXPENSE_LEDGERS)
    expense_id = expense_paid_through_the_api(client, "400.00")
    strangers = expense_paid_through_the_api(api(settings, stranger_key), None)
    record = {"tenant_id": str(tenant_id), "expense_id": expense_id}
    [purchase] = routes.routes(routes.EXPENSE_APPROVED, f"ce-{uuid4()}", record)
    [payment] = routes.routes(routes.EXPENSE_PAID, f"ce-{uuid4()}", record)
    [forged] = routes.routes(
        routes.EXPENSE_PAID, "ce-x", {"tenant_id": str(tenant_id), "expense_id": strangers}
    )
    handler = create_handler(context_for(settings, service))
    operator.faults(error_rate=0.3, after_effect_failure_rate=0.3, seed=7)

    results = [run_until_done(handler, job)[0] for job in (purchase, payment, purchase, payment)]
    refused = asyncio.run(_error_of(handler, forged))

    assert [r.data["voucher_type"] for r in results] == ["Purchase", "Payment", "Purchase", "Payment"]
    assert [r.data["action"] for r in results[2:]] == ["altered", "altered"]
    assert refused.code == "expense_not_found"
    bill, paid = vouchers(url)
    assert (bill["voucher_type"], bill["date"], bill["party_ledger"]) == (
        "Purchase",
        "2026-06-15",
        "Office Mart",
    )
    assert bill["legs"] == [
        {"ledger": "Office Supplies", "amount": "-4000.00", "is_deemed_positive": True},
        {"ledger": "Office Mart", "amount": "4000.00", "is_deemed_positive": False},
    ]
    assert (paid["voucher_type"], paid["date"], paid["reference"]) == (
        "Payment",
        "2026-06-20",
        "UTR0012345678",
    )
    assert paid["legs"] == [
        {"ledger": "Office Mart", "amount": "-4000.00", "is_deemed_positive": True},
        {"ledger": "ICICI Bank", "amount": "3600.00", "is_deemed_positive": False},
        {"ledger": "TDS Payable", "amount": "400.00", "is_deemed_positive": False},
    ]
    assert "Printer paper & toner" in bill["narration"]


@pytest.mark.slow
def test_payments_sales_and_expenses_reach_tally_once_and_a_refused_voucher_is_dead_lettered_by_the_engine(
    service: LedgerService,
    settings: Settings,
    topics: list[str],
    tally: tuple[str, Operator],
    tmp_path: Path,
) -> None:
    url, operator = tally
    fast = replace(settings, retry_delays=(0, 1, 1, 2), breaker_open_seconds=3)
    tenant_id, key = tenant(service)
    client = api(fast, key)
    add_expense_ledgers(operator)
    connect(client, url, EXPENSE_LEDGERS)
    issued = service.issue_invoice(tenant_id, IssueInvoice.model_validate(invoice_body("TLY-E2E"))).invoice
    operator.faults(error_rate=1.0, paths=["/"], max_faults=2)  # Tally away for two requests first
    payment_id = capture(fast, service, tenant_id, {"invoice_id": str(issued.id)})

    def receipts() -> list[dict[str, Any]]:
        return [v for v in vouchers(url) if v["voucher_type"] == "Receipt"]

    processes = Processes(fast, tmp_path)
    try:
        engine = [processes.start("relay"), processes.start("worker")]
        engine.append(processes.start("connectors", "run", name="connectors"))
        processes.wait_for(receipts, what="the receipt voucher in Tally", watch=engine, timeout=180)
        processes.wait_for(
            lambda: any(v["voucher_type"] == "Sales" for v in vouchers(url)),
            what="the sales voucher in Tally",
            watch=engine,
            timeout=120,
        )
        expense_paid_through_the_api(client, None)
        processes.wait_for(
            lambda: {"Purchase", "Payment"} <= {v["voucher_type"] for v in vouchers(url)},
            what="the expense's purchase and payment vouchers in Tally",
            watch=engine,
            timeout=120,
        )
        # The bank ledger renamed in the map to one Tally lacks: the next receipt is refused by Tally.
        client.put("/v1/tally/ledger-map", json={"ledgers": {**EXPENSE_LEDGERS, "bank": "Old Bank"}})
        capture(fast, service, tenant_id, {"invoice_id": str(issued.id)})
        letters = processes.wait_for(
            lambda: dlq_list(fast, "tally"),
            what="the refused receipt dead-lettered",
            watch=engine,
            timeout=180,
        )
    finally:
        processes.close()

    [receipt] = receipts()
    assert receipt["remote_id"] == remote_id(str(tenant_id), f"receipt:{payment_id}")
    [letter] = letters
    assert (letter.kind, letter.error_class, letter.error_code) == (
        "post_receipt",
        "permanent",
        "tally_rejected",
    )
    assert letter.error_message == "Ledger 'Old Bank' does not exist!" and letter.tenant_id == str(tenant_id)
    assert len(receipts()) == 1 and operator.stats()["effects"]["voucher_created"] == 4
    assert sorted(v["voucher_type"] for v in vouchers(url)) == ["Payment", "Purchase", "Receipt", "Sales"]
