"""Cancelling an invoice that has an IRN: only within 24 hours of AckDt, refused before any call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from engine.application import IST, LedgerService
from engine.config import Settings
from tests.integration.helpers import client_for, invoice_body, register_tenant

pytestmark = pytest.mark.integration


def with_irn(service: LedgerService, settings: Settings, acknowledged: datetime) -> tuple[str, str]:
    _, key = register_tenant(service)
    client = client_for(settings)
    invoice_id = client.post(
        "/v1/invoices", json=invoice_body(), headers={"Authorization": f"Bearer {key}"}
    ).json()["id"]
    service.record_irn(
        UUID(str(service.authenticate(key))),
        UUID(invoice_id),
        job_id="job-1",
        irn="a" * 64,
        ack_no="112010000000001",
        ack_date=acknowledged.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S"),
        signed_invoice="x.y.z",
        signed_qr_code="q.r.s",
        adopted_existing=False,
        traceparent=None,
    )
    return invoice_id, key


def test_an_irn_older_than_24_hours_cannot_be_cancelled_and_the_api_says_why(
    service: LedgerService, settings: Settings
) -> None:
    invoice_id, key = with_irn(service, settings, datetime.now(UTC) - timedelta(hours=25))
    response = client_for(settings).post(
        f"/v1/invoices/{invoice_id}/cancel",
        json={"reason": "order_cancelled"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"]["fields"][0]["code"] == "irn_cancellation_window_passed"
    assert "credit note" in error["message"]


def test_an_irn_within_24_hours_is_cancelled_and_the_view_shows_the_irn(
    service: LedgerService, settings: Settings
) -> None:
    invoice_id, key = with_irn(service, settings, datetime.now(UTC) - timedelta(hours=23))
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    shown = client.get(f"/v1/invoices/{invoice_id}", headers=auth).json()
    assert shown["einvoice"]["status"] == "generated" and shown["einvoice"]["irn"] == "a" * 64
    response = client.post(
        f"/v1/invoices/{invoice_id}/cancel", json={"reason": "order_cancelled"}, headers=auth
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
