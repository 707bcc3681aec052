"""College expenses over the real API app, PostgreSQL and Kafka (issue 14): an expense from submission
through the principal's approval to payment, budgets and their alerts, the signed approval callback,
tenant isolation and hostile input. The SLA timer across a SIGKILL is in test_expense_timer.py."""

from __future__ import annotations

import base64
import secrets as stdlib_secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from engine import db
from engine.application import LedgerService
from engine.config import Settings
from engine.domain.alert import Alert
from engine.expenses import ExpenseBook
from engine.relay import Relay
from schemas import registry
from tests.conftest import BackgroundLoop
from tests.integration.helpers import client_for, register_tenant
from tests.integration.processes import settings_env
from tests.integration.test_api_contract import assert_error_shape
from tests.integration.test_backbone import read_topic

pytestmark = pytest.mark.integration

Api = tuple[TestClient, dict[str, str]]


@pytest.fixture
def api(settings: Settings, service: LedgerService) -> Api:
    _, key = register_tenant(service)
    return client_for(settings), {"Authorization": f"Bearer {key}"}


def expense(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": "4000.00",
        "category": "supplies",
        "date": "2026-06-15",
        "description": "Printer paper",
        "vendor_name": "Office Mart",
    }
    body.update(changes)
    return body


def submit(client: TestClient, auth: dict[str, str], key: str | None = None, **changes: Any) -> Any:
    headers = {**auth, **({"Idempotency-Key": key} if key else {})}
    return client.post("/v1/expenses", json=expense(**changes), headers=headers)


def allocate(
    client: TestClient, auth: dict[str, str], category: str, amount: str, year: str = "2026-27"
) -> Any:
    return client.post(
        "/v1/budgets",
        json={"category": category, "financial_year": year, "allocated_amount": amount},
        headers=auth,
    )


def summary(client: TestClient, auth: dict[str, str], year: str = "2026-27") -> dict[str, Any]:
    response = client.get(f"/v1/budgets/summary?financial_year={year}", headers=auth)
    assert response.status_code == 200, response.text
    return {b["category"]: b for b in response.json()["budgets"]}


def test_an_expense_from_submission_through_principal_approval_to_payment(
    api: Api, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    client, auth = api
    assert allocate(client, auth, "infrastructure", "500000").status_code == 201
    # At or below the threshold: approved at once; the same key and body again is the same expense.
    small = submit(
        client, auth, "k-small", category="infrastructure", amount="50000.00", receipt_url="https://r/1"
    )
    assert small.status_code == 201, small.text
    assert small.json()["status"] == "approved"
    assert small.json()["expense_number"] == "EXP-2026-000001"
    again = submit(
        client, auth, "k-small", category="infrastructure", amount="50000.00", receipt_url="https://r/1"
    )
    assert again.status_code == 200 and again.json()["id"] == small.json()["id"]
    reused = submit(
        client, auth, "k-small", category="infrastructure", amount="50000.01", receipt_url="https://r/1"
    )
    assert reused.status_code == 422
    assert_error_shape(reused.json(), "idempotency_key_reused")
    assert small.json()["approved_by"] == "system:auto_approval"

    # Just above: pending; the request to the principal is due 48 hours later.
    big = submit(client, auth, category="infrastructure", amount="50000.01", receipt_url="https://r/2")
    assert big.status_code == 201 and big.json()["status"] == "pending_approval"
    expense_id = big.json()["id"]
    before = datetime.now(UTC)
    requested = client.post(
        f"/v1/approvals/expenses/{expense_id}/request",
        json={"requester_id": 101, "justification": "Required for new computer lab setup"},
        headers=auth,
    )
    assert requested.status_code == 201, requested.text
    body = requested.json()
    assert body["status"] == "pending"
    due = datetime.fromisoformat(body["estimated_response"])
    assert timedelta(hours=47, minutes=59) < due - before < timedelta(hours=48, minutes=1)
    assert client.post(f"/v1/approvals/expenses/{expense_id}/request", json={}, headers=auth).json() == body

    approved = client.post(
        f"/v1/expenses/{expense_id}/approve",
        json={"comments": "Approved for lab setup project"},
        headers=auth,
    )
    assert approved.status_code == 200, approved.text
    view = approved.json()
    assert view["status"] == "approved"
    assert view["approved_by"].startswith("api_key:") and view["comments"] == "Approved for lab setup project"
    assert view["approved_at"] and view["approval"]["approval_id"] == body["approval_id"]
    twice = client.post(f"/v1/expenses/{expense_id}/approve", json={}, headers=auth)
    assert twice.status_code == 409
    assert_error_shape(twice.json(), "invalid_state")

    budget = summary(client, auth)["infrastructure"]
    assert (budget["allocated_amount"], budget["utilized_amount"], budget["remaining_amount"]) == (
        "500000.00",
        "100000.01",
        "399999.99",
    )
    assert (budget["utilization_percentage"], budget["alert_level"]) == ("20.00", "normal")

    paid = client.post(
        f"/v1/expenses/{expense_id}/pay",
        json={"payment_reference": "UTR0012345678", "paid_on": "2026-06-20", "tds_deducted": "1000.00"},
        headers=auth,
    )
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["payment_reference"], paid.json()["tds_deducted"]) == (
        "paid",
        "UTR0012345678",
        "1000.00",
    )
    assert client.get(f"/v1/expenses/{expense_id}", headers=auth).json()["paid_on"] == "2026-06-20"

    exported = client.get("/v1/expenses/export?from_date=2026-06-01&to_date=2026-06-30", headers=auth).json()
    assert exported["summary"]["expense_count"] == 2
    assert exported["summary"]["total_expenses"] == "100000.01"
    assert exported["summary"]["by_category"] == [
        {"category": "infrastructure", "expense_count": 2, "total_expenses": "100000.01"}
    ]
    assert {row["expense_number"] for row in exported["data"]} == {"EXP-2026-000001", "EXP-2026-000002"}
    only_paid = client.get(
        "/v1/expenses/export?from_date=2026-06-01&to_date=2026-06-30&status=paid", headers=auth
    ).json()
    assert [row["id"] for row in only_paid["data"]] == [expense_id]

    background.start(Relay(settings).run)
    messages = read_topic(settings, settings.topic("ledger.expense.v1"), expected=6)
    of_big = [m for m in messages if m.key().decode() == expense_id]
    assert [dict(m.headers())["ce_type"].decode() for m in of_big] == [
        "ledgerflow.expense.submitted",
        "ledgerflow.expense.approval_requested",
        "ledgerflow.expense.approved",
        "ledgerflow.expense.paid",
    ]
    approved_record = registry.decode_event(of_big[2].value())
    assert approved_record["channel"] == "api" and approved_record["approved_by"] == view["approved_by"]
    budget_messages = read_topic(settings, settings.topic("ledger.budget.v1"), expected=3)
    utilised = [
        registry.decode_event(m.value())
        for m in budget_messages
        if dict(m.headers())["ce_type"] == b"ledgerflow.budget.utilised"
    ]
    assert [u["utilized_amount"] for u in utilised] == ["50000.00", "100000.01"]


def test_concurrent_submissions_with_one_idempotency_key_record_one_expense(api: Api) -> None:
    client, auth = api
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: submit(client, auth, "same-key", amount="750.00"), range(4)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(client.get("/v1/expenses", headers=auth).json()["data"]) == 1
    # A refusal takes no number: the next expense is number 2.
    assert submit(client, auth, category="travel").status_code == 422
    assert submit(client, auth).json()["expense_number"] == "EXP-2026-000002"


def test_listing_filters_and_pages_with_a_cursor(api: Api) -> None:
    client, auth = api
    ids = [submit(client, auth, amount=f"{100 + i}.00").json()["id"] for i in range(5)]
    pending = submit(client, auth, amount="60000", receipt_url="https://r/x").json()["id"]
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/expenses?limit=2&status=approved&category=supplies" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = client.get(url, headers=auth).json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    listed = client.get("/v1/expenses?status=pending_approval", headers=auth).json()["data"]
    assert [e["id"] for e in listed] == [pending]
    bad = client.get("/v1/expenses?cursor=not-a-cursor", headers=auth)
    assert bad.status_code == 422
    assert client.get("/v1/expenses?status=lost", headers=auth).status_code == 422


def test_insufficient_budget_on_auto_approval_and_on_approval_and_alerts_when_the_level_rises(
    api: Api, service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    client, auth = api
    assert allocate(client, auth, "supplies", "100000").status_code == 201
    assert submit(client, auth, amount="45000", receipt_url="https://r/1").json()["status"] == "approved"
    assert summary(client, auth)["supplies"]["alert_level"] == "normal"
    # 45,000 + 40,000 = 85 % used: warning (the default 80 %).
    assert submit(client, auth, amount="40000", receipt_url="https://r/2").json()["status"] == "approved"
    assert summary(client, auth)["supplies"]["alert_level"] == "warning"
    refused = submit(client, auth, amount="15000.01", receipt_url="https://r/3")
    assert refused.status_code == 422
    assert_error_shape(refused.json(), "insufficient_budget")
    assert refused.json()["error"]["details"] == {
        "category": "supplies",
        "available": "15000.00",
        "required": "15000.01",
    }
    # Above the threshold it waits; the approval is refused while the budget is short, then allowed
    # once the budget is revised (a new event on the same budget).
    pending = submit(client, auth, amount="60000", receipt_url="https://r/4").json()["id"]
    short = client.post(f"/v1/expenses/{pending}/approve", json={}, headers=auth)
    assert short.status_code == 422
    assert_error_shape(short.json(), "insufficient_budget")
    revised = allocate(client, auth, "supplies", "150000")
    assert revised.status_code == 200 and revised.json()["allocated_amount"] == "150000.00"
    assert client.post(f"/v1/expenses/{pending}/approve", json={}, headers=auth).status_code == 200
    # 145,000 of 150,000 = 96.67 %: critical; another approval at that level raises nothing new.
    assert summary(client, auth)["supplies"]["alert_level"] == "critical"
    assert submit(client, auth, amount="1000").json()["status"] == "approved"
    assert summary(client, auth)["supplies"]["utilized_amount"] == "146000.00"

    raised = list(
        service.ledger.recorder.select_notifications(
            start=None, limit=100, topics=[f"{Alert.Raised.__module__}:{Alert.Raised.__qualname__}"]
        )
    )
    assert len(raised) == 2, "one alert per rise of the level, none while it stays"
    background.start(Relay(settings).run)
    alerts = read_topic(settings, settings.topic("ledger.alert.v1"), expected=2)
    records = sorted((registry.decode_event(m.value()) for m in alerts), key=lambda r: r["cause"])
    assert [(r["cause"], r["severity"]) for r in records] == [
        ("budget.critical", "critical"),
        ("budget.warning", "warning"),
    ]
    assert records[1]["details"]["utilization_percentage"] == "85.00"


def test_concurrent_approvals_never_spend_more_than_the_budget(api: Api) -> None:
    client, auth = api
    allocate(client, auth, "supplies", "100000")
    pending = [
        submit(client, auth, amount="60000", receipt_url=f"https://r/{i}").json()["id"] for i in range(4)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(
            pool.map(lambda eid: client.post(f"/v1/expenses/{eid}/approve", json={}, headers=auth), pending)
        )
    assert sorted(a.status_code for a in answers) == [200, 422, 422, 422], [a.text for a in answers]
    assert summary(client, auth)["supplies"]["utilized_amount"] == "60000.00"


def test_configuration_defaults_and_admin_changes(api: Api) -> None:
    client, auth = api
    gl = client.get("/v1/config/gl-codes", headers=auth).json()["data"]
    assert {
        "code": "5200",
        "name": "Office Supplies",
        "category": "supplies",
        "is_active": True,
    }.items() <= gl[1].items()
    categories = client.get("/v1/config/expense-categories", headers=auth).json()["categories"]
    supplies = next(c for c in categories if c["value"] == "supplies")
    assert (supplies["requires_approval"], supplies["receipt_threshold"]) == (False, "5000.00")
    assert client.get("/v1/config/expenses", headers=auth).json() == {
        "approval_threshold": "50000.00",
        "sla_hours": "48",
        "budget_alerts": {"warning_percentage": "80", "critical_percentage": "95"},
    }
    # Salaries always need approval, whatever the amount.
    salary = submit(client, auth, category="salaries", amount="10", receipt_url="https://r/s")
    assert salary.json()["status"] == "pending_approval"
    assert salary.json()["gl_code"] == "5100"

    changed = client.put(
        "/v1/config/expenses",
        json={
            "approval_threshold": "10000",
            "sla_hours": "24",
            "budget_alerts": {"warning_percentage": "60", "critical_percentage": "90"},
        },
        headers=auth,
    )
    assert changed.status_code == 200, changed.text
    assert (
        submit(client, auth, amount="10000.01", receipt_url="https://r/t").json()["status"]
        == "pending_approval"
    )
    inverted = client.put(
        "/v1/config/expenses",
        json={
            "approval_threshold": "1",
            "sla_hours": "1",
            "budget_alerts": {"warning_percentage": "90", "critical_percentage": "60"},
        },
        headers=auth,
    )
    assert inverted.status_code == 422

    put = client.put(
        "/v1/config/expense-categories",
        json={
            "categories": [
                {
                    "value": "library",
                    "label": "Library books",
                    "requires_approval": False,
                    "receipt_threshold": "0",
                    "gl_code": "5200",
                }
            ]
        },
        headers=auth,
    )
    assert put.status_code == 200, put.text
    assert submit(client, auth, category="library", amount="10", receipt_url="https://r/b").status_code == 201
    unknown = submit(client, auth, category="supplies")
    assert unknown.status_code == 422
    assert_error_shape(unknown.json(), "unknown_category")
    no_code = client.put(
        "/v1/config/expense-categories",
        json={
            "categories": [
                {
                    "value": "x",
                    "label": "X",
                    "requires_approval": False,
                    "receipt_threshold": "0",
                    "gl_code": "9999",
                }
            ]
        },
        headers=auth,
    )
    assert no_code.status_code == 422
    dropped = client.put(
        "/v1/config/gl-codes",
        json={"data": [{"code": "7000", "name": "Other", "is_active": True}]},
        headers=auth,
    )
    assert dropped.status_code == 422  # library books to 5200, which this list leaves out


# -- the signed callback ----------------------------------------------------------------------------


def signed(
    secret: str, body: dict[str, Any], *, msg_id: str | None = None, at: datetime | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = orjson.dumps(body)
    msg_id = msg_id or f"msg_{stdlib_secrets.token_hex(8)}"
    moment = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, moment, raw.decode())
    return raw, {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def decision(expense_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "approval_id": 456,
        "expense_id": expense_id,
        "status": "approved",
        "approver_id": 50,
        "approver_name": "Dr. Principal",
        "approved_at": "2026-06-16T14:20:00Z",
        "comments": "Approved for lab setup project",
        **changes,
    }


def test_the_signed_callback_decides_once_and_refuses_forgeries(
    api: Api, service: LedgerService, settings: Settings
) -> None:
    client, auth = api
    expense_id = submit(client, auth, amount="75000", receipt_url="https://r/1").json()["id"]
    url = "/v1/webhooks/expense-approval"

    # No secret configured yet: nothing verifies.
    raw, headers = signed("whsec_" + base64.b64encode(b"x" * 32).decode(), decision(expense_id))
    assert client.post(url, content=raw, headers=headers).status_code == 401
    secret = client.post("/v1/config/expenses/callback-secret", headers=auth).json()["secret"]
    assert secret.startswith("whsec_")

    forged_key = "whsec_" + base64.b64encode(stdlib_secrets.token_bytes(32)).decode()
    raw, headers = signed(forged_key, decision(expense_id))
    forged = client.post(url, content=raw, headers=headers)
    assert forged.status_code == 401
    assert_error_shape(forged.json(), "invalid_signature")
    raw, headers = signed(secret, decision(expense_id), at=datetime.now(UTC) - timedelta(minutes=10))
    assert client.post(url, content=raw, headers=headers).status_code == 401  # expired
    raw, headers = signed(secret, decision(expense_id))
    tampered = raw.replace(b"Dr. Principal", b"Mr. Intruder")
    assert client.post(url, content=tampered, headers=headers).status_code == 401
    assert (
        client.post(url, content=raw, headers={**headers, "webhook-signature": "v1,@@@"}).status_code == 401
    )
    assert client.post(url, content=raw, headers={"content-type": "application/json"}).status_code == 401
    raw_unknown, h_unknown = signed(secret, decision("00000000-0000-4000-8000-000000000000"))
    unknown = client.post(url, content=raw_unknown, headers=h_unknown)
    assert unknown.status_code == 401  # as forged: no existence oracle before the signature verifies
    assert_error_shape(unknown.json(), "invalid_signature")
    raw_bad, h_bad = signed(secret, {"expense_id": "nope"})
    assert client.post(url, content=raw_bad, headers=h_bad).status_code == 400
    raw_invalid, h_invalid = signed(secret, decision(expense_id, status="maybe"))
    assert client.post(url, content=raw_invalid, headers=h_invalid).status_code == 422
    assert client.get(f"/v1/expenses/{expense_id}", headers=auth).json()["status"] == "pending_approval"

    # Two identical deliveries at once: one decision, both acknowledged.
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(lambda _: client.post(url, content=raw, headers=headers), range(2))
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    assert sorted([first.json()["duplicate"], second.json()["duplicate"]]) == [False, True]
    view = client.get(f"/v1/expenses/{expense_id}", headers=auth).json()
    assert (view["status"], view["approved_by"], view["approved_by_name"], view["approver_role"]) == (
        "approved",
        "callback:50",
        "Dr. Principal",
        "principal",
    )
    assert view["comments"] == "Approved for lab setup project"
    assert client.post(url, content=raw, headers=headers).json()["duplicate"] is True
    # The same delivery id with another (validly signed) body is a replay; a new decision on a
    # decided expense is a conflict.
    raw_other, h_other = signed(
        secret, decision(expense_id, comments="changed"), msg_id=headers["webhook-id"]
    )
    assert client.post(url, content=raw_other, headers=h_other).status_code == 401
    raw_late, h_late = signed(secret, decision(expense_id, status="rejected"))
    late = client.post(url, content=raw_late, headers=h_late)
    assert late.status_code == 409
    assert_error_shape(late.json(), "invalid_state")

    # A rejection through the callback, for another expense.
    other = submit(client, auth, amount="80000", receipt_url="https://r/2").json()["id"]
    raw_rej, h_rej = signed(secret, decision(other, status="rejected", comments="Not this year"))
    assert client.post(url, content=raw_rej, headers=h_rej).status_code == 200
    rejected = client.get(f"/v1/expenses/{other}", headers=auth).json()
    assert (rejected["status"], rejected["rejection_reason"], rejected["rejected_by"]) == (
        "rejected",
        "Not this year",
        "callback:50",
    )


# -- tenants and hostile input ---------------------------------------------------------------------


def test_tenants_never_see_or_decide_each_others_expenses(
    api: Api, service: LedgerService, settings: Settings
) -> None:
    client, auth = api
    _, other_key = register_tenant(service)
    other = {"Authorization": f"Bearer {other_key}"}
    allocate(client, auth, "supplies", "100000")
    mine = submit(client, auth, amount="75000", receipt_url="https://r/1").json()["id"]
    for method, path, body in [
        ("get", f"/v1/expenses/{mine}", None),
        ("post", f"/v1/expenses/{mine}/approve", {}),
        ("post", f"/v1/expenses/{mine}/reject", {"reason": "no"}),
        ("post", f"/v1/expenses/{mine}/pay", {"payment_reference": "X", "paid_on": "2026-06-20"}),
        ("post", f"/v1/approvals/expenses/{mine}/request", {}),
    ]:
        answer = client.request(method, path, json=body, headers=other)
        assert answer.status_code == 404, (path, answer.text)
        assert_error_shape(answer.json(), "not_found")
    assert client.get("/v1/expenses", headers=other).json()["data"] == []
    exported = client.get("/v1/expenses/export?from_date=2026-01-01&to_date=2026-12-31", headers=other).json()
    assert exported["data"] == [] and exported["summary"]["expense_count"] == 0
    assert client.get("/v1/budgets/summary?financial_year=2026-27", headers=other).json()["budgets"] == []
    # The other tenant's budget of the same category is its own.
    assert allocate(client, other, "supplies", "10").status_code == 201
    assert summary(client, auth)["supplies"]["allocated_amount"] == "100000.00"
    mine_tenant = client.get("/v1/budgets/summary?financial_year=2026-27", headers=auth).json()["college_id"]
    assert (
        client.get(
            f"/v1/budgets/summary?financial_year=2026-27&college_id={mine_tenant}", headers=other
        ).status_code
        == 403
    )
    # A callback signed with the other tenant's secret cannot decide this tenant's expense.
    client.post("/v1/config/expenses/callback-secret", headers=auth)
    other_secret = client.post("/v1/config/expenses/callback-secret", headers=other).json()["secret"]
    raw, headers = signed(other_secret, decision(mine))
    assert client.post("/v1/webhooks/expense-approval", content=raw, headers=headers).status_code == 401
    assert client.get(f"/v1/expenses/{mine}", headers=auth).json()["status"] == "pending_approval"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"description": "paper\x00"}, "validation_failed"),
        ({"description": "paper\u202egnp.exe"}, "validation_failed"),
        ({"vendor_name": "x" * 201}, "validation_failed"),
        ({"amount": "1" + "0" * 40}, "validation_failed"),
        ({"amount": "-5"}, "validation_failed"),
        ({"amount": "0"}, "validation_failed"),
        ({"amount": "1.001"}, "validation_failed"),
        ({"amount": "NaN"}, "validation_failed"),
        ({"date": "2026-02-30"}, "validation_failed"),
        ({"category": "Supplies; DROP TABLE"}, "validation_failed"),
        ({"category": "travel"}, "unknown_category"),
        ({"gl_code": "9999"}, "unknown_gl_code"),
        ({"amount": "5000.01"}, "receipt_required"),
        ({"receipt_url": "javascript:alert(1)"}, "validation_failed"),
        ({"vendor_pan": "NOTAPAN"}, "invalid_pan"),
        ({"approved_by": "user:principal"}, "validation_failed"),
    ],
)
def test_hostile_submissions_are_refused_clearly(api: Api, changes: dict[str, Any], code: str) -> None:
    client, auth = api
    answer = submit(client, auth, **changes)
    assert answer.status_code == 422, answer.text
    assert_error_shape(answer.json(), code)


def test_hostile_paths_and_bodies_never_answer_500(api: Api) -> None:
    client, auth = api
    expense_id = submit(client, auth).json()["id"]
    for path in ("/v1/expenses/not-a-uuid", "/v1/expenses/%00", f"/v1/expenses/{'9' * 5000}"):
        assert client.get(path, headers=auth).status_code in (404, 414), path
    assert (
        client.post(
            "/v1/expenses", content=b"{not json", headers={**auth, "content-type": "application/json"}
        ).status_code
        == 422
    )
    assert (
        client.post(f"/v1/expenses/{expense_id}/reject", json={"reason": ""}, headers=auth).status_code == 422
    )
    pay = client.post(
        f"/v1/expenses/{expense_id}/pay",
        json={"payment_reference": "R1", "paid_on": "2026-06-20", "tds_deducted": "1e400"},
        headers=auth,
    )
    assert pay.status_code == 422
    assert (
        client.get("/v1/expenses/export?from_date=2026-07-01&to_date=2026-06-01", headers=auth).status_code
        == 422
    )
    assert client.get("/v1/budgets/summary?financial_year=２０２６-27", headers=auth).status_code == 422
    assert allocate(client, auth, "supplies", "-1").status_code == 422
    assert allocate(client, auth, "supplies", "10", year="2026-28").status_code == 422
    huge = client.post(
        "/v1/webhooks/expense-approval", content=b"x" * 20000, headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413
    big = Decimal("9" * 15) + Decimal("0.99")
    assert submit(client, auth, amount=str(big), receipt_url="https://r/1").status_code in (201, 422)


def test_the_read_tables_are_rebuilt_from_the_event_store(
    api: Api, service: LedgerService, settings: Settings
) -> None:
    client, auth = api
    allocate(client, auth, "supplies", "100000")
    approved = submit(client, auth, amount="90000", receipt_url="https://r/1").json()["id"]
    client.post(f"/v1/expenses/{approved}/approve", json={"comments": "ok"}, headers=auth)
    client.post(
        f"/v1/expenses/{approved}/pay",
        json={"payment_reference": "UTR1", "paid_on": "2026-06-20"},
        headers=auth,
    )
    pending = submit(client, auth, amount="70000", receipt_url="https://r/2").json()["id"]
    client.post(f"/v1/approvals/expenses/{pending}/request", json={}, headers=auth)
    before = client.get("/v1/expenses", headers=auth).json(), summary(client, auth)
    with db.transaction(service.pool) as conn:
        conn.execute("UPDATE expense_register SET status = 'rejected', amount = 1")
        conn.execute("DELETE FROM budget_register")
    assert client.get("/v1/expenses", headers=auth).json() != before[0]

    rebuilt = subprocess.run(
        [sys.executable, "-m", "engine.cli", "expenses", "rebuild"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "2 expenses and 1 budgets projected" in rebuilt.stdout
    assert (client.get("/v1/expenses", headers=auth).json(), summary(client, auth)) == before


def test_a_budget_allocated_after_approvals_in_its_category_and_year_starts_from_them(
    api: Api, service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    client, auth = api
    # No supplies budget for 2026-27 yet: approved at once, by the principal, then paid, all counted.
    auto = submit(client, auth, amount="30000", receipt_url="https://r/1").json()
    assert auto["status"] == "approved"
    approved = submit(client, auth, amount="55000", receipt_url="https://r/2").json()["id"]
    assert client.post(f"/v1/expenses/{approved}/approve", json={}, headers=auth).status_code == 200
    paid = client.post(
        f"/v1/expenses/{approved}/pay",
        json={"payment_reference": "UTR9", "paid_on": "2026-07-01"},
        headers=auth,
    )
    assert paid.status_code == 200, paid.text
    # Not counted: a rejection, a pending one, another year (2025-26 ends on 31 March), another category.
    rejected = submit(client, auth, amount="60000", receipt_url="https://r/3").json()["id"]
    assert (
        client.post(f"/v1/expenses/{rejected}/reject", json={"reason": "no"}, headers=auth).status_code == 200
    )
    pending = submit(client, auth, amount="16000.00", receipt_url="https://r/4", category="salaries").json()
    assert pending["status"] == "pending_approval"
    assert submit(client, auth, amount="4000", date="2026-03-31").json()["financial_year"] == "2025-26"
    assert submit(client, auth, amount="4000", category="utilities").json()["status"] == "approved"
    assert (
        submit(client, auth, amount="70000", receipt_url="https://r/5").json()["status"] == "pending_approval"
    )

    allocated = allocate(client, auth, "supplies", "100000")
    assert allocated.status_code == 201, allocated.text
    expected = {
        "allocated_amount": "100000.00",
        "utilized_amount": "85000.00",
        "remaining_amount": "15000.00",
        "utilization_percentage": "85.00",
        "alert_level": "warning",
    }
    assert {k: allocated.json()[k] for k in expected} == expected
    assert {k: summary(client, auth)["supplies"][k] for k in expected} == expected

    # The remainder is what later approvals may use, on both paths.
    over = submit(client, auth, amount="15000.01", receipt_url="https://r/6")
    assert over.status_code == 422
    assert_error_shape(over.json(), "insufficient_budget")
    assert over.json()["error"]["details"]["available"] == "15000.00"
    waiting = submit(client, auth, amount="50000.01", receipt_url="https://r/7").json()["id"]
    refused = client.post(f"/v1/expenses/{waiting}/approve", json={}, headers=auth)
    assert refused.status_code == 422
    assert_error_shape(refused.json(), "insufficient_budget")
    assert submit(client, auth, amount="15000", receipt_url="https://r/8").json()["status"] == "approved"
    assert summary(client, auth)["supplies"]["utilized_amount"] == "100000.00"

    # A replay gives the same state: the carried amount is on the allocation event.
    with db.transaction(service.pool) as conn:
        conn.execute("DELETE FROM budget_register")
    ExpenseBook(service).rebuild()
    assert summary(client, auth)["supplies"]["utilized_amount"] == "100000.00"

    background.start(Relay(settings).run)
    budget_messages = read_topic(settings, settings.topic("ledger.budget.v1"), expected=2)
    records = {dict(m.headers())["ce_type"]: registry.decode_event(m.value()) for m in budget_messages}
    record = records[b"ledgerflow.budget.allocated"]
    assert (record["utilized_amount"], record["alert_level"]) == ("85000.00", "warning")
    # The allocation started at warning: one alert for it (no expense), one for the rise to critical.
    alerts = read_topic(settings, settings.topic("ledger.alert.v1"), expected=2)
    raised = sorted((registry.decode_event(m.value()) for m in alerts), key=lambda r: r["cause"])
    assert [(r["cause"], r["details"].get("expense_id") is None) for r in raised] == [
        ("budget.critical", False),
        ("budget.warning", True),
    ]
    assert raised[1]["details"]["utilized_amount"] == "85000.00"


@pytest.mark.parametrize("round_", range(3))
def test_an_approval_racing_the_first_allocation_is_counted_exactly_once(api: Api, round_: int) -> None:
    client, auth = api
    pending = [
        submit(client, auth, amount=f"{50001 + i}.00", receipt_url=f"https://r/{i}").json()["id"]
        for i in range(4)
    ]

    def act(step: int) -> Any:
        if step < len(pending):
            return client.post(f"/v1/expenses/{pending[step]}/approve", json={}, headers=auth)
        if step == len(pending):
            return allocate(client, auth, "supplies", "1000000")
        # Auto-approvals race it too.
        return submit(client, auth, amount="1000.00")

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(act, range(len(pending) + 4)))
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    listed = client.get("/v1/expenses?category=supplies&status=approved", headers=auth).json()["data"]
    assert len(listed) == len(pending) + 3
    total = sum((Decimal(e["amount"]) for e in listed), Decimal("0"))
    assert summary(client, auth)["supplies"]["utilized_amount"] == f"{total:.2f}"


def test_an_approval_stored_but_not_yet_in_the_register_is_still_carried_into_the_first_budget(
    api: Api, service: LedgerService
) -> None:
    client, auth = api
    approved = submit(client, auth, amount="60000", receipt_url="https://r/1").json()["id"]
    assert client.post(f"/v1/expenses/{approved}/approve", json={}, headers=auth).status_code == 200
    # As after a crash between the event store's save and the read table's update.
    with db.transaction(service.pool) as conn:
        conn.execute(
            "UPDATE expense_register SET status = 'pending_approval', version = version - 1"
            " WHERE expense_id = %s",
            (approved,),
        )
    assert allocate(client, auth, "supplies", "100000").json()["utilized_amount"] == "60000.00"
    assert client.get(f"/v1/expenses/{approved}", headers=auth).json()["status"] == "approved"
