"""The gst-irp handler with its result port in memory and the IRP sandbox in process (no database,
no network): what a job does, what it records, and what a redelivery does not do again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4

import httpx
import pytest

from connectors.errors import NeedsAttentionError
from connectors.gst_irp import jws
from connectors.gst_irp.handler import CONNECTOR, IrnJobs
from connectors.gst_irp.routes import CANCELLED, ISSUED, routes
from connectors.gst_irp.sandbox import SandboxAccount, create_app
from engine.application import InvoiceNotFound, build_invoice
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.domain.invoice import Invoice, InvoiceStatus
from engine.domain.tenant import Tenant
from engine.integrations import IntegrationSettings
from engine.publishing import invoice_document
from engine.security.secrets import KeyRing
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult
from tests.integration.helpers import invoice_body

T = TypeVar("T")
SELLER_GSTIN = "29AAGCB7383J1Z4"
ACCOUNT = SandboxAccount(gstin=SELLER_GSTIN)
# The README's example invoice (the one the integration tests use), numbered for this module.
BODY: dict[str, Any] = invoice_body("UNIT-1")


class InMemoryResults:
    """The result port (IrnResults) over aggregates in a dict, as LedgerService is over the store.
    ``reads`` lists what the handler loaded through the port (documents, not the still_wanted
    question), so a test can say a job needed nothing else."""

    def __init__(self, tenant: Tenant, invoice: Invoice) -> None:
        self.tenant = tenant
        self.invoices = {invoice.id: invoice}
        self.recorded: list[str] = []
        self.reads: list[str] = []

    def _find(self, tenant_id: UUID, invoice_id: UUID) -> Invoice:
        found = self.invoices.get(invoice_id)
        if found is None or found.tenant_id != tenant_id:
            raise InvoiceNotFound(f"no invoice {invoice_id}")
        return found

    def get_invoice(self, tenant_id: UUID, invoice_id: UUID) -> Invoice:
        self.reads.append("invoice")
        return self._find(tenant_id, invoice_id)

    def get_tenant(self, tenant_id: UUID) -> Tenant:
        self.reads.append("tenant")
        return self.tenant

    def still_wanted(self, tenant_id: UUID, invoice_id: UUID) -> bool:
        invoice = self._find(tenant_id, invoice_id)
        return invoice.einvoice is None and invoice.status != InvoiceStatus.CANCELLED

    def _record(self, name: str, changed: bool) -> bool:
        if changed:
            self.recorded.append(name)
        return changed

    def record_irn(self, tenant_id: UUID, invoice_id: UUID, **result: Any) -> bool:
        return self._record("irn", self._find(tenant_id, invoice_id).record_irn(**result))

    def record_irn_cancellation(self, tenant_id: UUID, invoice_id: UUID, **result: Any) -> bool:
        invoice = self._find(tenant_id, invoice_id)
        return self._record("irn_cancelled", invoice.record_irn_cancellation(**result))

    def record_irn_failure(self, tenant_id: UUID, invoice_id: UUID, **failure: Any) -> bool:
        return self._record("irn_failed", self._find(tenant_id, invoice_id).record_irn_failure(**failure))


class SandboxContext(HandlerContext):
    """The engine's side, with the tenant's integration pointing at the sandbox app in process."""

    def __init__(self, sandbox: Any, *, enabled: bool = True) -> None:
        # No LedgerService: the handler is given its result port directly.
        super().__init__(
            Settings(), cast(Any, None), KeyRing({}, ""), connector=CONNECTOR, request_rate_per_s=None
        )
        self.sandbox = sandbox
        self.enabled = enabled

    async def blocking(self, work: Callable[[], T]) -> T:
        return work()

    async def integration(self, tenant_id: UUID) -> IntegrationSettings:
        if not self.enabled:
            raise NeedsAttentionError("integration_disabled", "off")
        return IntegrationSettings(
            tenant_id, CONNECTOR, True, "sandbox", "http://irp.test", ACCOUNT.credentials()
        )

    async def transport(self, loaded: IntegrationSettings) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.sandbox)


def issued() -> tuple[Tenant, Invoice]:
    tenant = Tenant(
        name="Demo",
        legal_name="Demo Electricals Private Limited",
        country="IN",
        gstin=SELLER_GSTIN,
        state="29",
        einvoicing_enabled=True,
        api_key_id="unit",
        address={"line1": "14 Residency Road", "city": "Bengaluru", "pincode": "560025"},
    )
    invoice = build_invoice(tenant, IssueInvoice.model_validate(BODY), None, "hash", "api", None)
    return tenant, invoice


def job_for(ce_type: str, invoice: Invoice, **record: Any) -> Job:
    base = {**invoice_document(invoice, invoice.id), "tenant_id": str(invoice.tenant_id), **record}
    [job] = routes(ce_type, str(uuid4()), base)
    return job


async def run(handler: IrnJobs, *attempts: Job) -> list[JobResult]:
    try:
        return [await handler(job, 1) for job in attempts]
    finally:
        await handler.close()


def irns_generated(sandbox: Any) -> Coroutine[Any, Any, int]:
    async def read() -> int:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sandbox), base_url="http://irp.test"
        ) as c:
            return int((await c.get("/_sandbox/stats")).json()["effects"]["irn_generated"])

    return read()


def test_a_generate_job_records_one_irn_and_its_redelivery_neither_calls_the_irp_nor_records_again() -> None:
    tenant, invoice = issued()
    results, sandbox = InMemoryResults(tenant, invoice), create_app(account=ACCOUNT)
    job = job_for(ISSUED, invoice)

    first, again = asyncio.run(run(IrnJobs(SandboxContext(sandbox), results), job, job))

    assert invoice.einvoice is not None
    assert first.data["irn"] == invoice.einvoice["irn"] and first.data["adopted_existing"] is False
    assert again.data == {"skipped": "IRN already recorded or invoice cancelled"}
    assert results.recorded == ["irn"]
    assert asyncio.run(irns_generated(sandbox)) == 1


def test_a_cancel_job_cancels_the_irn_at_the_portal_and_records_it_once() -> None:
    tenant, invoice = issued()
    results, sandbox = InMemoryResults(tenant, invoice), create_app(account=ACCOUNT)
    generate = job_for(ISSUED, invoice)
    cancel = job_for(CANCELLED, invoice, reason="order_cancelled", remark=None)

    outcomes = asyncio.run(run(IrnJobs(SandboxContext(sandbox), results), generate, cancel, cancel))

    assert invoice.einvoice is not None
    assert outcomes[1].data == {"irn": invoice.einvoice["irn"], "cancelled": True}
    assert outcomes[2].data == {"skipped": "IRN already cancelled"}
    assert results.recorded == ["irn", "irn_cancelled"]


def test_a_job_for_a_tenant_whose_integration_is_off_needs_attention_and_the_failure_is_recorded() -> None:
    tenant, invoice = issued()
    results = InMemoryResults(tenant, invoice)
    handler = IrnJobs(SandboxContext(create_app(account=ACCOUNT), enabled=False), results)
    job = job_for(ISSUED, invoice)

    with pytest.raises(NeedsAttentionError) as caught:
        asyncio.run(run(handler, job))
    handler.record_failure(job, caught.value, 1)

    assert results.recorded == ["irn_failed"]
    assert invoice.einvoice_failure is not None and invoice.einvoice_failure["code"] == "integration_disabled"


def registered_description(invoice: Invoice) -> str:
    assert invoice.einvoice is not None
    return str(jws.decode_unverified(invoice.einvoice["signed_invoice"])["ItemList"][0]["PrdDesc"])


def test_the_irp_registers_the_document_the_job_carries_as_it_was_published() -> None:
    tenant, invoice = issued()
    job = job_for(ISSUED, invoice)
    job.payload["invoice"]["lines"][0]["description"] = "Transformer coil (as published)"

    asyncio.run(
        run(IrnJobs(SandboxContext(create_app(account=ACCOUNT)), InMemoryResults(tenant, invoice)), job)
    )

    assert registered_description(invoice) == "Transformer coil (as published)"


def test_a_job_queued_before_jobs_carried_the_document_is_mapped_from_the_stored_invoice() -> None:
    tenant, invoice = issued()
    carried = job_for(ISSUED, invoice)
    older = replace(carried, payload={k: v for k, v in carried.payload.items() if k != "invoice"})
    results = InMemoryResults(tenant, invoice)

    asyncio.run(run(IrnJobs(SandboxContext(create_app(account=ACCOUNT)), results), older))

    assert registered_description(invoice) == "Transformer coil"
    assert results.reads == ["invoice"]  # the stored invoice carries the seller's address too


def registered_seller(invoice: Invoice) -> dict[str, Any]:
    assert invoice.einvoice is not None
    return cast(dict[str, Any], jws.decode_unverified(invoice.einvoice["signed_invoice"])["SellerDtls"])


def test_a_generate_job_with_the_v3_document_needs_no_tenant_or_invoice_read() -> None:
    tenant, invoice = issued()
    results = InMemoryResults(tenant, invoice)
    job = job_for(ISSUED, invoice)
    # The tenant moved after issuing: the e-invoice prints the address the invoice carries.
    tenant.address = {"line1": "1 New Road", "city": "Mysuru", "pincode": "570001"}

    [outcome] = asyncio.run(run(IrnJobs(SandboxContext(create_app(account=ACCOUNT)), results), job))

    assert results.reads == []
    assert results.recorded == ["irn"] and outcome.data["irn"]
    seller = registered_seller(invoice)
    assert (seller["Addr1"], seller["Loc"], seller["TrdNm"]) == ("14 Residency Road", "Bengaluru", "Demo")


def test_a_record_issued_before_v3_takes_the_seller_address_from_the_tenant_only_then() -> None:
    tenant, invoice = issued()
    results = InMemoryResults(tenant, invoice)
    job = job_for(ISSUED, invoice)
    job.payload["invoice"]["seller"] = {
        k: v for k, v in job.payload["invoice"]["seller"].items() if k not in ("address", "trade_name")
    }

    asyncio.run(run(IrnJobs(SandboxContext(create_app(account=ACCOUNT)), results), job))

    assert results.reads == ["tenant"]
    assert registered_seller(invoice)["Loc"] == "Bengaluru"


def test_a_record_whose_seller_address_had_no_pincode_takes_the_tenants_fixed_address() -> None:
    tenant, invoice = issued()
    results = InMemoryResults(tenant, invoice)
    job = job_for(ISSUED, invoice)
    job.payload["invoice"]["seller"]["address"]["pincode"] = None
    tenant.address = {"line1": "14 Residency Road", "city": "Bengaluru", "pincode": "560001"}

    asyncio.run(run(IrnJobs(SandboxContext(create_app(account=ACCOUNT)), results), job))

    assert results.reads == ["tenant"]
    assert registered_seller(invoice)["Pin"] == 560001


def test_a_generate_job_for_an_invoice_cancelled_after_it_was_queued_never_calls_the_irp() -> None:
    tenant, invoice = issued()
    results, sandbox = InMemoryResults(tenant, invoice), create_app(account=ACCOUNT)
    job = job_for(ISSUED, invoice)
    invoice.cancel(reason="order_cancelled", remark=None, at=datetime.now(UTC), traceparent=None)

    [outcome] = asyncio.run(run(IrnJobs(SandboxContext(sandbox), results), job))

    assert outcome.data == {"skipped": "IRN already recorded or invoice cancelled"}
    assert invoice.einvoice is None and results.recorded == [] and results.reads == []
    assert asyncio.run(irns_generated(sandbox)) == 0


class RacedResults(InMemoryResults):
    """Another delivery recorded a different IRN between still_wanted and record_irn (a ledger
    and portal out of step: the IRP keeps one IRN per document number)."""

    def record_irn(self, tenant_id: UUID, invoice_id: UUID, **result: Any) -> bool:
        super().record_irn(tenant_id, invoice_id, **{**result, "irn": "f" * 64})  # the other delivery
        return super().record_irn(tenant_id, invoice_id, **result)


def test_an_irn_other_than_the_one_recorded_is_a_conflict_a_person_must_look_at() -> None:
    tenant, invoice = issued()
    results = RacedResults(tenant, invoice)

    with pytest.raises(NeedsAttentionError) as caught:
        asyncio.run(
            run(IrnJobs(SandboxContext(create_app(account=ACCOUNT)), results), job_for(ISSUED, invoice))
        )

    assert caught.value.code == "irn_conflict"
    assert invoice.einvoice is not None and invoice.einvoice["irn"] == "f" * 64
