"""The ``gst-irp`` handler: one attempt of an IRN job against the tenant's IRP, results through a port.

A job is ``generate_irn`` (carrying the issued invoice record as published, which is what gets
mapped) or ``cancel_irn`` (connectors/gst_irp/routes.py). A generate job needs nothing but its job
and one cheap question to the port, :meth:`IrnResults.still_wanted`: the job was queued when the
invoice was issued, and a cancellation or an IRN recorded by an earlier delivery happens after
that, so no queued document can know it; asking keeps the IRP from being called for a cancelled
invoice or a second time for a redelivery. The seller (trade name, address) comes from the issued
record (v3); only records issued before v3, or without a printable seller address, fall back to
reading the tenant. At most one IRN per
invoice: a retry after a lost answer adopts the IRN the IRP already registered (service.py), and
recording it again is idempotent in the port. Results go to :class:`IrnResults`, which the engine's
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
from engine.domain.invoice import Invoice, IrnAlreadyRecorded
from engine.domain.tenant import Tenant
from engine.publishing import invoice_document
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult

log = logging.getLogger("ledgerflow.einvoicing")

CONNECTOR = PROVIDER


class IrnResults(Protocol):
    """The result port: what the handler asks and records in the ledger (``LedgerService``)."""

    def still_wanted(self, tenant_id: UUID, invoice_id: UUID) -> bool:
        """False once the invoice has an IRN or was cancelled; raises InvoiceNotFound."""
        ...

    def record_irn(self, tenant_id: UUID, invoice_id: UUID, **result: Any) -> bool:
        """Record the IRN; False when that same IRN is already recorded (idempotent), and
        IrnAlreadyRecorded when a different one is (a conflict)."""
        ...

    def record_irn_cancellation(self, tenant_id: UUID, invoice_id: UUID, **result: Any) -> bool: ...

    def record_irn_failure(self, tenant_id: UUID, invoice_id: UUID, **failure: Any) -> bool: ...

    # Reads, only for what a job cannot carry: a cancel job needs the recorded IRN, a generate job
    # queued before jobs carried the document needs the invoice, and a record issued before v3
    # needs the tenant for the seller's address.
    def get_invoice(self, tenant_id: UUID, invoice_id: UUID) -> Invoice: ...

    def get_tenant(self, tenant_id: UUID) -> Tenant: ...


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
    """The seller from the tenant as it is now (records issued before v3 carry no address)."""
    return _seller_profile(tenant.gstin, tenant.legal_name, tenant.name, tenant.state, tenant.address or {})


def issued_seller(document: Mapping[str, Any]) -> SellerProfile | None:
    """The seller as the issued record carries it (v3), or None when the record has no address an
    IRN can print (issued before v3, or while the tenant's address lacked line1, city or pincode:
    then the tenant's current address decides, so fixing it and redriving the job works)."""
    seller = document.get("seller") or {}
    address = seller.get("address")
    if not address or not all(address.get(f) for f in ("line1", "city", "pincode")):
        return None
    return _seller_profile(
        seller.get("gstin"), seller["legal_name"], seller.get("trade_name"), seller["state"], address
    )


def _seller_profile(
    gstin: str | None,
    legal_name: str,
    trade_name: str | None,
    state: str | None,
    address: Mapping[str, Any],
) -> SellerProfile:
    missing = [f for f in ("line1", "city", "pincode") if not address.get(f)]
    if missing or not gstin or not state:
        raise PermanentError(
            "seller_profile_incomplete",
            "the tenant needs a GSTIN, a state and an address (line1, city, pincode) to e-invoice; missing: "
            + ", ".join([*missing, *([] if gstin else ["gstin"]), *([] if state else ["state"])]),
        )
    return SellerProfile(
        gstin=gstin,
        legal_name=legal_name,
        trade_name=trade_name,
        address_line1=address["line1"],
        address_line2=address.get("line2"),
        location=address["city"],
        pincode=str(address["pincode"]),
        state_code=state,
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
            if job.kind == GENERATE:
                return await self._generate(job, tenant_id, invoice_id)
            if job.kind == CANCEL:
                invoice = await self.context.blocking(lambda: self.results.get_invoice(tenant_id, invoice_id))
                return await self._cancel(job, invoice)
        except InvoiceNotFound as exc:
            raise PermanentError("invoice_not_found", str(exc)) from exc
        raise PermanentError("unknown_job_kind", f"{CONNECTOR} has no job kind {job.kind!r}")

    async def _document(self, job: Job, tenant_id: UUID, invoice_id: UUID) -> Mapping[str, Any]:
        """The document travels in the job (routes.py); a job queued before it did is mapped from
        the invoice as stored, which publishing renders the same way (engine/publishing.py)."""
        document = job.payload.get("invoice")
        if isinstance(document, dict):
            return document
        invoice = await self.context.blocking(lambda: self.results.get_invoice(tenant_id, invoice_id))
        return invoice_document(invoice, invoice.id)

    async def _seller(self, tenant_id: UUID, document: Mapping[str, Any]) -> SellerProfile:
        carried = issued_seller(document)
        if carried is not None:
            return carried
        # Issued before v3 (or by a tenant without an address then): the tenant as it is now,
        # which is what e-invoices printed before the record carried the address.
        tenant = await self.context.blocking(lambda: self.results.get_tenant(tenant_id))
        return seller_profile(tenant)

    async def _generate(self, job: Job, tenant_id: UUID, invoice_id: UUID) -> JobResult:
        # Not from the job: a cancellation, or the IRN an earlier delivery recorded, comes after
        # the job was queued. One cheap question, so the IRP is not called for either.
        if not await self.context.blocking(lambda: self.results.still_wanted(tenant_id, invoice_id)):
            return JobResult({"skipped": "IRN already recorded or invoice cancelled"})
        document = await self._document(job, tenant_id, invoice_id)
        payload = to_einvoice(document, await self._seller(tenant_id, document))
        loaded = await self.context.integration(tenant_id)
        lookups = _Lookups(await self._client(loaded))
        result = await generate_or_adopt(
            lookups,
            payload,
            expected_total=Decimal(document["totals"]["total"]),
            buyer_gstin=document["buyer"].get("gstin"),
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
        try:
            await self.context.blocking(lambda: self.results.record_irn(tenant_id, invoice_id, **recorded))
        except IrnAlreadyRecorded as exc:
            # The IRP keeps one IRN per document number, so a different recorded IRN means the
            # ledger and the portal disagree: a person has to look, retrying cannot fix it.
            raise NeedsAttentionError("irn_conflict", str(exc)) from exc
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
