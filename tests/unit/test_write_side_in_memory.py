"""The write side in memory: Invoice and Tenant aggregates through their whole lives, and the
LedgerService command paths that need only the event store, on eventsourcing's POPO recorder.

Nothing here reaches PostgreSQL or Kafka: the event store is ``in_memory_ledger()`` and the
service's connection pool is never opened, so a path that touched a table would fail with
``PoolClosed`` instead of quietly using a database. The same service suite runs on PostgreSQL in
tests/integration/test_write_side_postgres.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError
from psycopg_pool import ConnectionPool

from engine.application import LedgerService, build_invoice, in_memory_ledger
from engine.config import Settings
from engine.domain.invoice import Invoice, InvoiceAlreadyCancelled
from engine.domain.tenant import Tenant
from tests.write_side_contract import IRN, LedgerServiceContract, irn_result, issue_command


def unopened_pool() -> ConnectionPool:
    # Never opened: any use raises PoolClosed, which proves a path needs only the event store.
    return ConnectionPool("", open=False)


class TestLedgerServiceInMemory(LedgerServiceContract):
    @pytest.fixture
    def ledger_service(self) -> Iterator[LedgerService]:
        settings = replace(Settings(), database_url="", kafka_bootstrap="")  # nothing to connect to
        service = LedgerService(settings, in_memory_ledger(), unopened_pool())
        yield service
        service.close()


def new_tenant() -> Tenant:
    return Tenant(
        name="Demo",
        legal_name="Demo Electricals Private Limited",
        country="IN",
        gstin="29AAGCB7383J1Z4",
        state="29",
        einvoicing_enabled=True,
        api_key_id="k1",
        address=None,
    )


def new_invoice(tenant: Tenant, number: str = "INV-1") -> Invoice:
    command = issue_command(number)
    return build_invoice(tenant, command, "key-1", command.fingerprint(), "api", None)


def test_an_invoices_whole_life_saves_and_loads_back_to_the_same_state() -> None:
    ledger = in_memory_ledger()
    invoice = new_invoice(new_tenant())
    invoice.record_irn_failure(
        job_id="job-1",
        operation="generate",
        error_class="needs_attention",
        code="auth_failed",
        message="invalid credentials",
        attempts=1,
        traceparent=None,
    )
    invoice.record_irn(**irn_result("job-2"))
    invoice.cancel(reason="order_cancelled", remark="buyer withdrew", at=datetime.now(UTC), traceparent=None)
    invoice.record_irn_cancellation(
        job_id="job-3",
        irn=IRN,
        cancel_date="2026-01-19 12:00:00",
        reason_code=3,
        remark="buyer withdrew",
        traceparent=None,
    )
    ledger.save(invoice)

    loaded: object = ledger.repository.get(invoice.id)
    assert isinstance(loaded, Invoice)
    assert loaded.version == invoice.version == 5
    for name in ("number", "financial_year", "invoice_date", "seller", "buyer", "lines", "totals", "status"):
        assert getattr(loaded, name) == getattr(invoice, name), name
    assert loaded.idempotency_key == "key-1"
    assert loaded.cancellation == invoice.cancellation and loaded.status == "cancelled"
    assert loaded.einvoice == invoice.einvoice and loaded.einvoice_failure is None
    assert loaded.einvoice_cancellation == invoice.einvoice_cancellation
    assert [type(e) for e in ledger.events.get(invoice.id)] == [
        Invoice.Issued,
        Invoice.IrnFailed,
        Invoice.IrnGenerated,
        Invoice.Cancelled,
        Invoice.IrnCancelled,
    ]


def test_every_invoice_event_names_its_tenant_for_the_ce_source_header() -> None:
    tenant = new_tenant()
    invoice = new_invoice(tenant)
    invoice.record_irn(**irn_result())
    invoice.cancel(reason="duplicate", remark=None, at=datetime.now(UTC), traceparent=None)
    issued, generated, cancelled = invoice.collect_events()
    assert isinstance(issued, Invoice.Issued) and isinstance(generated, Invoice.IrnGenerated)
    assert isinstance(cancelled, Invoice.Cancelled)
    assert issued.tenant_id == generated.tenant_id == cancelled.tenant_id == tenant.id


def test_an_invoice_cannot_be_cancelled_twice_and_its_irn_cancellation_is_recorded_once() -> None:
    invoice = new_invoice(new_tenant())
    invoice.cancel(reason="duplicate", remark=None, at=datetime.now(UTC), traceparent=None)
    with pytest.raises(InvoiceAlreadyCancelled):
        invoice.cancel(reason="duplicate", remark=None, at=datetime.now(UTC), traceparent=None)
    result: dict[str, Any] = {
        "job_id": "j",
        "irn": IRN,
        "cancel_date": "2026-01-19 12:00:00",
        "reason_code": 1,
    }
    assert invoice.record_irn_cancellation(**result, remark=None, traceparent=None)
    assert not invoice.record_irn_cancellation(**result, remark=None, traceparent=None)
    assert [type(e) for e in invoice.collect_events()] == [
        Invoice.Issued,
        Invoice.Cancelled,
        Invoice.IrnCancelled,
    ]


def test_the_same_invoice_number_of_one_tenant_is_the_same_aggregate_and_cannot_be_saved_twice() -> None:
    ledger = in_memory_ledger()
    tenant = new_tenant()
    first, second = new_invoice(tenant, "INV-9"), new_invoice(tenant, "INV-9")
    assert first.id == second.id  # the id is derived from (tenant, financial year, number)
    ledger.save(first)
    with pytest.raises(IntegrityError):
        ledger.save(second)
    assert new_invoice(new_tenant(), "INV-9").id != first.id  # another tenant's INV-9 is another invoice


def test_a_tenants_registration_key_rotation_and_profile_change_save_and_load_back() -> None:
    ledger = in_memory_ledger()
    tenant = new_tenant()
    valid_until = datetime(2026, 1, 20, tzinfo=UTC)
    tenant.rotate_api_key(key_id="k2", previous_key_id="k1", previous_key_valid_until=valid_until)
    tenant.update_profile(changed_by="operator:cli:asha", name="Demo Electricals")
    ledger.save(tenant)

    loaded: object = ledger.repository.get(tenant.id)
    assert isinstance(loaded, Tenant)
    assert loaded.api_key_id == "k2" and loaded.name == "Demo Electricals"
    assert loaded.profile == tenant.profile
    assert [type(e) for e in ledger.events.get(tenant.id)] == [
        Tenant.Registered,
        Tenant.ApiKeyRotated,
        Tenant.ProfileUpdated,
    ]
    (rotated,) = [e for e in ledger.events.get(tenant.id) if isinstance(e, Tenant.ApiKeyRotated)]
    assert rotated.previous_key_id == "k1" and rotated.previous_key_valid_until == valid_until
