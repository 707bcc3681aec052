"""The fee portal's signed deliveries through the real receiver (POST /v1/hooks/fee-portal/{tenant_id})
and the hook processor, on PostgreSQL: one fee however many times it is delivered, concurrently or
after a crash; forged, foreign and malformed deliveries refused in the error shape."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from connectors.hooks import hex_hmac_sha256
from engine.application import LedgerService
from engine.config import Settings
from engine.payments import PaymentBook, open_inbox
from streams.hooks import HookProcessor
from tests.integration.helpers import client_for, register_tenant
from tests.integration.test_fees_api import events

pytestmark = pytest.mark.integration

SECRET = "fee-portal-secret-1"


def college(service: LedgerService, http: TestClient, secret: str = SECRET) -> tuple[str, dict[str, str]]:
    tenant_id, key = register_tenant(service)
    auth = {"Authorization": f"Bearer {key}"}
    body = {
        "enabled": True,
        "environment": "sandbox",
        "base_url": "http://127.0.0.1:9",  # the portal's address: nothing is ever sent to it
        "credentials": {"webhook_secret": secret},
    }
    saved = http.put("/v1/integrations/fee-portal", json=body, headers=auth)
    assert saved.status_code == 200, saved.text
    assert secret not in saved.text
    return tenant_id, auth


def delivery(receipt: str = "FEE-2024-001234", paise: int = 5000000, **data: Any) -> bytes:
    fee = {
        "receipt_number": receipt,
        "student_id": 5678,
        "student_name": "Jane Student",
        "amount": paise,
        "payment_mode": "upi",
        "payment_date": "2024-01-10",
        "fee_type": "tuition",
        "academic_year": "2023-24",
    }
    return orjson.dumps(
        {"event": "fee.collected", "timestamp": "2024-01-10T10:30:00Z", "data": {**fee, **data}}
    )


def send(http: TestClient, tenant_id: str, body: bytes, secret: str = SECRET) -> Any:
    headers = {"X-Signature": hex_hmac_sha256(secret, body), "Content-Type": "application/json"}
    return http.post(f"/v1/hooks/fee-portal/{tenant_id}", content=body, headers=headers)


def process(settings: Settings, service: LedgerService) -> Any:
    book = PaymentBook(service, open_inbox(settings))
    try:
        return HookProcessor(service, book).run_once()
    finally:
        book.close()


def fees(http: TestClient, auth: dict[str, str]) -> list[dict[str, Any]]:
    page = http.get(
        "/v1/fee-collections", params={"from_date": "2024-01-01", "to_date": "2024-01-31"}, headers=auth
    )
    assert page.status_code == 200, page.text
    return list(page.json()["data"])


def test_a_fee_delivered_many_times_at_once_is_one_collection_in_exact_rupees(
    settings: Settings, service: LedgerService
) -> None:
    http = client_for(settings)
    tenant_id, auth = college(service, http)
    body = delivery(paise=125050, payment_reference="401012345678")

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: send(http, tenant_id, body), range(6)))
    assert {a.status_code for a in answers} <= {200, 202}, [a.text for a in answers]
    first = process(settings, service)
    send(http, tenant_id, body)  # again after it was handled
    second = process(settings, service)

    assert (first.handled, second.handled) == (1, 0)
    [fee] = fees(http, auth)
    assert (fee["receipt_number"], fee["amount"], fee["payment_reference"]) == (
        "FEE-2024-001234",
        "1250.50",
        "401012345678",
    )
    assert events(settings, "%FeeCollection.Recorded%") == 1
    # The same receipt through the REST endpoint is the same collection.
    rest = {k: v for k, v in orjson.loads(body)["data"].items()} | {"amount": "1250.50"}
    assert http.post("/v1/fee-collections", json=rest, headers=auth).status_code == 200


def test_forged_foreign_and_malformed_deliveries_are_refused(
    settings: Settings, service: LedgerService
) -> None:
    http = client_for(settings)
    tenant_a, _ = college(service, http)
    tenant_b, auth_b = college(service, http, secret="b-secret")

    forged = send(http, tenant_a, delivery(), secret="guess")
    foreign = send(http, tenant_b, delivery(), secret=SECRET)  # A's secret on B's address
    malformed = send(http, tenant_a, delivery(paise=-1))
    not_json = send(http, tenant_a, b"\xff\xfe")
    process(settings, service)

    assert (forged.status_code, foreign.status_code) == (401, 401)
    assert forged.json()["error"]["code"] == "invalid_signature"
    assert (malformed.status_code, not_json.status_code) == (400, 400)
    assert malformed.json()["error"]["details"]["fields"][0]["path"] == "data.amount"
    assert fees(http, auth_b) == []
    assert events(settings, "%FeeCollection.Recorded%") == 0
