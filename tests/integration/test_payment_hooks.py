"""Inbound payment webhooks end to end: the Razorpay sandbox signs and sends deliveries over real HTTP to
the API (uvicorn), the receiver verifies and stores them, the hook processor turns them into payments,
and the payments are applied to invoices; on the real PostgreSQL (and Kafka for the published events)."""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import fastavro
import httpx
import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from connectors.razorpay import sandbox, subscriptions
from connectors.razorpay.signature import EVENT_ID_HEADER, SIGNATURE_HEADER, signature
from connectors.stripe import signature as stripe_signature
from engine.api.app import create_app
from engine.application import LedgerService
from engine.config import Settings
from engine.payments import PaymentBook, open_inbox
from engine.relay import Relay
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from streams.hooks import HookProcessor
from tests.conftest import BackgroundLoop, wait_for
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for, invoice_body, register_tenant
from tests.integration.test_api_contract import assert_error_shape
from tests.integration.test_backbone import read_topic

pytestmark = pytest.mark.integration

ACCOUNT = sandbox.SandboxAccount()
# 2026-02-01 10:00 UTC: in financial year 2025-26, the year of the test invoices (dated 2026-01-19).
PAID_AT = 1769940000


@dataclass
class Stack:
    settings: Settings
    service: LedgerService
    api: LiveServer
    sandbox: LiveServer
    operator: Operator
    client: TestClient
    book: PaymentBook
    processor: HookProcessor

    def tenant(
        self, *, secret: str = ACCOUNT.webhook_secret, gstin: str = "27AAGCB7383J1Z8"
    ) -> tuple[str, dict[str, str]]:
        tenant_id, key = register_tenant(self.service, gstin=gstin, state=gstin[:2])
        auth = {"Authorization": f"Bearer {key}"}
        saved = self.client.put(
            "/v1/integrations/razorpay",
            json={
                "environment": "sandbox",
                "base_url": self.sandbox.url,
                "credentials": {**ACCOUNT.credentials(), "webhook_secret": secret},
            },
            headers=auth,
        )
        assert saved.status_code == 200, saved.text
        assert secret not in saved.text
        return tenant_id, auth

    def hook_url(self, tenant_id: str, provider: str = "razorpay") -> str:
        return f"{self.api.url}/v1/hooks/{provider}/{tenant_id}"

    def deliver(
        self,
        tenant_id: str,
        events: list[dict[str, Any]],
        secret: str = ACCOUNT.webhook_secret,
        **options: Any,
    ) -> dict[str, Any]:
        response = self.operator.http.post(
            "/_sandbox/deliveries",
            json={"url": self.hook_url(tenant_id), "secret": secret, "events": events, **options},
            timeout=600,
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def payments(self, auth: dict[str, str], **query: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {**query, "limit": "500", **({"cursor": cursor} if cursor else {})}
            page = self.client.get("/v1/payments", params=params, headers=auth)
            assert page.status_code == 200, page.text
            items += page.json()["items"]
            cursor = page.json()["next"]
            if cursor is None:
                return items


@pytest.fixture
def stack(settings: Settings, service: LedgerService) -> Iterator[Stack]:
    book = PaymentBook(service, open_inbox(settings))
    with LiveServer(create_app(settings)) as api, LiveServer(sandbox.create_app(ACCOUNT)) as rzp:
        operator = Operator(rzp.url)
        yield Stack(
            settings, service, api, rzp, operator, client_for(settings), book, HookProcessor(service, book)
        )
        operator.http.close()
    book.close()


def payment_event(
    event: str,
    payment_id: str,
    amount: int,
    *,
    event_id: str,
    notes: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    entity = {
        "id": payment_id,
        "entity": "payment",
        "amount": amount,
        "currency": "INR",
        "status": event.split(".")[1],
        "method": "upi",
        "email": "accounts@reliable.example",
        "notes": notes or [],
        "created_at": PAID_AT,
        **extra,
    }
    return {
        "event": event,
        "event_id": event_id,
        "payload": {"payment": {"entity": entity}},
        "created_at": PAID_AT + 60,
    }


def refund_event(
    payment_id: str,
    amount: int,
    payment_amount: int,
    *,
    refund_id: str,
    event_id: str,
    notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    event = payment_event("payment.captured", payment_id, payment_amount, event_id=event_id, notes=notes)
    event["event"] = "refund.processed"
    event["payload"]["refund"] = {
        "entity": {
            "id": refund_id,
            "entity": "refund",
            "payment_id": payment_id,
            "amount": amount,
            "currency": "INR",
        }
    }
    return event


def inbox_count(settings: Settings) -> int:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        row = conn.execute("SELECT count(*) FROM inbox_events").fetchone()
    assert row is not None
    return int(row[0])


def raw_post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": "application/json", **headers}, timeout=30)


# -- 1. a thousand deliveries, 20% duplicated, shuffled -------------------------------------------


def test_a_thousand_shuffled_deliveries_with_duplicates_end_in_the_exact_final_states(stack: Stack) -> None:
    tenant_id, auth = stack.tenant()
    events: list[dict[str, Any]] = []
    expected: dict[str, tuple[str, str]] = {}  # payment id -> (status, amount refunded)
    for i in range(125):  # 4 payments and 8 events per round: 1,000 events
        a, b, c, d = (f"pay_{i:04d}{k}" for k in "abcd")
        events += [
            payment_event("payment.authorized", a, 10_000, event_id=f"evt_{a}_1"),
            payment_event("payment.captured", a, 10_000, event_id=f"evt_{a}_2"),
            payment_event("payment.authorized", b, 25_050, event_id=f"evt_{b}_1"),
            payment_event("payment.captured", b, 25_050, event_id=f"evt_{b}_2"),
            refund_event(b, 5_025, 25_050, refund_id=f"rfnd_{b}", event_id=f"evt_{b}_3"),
            payment_event("payment.captured", c, 99_999, event_id=f"evt_{c}_1"),
            refund_event(c, 99_999, 99_999, refund_id=f"rfnd_{c}", event_id=f"evt_{c}_2"),
            payment_event("payment.failed", d, 1_000, event_id=f"evt_{d}_1", error_code="BAD_REQUEST_ERROR"),
        ]
        expected |= {
            a: ("captured", "0.00"),
            b: ("partially_refunded", "50.25"),
            c: ("refunded", "999.99"),
            d: ("failed", "0.00"),
        }
    assert len(events) == 1000

    result = stack.deliver(tenant_id, events, duplicate_rate=0.2, shuffle=True, seed=12, concurrency=8)

    assert (result["sent"], result["undelivered"]) == (1200, 0)
    assert {o["status"] for o in result["outcomes"]} == {200}
    # Stored before each 200, once per provider event.
    assert inbox_count(stack.settings) == 1000

    done = stack.processor.run_once()
    assert (done.handled, done.skipped) == (1000, 0)
    assert stack.processor.run_once().handled == 0  # nothing twice

    payments = stack.payments(auth)
    assert len(payments) == 500
    found = {p["provider_payment_id"]: (p["status"], p["amount_refunded"]) for p in payments}
    assert found == expected
    assert Counter(s for s, _ in found.values()) == {
        "captured": 125,
        "partially_refunded": 125,
        "refunded": 125,
        "failed": 125,
    }
    only_refunded = stack.payments(auth, status="refunded")
    assert {p["provider_payment_id"] for p in only_refunded} == {
        k for k, v in expected.items() if v[0] == "refunded"
    }


# -- 2. signatures, tenants, duplicates, crash safety ---------------------------------------------


def test_forged_missing_and_other_tenants_signatures_are_401_and_record_nothing(stack: Stack) -> None:
    tenant_a, _ = stack.tenant(secret="secret-of-tenant-a")
    tenant_b, _ = stack.tenant(secret="secret-of-tenant-b", gstin="29AAGCB7383J1Z4")
    event_id, body = sandbox.event_body(
        sandbox.OutgoingEvent(**payment_event("payment.captured", "pay_x", 100, event_id="evt_x"))
    )
    good_a = {SIGNATURE_HEADER: signature("secret-of-tenant-a", body), EVENT_ID_HEADER: event_id}

    refused = [
        raw_post(stack.hook_url(tenant_b), body, good_a),  # A's secret never verifies for B
        raw_post(stack.hook_url(tenant_a), body, {EVENT_ID_HEADER: event_id}),  # missing
        raw_post(stack.hook_url(tenant_a), body.replace(b"100", b"999"), good_a),  # tampered
        raw_post(stack.hook_url(tenant_a), body, {**good_a, SIGNATURE_HEADER: "00" * 32}),  # forged
        raw_post(stack.hook_url("4f9e2a8c-0000-4000-8000-000000000000"), body, good_a),  # no such tenant
        raw_post(stack.hook_url("not-a-uuid"), body, good_a),
    ]
    for response in refused:
        assert response.status_code == 401, response.text
        assert_error_shape(response.json(), "invalid_signature")
    # The unknown tenant and the wrong secret cannot be told apart.
    assert refused[0].json()["error"]["message"] == refused[4].json()["error"]["message"]
    assert inbox_count(stack.settings) == 0

    unknown = raw_post(stack.hook_url(tenant_a, "paypal"), body, good_a)
    assert unknown.status_code == 404
    assert_error_shape(unknown.json(), "not_found")

    accepted = raw_post(stack.hook_url(tenant_a), body, good_a)
    assert accepted.status_code == 200 and accepted.json() == {"received": True, "duplicate": False}
    assert inbox_count(stack.settings) == 1


def test_hostile_bodies_are_clear_4xx_never_500(stack: Stack) -> None:
    tenant_id, auth = stack.tenant()
    url = stack.hook_url(tenant_id)

    def signed(body: bytes, event_id: str = "evt_h") -> httpx.Response:
        return raw_post(
            url, body, {SIGNATURE_HEADER: signature(ACCOUNT.webhook_secret, body), EVENT_ID_HEADER: event_id}
        )

    not_json = signed(b"\x00\xff not json")
    assert not_json.status_code == 400
    assert_error_shape(not_json.json(), "malformed_delivery")
    assert signed(b'{"payload": {}}').status_code == 400
    assert signed(b'{"event": "payment.captured"}', "evt\x7f").status_code == 400
    too_large = raw_post(url, b"{" + b" " * 300_000 + b"}", {SIGNATURE_HEADER: "00"})
    assert too_large.status_code == 413
    assert_error_shape(too_large.json(), "payload_too_large")
    assert inbox_count(stack.settings) == 0

    # Signed and stored, but its amount is out of range: the processor passes over it and goes on.
    huge = payment_event("payment.captured", "pay_huge", 10**18, event_id="evt_huge")
    fine = payment_event("payment.captured", "pay_fine", 500, event_id="evt_fine")
    kannada = payment_event("payment.captured", "pay_ಕನ್ನಡ", 500, event_id="evt_kannada")
    # A bidi override could make an id display as another one: refused like a control character.
    bidi = payment_event("payment.captured", "pay_\u202eevil", 500, event_id="evt_bidi")
    result = stack.deliver(tenant_id, [huge, kannada, bidi, fine])
    assert result["undelivered"] == 0
    done = stack.processor.run_once()
    assert (done.handled, done.skipped) == (2, 2)
    ids = sorted(p["provider_payment_id"] for p in stack.payments(auth))
    assert ids == sorted(["pay_fine", "pay_ಕನ್ನಡ"])


def test_twenty_concurrent_copies_of_one_delivery_store_it_once(stack: Stack) -> None:
    tenant_id, _ = stack.tenant()
    event_id, body = sandbox.event_body(
        sandbox.OutgoingEvent(**payment_event("payment.captured", "pay_c", 700, event_id="evt_c"))
    )
    headers = {SIGNATURE_HEADER: signature(ACCOUNT.webhook_secret, body), EVENT_ID_HEADER: event_id}

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: raw_post(stack.hook_url(tenant_id), body, headers), range(20)))

    assert [r.status_code for r in responses] == [200] * 20
    assert sum(1 for r in responses if not r.json()["duplicate"]) == 1
    assert inbox_count(stack.settings) == 1


def test_a_delivery_acknowledged_before_a_crash_is_processed_by_the_next_processor(stack: Stack) -> None:
    tenant_id, auth = stack.tenant()
    stack.deliver(tenant_id, [payment_event("payment.captured", "pay_crash", 1_234, event_id="evt_crash")])
    # No processor ran: the delivery waits in the store. A new processor (as after a restart) finds it.
    assert stack.payments(auth) == []
    fresh = HookProcessor(stack.service, stack.book)
    assert fresh.run_once().handled == 1
    [payment] = stack.payments(auth)
    assert (payment["provider_payment_id"], payment["status"], payment["amount"]) == (
        "pay_crash",
        "captured",
        "12.34",
    )


def test_a_rotated_webhook_secret_keeps_the_old_one_valid_and_both_verify(stack: Stack) -> None:
    tenant_id, auth = stack.tenant(secret="first-secret")
    rotated = stack.client.put(
        "/v1/integrations/razorpay", json={"credentials": {"webhook_secret": "second-secret"}}, headers=auth
    )
    assert rotated.status_code == 200, rotated.text
    old = stack.deliver(
        tenant_id, [payment_event("payment.captured", "pay_o", 100, event_id="evt_o")], secret="first-secret"
    )
    new = stack.deliver(
        tenant_id, [payment_event("payment.captured", "pay_n", 100, event_id="evt_n")], secret="second-secret"
    )
    wrong = stack.deliver(
        tenant_id,
        [payment_event("payment.captured", "pay_w", 100, event_id="evt_w")],
        secret="third",
        max_attempts=1,
    )
    assert (old["undelivered"], new["undelivered"], wrong["undelivered"]) == (0, 0, 1)
    assert inbox_count(stack.settings) == 2


def test_a_stripe_delivery_is_verified_with_its_timestamp_and_refused_when_stale(stack: Stack) -> None:
    tenant_id, key = register_tenant(stack.service)
    auth = {"Authorization": f"Bearer {key}"}
    saved = stack.client.put(
        "/v1/integrations/stripe",
        json={
            "base_url": stack.sandbox.url,
            "credentials": {"secret_key": "sk_test_1", "webhook_secret": "whsec_s"},
        },
        headers=auth,
    )
    assert saved.status_code == 200, saved.text
    body = orjson.dumps(
        {
            "id": "evt_s1",
            "type": "payment_intent.succeeded",
            "created": PAID_AT,
            "data": {"object": {"id": "pi_1", "amount": 50_000, "currency": "inr", "created": PAID_AT}},
        }
    )
    url = stack.hook_url(tenant_id, "stripe")
    now = int(time.time())
    stale = raw_post(url, body, {"Stripe-Signature": stripe_signature.header("whsec_s", now - 301, body)})
    assert stale.status_code == 401
    assert_error_shape(stale.json(), "stale_delivery")
    fresh = raw_post(url, body, {"Stripe-Signature": stripe_signature.header("whsec_s", now, body)})
    assert fresh.status_code == 200, fresh.text
    stack.processor.run_once()
    [payment] = stack.payments(auth)
    assert (payment["provider"], payment["provider_payment_id"], payment["status"], payment["amount"]) == (
        "stripe",
        "pi_1",
        "captured",
        "500.00",
    )


# -- 3. payments applied to invoices, receivables, and the published events ---------------------


def test_payments_are_applied_to_the_invoice_they_name_and_refunds_reduce_what_is_paid(
    stack: Stack, topics: list[str], background: BackgroundLoop
) -> None:
    tenant_id, auth = stack.tenant()
    _, other_auth = stack.tenant(gstin="29AAGCB7383J1Z4")
    invoice = stack.client.post("/v1/invoices", json=invoice_body("INV-PAY-1"), headers=auth).json()
    stranger = stack.client.post("/v1/invoices", json=invoice_body("INV-PAY-1"), headers=other_auth).json()
    assert invoice["totals"]["total"] == "1180.00"

    def invoice_state() -> tuple[str, str, str]:
        shown = stack.client.get(f"/v1/invoices/{invoice['id']}", headers=auth).json()
        return shown["payment_status"], shown["amount_paid"], shown["outstanding"]

    assert invoice_state() == ("unpaid", "0.00", "1180.00")
    by_number = {"invoice_number": "inv-pay-1"}  # numbers match case-insensitively, as the IRP's do
    stack.deliver(
        tenant_id,
        [
            payment_event("payment.captured", "pay_i1", 50_000, event_id="evt_i1", notes=by_number),
            payment_event(
                "payment.authorized", "pay_i2", 68_000, event_id="evt_i2", notes={"invoice_id": invoice["id"]}
            ),
            # Another tenant's invoice id is never applied.
            payment_event(
                "payment.captured", "pay_i3", 10_000, event_id="evt_i3", notes={"invoice_id": stranger["id"]}
            ),
        ],
    )
    stack.processor.run_once()
    assert invoice_state() == ("partially_paid", "500.00", "680.00")  # pay_i2 is only authorised

    stack.deliver(
        tenant_id,
        [
            payment_event(
                "payment.captured", "pay_i2", 68_000, event_id="evt_i2b", notes={"invoice_id": invoice["id"]}
            )
        ],
    )
    stack.processor.run_once()
    assert invoice_state() == ("paid", "1180.00", "0.00")

    stack.deliver(
        tenant_id,
        [refund_event("pay_i1", 10_000, 50_000, refund_id="rfnd_i1", event_id="evt_i4", notes=by_number)],
    )
    stack.processor.run_once()
    assert invoice_state() == ("partially_paid", "1080.00", "100.00")
    shown_stranger = stack.client.get(f"/v1/invoices/{stranger['id']}", headers=other_auth).json()
    assert shown_stranger["payment_status"] == "unpaid"
    [unapplied] = [p for p in stack.payments(auth) if p["provider_payment_id"] == "pay_i3"]
    assert unapplied["invoice_id"] is None
    # Tenants are strangers: B cannot read A's payment.
    assert stack.client.get(f"/v1/payments/{unapplied['id']}", headers=other_auth).status_code == 404
    assert stack.client.get(f"/v1/payments/{unapplied['id']}", headers=auth).status_code == 200

    # Receivables come from the invoice register (the projection) and the applied payments.
    background.start(Relay(stack.settings).run)
    background.start(ProjectionRunner(stack.settings, InvoiceRegister()).run)
    wait_for(
        lambda: stack.client.get("/v1/invoices", headers=auth).json()["items"],
        what="the invoice in the register",
    )
    receivable = stack.client.get("/v1/receivables", params={"as_of": "2026-05-01"}, headers=auth).json()
    assert receivable["totals"] == {
        "buckets": {"0_30": "0.00", "31_60": "0.00", "61_90": "0.00", "over_90": "100.00"},
        "outstanding": "100.00",
    }
    [customer] = receivable["items"]
    assert customer["customer"]["name"] == "Reliable Traders Pvt Ltd"
    assert [i["outstanding"] for i in customer["invoices"]] == ["100.00"]
    early = stack.client.get("/v1/receivables", params={"as_of": "2026-02-10"}, headers=auth).json()
    assert early["totals"]["buckets"]["0_30"] == "100.00"

    # The payments' events reach ledger.payment.v1, decodable with the schema the API serves.
    messages = read_topic(stack.settings, stack.settings.topic("ledger.payment.v1"), expected=8)
    types = Counter(dict(m.headers())["ce_type"].decode() for m in messages)
    assert types == {
        "ledgerflow.payment.recorded": 3,
        "ledgerflow.payment.status_changed": 4,
        "ledgerflow.payment.refunded": 1,
    }
    refunded = next(m for m in messages if dict(m.headers())["ce_type"] == b"ledgerflow.payment.refunded")
    schema = fastavro.parse_schema(
        stack.client.get(dict(refunded.headers())["ce_dataschema"].decode()).json()
    )
    record: Any = fastavro.schemaless_reader(io.BytesIO(refunded.value()[10:]), schema)
    assert (record["refund_id"], record["amount"], record["tenant_id"]) == ("rfnd_i1", "100.00", tenant_id)
    background.check()


# -- 4. Razorpay subscriptions ----------------------------------------------------------------------


def test_a_subscription_is_created_once_even_when_razorpays_answer_is_lost_and_webhooks_drive_its_status(
    stack: Stack,
) -> None:
    tenant_id, auth = stack.tenant()
    _, other_auth = stack.tenant(gstin="29AAGCB7383J1Z4")
    body = {"plan_id": "plan_monthly", "customer": "cust_1", "total_count": 6}
    key = {"Idempotency-Key": "sub-req-1"}
    # An earlier attempt recorded the request and Razorpay created it, but the answer was lost
    # before the link was recorded (a crash, a dropped connection): Razorpay holds a subscription
    # carrying our id in its notes, and the ledger has none linked.
    requested = subscriptions.request(
        stack.service,
        UUID(tenant_id),
        plan_id="plan_monthly",
        customer_id="cust_1",
        total_count=6,
        key="sub-req-1",
    )
    created = httpx.post(
        f"{stack.sandbox.url}/v1/subscriptions",
        json={
            "plan_id": "plan_monthly",
            "customer_id": "cust_1",
            "notes": {subscriptions.NOTE: str(requested.id)},
        },
        auth=(ACCOUNT.key_id, ACCOUNT.key_secret),
    ).raise_for_status()
    assert stack.operator.stats()["effects"]["subscription_created"] == 1

    retried = stack.client.post("/v1/subscriptions", json=body, headers={**auth, **key})
    again = stack.client.post("/v1/subscriptions", json=body, headers={**auth, **key})
    assert retried.status_code == again.status_code == 201, retried.text
    opened = retried.json()
    assert opened == again.json()
    assert opened["id"] == str(requested.id)
    assert opened["provider_subscription_id"] == created.json()["id"]  # adopted, not created again
    assert opened["provider_subscription_id"].startswith("sub_") and opened["status"] == "created"
    assert stack.operator.stats()["effects"]["subscription_created"] == 1  # never twice
    reused = stack.client.post(
        "/v1/subscriptions", json={**body, "plan_id": "plan_other"}, headers={**auth, **key}
    )
    assert reused.status_code == 422
    assert_error_shape(reused.json(), "idempotency_key_reused")

    # Razorpay's subscription.* deliveries, shuffled: the latest reported status wins.
    provider_id = opened["provider_subscription_id"]
    events = []
    for offset, name in enumerate(
        [
            "subscription.authenticated",
            "subscription.activated",
            "subscription.charged",
            "subscription.charged",
        ]
    ):
        made = stack.operator.http.post(f"/_sandbox/subscriptions/{provider_id}/events", json={"event": name})
        made.raise_for_status()
        events.append({**made.json(), "event_id": f"evt_sub_{offset}", "created_at": PAID_AT + offset * 60})
    result = stack.deliver(tenant_id, events, duplicate_rate=0.5, shuffle=True, seed=3)
    assert result["undelivered"] == 0
    stack.processor.run_once()
    shown = stack.client.get(f"/v1/subscriptions/{opened['id']}", headers=auth).json()
    assert (shown["status"], shown["paid_count"]) == ("active", 2)

    halted = stack.operator.http.post(
        f"/_sandbox/subscriptions/{provider_id}/events", json={"event": "subscription.cancelled"}
    ).json()
    late = {**events[0], "event_id": "evt_sub_late", "created_at": PAID_AT + 3600}
    stack.deliver(tenant_id, [{**halted, "event_id": "evt_sub_end", "created_at": PAID_AT + 600}, late])
    stack.processor.run_once()
    # Cancelled is an end: a later "authenticated" report cannot revive it.
    assert stack.client.get(f"/v1/subscriptions/{opened['id']}", headers=auth).json()["status"] == "cancelled"
    assert stack.client.get(f"/v1/subscriptions/{opened['id']}", headers=other_auth).status_code == 404
