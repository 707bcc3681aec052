"""API -> event store -> relay -> Kafka -> projection -> GET, on the real broker and database."""

from __future__ import annotations

import io
import uuid
from typing import Any

import fastavro
import psycopg
import pytest
from confluent_kafka import Consumer

from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import client_for, invoice_body, register_tenant

pytestmark = pytest.mark.integration


def read_topic(settings: Settings, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    """Read a topic from the beginning with confluent-kafka (librdkafka), a client independent of ours."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []

    def poll() -> bool:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            messages.append(msg)
        return len(messages) >= expected

    try:
        wait_for(poll, timeout=timeout, interval=0, what=f"{expected} messages on {topic}")
    finally:
        consumer.close()
    return messages


def test_an_invoice_travels_from_the_api_to_kafka_and_back_through_the_projection(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    _, api_key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {api_key}"}

    created = client.post("/v1/invoices", json=invoice_body(), headers=auth)
    assert created.status_code == 201, created.text
    invoice = created.json()
    assert invoice["status"] == "issued"
    assert invoice["totals"] == {
        "taxable": "1000.00",
        "cgst": "90.00",
        "sgst": "90.00",
        "igst": "0.00",
        "cess": "0.00",
        "total": "1180.00",
    }

    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)

    # Read back with librdkafka and decode with nothing but the schema the API serves.
    messages = read_topic(settings, settings.topic("ledger.invoice.v1"), expected=1)
    msg = messages[0]
    headers = {k: v.decode() for k, v in msg.headers()}
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "ledgerflow.invoice.issued"
    assert headers["ce_subject"] == invoice["id"] == msg.key().decode()
    assert headers["content-type"] == "application/avro"
    assert headers["ce_source"].startswith("/tenants/")
    assert headers["traceparent"].startswith("00-")
    value = msg.value()
    assert value[:2] == b"\xc3\x01"
    fingerprint = value[2:10].hex()
    assert headers["ce_dataschema"] == f"/v1/schemas/{fingerprint}"
    schema_response = client.get(headers["ce_dataschema"])
    assert schema_response.status_code == 200
    schema = fastavro.parse_schema(schema_response.json())
    record = fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)
    assert record["number"] == "INV-2026-001"
    assert record["totals"]["total"] == "1180.00"
    assert record["event_id"] == headers["ce_id"]

    listed = wait_for(
        lambda: client.get("/v1/invoices", headers=auth).json()["items"], what="the invoice in the register"
    )
    assert [i["id"] for i in listed] == [invoice["id"]]
    fetched = client.get(f"/v1/invoices/{invoice['id']}", headers=auth)
    assert fetched.status_code == 200
    assert "X-Ledgerflow-Read-Source" not in fetched.headers
    assert fetched.json()["totals"] == invoice["totals"]
    assert fetched.json()["lines"] == invoice["lines"]

    cancelled = client.post(
        f"/v1/invoices/{invoice['id']}/cancel", json={"reason": "order_cancelled"}, headers=auth
    )
    assert cancelled.status_code == 200, cancelled.text
    wait_for(
        lambda: client.get("/v1/invoices?status=cancelled", headers=auth).json()["items"],
        what="the cancellation reaching the register",
    )
    background.check()


def test_a_retried_request_with_the_same_idempotency_key_creates_one_invoice(
    service: LedgerService, settings: Settings
) -> None:
    _, api_key = register_tenant(service)
    client = client_for(settings)
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "order-42"}

    first = client.post("/v1/invoices", json=invoice_body("INV-42"), headers=headers)
    second = client.post("/v1/invoices", json=invoice_body("INV-42"), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"

    reused = client.post("/v1/invoices", json=invoice_body("INV-43"), headers=headers)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"

    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        stored = conn.execute(
            "SELECT count(*) FROM ledger_events WHERE topic LIKE '%Invoice.Issued'"
        ).fetchone()
    assert stored == (1,)


def test_an_invoice_number_is_unique_per_tenant_and_financial_year(
    service: LedgerService, settings: Settings
) -> None:
    _, key_a = register_tenant(service)
    _, key_b = register_tenant(service)
    client = client_for(settings)

    assert (
        client.post(
            "/v1/invoices", json=invoice_body("INV-7"), headers={"Authorization": f"Bearer {key_a}"}
        ).status_code
        == 201
    )
    again = client.post(
        "/v1/invoices", json=invoice_body("INV-7"), headers={"Authorization": f"Bearer {key_a}"}
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_invoice_number"
    # Same number, next financial year (April-March): allowed.
    next_year = client.post(
        "/v1/invoices",
        json=invoice_body("INV-7", date="2026-04-01"),
        headers={"Authorization": f"Bearer {key_a}"},
    )
    assert next_year.status_code == 201, next_year.text
    # Same number, another tenant: allowed.
    other = client.post(
        "/v1/invoices", json=invoice_body("INV-7"), headers={"Authorization": f"Bearer {key_b}"}
    )
    assert other.status_code == 201


def test_a_tenant_cannot_see_or_cancel_another_tenants_invoice(
    service: LedgerService, settings: Settings
) -> None:
    _, key_a = register_tenant(service)
    _, key_b = register_tenant(service)
    client = client_for(settings)
    invoice_id = client.post(
        "/v1/invoices", json=invoice_body(), headers={"Authorization": f"Bearer {key_a}"}
    ).json()["id"]

    as_b = {"Authorization": f"Bearer {key_b}"}
    assert client.get(f"/v1/invoices/{invoice_id}", headers=as_b).status_code == 404
    cancel = client.post(f"/v1/invoices/{invoice_id}/cancel", json={"reason": "other"}, headers=as_b)
    assert cancel.status_code == 404
    assert cancel.json()["error"]["code"] == "not_found"
    assert client.get("/v1/invoices", headers=as_b).json()["items"] == []


@pytest.mark.parametrize(
    ("change", "status", "code", "path"),
    [
        (
            {"buyer": {**invoice_body()["buyer"], "gstin": "27AAACR5055K1Z8"}},
            422,
            "invalid_gstin",
            "buyer.gstin",
        ),
        ({"buyer": {**invoice_body()["buyer"], "state": "29"}}, 422, "gstin_state_mismatch", "buyer.gstin"),
        (
            {"lines": [{**invoice_body()["lines"][0], "gst_rate": "12"}]},
            422,
            "rate_not_valid_on_date",
            "lines[0].gst_rate",
        ),
        (
            {"lines": [{**invoice_body()["lines"][0], "quantity": "-1"}]},
            422,
            "negative_quantity",
            "lines[0].quantity",
        ),
        (
            {"lines": [{**invoice_body()["lines"][0], "hsn": "0000", "gst_rate": None}]},
            422,
            "unknown_hsn",
            "lines[0].hsn",
        ),
        ({"date": "2026-02-30"}, 422, "validation_failed", "date"),
        ({"lines": []}, 422, "validation_failed", "lines"),
    ],
    ids=[
        "bad-gstin-check-char",
        "gstin-state-mismatch",
        "12pct-after-gst-2.0",
        "negative-qty",
        "unknown-hsn",
        "impossible-date",
        "no-lines",
    ],
)
def test_bad_invoices_get_a_precise_error_with_the_offending_field(
    service: LedgerService, settings: Settings, change: dict[str, Any], status: int, code: str, path: str
) -> None:
    _, api_key = register_tenant(service)
    client = client_for(settings)
    response = client.post(
        "/v1/invoices", json={**invoice_body(), **change}, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details", "timestamp", "request_id"}
    fields = error["details"]["fields"]
    assert any(f["path"] == path and (f["code"] == code or error["code"] == code) for f in fields), fields
    if code == "rate_not_valid_on_date":
        assert "18" in next(f for f in fields if f["path"] == path)["valid_rates"]


def test_requests_without_a_valid_key_are_refused(service: LedgerService, settings: Settings) -> None:
    client = client_for(settings)
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Bearer lf_abc_def"}):
        response = client.post("/v1/invoices", json=invoice_body(), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


def test_a_rotated_key_works_and_the_old_one_keeps_working_during_the_grace_period(
    service: LedgerService,
    settings: Settings,
) -> None:
    from datetime import timedelta
    from uuid import UUID

    tenant_id, old_key = register_tenant(service)
    new_key = service.rotate_api_key(UUID(tenant_id), timedelta(hours=1)).api_key
    assert service.authenticate(old_key) == service.authenticate(new_key) == UUID(tenant_id)
    newest = service.rotate_api_key(UUID(tenant_id), timedelta(0)).api_key
    assert service.authenticate(newest) == UUID(tenant_id)
    assert service.authenticate(old_key) is None
    assert service.authenticate(new_key) is None
