"""The daily Tally sync (connectors/tally/sync.py) on the real stack against the Tally sandbox:
balances read from Tally (Tally's sign: a debit balance is negative), once a local day per tenant at
its own time, never twice under two schedulers, off when a tenant turns it off, an unreachable Tally
recorded; the month before reconciled against our expenses on a month's first sync; budgets pushed as
one Tally Budget master a year, replaced (not doubled) each day; vouchers stored but never queued are
queued again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi.testclient import TestClient

from connectors.tally import journal, posting
from connectors.tally.client import TallyClient
from connectors.tally.sandbox import DEMO_COMPANY, DEMO_LEDGER_MAP, create_app
from connectors.tally.sync import run_due
from engine import db
from engine.application import LedgerService
from engine.config import Settings
from engine.security.secrets import load_key_ring
from streams.connectors.jobs import Job, jobs_topic
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for
from tests.integration.test_backbone import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox() -> Iterator[tuple[str, Operator]]:
    with LiveServer(create_app()) as server:
        yield server.url, Operator(server.url)


def college(
    service: LedgerService, settings: Settings, name: str, url: str | None
) -> tuple[UUID, TestClient]:
    registered = service.register_tenant(
        name=name, legal_name=f"{name} Trust", country="IN", gstin="27AAGCB7383J1Z8", state="27"
    )
    client = client_for(settings)
    client.headers["Authorization"] = f"Bearer {registered.api_key}"
    if url is not None:
        body = {
            "enabled": True,
            "environment": "sandbox",
            "base_url": url,
            "credentials": {"company": DEMO_COMPANY},
        }
        assert client.put("/v1/integrations/tally", json=body).status_code == 200
        assert client.put("/v1/tally/ledger-map", json={"ledgers": DEMO_LEDGER_MAP}).status_code == 200
    return registered.tenant_id, client


def post_in_tally(url: str, tenant_id: UUID, amount: str) -> None:
    """A voucher Tally holds (imported over its XML interface): the bank debited, the vendor credited."""
    entries = [
        {"ledger": "ICICI Bank", "amount": amount},
        {"ledger": "Tech Supplies Ltd", "amount": f"-{amount}"},
    ]
    request = journal.parse("payment", f"PAY-{amount}", date(2026, 6, 1), entries)
    asyncio.run(post_request(url, tenant_id, request))


async def post_request(url: str, tenant_id: UUID, request: journal.Request) -> None:
    async with TallyClient(url, DEMO_COMPANY) as client:
        await client.import_vouchers([journal.voucher_of(str(tenant_id), request)])


def budgets_in(url: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/_sandbox/tally/companies/{DEMO_COMPANY}/budgets", timeout=5)
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def due(settings: Settings, at: datetime) -> dict[UUID, Any]:
    return asyncio.run(run_due(settings, load_key_ring(settings.var_dir), at))


def balances(client: TestClient) -> dict[str, tuple[str, str]]:
    ledgers = client.get("/v1/tally/ledgers").json()["ledgers"]
    return {le["name"]: (le["opening_balance"], le["current_balance"]) for le in ledgers}


def test_ledgers_and_balances_are_synced_once_a_local_day_per_tenant(
    settings: Settings, service: LedgerService, sandbox: tuple[str, Operator]
) -> None:
    url, operator = sandbox
    alpha_id, alpha = college(service, settings, "Alpha", url)
    beta_id, beta = college(service, settings, "Beta", url)
    gamma_id, _ = college(service, settings, "Gamma", None)  # no Tally at all
    operator.http.put(
        f"/_sandbox/tally/companies/{DEMO_COMPANY}/ledgers",
        json={
            "ledgers": [
                {"name": "Cash", "parent": "Cash-in-Hand", "opening_balance": "-1500.50"},
                {"name": "Electricity", "parent": "Indirect Expenses"},
            ]
        },
    )
    budget_map = {**DEMO_LEDGER_MAP, "expenses": "Office Supplies", "expense:utilities": "Electricity"}
    assert alpha.put("/v1/tally/ledger-map", json={"ledgers": budget_map}).status_code == 200
    for category, amount in (("supplies", "100000.00"), ("utilities", "50000.50"), ("maintenance", "0.50")):
        body = {"category": category, "financial_year": "2026-27", "allocated_amount": amount}
        assert alpha.post("/v1/budgets", json=body).status_code in (200, 201)
    post_in_tally(url, alpha_id, "50000.00")
    # Our books: two approved expenses; Tally's: only the supplies one reached it.
    for amount, category in (("1200.50", "supplies"), ("300.00", "utilities")):
        body = {
            "amount": amount,
            "category": category,
            "date": "2026-06-01",
            "description": "lab",
            "vendor_name": "Office Mart",
            "receipt_url": "https://receipts.example/1.pdf",
        }
        spent = alpha.post("/v1/expenses", json=body)
        assert spent.status_code == 201 and spent.json()["status"] == "approved", spent.text
    in_tally = [
        {"ledger": "Office Supplies", "amount": "1200.50"},
        {"ledger": "Tech Supplies Ltd", "amount": "-1200.50"},
    ]
    asyncio.run(post_request(url, alpha_id, journal.parse("purchase", "EXP-1", date(2026, 6, 1), in_tally)))
    assert alpha.get("/v1/tally/schedule").json() == {
        "enabled": True,
        "run_at": "03:00",
        "timezone": "Asia/Kolkata",
        "last_run_on": None,
        "last_error": None,
    }
    off = beta.put("/v1/tally/schedule", json={"enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    hostile = [
        {"run_at": "25:00"},
        {"timezone": "../../etc/passwd"},
        {"enabled": "yes"},
        {"run_at": "3:00\u0000"},
    ]
    assert [alpha.put("/v1/tally/schedule", json=h).status_code for h in hostile] == [422] * len(hostile)

    # 02:59 in Kolkata on 3 June: not yet. 03:01: Alpha only (Beta turned it off, Gamma has no Tally).
    assert due(settings, datetime(2026, 6, 2, 21, 29, tzinfo=UTC)) == {}
    first = due(settings, datetime(2026, 6, 2, 21, 31, tzinfo=UTC))
    assert first == {alpha_id: {"ledgers": 11, "budgets": 1}}
    got = balances(alpha)
    # Tally's sign: the bank's debit balance is negative, the vendor's credit balance positive.
    assert got["ICICI Bank"] == ("0.00", "-50000.00")
    assert got["Tech Supplies Ltd"] == ("0.00", "51200.50")  # the payment's and the purchase's credits
    assert got["Cash"] == ("-1500.50", "-1500.50")
    assert beta.get("/v1/tally/ledgers").json()["ledgers"] == []
    assert gamma_id not in first and beta_id not in first
    assert alpha.get("/v1/tally/schedule").json()["last_run_on"] == "2026-06-03"
    # The first sync of June reconciles May: the utilities expense never reached Tally.
    [month] = alpha.get("/v1/tally/reconciliations").json()["reconciliations"]
    assert (month["period"], month["differences"]) == ("2026-05", 1)
    assert month["lines"] == [
        {
            "ledger": "Electricity",
            "categories": ["utilities"],
            "ours": "300.00",
            "tally": "0.00",
            "difference": "300.00",
        },
        {
            "ledger": "Office Supplies",
            "categories": ["supplies"],
            "ours": "1200.50",
            "tally": "1200.50",
            "difference": "0.00",
        },
    ]
    assert beta.get("/v1/tally/reconciliations").json() == {"reconciliations": []}
    # The budgets as one Tally Budget master for the year, per expense ledger (supplies and maintenance
    # both fall to the default expenses ledger), an expense budget signed as a debit.
    assert budgets_in(url) == [
        {
            "name": "Ledgerflow FY 2026-27",
            "parent": "Primary",
            "from": "20260401",
            "to": "20270331",
            "lines": [
                {"ledger": "Electricity", "type": "On Nett Transactions", "amount": "-50000.50"},
                {"ledger": "Office Supplies", "type": "On Nett Transactions", "amount": "-100000.50"},
            ],
        }
    ]

    # Later the same local day: nothing. The next day, two schedulers at once: one sync.
    post_in_tally(url, alpha_id, "25.25")
    assert due(settings, datetime(2026, 6, 3, 6, 0, tzinfo=UTC)) == {}
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: due(settings, datetime(2026, 6, 3, 22, 0, tzinfo=UTC)), range(2)))
    assert sorted(len(r) for r in runs) == [0, 1]
    assert balances(alpha)["ICICI Bank"] == ("0.00", "-50025.25")
    # The budgets sent again the next day replace the master: still one.
    assert len(budgets_in(url)) == 1
    effects = operator.stats()["effects"]
    assert (effects["budget_created"], effects["budget_altered"]) == (1, 1)

    # Tally not answering: that day's sync fails, the error is kept, the next day tries again.
    operator.faults(error_rate=1.0, paths=["/"])
    failed = due(settings, datetime(2026, 6, 4, 22, 0, tzinfo=UTC))
    assert failed == {alpha_id: {"error": "http_500: Tally answered HTTP 500"}}
    assert alpha.get("/v1/tally/schedule").json()["last_error"] == "http_500: Tally answered HTTP 500"
    operator.faults(error_rate=0.0)
    assert due(settings, datetime(2026, 6, 5, 22, 0, tzinfo=UTC)) == {alpha_id: {"ledgers": 11, "budgets": 1}}
    assert alpha.get("/v1/tally/schedule").json()["last_error"] is None
    assert len(alpha.get("/v1/tally/reconciliations").json()["reconciliations"]) == 1  # one a month


def test_a_voucher_stored_but_never_queued_is_queued_by_the_next_pass(
    settings: Settings, service: LedgerService, topics: list[str], sandbox: tuple[str, Operator]
) -> None:
    url, _ = sandbox
    tenant_id, client = college(service, settings, "Delta", url)
    entries = [{"ledger": "Cash", "amount": "10"}, {"ledger": "ICICI Bank", "amount": "-10"}]
    request = journal.parse("contra", "CON-1", date(2026, 6, 1), entries)
    with db.connect(settings) as conn, conn.transaction():
        row, created = posting.store(conn, tenant_id, request, None, "test")
        # As if the API stopped between storing and queueing, three minutes ago.
        conn.execute(
            "UPDATE tally_vouchers SET created_at = now() - interval '3 minutes' WHERE voucher_id = %s",
            (row["voucher_id"],),
        )
    assert created
    due(settings, datetime.now(UTC))
    [message] = read_topic(settings, settings.topic(jobs_topic("tally")), 1)
    job = Job.decode(message.value())
    assert (job.kind, job.tenant_id, job.subject) == ("post_voucher", str(tenant_id), str(row["voucher_id"]))
    with db.connect(settings) as conn:
        assert posting.unpublished(conn, datetime.now(UTC)) == []
    assert client.get(f"/v1/tally/vouchers/{row['voucher_id']}").json()["status"] == "queued"
