"""Issue 14's parts together on the real stack (real Kafka, PostgreSQL, the API app, sandboxes over
HTTP): users with their own keys through an expense's whole life, as the audit log, the ledger topic,
the budget and ``ledgerflow audit verify`` see it; a consolidator reading a granted college's books
on every consolidator route; forged approval callbacks across tenants; odd Unicode in an expense
reaching every read model without stopping a consumer."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from click.testing import CliRunner

from connectors import super_accountant, tally
from connectors.super_accountant.sandbox import SandboxAccount
from connectors.super_accountant.sandbox import create_app as accountant_sandbox
from connectors.tally import routes as tally_routes
from connectors.tally.handler import create_handler as create_tally_handler
from connectors.tally.sandbox import create_app as tally_sandbox
from engine.application import LedgerService
from engine.cli import main
from engine.config import Settings
from engine.relay import Relay
from engine.security.secrets import load_key_ring
from projections.audit_trail import AuditTrail
from projections.runner import ProjectionRunner
from schemas import registry
from streams.catalogue import connector_specs
from streams.connectors import ConnectorWorker
from tests.conftest import BackgroundLoop, wait_for
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for, register_tenant
from tests.integration.processes import Processes, free_port, settings_env
from tests.integration.test_backbone import read_topic
from tests.integration.test_expenses import decision, signed
from tests.integration.test_tally import EXPENSE_LEDGERS, add_expense_ledgers, run_until_done
from tests.integration.test_tally import api as tally_api
from tests.integration.test_tally import connect as tally_connect
from tests.integration.test_tally import context_for as tally_context
from tests.integration.test_tally import tenant as tally_tenant
from tests.integration.test_tally import vouchers as tally_vouchers
from tests.integration.test_users_and_roles import add_user, bearer, error

pytestmark = pytest.mark.integration

OPERATOR_TOKEN = "op-" + uuid.uuid4().hex
AGENT = "CollegeDesk/2.1 (\u0915\u0949\u0932\u0947\u091c) e2e"
# Devanagari with a combining sign, an emoji joined by ZWJ, a non-BMP CJK ideograph, an NBSP and a
# quote: all printable, all allowed in a description, all must come back byte for byte.
ODD = (
    "Lab \u0915\u0902\u092a\u094d\u092f\u0942\u091f\u0930 \U0001f469\u200d\U0001f52c"
    ' \U00020000\u00a0"q" \u00e9\u0301'
)


def as_user(key: str) -> dict[str, str]:
    # A header is bytes on the wire; the app reads them as UTF-8 (engine/api/audit_logs.py).
    return {**bearer(key), "User-Agent": AGENT.encode()}  # type: ignore[dict-item]


def connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(
        settings.database_url, autocommit=True, options=f"-c search_path={settings.db_schema}"
    )


def verify(settings: Settings) -> Any:
    return CliRunner().invoke(main, ["audit", "verify"], env=settings_env(settings))


def test_users_take_an_expense_from_budget_to_payment_and_the_auditor_sees_who_did_each_step(
    settings: Settings, service: LedgerService, topics: list[str], background: BackgroundLoop
) -> None:
    college, admin_key = register_tenant(service)
    client = client_for(settings)
    accountant_id, accountant = add_user(client, admin_key, "accountant")
    principal_id, principal = add_user(client, admin_key, "principal")
    auditor_id, auditor = add_user(client, admin_key, "auditor")

    allocated = client.post(
        "/v1/budgets",
        json={"category": "infrastructure", "financial_year": "2026-27", "allocated_amount": "100000"},
        headers=as_user(accountant),
    )
    assert allocated.status_code == 201, allocated.text
    submitted = client.post(
        "/v1/expenses",
        json={
            "amount": "85000.00",
            "category": "infrastructure",
            "date": "2026-06-15",
            "description": "Computer lab benches",
            "vendor_name": "Office Mart",
            "receipt_url": "https://receipts.example/lab.pdf",
        },
        headers={**as_user(accountant), "Idempotency-Key": "BILL-1"},
    )
    assert submitted.status_code == 201, submitted.text
    expense_id = submitted.json()["id"]
    assert submitted.json()["status"] == "pending_approval"  # above the 50,000 threshold
    requested = client.post(
        f"/v1/approvals/expenses/{expense_id}/request",
        json={"justification": "New lab"},
        headers=as_user(accountant),
    )
    assert requested.status_code == 201, requested.text

    # The accountant may not approve, nor reach around the principal: no raising the threshold, no
    # callback secret to sign its own approval with.
    for method, path, body in (
        ("PUT", "/v1/config/expenses", {"approval_threshold": "100000000"}),
        ("POST", "/v1/config/expenses/callback-secret", None),
    ):
        around = client.request(method, path, json=body, headers=as_user(accountant))
        assert around.status_code == 403 and error(around)["code"] == "forbidden", around.text
        assert "admin" in error(around)["message"]
    # The principal may not pay; the principal approves.
    refused = client.post(f"/v1/expenses/{expense_id}/approve", json={}, headers=as_user(accountant))
    assert refused.status_code == 403 and error(refused)["code"] == "forbidden"
    approved = client.post(
        f"/v1/expenses/{expense_id}/approve", json={"comments": "Go ahead"}, headers=as_user(principal)
    )
    assert approved.status_code == 200, approved.text
    assert (approved.json()["approved_by"], approved.json()["approver_role"]) == (
        f"user:{principal_id}",
        "principal",
    )
    assert approved.json()["approved_by_name"] == "The principal"  # the user's name, as the export shows it
    not_payer = client.post(
        f"/v1/expenses/{expense_id}/pay",
        json={"payment_reference": "UTR1", "paid_on": "2026-06-20"},
        headers=as_user(principal),
    )
    assert not_payer.status_code == 403
    paid = client.post(
        f"/v1/expenses/{expense_id}/pay",
        json={"payment_reference": "UTR0012345678", "paid_on": "2026-06-20", "tds_deducted": "850.00"},
        headers=as_user(accountant),
    )
    assert paid.status_code == 200 and paid.json()["status"] == "paid", paid.text

    # The budget: 85 % used is the warning level, and the rise raised one alert.
    budgets = client.get("/v1/budgets/summary?financial_year=2026-27", headers=as_user(auditor))
    assert budgets.status_code == 200, budgets.text
    [budget] = budgets.json()["budgets"]
    assert (budget["utilized_amount"], budget["remaining_amount"]) == ("85000.00", "15000.00")
    assert (budget["utilization_percentage"], budget["alert_level"]) == ("85.00", "warning")

    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, AuditTrail(), max_records=50).run)
    messages = read_topic(settings, settings.topic("ledger.expense.v1"), expected=4)
    by_type = {dict(m.headers())["ce_type"].decode(): m for m in messages if m.key().decode() == expense_id}
    approval = registry.decode_event(by_type["ledgerflow.expense.approved"].value())
    assert approval["approved_by"] == f"user:{principal_id}", approval
    assert (
        dict(by_type["ledgerflow.expense.approved"].headers())["ce_source"] == f"/tenants/{college}".encode()
    )
    [alert] = read_topic(settings, settings.topic("ledger.alert.v1"), expected=1)
    raised = registry.decode_event(alert.value())
    assert (raised["cause"], raised["severity"]) == ("budget.warning", "warning")

    # The auditor reads the expense's history: each step with its user, IP, agent and old/new values.
    def trail() -> list[dict[str, Any]]:
        background.check()
        answer = client.get(
            "/v1/audit-logs",
            params={"entity_type": "expense", "entity_id": expense_id},
            headers=as_user(auditor),
        )
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    wait_for(lambda: len(trail()) >= 4, what="the expense's four events in the audit trail")
    steps = trail()
    assert [(s["action"], s["actor"]) for s in steps] == [
        ("submitted", f"user:{accountant_id}"),
        ("approval_requested", f"user:{accountant_id}"),
        ("approved", f"user:{principal_id}"),
        ("paid", f"user:{accountant_id}"),
    ], steps
    for step in steps:
        assert (step["ip_address"], step["user_agent"], step["source"]) == ("testclient", AGENT, "event")
    submitted_step, approved_step, paid_step = steps[0], steps[2], steps[3]
    # The events carry what changed, not a status field: the step's action is the transition.
    assert submitted_step["changes"]["amount"] == {"old": None, "new": "85000.00"}
    assert approved_step["changes"]["approved_by"] == {"old": None, "new": f"user:{principal_id}"}
    assert approved_step["changes"]["approver_role"] == {"old": None, "new": "principal"}
    assert approved_step["changes"]["comments"] == {"old": None, "new": "Go ahead"}
    assert (approved_step["role"], approved_step["user_id"]) == ("principal", principal_id)
    assert paid_step["changes"]["payment_reference"] == {"old": None, "new": "UTR0012345678"}
    assert paid_step["changes"]["tds_deducted"] == {"old": None, "new": "850.00"}

    # Neither the accountant nor the principal reads the audit log; auditor_id is only a reader.
    for key in (accountant, principal):
        denied = client.get("/v1/audit-logs", params={"entity_type": "expense"}, headers=as_user(key))
        assert denied.status_code == 403 and error(denied)["code"] == "forbidden"
    assert auditor_id != accountant_id

    intact = verify(settings)
    assert intact.exit_code == 0, intact.output
    with connect(settings) as conn:
        nid, state = conn.execute(
            "SELECT notification_id, state FROM ledger_events WHERE originator_id = %s"
            " ORDER BY originator_version DESC LIMIT 1",
            (UUID(expense_id),),
        ).fetchone()  # type: ignore[misc]
        # The paid amount's event changed by hand, as the schema's owner could with plain SQL.
        conn.execute(
            "UPDATE ledger_events SET state = state || '\\x20'::bytea WHERE notification_id = %s", (nid,)
        )
        tampered = verify(settings)
        conn.execute("UPDATE ledger_events SET state = %s WHERE notification_id = %s", (state, nid))
    assert tampered.exit_code == 1, tampered.output
    assert f"event {nid} (aggregate {expense_id}" in tampered.output
    assert verify(settings).exit_code == 0


def test_a_granted_consolidator_reads_a_colleges_books_on_every_consolidator_route_and_writes_nothing(
    settings: Settings, service: LedgerService, topics: list[str]
) -> None:
    settings = replace(settings, operator_token=OPERATOR_TOKEN)
    college, college_key = register_tenant(service)
    home, home_key = register_tenant(service)
    client = client_for(settings)
    consolidator_id, consolidator = add_user(client, home_key, "consolidator")
    own = bearer(college_key)

    # College A's books: a budget and an expense, a fee collection, a submitted P&L.
    assert (
        client.post(
            "/v1/budgets",
            json={"category": "supplies", "financial_year": "2026-27", "allocated_amount": "10000"},
            headers=own,
        ).status_code
        == 201
    )
    spent = client.post(
        "/v1/expenses",
        json={
            "amount": "4000.00",
            "category": "supplies",
            "date": "2026-06-15",
            "description": "Printer paper",
            "vendor_name": "Office Mart",
        },
        headers=own,
    )
    assert spent.status_code == 201 and spent.json()["status"] == "approved", spent.text
    fee = client.post(
        "/v1/fee-collections",
        json={
            "receipt_number": "RCPT-1",
            "student_id": 5678,
            "student_name": "Jane Student",
            "amount": "50000",
            "payment_mode": "upi",
            "payment_date": "2026-06-10",
            "fee_type": "tuition",
            "academic_year": "2026-27",
            "semester": 1,
        },
        headers=own,
    )
    assert fee.status_code == 201, fee.text
    account = SandboxAccount()
    with LiveServer(accountant_sandbox(account)) as sandbox:
        configured = client.put(
            "/v1/integrations/super-accountant",
            json={
                "enabled": True,
                "environment": "sandbox",
                "base_url": sandbox.url,
                "credentials": account.credentials(),
            },
            headers=own,
        )
        assert configured.status_code == 200, configured.text
        queued = client.post("/v1/financial-reports/submit", json={"period": "2026-06"}, headers=own)
        assert queued.status_code == 202, queued.text
    report_id = queued.json()["id"]

    reads = {
        "budgets": ("/v1/budgets/summary", {"financial_year": "2026-27"}),
        "export": ("/v1/expenses/export", {"from_date": "2026-06-01", "to_date": "2026-06-30"}),
        "fees": ("/v1/fee-collections", {"from_date": "2026-06-01", "to_date": "2026-06-30"}),
        "report": (f"/v1/financial-reports/{report_id}", {}),
    }

    def read(name: str, college_id: str) -> Any:
        path, params = reads[name]
        return client.get(path, params={**params, "college_id": college_id}, headers=bearer(consolidator))

    # Before the grant: refused on every route, the same answer whatever the reason.
    for name in reads:
        answer = read(name, college)
        assert answer.status_code == 403 and error(answer)["code"] == "forbidden", (name, answer.text)
    operator = bearer(OPERATOR_TOKEN)
    granted = client.post(
        "/v1/operator/grants", json={"user_id": consolidator_id, "tenant_id": college}, headers=operator
    )
    assert granted.status_code == 201, granted.text

    # Granted: the college's own figures, whichever way its tenant id is spelt (a UUID is a UUID).
    for spelling in (college, college.upper()):
        answers = {name: read(name, spelling) for name in reads}
        for name, answer in answers.items():
            assert answer.status_code == 200, (name, spelling, answer.text)
        [budget] = answers["budgets"].json()["budgets"]
        assert (budget["category"], budget["utilized_amount"]) == ("supplies", "4000.00")
        assert answers["export"].json()["summary"]["total_expenses"] == "4000.00"
        assert [c["receipt_number"] for c in answers["fees"].json()["data"]] == ["RCPT-1"]
        assert answers["report"].json()["id"] == report_id
    # Without college_id it reads its own (empty) college: nothing of A's.
    assert (
        client.get(
            "/v1/expenses/export",
            params={"from_date": "2026-06-01", "to_date": "2026-06-30"},
            headers=bearer(consolidator),
        ).json()["summary"]["expense_count"]
        == 0
    )

    # It writes nothing in the college, with or without college_id.
    for path, body in (
        (
            "/v1/expenses",
            {
                "amount": "1",
                "category": "supplies",
                "date": "2026-06-15",
                "description": "x",
                "vendor_name": "y",
            },
        ),
        ("/v1/budgets", {"category": "supplies", "financial_year": "2026-27", "allocated_amount": "1"}),
        ("/v1/financial-reports/submit", {"period": "2026-06"}),
        (f"/v1/expenses/{spent.json()['id']}/approve", {}),
        ("/v1/fee-collections", {}),
    ):
        for params in ({"college_id": college}, {}):
            answer = client.post(path, params=params, json=body, headers=bearer(consolidator))
            assert answer.status_code == 403, (path, params, answer.text)
    assert client.get("/v1/expenses", headers=own).json()["data"][0]["id"] == spent.json()["id"]
    assert len(client.get("/v1/expenses", headers=own).json()["data"]) == 1
    assert home != college


def test_a_callback_signed_with_one_colleges_secret_never_decides_anothers_expense(
    settings: Settings, service: LedgerService
) -> None:
    _, a_key = register_tenant(service)
    _, b_key = register_tenant(service)
    client = client_for(settings)
    a, b = bearer(a_key), bearer(b_key)
    body = {
        "amount": "75000",
        "category": "supplies",
        "date": "2026-06-15",
        "description": "Projector",
        "vendor_name": "Office Mart",
        "receipt_url": "https://receipts.example/p.pdf",
    }
    a_expense = client.post("/v1/expenses", json=body, headers=a).json()["id"]
    b_expense = client.post("/v1/expenses", json=body, headers=b).json()["id"]
    a_secret = client.post("/v1/config/expenses/callback-secret", headers=a).json()["secret"]
    b_secret = client.post("/v1/config/expenses/callback-secret", headers=b).json()["secret"]
    url = "/v1/webhooks/expense-approval"

    # A's secret over a body naming B's expense; the same with A's tenant key as well; a body naming
    # both (B's first); A's signature next to a made-up one: all refused, B's expense untouched.
    raw, headers = signed(a_secret, decision(b_expense))
    attempts = [
        client.post(url, content=raw, headers=headers),
        client.post(url, content=raw, headers={**headers, **a}),
        client.post(
            url,
            content=raw,
            headers={**headers, "webhook-signature": headers["webhook-signature"] + " v1,AAAA"},
        ),
    ]
    both = b'{"expense_id": "' + b_expense.encode() + b'", ' + raw[1:]
    both_headers = signed(a_secret, {})[1]
    both_headers["webhook-signature"] = signed(
        a_secret, decision(a_expense), msg_id=both_headers["webhook-id"]
    )[1]["webhook-signature"]
    attempts.append(client.post(url, content=both, headers=both_headers))
    # An expense id that exists nowhere answers as a forgery: nothing is told before verification.
    raw_none, headers_none = signed(a_secret, decision(str(uuid.uuid4())))
    attempts.append(client.post(url, content=raw_none, headers=headers_none))
    # A tenant key alone, without a signature, decides nothing either (the callback is signed only).
    attempts.append(client.post(url, json=decision(b_expense), headers=a))
    for answer in attempts:
        assert answer.status_code == 401, answer.text
        assert error(answer)["code"] == "invalid_signature"
    assert client.get(f"/v1/expenses/{b_expense}", headers=b).json()["status"] == "pending_approval"

    # Each college's own delivery decides its own expense; one delivery id in both colleges is two
    # deliveries (ids are the sender's, kept per college), not a replay.
    raw_a, headers_a = signed(a_secret, decision(a_expense), msg_id="msg_shared")
    raw_b, headers_b = signed(
        b_secret,
        decision(b_expense, approver_name="\u0921\u0949. \u0936\u0930\u094d\u092e\u093e"),
        msg_id="msg_shared",
    )
    assert client.post(url, content=raw_a, headers=headers_a).status_code == 200
    decided = client.post(url, content=raw_b, headers=headers_b)
    assert decided.status_code == 200 and decided.json()["duplicate"] is False, decided.text
    view = client.get(f"/v1/expenses/{b_expense}", headers=b).json()
    assert (view["status"], view["approved_by_name"]) == (
        "approved",
        "\u0921\u0949. \u0936\u0930\u094d\u092e\u093e",
    )
    # The audit store names the verified portal approver, with the delivery's IP and agent.
    with connect(settings) as conn:
        who = conn.execute(
            "SELECT actor, role, client_ip FROM event_actors WHERE originator_id = %s"
            " ORDER BY originator_version DESC LIMIT 1",
            (UUID(b_expense),),
        ).fetchone()
    assert who == ("callback:50", "principal", "testclient")
    # A reading B's expense by its id: not found, as if it did not exist.
    assert client.get(f"/v1/expenses/{b_expense}", headers=a).status_code == 404


def test_odd_unicode_in_an_expense_reaches_every_read_model_and_stops_no_consumer(
    settings: Settings, service: LedgerService, topics: list[str], background: BackgroundLoop
) -> None:
    settings = replace(settings, retry_delays=(0, 1, 1, 1, 1, 1, 1, 1), breaker_open_seconds=1)
    college, key = register_tenant(service)
    client = client_for(settings)
    own = bearer(key)
    vendor = "\u0936\u094d\u0930\u0940 \u0917\u0923\u0947\u0936 Traders \U0001f69a \u00e9\u0301"
    assert (
        client.post(
            "/v1/budgets",
            json={"category": "supplies", "financial_year": "2026-27", "allocated_amount": "100000"},
            headers=own,
        ).status_code
        == 201
    )

    # NUL and bidi overrides are refused at the door, clearly; printable odd Unicode is kept.
    base = {"amount": "4000.00", "category": "supplies", "date": "2026-06-15", "vendor_name": "Office Mart"}
    for hostile in ("paper\x00", "paper\u202egnp.exe", "a\x1b[31m"):
        refused = client.post("/v1/expenses", json={**base, "description": hostile}, headers=own)
        assert refused.status_code == 422 and error(refused)["code"] == "validation_failed", refused.text
    first = client.post("/v1/expenses", json={**base, "description": ODD}, headers=own)
    assert first.status_code == 201, first.text
    second = client.post(
        "/v1/expenses", json={**base, "description": "Chalk", "vendor_name": vendor}, headers=own
    )
    assert second.status_code == 201, second.text
    first_id, second_id = first.json()["id"], second.json()["id"]

    # The expense register (API reads and the export).
    assert client.get(f"/v1/expenses/{first_id}", headers=own).json()["description"] == ODD
    exported = client.get(
        "/v1/expenses/export", params={"from_date": "2026-06-01", "to_date": "2026-06-30"}, headers=own
    ).json()
    assert {row["vendor_name"] for row in exported["data"]} == {"Office Mart", vendor}

    # The audit trail, built by its projection consumer from the relay's messages.
    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, AuditTrail(), max_records=50).run)

    def described() -> Any:
        background.check()  # a stopped consumer fails the test here
        items = client.get(
            "/v1/audit-logs", params={"entity_type": "expense", "entity_id": first_id}, headers=own
        ).json()["items"]
        # By action, not position: an auto-approved expense's two events share their time, and the
        # log orders ties by event id (reported to the lead: projections/audit_trail.py's search).
        submitted = [i for i in items if i["action"] == "submitted"]
        return submitted and submitted[0]["changes"]["description"]["new"]

    assert wait_for(described, what="the odd description in the audit trail") == ODD

    # The accountant's batch, sent by the connector worker (a Kafka consumer) to its sandbox over HTTP.
    account = SandboxAccount()
    with LiveServer(accountant_sandbox(account)) as sandbox:
        configured = client.put(
            "/v1/integrations/super-accountant",
            json={
                "enabled": True,
                "environment": "sandbox",
                "base_url": sandbox.url,
                "credentials": account.credentials(),
            },
            headers=own,
        )
        assert configured.status_code == 200, configured.text
        specs, handlers = connector_specs(
            settings, service, load_key_ring(settings.var_dir), [super_accountant.CONNECTOR]
        )
        background.start(ConnectorWorker(settings, specs).run)
        try:
            run = client.post("/v1/integrations/super-accountant/sync-runs", headers=own)
            assert run.status_code == 202, run.text

            def sent() -> Any:
                background.check()
                batches = client.get("/v1/integrations/super-accountant/batches", headers=own).json()[
                    "batches"
                ]
                return batches and batches[0]["status"] in ("sent", "failed") and batches[0]

            batch = wait_for(sent, what="the batch sent to the accountant")
            assert batch["status"] == "sent", batch
            kept = httpx.get(f"{sandbox.url}/_sandbox/batches", timeout=5).json()["batches"]
            vendors = {e["vendor_name"] for b in kept for e in b["expenses"]}
            assert vendors == {"Office Mart", vendor}, kept
        finally:
            asyncio.run_coroutine_threadsafe(handlers.close(), background.loop).result(timeout=10)

    # A later, plain expense still flows through the same audit trail consumer.
    later = client.post("/v1/expenses", json={**base, "description": "After"}, headers=own).json()["id"]

    def after() -> Any:
        background.check()
        return client.get(
            "/v1/audit-logs", params={"entity_type": "expense", "entity_id": later}, headers=own
        ).json()["items"]

    wait_for(after, what="a later expense in the audit trail")
    assert college and second_id


def test_odd_unicode_in_an_expense_reaches_the_tally_narration_and_its_vendor_ledger(
    settings: Settings, service: LedgerService
) -> None:
    tenant_id, key = tally_tenant(service)
    client = tally_api(settings, key)
    with LiveServer(tally_sandbox()) as server:
        operator = Operator(server.url)
        add_expense_ledgers(operator)
        vendor = "\u0936\u094d\u0930\u0940 \u0917\u0923\u0947\u0936 \U0001f69a"
        tally_connect(client, server.url, {**EXPENSE_LEDGERS, f"vendor:{vendor}": "Office Mart"})
        assert (
            client.post(
                "/v1/budgets",
                json={"category": "supplies", "financial_year": "2026-27", "allocated_amount": "9000"},
            ).status_code
            == 201
        )
        body = {
            "amount": "4000.00",
            "category": "supplies",
            "date": "2026-06-15",
            "description": ODD,
            "vendor_name": vendor,
        }
        submitted = client.post("/v1/expenses", json=body)
        assert submitted.status_code == 201 and submitted.json()["status"] == "approved", submitted.text
        record = {"tenant_id": str(tenant_id), "expense_id": submitted.json()["id"]}
        [purchase] = tally_routes.routes(tally_routes.EXPENSE_APPROVED, f"ce-{uuid.uuid4()}", record)
        result, _ = run_until_done(create_tally_handler(tally_context(settings, service)), purchase)
        assert result.data["voucher_type"] == "Purchase"
        [bill] = tally_vouchers(server.url)
    assert bill["narration"] == f"{submitted.json()['expense_number']}: {ODD}"
    assert bill["party_ledger"] == "Office Mart"


def _children(pid: int) -> dict[int, str]:
    """The direct children of ``pid``: their pids and command lines, from /proc."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline.strip()
    return found


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_sandbox/stats", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_ledgerflow_run_on_a_fresh_schema_starts_the_college_children_and_its_quick_start_works(
    settings: Settings, topics: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its own var/ (the demo tenant is kept there) holding a demo tenant of another schema, as after
    # a new LEDGERFLOW_DB_SCHEMA: `ledgerflow run` must not print a tenant this database lacks.
    var = tmp_path / "var"
    var.mkdir()
    stale = str(uuid.uuid4())
    (var / "demo-tenant.json").write_text(json.dumps({"tenant_id": stale, "api_key": "lf_gone_x"}))
    settings = replace(settings, var_dir=var)
    port = free_port()
    monkeypatch.setenv("LEDGERFLOW_API_PORT", str(port))
    group = Processes(settings, tmp_path)
    try:
        run = group.start("run", "--no-stack", "--workers", "1")
        banner = re.compile(r"Demo tenant (\S+)\nAPI key: (\S+)")

        def announced() -> re.Match[str] | None:
            group.assert_alive(run)
            return banner.search(run.log_path.read_text(errors="replace"))

        found = group.wait_for(announced, timeout=120, interval=0.2, what="the demo tenant", watch=[run])
        assert found is not None
        tenant_id, key = found.group(1), found.group(2)
        assert tenant_id != stale
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=bearer(key))

        def ready() -> bool:
            group.assert_alive(run)
            try:
                return http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        group.wait_for(ready, timeout=120, interval=0.2, what="the API ready", watch=[run])
        wanted = {
            "expense-timer": "engine.cli expenses timer",
            "accountant-sync": "ops.accountant_scheduler",
            "tally sandbox": "connectors.tally.sandbox --port",
            "accountant sandbox": "connectors.super_accountant.sandbox --port",
        }

        def children() -> dict[int, str]:
            group.assert_alive(run)
            now = _children(run.pid)
            return now if all(any(c in line for line in now.values()) for c in wanted.values()) else {}

        first = group.wait_for(children, timeout=60, interval=0.2, what="the college children", watch=[run])
        for url in (
            f"http://127.0.0.1:{tally.SANDBOX_PORT}",
            f"http://127.0.0.1:{super_accountant.SANDBOX_PORT}",
        ):
            group.wait_for(
                functools.partial(_answers, url),
                timeout=60,
                interval=0.2,
                what=f"the sandbox at {url}",
                watch=[run],
            )

        # docs/college-accounts.md's quick start, with the printed key.
        budget = http.post(
            "/v1/budgets",
            json={"category": "supplies", "financial_year": "2026-27", "allocated_amount": "500000"},
        )
        assert budget.status_code == 201, budget.text
        spent = http.post(
            "/v1/expenses",
            json={
                "amount": "4000.00",
                "category": "supplies",
                "date": "2026-06-15",
                "description": "Printer paper",
                "vendor_name": "Office Mart",
            },
            headers={"Idempotency-Key": "BILL-2026-0142"},
        )
        assert spent.status_code == 201 and spent.json()["status"] == "approved", spent.text
        # Through the running relay and projector into the audit trail.
        group.wait_for(
            lambda: http.get(
                "/v1/audit-logs", params={"entity_type": "expense", "entity_id": spent.json()["id"]}
            ).json()["items"],
            timeout=60,
            interval=0.2,
            what="the expense in the audit trail",
            watch=[run],
        )
        summary = http.get("/v1/budgets/summary", params={"financial_year": "2026-27"}).json()
        assert summary["college_id"] == tenant_id
        assert summary["budgets"][0]["utilized_amount"] == "4000.00"
        # Every child that was up is still the same process: none exited and was restarted.
        assert {p: c for p, c in _children(run.pid).items() if p in first} == first
        http.close()
        assert run.stop() == 0, run.log_tail()
    finally:
        group.close()
