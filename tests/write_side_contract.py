"""The LedgerService command paths that need only the event store, as one suite run on two stores.

``LedgerServiceContract`` is subclassed in one line per store: eventsourcing's in-memory POPO recorder
(tests/unit/test_write_side_in_memory.py) and PostgreSQL with the test's own schema
(tests/integration/test_write_side_postgres.py). Only the ``ledger_service`` fixture differs: the
in-memory one is built with ``PERSISTENCE_MODULE=eventsourcing.popo``, the other by ``build_service``
(``eventsourcing.postgres``). So a behaviour proven fast in memory is also proven on the real store.

Registering a tenant and anything touching a key, idempotency or integration table needs PostgreSQL
and stays in the integration tests; here a tenant is saved as its aggregate, exactly as
``register_tenant`` saves it after storing the key row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from engine.application import (
    IST,
    DuplicateInvoiceNumber,
    InvoiceNotFound,
    InvoiceStateConflict,
    LedgerService,
    TenantNotFound,
    ValidationFailed,
)
from engine.commands import CancelInvoice, IssueInvoice
from engine.domain.invoice import IrnAlreadyRecorded, invoice_id_for
from engine.domain.tenant import Tenant
from engine.tax.india_gst import financial_year, today_in_india

SELLER_GSTIN = "29AAGCB7383J1Z4"  # Karnataka
BUYER_GSTIN = "33AAJFK5678L1ZR"  # Tamil Nadu
IRN = "a" * 64


def register(
    service: LedgerService,
    *,
    gstin: str = SELLER_GSTIN,
    state: str = "29",
    address: dict[str, Any] | None = None,
) -> UUID:
    tenant = Tenant(
        name="Demo",
        legal_name="Demo Electricals Private Limited",
        country="IN",
        gstin=gstin,
        state=state,
        einvoicing_enabled=True,
        api_key_id=f"k_{uuid4().hex[:12]}",
        address=address,
    )
    service.ledger.save(tenant)
    return tenant.id


def issue_command(number: str = "INV-1", **changes: Any) -> IssueInvoice:
    body: dict[str, Any] = {
        "number": number,
        "date": today_in_india(datetime.now(UTC)).isoformat(),
        "buyer": {"name": "Kaveri Foods LLP", "gstin": BUYER_GSTIN, "state": "33"},
        "supply_type": "B2B",
        "lines": [
            {
                "description": "Stainless steel tiffin box",
                "hsn": "7323",
                "quantity": "10",
                "unit": "NOS",
                "unit_price": "100.00",
                "gst_rate": "18",
            }
        ],
    }
    return IssueInvoice.model_validate({**body, **changes})


def irn_result(job_id: str = "job-1", irn: str = IRN, acknowledged: datetime | None = None) -> dict[str, Any]:
    acknowledged = acknowledged or datetime.now(UTC)
    return {
        "job_id": job_id,
        "irn": irn,
        "ack_no": "112010000000001",
        "ack_date": acknowledged.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S"),
        "signed_invoice": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        "signed_qr_code": "eyJhbGciOiJSUzI1NiJ9.e30.cXI",
        "adopted_existing": False,
        "traceparent": None,
    }


def event_types(service: LedgerService, aggregate_id: UUID) -> list[str]:
    """The stored history of one aggregate, by event class name, oldest first."""
    return [type(event).__name__ for event in service.ledger.events.get(aggregate_id)]


class LedgerServiceContract:
    """Subclass with a ``ledger_service`` fixture yielding a LedgerService on the store under test."""

    @pytest.fixture
    def ledger_service(self) -> LedgerService:
        raise NotImplementedError

    def test_an_issued_invoice_is_stored_with_its_seller_taken_from_the_tenant_and_its_tax(
        self, ledger_service: LedgerService
    ) -> None:
        address = {"line1": "14 Residency Road", "city": "Bengaluru", "pincode": "560025"}
        tenant_id = register(ledger_service, address=address)
        issued = ledger_service.issue_invoice(tenant_id, issue_command(), source="ingest")
        assert issued.created
        stored = ledger_service.get_invoice(tenant_id, issued.invoice.id)
        # The address travels in the issued record (v3), so the IRN handler need not read the tenant.
        assert stored.seller == {
            "gstin": SELLER_GSTIN,
            "legal_name": "Demo Electricals Private Limited",
            "state": "29",
            "trade_name": "Demo",
            "address": {**address, "line2": None},
        }
        # Karnataka to Tamil Nadu is an inter-state supply: IGST, no CGST/SGST (IGST Act s.7(1)).
        assert stored.intra_state is False and stored.place_of_supply == "33"
        assert stored.totals["taxable"] == Decimal("1000.00") and stored.totals["igst"] == Decimal("180.00")
        assert stored.totals["total"] == Decimal("1180.00") and stored.source == "ingest"
        assert event_types(ledger_service, stored.id) == ["Issued"]

    def test_an_invoice_number_is_issued_once_per_financial_year(self, ledger_service: LedgerService) -> None:
        tenant_id = register(ledger_service)
        ledger_service.issue_invoice(tenant_id, issue_command("INV-7"))
        with pytest.raises(DuplicateInvoiceNumber):
            ledger_service.issue_invoice(tenant_id, issue_command("INV-7", lines=[_line("Lunch box")]))

    def test_a_b2b_invoice_without_the_buyers_gstin_is_refused_and_nothing_is_stored(
        self, ledger_service: LedgerService
    ) -> None:
        tenant_id = register(ledger_service)
        command = issue_command(buyer={"name": "Kaveri Foods LLP", "state": "33"})
        with pytest.raises(ValidationFailed) as refused:
            ledger_service.issue_invoice(tenant_id, command)
        assert [v.code for v in refused.value.violations] == ["missing_gstin"]
        with pytest.raises(InvoiceNotFound):
            ledger_service.get_invoice(tenant_id, _invoice_id(tenant_id, "INV-1"))

    def test_another_tenants_invoice_is_reported_as_missing(self, ledger_service: LedgerService) -> None:
        owner, other = register(ledger_service), register(ledger_service)
        issued = ledger_service.issue_invoice(owner, issue_command())
        with pytest.raises(InvoiceNotFound):
            ledger_service.get_invoice(other, issued.invoice.id)
        with pytest.raises(TenantNotFound):
            ledger_service.issue_invoice(uuid4(), issue_command())

    def test_an_invoice_lives_through_its_irn_cancellation_and_irn_cancellation_in_order(
        self, ledger_service: LedgerService
    ) -> None:
        tenant_id = register(ledger_service)
        invoice_id = ledger_service.issue_invoice(tenant_id, issue_command()).invoice.id
        assert ledger_service.record_irn(tenant_id, invoice_id, **irn_result())
        ledger_service.cancel_invoice(tenant_id, invoice_id, CancelInvoice(reason="data_entry_mistake"))
        assert ledger_service.record_irn_cancellation(
            tenant_id,
            invoice_id,
            job_id="job-2",
            irn=IRN,
            cancel_date="2026-01-19 10:00:00",
            reason_code=2,
            remark=None,
            traceparent=None,
        )
        stored = ledger_service.get_invoice(tenant_id, invoice_id)
        assert stored.status == "cancelled" and stored.einvoice is not None and stored.einvoice["irn"] == IRN
        assert stored.einvoice_cancellation is not None
        assert event_types(ledger_service, invoice_id) == [
            "Issued",
            "IrnGenerated",
            "Cancelled",
            "IrnCancelled",
        ]

    def test_a_redelivered_connector_result_records_nothing_the_second_time(
        self, ledger_service: LedgerService
    ) -> None:
        tenant_id = register(ledger_service)
        invoice_id = ledger_service.issue_invoice(tenant_id, issue_command()).invoice.id
        failure = {
            "job_id": "job-1",
            "operation": "generate",
            "error_class": "retryable",
            "code": "timeout",
            "message": "no answer within 30s",
            "attempts": 5,
            "traceparent": None,
        }
        assert ledger_service.record_irn_failure(tenant_id, invoice_id, **failure)
        assert not ledger_service.record_irn_failure(tenant_id, invoice_id, **failure)
        assert ledger_service.record_irn(tenant_id, invoice_id, **irn_result("job-2"))
        assert not ledger_service.record_irn(tenant_id, invoice_id, **irn_result("job-2"))
        stored = ledger_service.get_invoice(tenant_id, invoice_id)
        assert stored.einvoice_failure is None  # a later IRN settles the earlier failure
        assert event_types(ledger_service, invoice_id) == ["Issued", "IrnFailed", "IrnGenerated"]

    def test_a_second_different_irn_for_one_invoice_is_a_conflict(
        self, ledger_service: LedgerService
    ) -> None:
        tenant_id = register(ledger_service)
        invoice_id = ledger_service.issue_invoice(tenant_id, issue_command()).invoice.id
        ledger_service.record_irn(tenant_id, invoice_id, **irn_result())
        with pytest.raises(IrnAlreadyRecorded):
            ledger_service.record_irn(tenant_id, invoice_id, **irn_result("job-2", irn="b" * 64))
        assert event_types(ledger_service, invoice_id) == ["Issued", "IrnGenerated"]

    def test_an_invoice_wants_an_irn_until_one_is_recorded_or_it_is_cancelled(
        self, ledger_service: LedgerService
    ) -> None:
        tenant_id = register(ledger_service)
        given_irn = ledger_service.issue_invoice(tenant_id, issue_command("INV-1")).invoice.id
        cancelled = ledger_service.issue_invoice(tenant_id, issue_command("INV-2")).invoice.id
        assert ledger_service.still_wanted(tenant_id, given_irn)
        ledger_service.record_irn(tenant_id, given_irn, **irn_result())
        ledger_service.cancel_invoice(tenant_id, cancelled, CancelInvoice(reason="duplicate"))
        assert not ledger_service.still_wanted(tenant_id, given_irn)
        assert not ledger_service.still_wanted(tenant_id, cancelled)
        with pytest.raises(InvoiceNotFound):
            ledger_service.still_wanted(uuid4(), given_irn)  # another tenant's invoice is not found

    def test_cancelling_twice_is_a_state_conflict(self, ledger_service: LedgerService) -> None:
        tenant_id = register(ledger_service)
        invoice_id = ledger_service.issue_invoice(tenant_id, issue_command()).invoice.id
        ledger_service.cancel_invoice(tenant_id, invoice_id, CancelInvoice(reason="duplicate"))
        with pytest.raises(InvoiceStateConflict):
            ledger_service.cancel_invoice(tenant_id, invoice_id, CancelInvoice(reason="duplicate"))
        assert event_types(ledger_service, invoice_id) == ["Issued", "Cancelled"]

    def test_an_invoice_with_an_irn_older_than_24_hours_cannot_be_cancelled(
        self, ledger_service: LedgerService
    ) -> None:
        tenant_id = register(ledger_service)
        invoice_id = ledger_service.issue_invoice(tenant_id, issue_command()).invoice.id
        acknowledged = datetime(2026, 1, 19, 4, 30, tzinfo=UTC)  # 10:00 IST
        ledger_service.record_irn(tenant_id, invoice_id, **irn_result(acknowledged=acknowledged))
        with pytest.raises(ValidationFailed) as refused:
            ledger_service.cancel_invoice(
                tenant_id, invoice_id, CancelInvoice(reason="other"), now=acknowledged + timedelta(hours=24)
            )
        assert [v.code for v in refused.value.violations] == ["irn_cancellation_window_passed"]
        assert ledger_service.get_invoice(tenant_id, invoice_id).status == "issued"

    def test_a_profile_change_is_stored_and_sending_it_again_stores_nothing(
        self, ledger_service: LedgerService
    ) -> None:
        tenant_id = register(ledger_service)
        address = {"line1": "14 Residency Road", "line2": None, "city": "Bengaluru", "pincode": "560025"}
        ledger_service.update_profile(
            tenant_id, "api_key:k1", {"name": "Demo Electricals", "address": address}
        )
        ledger_service.update_profile(tenant_id, "api_key:k1", {"name": "Demo Electricals", "state": "KA"})
        stored = ledger_service.get_tenant(tenant_id)
        assert stored.name == "Demo Electricals" and stored.address == address
        assert event_types(ledger_service, tenant_id) == ["Registered", "ProfileUpdated"]

    def test_changing_the_legal_identity_is_refused_field_by_field(
        self, ledger_service: LedgerService
    ) -> None:
        tenant_id = register(ledger_service)
        with pytest.raises(ValidationFailed) as refused:
            ledger_service.update_profile(
                tenant_id, "operator:api", {"gstin": "27AAGCB7383J1Z8", "legal_name": "Other Ltd"}
            )
        assert sorted(v.path for v in refused.value.violations) == ["gstin", "legal_name"]
        assert {v.code for v in refused.value.violations} == {"legal_identity_immutable"}
        assert event_types(ledger_service, tenant_id) == ["Registered"]

    def test_every_registered_tenant_is_listed(self, ledger_service: LedgerService) -> None:
        registered = {register(ledger_service), register(ledger_service)}
        assert registered <= {tenant.id for tenant in ledger_service.list_tenants()}


def _line(description: str) -> dict[str, str]:
    return {
        "description": description,
        "hsn": "7323",
        "quantity": "1",
        "unit": "NOS",
        "unit_price": "50",
        "gst_rate": "18",
    }


def _invoice_id(tenant_id: UUID, number: str) -> UUID:
    return invoice_id_for(tenant_id, financial_year(today_in_india(datetime.now(UTC))), number)
