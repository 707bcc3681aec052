"""The ``gst-irp`` handler: one attempt of an IRN job against the tenant's IRP, results through a port.

A job is ``generate_irn`` (carrying the issued invoice record as published, which is what gets
mapped) or ``cancel_irn`` (connectors/gst_irp/routes.py). The invoice's current state is still read
through the port: whether an IRN is already recorded or the invoice was cancelled meanwhile is not
something the job can know, and the seller's address comes from the tenant. At most one IRN per invoice:
a redelivered job finds the IRN already recorded, and a retry after a lost answer adopts the IRN the
IRP already registered (service.py). Results go to :class:`IrnResults`, which the engine's
``LedgerService`` implements and a unit test can fake.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

import orjson

from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError
from connectors.gst_irp.client import PROVIDER, IrnResult, IrpClient, IrpCredentials
from connectors.gst_irp.errors import INVOICE_NOT_ACTIVE
from connectors.gst_irp.mapping import SellerProfile, to_einvoice
from connectors.gst_irp.routes import CANCEL, GENERATE
from connectors.gst_irp.service import generate_or_adopt
from engine import integrations, telemetry
from engine.application import IST, InvoiceNotFound
from engine.domain.invoice import Invoice, InvoiceStatus
from engine.domain.tenant import Tenant
from engine.publishing import invoice_document
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult

log = logging.getLogger("ledgerflow.einvoicing")

CONNECTOR = PROVIDER


class IrnResults(Protocol):
    """The result port: what the handler reads and records in the ledger (``LedgerService``)."""

    def get_invoice(self, tenant_id: UUID, invoice_id: UUID) -> Invoice: ...

    def get_tenant(self, tenant_id: UUID) -> Tenant: ...

    def record_irn(self, tenant_id: UUID, invoice_id: UUID, **result: Any) -> bool: ...

    def record_irn_cancellation(self, tenant_id: UUID, invoice_id: UUID, **result: Any) -> bool: ...

    def record_irn_failure(self, tenant_id: UUID, invoice_id: UUID, **failure: Any) -> bool: ...


class _Lookups:
    """Wraps the client to note whether an existing IRN was adopted (duplicate 2150 path)."""

    def __init__(self, client: IrpClient) -> None:
        self.client = client
        self.looked_up = False

    async def generate_irn(self, payload: Mapping[str, Any]) -> IrnResult:
        return await self.client.generate_irn(payload)

    async def get_irn_by_document(self, doc_type: str, doc_no: str, doc_date: date) -> IrnResult | None:
        self.looked_up = True
        return await self.client.get_irn_by_document(doc_type, doc_no, doc_date)


def _irp_time(moment: datetime) -> str:
    """The IRP's own notation: yyyy-MM-dd HH:mm:ss in Indian Standard Time."""
    return moment.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")


def seller_profile(tenant: Tenant) -> SellerProfile:
    address = tenant.address or {}
    missing = [f for f in ("line1", "city", "pincode") if not address.get(f)]
    if missing or not tenant.gstin or not tenant.state:
        raise PermanentError(
            "seller_profile_incomplete",
            "the tenant needs a GSTIN, a state and an address (line1, city, pincode) to e-invoice; missing: "
            + ", ".join(
                [*missing, *([] if tenant.gstin else ["gstin"]), *([] if tenant.state else ["state"])]
            ),
        )
    return SellerProfile(
        gstin=tenant.gstin,
        legal_name=tenant.legal_name,
        trade_name=tenant.name,
        address_line1=address["line1"],
        address_line2=address.get("line2"),
        location=address["city"],
        pincode=str(address["pincode"]),
        state_code=tenant.state,
    )


class IrnJobs:
    """Handler and failure sink of the ``gst-irp`` connector."""

    def __init__(self, context: HandlerContext, results: IrnResults | None = None) -> None:
        self.context = context
        self.results: IrnResults = results if results is not None else context.service
        self._clients: dict[tuple[str, str, str], IrpClient] = {}

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self.context.close()

    async def _client(self, loaded: integrations.IntegrationSettings) -> IrpClient:
        # One client per (tenant, URL, credentials): it caches the tenant's auth token.
        fingerprint = hashlib.sha256(
            orjson.dumps(loaded.credentials, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        key = (str(loaded.tenant_id), f"{loaded.environment} {loaded.base_url}", fingerprint)
        if key not in self._clients:
            try:
                credentials = IrpCredentials(**loaded.credentials)
            except TypeError as exc:
                raise NeedsAttentionError(
                    "invalid_credentials", f"stored {CONNECTOR} credentials: {exc}"
                ) from exc
            # One job can make three calls (auth, generate, look-up of a duplicate): the portal's
            # limit is on requests, so the context's transport takes a permit per request.
            transport = await self.context.transport(loaded)
            self._clients[key] = IrpClient(loaded.base_url, credentials, transport=transport)
        return self._clients[key]

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        tenant_id, invoice_id = UUID(job.tenant_id), UUID(job.subject)
        try:
            invoice = await self.context.blocking(lambda: self.results.get_invoice(tenant_id, invoice_id))
        except InvoiceNotFound as exc:
            raise PermanentError("invoice_not_found", str(exc)) from exc
        if job.kind == GENERATE:
            return await self._generate(job, invoice)
        if job.kind == CANCEL:
            return await self._cancel(job, invoice)
        raise PermanentError("unknown_job_kind", f"{CONNECTOR} has no job kind {job.kind!r}")

    async def _generate(self, job: Job, invoice: Invoice) -> JobResult:
        # At most one IRN per invoice: a redelivered job finds the IRN already recorded.
        if invoice.einvoice is not None:
            return JobResult({"irn": invoice.einvoice["irn"], "skipped": "already recorded"})
        if invoice.status == InvoiceStatus.CANCELLED:
            return JobResult({"skipped": "invoice cancelled before an IRN was generated"})
        tenant = await self.context.blocking(lambda: self.results.get_tenant(invoice.tenant_id))
        # The document travels in the job (routes.py); a job queued before it did is mapped from
        # the invoice as stored, which publishing renders the same way (engine/publishing.py).
        document = job.payload.get("invoice")
        if not isinstance(document, dict):
            document = invoice_document(invoice, invoice.id)
        payload = to_einvoice(document, seller_profile(tenant))
        loaded = await self.context.integration(invoice.tenant_id)
        lookups = _Lookups(await self._client(loaded))
        result = await generate_or_adopt(
            lookups,
            payload,
            expected_total=Decimal(invoice.totals["total"]),
            buyer_gstin=invoice.buyer.get("gstin"),
        )
        recorded = {
            "job_id": job.job_id,
            "irn": result.irn,
            "ack_no": result.ack_no,
            "ack_date": _irp_time(result.ack_dt),
            "signed_invoice": result.signed_invoice,
            "signed_qr_code": result.signed_qr_code,
            "adopted_existing": lookups.looked_up,
            # The attempt's span (the worker runs the handler inside it): the result event is
            # published, projected and routed under the trace that asked for the IRN.
            "traceparent": telemetry.current_traceparent(),
        }
        await self.context.blocking(
            lambda: self.results.record_irn(invoice.tenant_id, invoice.id, **recorded)
        )
        return JobResult({"irn": result.irn, "ack_no": result.ack_no, "adopted_existing": lookups.looked_up})

    async def _cancel(self, job: Job, invoice: Invoice) -> JobResult:
        if invoice.einvoice is None:
            return JobResult({"skipped": "no IRN to cancel"})
        if invoice.einvoice_cancellation is not None:
            return JobResult({"skipped": "IRN already cancelled"})
        loaded = await self.context.integration(invoice.tenant_id)
        irn = invoice.einvoice["irn"]
        client = await self._client(loaded)
        try:
            result = await client.cancel_irn(
                irn,
                int(job.payload.get("reason_code", 4)),
                str(job.payload.get("remark") or "cancelled")[:100],
            )
            cancelled_at = result.cancel_date
        except PermanentError as exc:
            # "Not active" after an earlier attempt of ours cancelled it but could not record it:
            # the portal's own record decides (at most one cancellation per job, as for IRNs).
            if exc.code != INVOICE_NOT_ACTIVE:
                raise
            existing = await client.get_irn(irn)
            if existing is None or existing.status != "CNL":
                raise
            cancelled_at = datetime.now(IST)
        recorded = {
            "job_id": job.job_id,
            "irn": irn,
            "cancel_date": _irp_time(cancelled_at),
            "reason_code": int(job.payload.get("reason_code", 4)),
            "remark": job.payload.get("remark"),
            "traceparent": telemetry.current_traceparent(),
        }
        # Through _blocking: a database outage here must retry the job, not dead-letter it.
        await self.context.blocking(
            lambda: self.results.record_irn_cancellation(invoice.tenant_id, invoice.id, **recorded)
        )
        return JobResult({"irn": irn, "cancelled": True})

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        """Give the invoice the reason it has no IRN (called once the job is dead-lettered)."""
        try:
            self.results.record_irn_failure(
                UUID(job.tenant_id),
                UUID(job.subject),
                job_id=job.job_id,
                operation="cancel" if job.kind == CANCEL else "generate",
                error_class=str(error.error_class),
                code=error.code,
                message=error.message,
                attempts=attempts,
                # The worker calls this inside the last attempt's span.
                traceparent=telemetry.current_traceparent(),
            )
        except InvoiceNotFound:
            log.warning("job %s failed for an invoice that does not exist", job.job_id)


def build(context: HandlerContext) -> IrnJobs:
    """The handler factory the connector declaration names (connectors/gst_irp/__init__.py)."""
    return IrnJobs(context)
