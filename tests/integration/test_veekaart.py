"""The VeeKaart shop end to end over real HTTP: the API (uvicorn) and the shop sandbox, on the real
PostgreSQL. Catalogue pushes (full, then incremental: only what changed), 429s waited out, the sync
history with failures and their reasons, the auto-sync schedule; order webhooks through the generic
receiver (signed or with the partner key, duplicated and concurrent, malformed, forged), key
regeneration, and tenants kept apart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from connectors.veekaart import sandbox, sync
from connectors.veekaart.signature import SIGNATURE_HEADER, signature
from engine import db
from engine.api.app import create_app
from engine.application import LedgerService
from engine.config import Settings
from engine.payments import PaymentBook, open_inbox
from engine.security.secrets import load_key_ring
from streams.hooks import HookProcessor
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for, register_tenant
from tests.integration.test_api_contract import assert_error_shape

pytestmark = pytest.mark.integration

ACCOUNT = sandbox.SandboxAccount()
SECRET = "whsec-sandbox-1"
PARTNER_KEY = "partner-key-1"


@dataclass
class Stack:
    settings: Settings
    service: LedgerService
    api: LiveServer
    shop: Operator
    shop_url: str
    client: TestClient

    def tenant(self, gstin: str = "27AAGCB7383J1Z8") -> tuple[str, dict[str, str]]:
        tenant_id, key = register_tenant(self.service, gstin=gstin, state=gstin[:2])
        auth = {"Authorization": f"Bearer {key}"}
        saved = self.client.put(
            "/v1/integrations/veekaart",
            json={
                "environment": "sandbox",
                "base_url": self.shop_url,
                "credentials": {
                    "api_key": ACCOUNT.api_key,
                    "partner_api_key": PARTNER_KEY,
                    "webhook_secret": SECRET,
                },
            },
            headers=auth,
        )
        assert saved.status_code == 200, saved.text
        return tenant_id, auth

    def product(self, auth: dict[str, str], sku: str, **changes: Any) -> dict[str, Any]:
        body = {
            "sku": sku,
            "name": f"Item {sku}",
            "hsn": "6109",
            "gst_rate": "5",
            "price": "499",
            "mrp": "599",
        }
        created = self.client.post("/v1/products", json={**body, "stock": "10", **changes}, headers=auth)
        assert created.status_code == 201, created.text
        result: dict[str, Any] = created.json()
        return result

    def sync(self, auth: dict[str, str], kind: str) -> dict[str, Any]:
        run = self.client.post("/v1/integrations/veekaart/sync-runs", json={"kind": kind}, headers=auth)
        assert run.status_code == 201, run.text
        result: dict[str, Any] = run.json()
        return result

    def shop_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.shop.http.get("/_sandbox/shop").json()
        return state

    def hook_url(self, tenant_id: str) -> str:
        return f"{self.api.url}/v1/hooks/veekaart/{tenant_id}"


@pytest.fixture
def stack(settings: Settings, service: LedgerService) -> Iterator[Stack]:
    with LiveServer(create_app(settings)) as api, LiveServer(sandbox.create_app(ACCOUNT)) as shop:
        operator = Operator(shop.url)
        yield Stack(settings, service, api, operator, shop.url, client_for(settings))
        operator.http.close()


def test_a_full_sync_pushes_everything_and_an_incremental_one_only_what_changed(stack: Stack) -> None:
    _, auth = stack.tenant()
    ids = {sku: stack.product(auth, sku)["id"] for sku in ("A-1", "A-2", "A-3")}

    full = stack.sync(auth, "full")
    assert (full["kind"], full["status"], full["trigger"]) == ("full", "succeeded", "manual")
    assert full["counts"] == {"considered": 3, "pushed": 3, "failed": 0, "throttled": 0}
    shop = stack.shop_state()
    assert sorted(shop["products"]) == ["A-1", "A-2", "A-3"]
    assert shop["pricing"]["A-1"]["discount_percentage"] == 16.69  # (599 - 499) / 599
    assert shop["products"]["A-1"] == {
        "sku": "A-1",
        "name": "Item A-1",
        "description": "",
        "hsn_sac_code": "6109",
        "price": 499.0,
        "mrp": 599.0,
        "tax_rate": 5.0,
        "status": "active",
    }

    changed = stack.client.patch(
        f"/v1/products/{ids['A-2']}", json={"stock": "4", "status": "inactive"}, headers=auth
    )
    assert changed.status_code == 200, changed.text
    incremental = stack.sync(auth, "incremental")
    assert incremental["counts"] == {"considered": 1, "pushed": 1, "failed": 0, "throttled": 0}
    shop = stack.shop_state()
    assert shop["inventory"]["A-2"]["available_quantity"] == 4.0
    assert shop["products"]["A-2"]["status"] == "inactive"
    assert shop["writes"]["products:A-2"] == 2 and shop["writes"]["products:A-1"] == 1

    nothing = stack.sync(auth, "incremental")
    assert nothing["counts"]["considered"] == 0 and nothing["status"] == "succeeded"
    history = stack.client.get("/v1/integrations/veekaart/sync-runs", headers=auth).json()["items"]
    assert [r["id"] for r in history] == [nothing["id"], incremental["id"], full["id"]]


def test_a_throttling_shop_is_waited_out_and_the_run_counts_it(stack: Stack) -> None:
    _, auth = stack.tenant()
    stack.product(auth, "T-1")
    stack.shop.faults(rate_limit_rate=1.0, retry_after_s=1, max_faults=2)

    run = stack.sync(auth, "full")

    assert run["status"] == "succeeded" and run["counts"]["throttled"] == 2
    assert stack.shop.stats()["faults_injected"] == {"rate_limit": 2}
    assert "T-1" in stack.shop_state()["inventory"]


def test_an_item_the_shop_refuses_is_a_failure_with_its_reason_and_is_pushed_again_next_time(
    stack: Stack,
) -> None:
    _, auth = stack.tenant()
    stack.product(auth, "OK-1")
    # A chapter-level HSN is in the rate master, but the shop wants at least four digits.
    short = stack.product(auth, "SHORT-1", hsn="61")

    run = stack.sync(auth, "full")

    assert run["status"] == "partial" and run["counts"]["pushed"] == 1 and run["counts"]["failed"] == 1
    assert run["failures"] == [
        {"sku": "SHORT-1", "code": "rejected", "reason": "products.hsn_sac_code: 4 to 8 digits"}
    ]
    again = stack.sync(auth, "incremental")
    assert again["counts"]["considered"] == 1 and again["failures"][0]["sku"] == "SHORT-1"
    fixed = stack.client.patch(f"/v1/products/{short['id']}", json={"hsn": "6109"}, headers=auth)
    assert fixed.status_code == 200, fixed.text
    assert stack.sync(auth, "incremental")["status"] == "succeeded"
    one = stack.client.get(f"/v1/integrations/veekaart/sync-runs/{run['id']}", headers=auth).json()
    assert one["failures"] == run["failures"]


def test_the_auto_sync_runs_when_due_and_only_then(stack: Stack) -> None:
    tenant_id, auth = stack.tenant()
    stack.product(auth, "S-1")
    set_ = stack.client.put(
        "/v1/integrations/veekaart/schedule", json={"enabled": True, "interval_minutes": 15}, headers=auth
    )
    assert set_.status_code == 200 and set_.json()["interval_minutes"] == 15, set_.text
    assert (
        stack.client.put(
            "/v1/integrations/veekaart/schedule", json={"enabled": True, "interval_minutes": 1}, headers=auth
        ).status_code
        == 422
    )
    ring = load_key_ring(stack.settings.var_dir)

    now = datetime.now(UTC)
    assert asyncio.run(sync.run_due(stack.service, ring, now)) == []
    runs = asyncio.run(sync.run_due(stack.service, ring, now + timedelta(minutes=16)))
    assert [(r["trigger"], r["kind"], r["counts"]["pushed"]) for r in runs] == [
        ("schedule", "incremental", 1)
    ]
    # Claimed: the next run is an interval later, not again at once.
    assert asyncio.run(sync.run_due(stack.service, ring, now + timedelta(minutes=17))) == []
    schedule = stack.client.get("/v1/integrations/veekaart/schedule", headers=auth).json()
    assert datetime.fromisoformat(schedule["next_run_at"]) > now + timedelta(minutes=30)
    assert UUID(tenant_id)


def order(order_id: str = "VK-1001", **changes: Any) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "order_date": "2026-12-01",
        "customer": {
            "name": "Asha Rao",
            "phone": "+91 98450 12345",
            "email": "asha@example.in",
            "state_code": "29",
        },
        "items": [
            {"sku": "A-1", "name": "T-shirt", "hsn_sac_code": "6109", "quantity": 2, "price": "499.00"}
        ],
        "total_amount": "1047.90",
        **changes,
    }


def customers(stack: Stack, tenant_id: str) -> list[Any]:
    with db.transaction(stack.service.pool) as conn:
        return conn.execute(
            "SELECT identity_key, name, source FROM customers WHERE tenant_id = %s", (tenant_id,)
        ).fetchall()


def test_an_order_delivered_many_times_at_once_is_stored_and_handled_once(stack: Stack) -> None:
    tenant_id, auth = stack.tenant()
    stack.product(auth, "A-1")
    sent = stack.shop.http.post(
        "/_sandbox/orders",
        json={
            "url": stack.hook_url(tenant_id),
            "order": order(),
            "secret": SECRET,
            "copies": 6,
            "concurrent": True,
        },
        timeout=60,
    ).json()
    assert [a[-1] for a in sent["attempts"]] == [200] * 6
    again = stack.shop.http.post(
        "/_sandbox/orders",
        json={
            "url": stack.hook_url(tenant_id),
            "order": order(),
            "auth": "api_key",
            "partner_api_key": PARTNER_KEY,
        },
        timeout=60,
    ).json()
    assert again["last_status"] == 200

    book = PaymentBook(stack.service, open_inbox(stack.settings))
    try:
        result = HookProcessor(stack.service, book).run_once()
    finally:
        book.close()
    # One stored delivery for seven sends, handled once.
    assert (result.handled, result.skipped) == (1, 0)
    assert customers(stack, tenant_id) == [
        {"identity_key": "phone:9845012345", "name": "Asha Rao", "source": "veekaart"}
    ]


def test_a_malformed_order_gets_its_field_errors_and_a_forged_one_a_401(stack: Stack) -> None:
    tenant_id, _ = stack.tenant()
    url = stack.hook_url(tenant_id)
    bad = orjson.dumps(order(customer={"name": "A"}, total_amount=None))
    refused = httpx.post(url, content=bad, headers={SIGNATURE_HEADER: signature(SECRET, bad)})
    assert refused.status_code == 400
    assert_error_shape(refused.json(), "malformed_delivery")
    fields = refused.json()["error"]["details"]["fields"]
    assert [(f["path"], f["code"]) for f in fields] == [("total_amount", "decimal_type")], fields
    incomplete = orjson.dumps(order(customer={"name": "A"}))
    refused = httpx.post(url, content=incomplete, headers={SIGNATURE_HEADER: signature(SECRET, incomplete)})
    paths = {f["path"] for f in refused.json()["error"]["details"]["fields"]}
    assert refused.status_code == 400 and paths == {"customer", "customer.state_code"}

    good = orjson.dumps(order())
    for headers in (
        {SIGNATURE_HEADER: signature("not-the-secret", good)},
        {SIGNATURE_HEADER: signature(SECRET, good + b" ")},
        {"Authorization": "Bearer not-the-key"},
        {},
    ):
        forged = httpx.post(url, content=good, headers=headers)
        assert forged.status_code == 401, headers
        assert_error_shape(forged.json(), "invalid_signature")
    # An order signed for this tenant is refused at another tenant's URL.
    other_id, _ = stack.tenant(gstin="29AAGCB7383J1Z4")
    with db.transaction(stack.service.pool) as conn:
        conn.execute("DELETE FROM integrations WHERE tenant_id = %s", (other_id,))
    wrong = httpx.post(
        stack.hook_url(other_id), content=good, headers={SIGNATURE_HEADER: signature(SECRET, good)}
    )
    assert wrong.status_code == 401


def test_regenerated_keys_replace_the_old_ones_and_tenants_see_only_their_own(stack: Stack) -> None:
    tenant_id, auth = stack.tenant()
    other_id, other_auth = stack.tenant(gstin="29AAGCB7383J1Z4")
    url = stack.hook_url(tenant_id)

    new_key = stack.client.post("/v1/integrations/veekaart/partner-key", headers=auth).json()[
        "partner_api_key"
    ]
    new_secret = stack.client.post("/v1/integrations/veekaart/webhook-secret", headers=auth).json()[
        "webhook_secret"
    ]
    assert new_key.startswith("vk_") and len(new_key) > 40 and new_key != new_secret
    body = orjson.dumps(order("VK-2"))
    assert (
        httpx.post(url, content=body, headers={"Authorization": f"Bearer {PARTNER_KEY}"}).status_code == 401
    )
    assert httpx.post(url, content=body, headers={"Authorization": f"Bearer {new_key}"}).status_code == 200
    body = orjson.dumps(order("VK-3"))
    # The replaced secret still verifies (the shop's retries of earlier orders); the new one too.
    assert (
        httpx.post(url, content=body, headers={SIGNATURE_HEADER: signature(SECRET, body)}).status_code == 200
    )
    body = orjson.dumps(order("VK-4"))
    assert (
        httpx.post(url, content=body, headers={SIGNATURE_HEADER: signature(new_secret, body)}).status_code
        == 200
    )
    shown = stack.client.get("/v1/integrations/veekaart", headers=auth).text
    assert new_key not in shown and new_secret not in shown
    # The other tenant's key is untouched and opens nothing of this tenant.
    assert (
        httpx.post(url, content=body, headers={"Authorization": f"Bearer {PARTNER_KEY}"}).status_code == 401
    )
    other_url = stack.hook_url(other_id)
    body = orjson.dumps(order("VK-5"))
    assert (
        httpx.post(other_url, content=body, headers={"Authorization": f"Bearer {PARTNER_KEY}"}).status_code
        == 200
    )

    stack.product(auth, "MINE-1")
    run = stack.sync(auth, "full")
    assert stack.client.get("/v1/integrations/veekaart/sync-runs", headers=other_auth).json()["items"] == []
    assert (
        stack.client.get(f"/v1/integrations/veekaart/sync-runs/{run['id']}", headers=other_auth).status_code
        == 404
    )
    assert stack.sync(other_auth, "full")["counts"]["considered"] == 0


def test_without_the_integration_there_is_nothing_to_sync_or_regenerate(stack: Stack) -> None:
    _, key = register_tenant(stack.service)
    auth = {"Authorization": f"Bearer {key}"}
    for path in ("sync-runs", "partner-key", "webhook-secret"):
        answer = stack.client.post(f"/v1/integrations/veekaart/{path}", json={}, headers=auth)
        assert answer.status_code == 409, (path, answer.text)
        assert_error_shape(answer.json(), "integration_not_configured")


def test_one_sync_at_a_time_and_a_run_abandoned_by_a_stopped_process_does_not_block(stack: Stack) -> None:
    tenant_id, auth = stack.tenant()
    stack.product(auth, "R-1")
    with db.transaction(stack.service.pool) as conn:
        conn.execute(
            "INSERT INTO veekaart_sync_runs (run_id, tenant_id, kind, trigger, status)"
            " VALUES (gen_random_uuid(), %s, 'full', 'manual', 'running') RETURNING run_id",
            (tenant_id,),
        )
    busy = stack.client.post("/v1/integrations/veekaart/sync-runs", json={"kind": "full"}, headers=auth)
    assert busy.status_code == 409
    assert_error_shape(busy.json(), "sync_in_progress")
    running_id = busy.json()["error"]["details"]["run_id"]

    with db.transaction(stack.service.pool) as conn:
        conn.execute(
            "UPDATE veekaart_sync_runs SET started_at = now() - interval '31 minutes' WHERE run_id = %s",
            (running_id,),
        )
    run = stack.sync(auth, "full")
    assert run["status"] == "succeeded"
    abandoned = stack.client.get(f"/v1/integrations/veekaart/sync-runs/{running_id}", headers=auth).json()
    assert abandoned["status"] == "failed" and abandoned["failures"][0]["code"] == "abandoned"


def test_an_order_becomes_one_draft_invoice_for_its_customer_even_when_handled_again(stack: Stack) -> None:
    tenant_id, auth = stack.tenant()
    stack.product(auth, "A-1")  # the order's item carries no tax_rate: the catalogue's 5% applies
    stack.shop.http.post(
        "/_sandbox/orders",
        json={
            "url": stack.hook_url(tenant_id),
            "order": order("VK-77"),
            "secret": SECRET,
            "copies": 4,
            "concurrent": True,
        },
        timeout=60,
    ).raise_for_status()
    book = PaymentBook(stack.service, open_inbox(stack.settings))
    try:
        processor = HookProcessor(stack.service, book)
        assert processor.run_once().handled == 1
        # A crash after the draft but before the inbox position moved: the delivery is handled again.
        with db.transaction(stack.service.pool) as conn:
            conn.execute("DELETE FROM inbound_webhook_position")
        assert processor.run_once().handled == 1
    finally:
        book.close()
    drafts = stack.client.get("/v1/invoices/drafts", headers=auth).json()
    items = drafts["items"]
    assert [(d["source"], d["external_ref"], d["buyer_name"], d["status"]) for d in items] == [
        ("veekaart", "VK-77", "Asha Rao", "draft")
    ]
    draft = stack.client.get(f"/v1/invoices/drafts/{items[0]['id']}", headers=auth).json()
    assert draft["number"] is None and draft["status"] == "draft"
