"""The Invoice aggregate: the whole life of a GST invoice, and nothing about Kafka or HTTP.

An invoice's id is derived from (tenant, financial year, number), so the event store's
per-aggregate optimistic concurrency is what makes invoice numbers unique per tenant and
financial year: a second ``Issued`` event for the same id cannot be stored.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from engine.errors import Conflict

INVOICE_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/invoice")


def invoice_id_for(tenant_id: UUID, financial_year: str, number: str) -> UUID:
    """The stable id of invoice ``number`` of ``tenant_id`` in ``financial_year``.

    Numbers compare case-insensitively: the IRP treats "inv-1" and "INV-1" as the same document.
    """
    return uuid5(INVOICE_ID_NAMESPACE, f"{tenant_id}/{financial_year}/{number.strip().upper()}")


class InvoiceStatus:
    ISSUED = "issued"
    CANCELLED = "cancelled"


class Invoice(Aggregate):
    """A tax invoice issued by a tenant to a buyer."""

    class Issued(Aggregate.Created):
        tenant_id: UUID
        number: str
        financial_year: str
        invoice_date: date
        currency: str
        supply_type: str
        seller: dict[str, Any]
        buyer: dict[str, Any]
        place_of_supply: str
        intra_state: bool
        lines: list[dict[str, Any]]
        totals: dict[str, Decimal]
        idempotency_key: str | None
        request_hash: str
        source: str
        traceparent: str | None

    class Cancelled(Aggregate.Event):
        reason: str
        remark: str | None
        cancelled_at: datetime
        traceparent: str | None
        # Every invoice event names its tenant (ce_source); events stored before this field have None.
        tenant_id: UUID | None = None

    class IrnGenerated(Aggregate.Event):
        job_id: str
        irn: str
        ack_no: str
        ack_date: str
        signed_invoice: str
        signed_qr_code: str
        adopted_existing: bool
        traceparent: str | None
        # Every invoice event names its tenant (ce_source); events stored before this field have None.
        tenant_id: UUID | None = None

    class IrnFailed(Aggregate.Event):
        job_id: str
        operation: str
        error_class: str
        code: str
        message: str
        attempts: int
        traceparent: str | None
        # Every invoice event names its tenant (ce_source); events stored before this field have None.
        tenant_id: UUID | None = None

    class IrnCancelled(Aggregate.Event):
        job_id: str
        irn: str
        cancel_date: str
        reason_code: int
        remark: str | None
        traceparent: str | None
        # Every invoice event names its tenant (ce_source); events stored before this field have None.
        tenant_id: UUID | None = None

    @staticmethod
    def create_id(*, tenant_id: UUID, financial_year: str, number: str, **_: Any) -> UUID:
        return invoice_id_for(tenant_id, financial_year, number)

    @event(Issued)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        number: str,
        financial_year: str,
        invoice_date: date,
        currency: str,
        supply_type: str,
        seller: dict[str, Any],
        buyer: dict[str, Any],
        place_of_supply: str,
        intra_state: bool,
        lines: list[dict[str, Any]],
        totals: dict[str, Decimal],
        idempotency_key: str | None,
        request_hash: str,
        source: str,
        traceparent: str | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.number = number
        self.financial_year = financial_year
        self.invoice_date = invoice_date
        self.currency = currency
        self.supply_type = supply_type
        self.seller = seller
        self.buyer = buyer
        self.place_of_supply = place_of_supply
        self.intra_state = intra_state
        self.lines = lines
        self.totals = totals
        self.idempotency_key = idempotency_key
        self.request_hash = request_hash
        self.source = source
        self.traceparent = traceparent
        self.status = InvoiceStatus.ISSUED
        self.cancellation: dict[str, Any] | None = None
        self.einvoice: dict[str, Any] | None = None  # IRN, AckNo, AckDt, signed documents
        self.einvoice_failure: dict[str, Any] | None = None
        self.einvoice_cancellation: dict[str, Any] | None = None

    def cancel(self, *, reason: str, remark: str | None, at: datetime, traceparent: str | None) -> None:
        """Cancel the invoice; cancelling twice is refused."""
        self.check_not_cancelled()
        self._cancelled(
            reason=reason, remark=remark, cancelled_at=at, traceparent=traceparent, tenant_id=self.tenant_id
        )

    @event(Cancelled)
    def _cancelled(
        self,
        *,
        reason: str,
        remark: str | None,
        cancelled_at: datetime,
        traceparent: str | None,
        tenant_id: UUID,
    ) -> None:
        self.status = InvoiceStatus.CANCELLED
        self.cancellation = {"reason": reason, "remark": remark, "cancelled_at": cancelled_at}

    # -- e-invoicing (IRN) ---------------------------------------------------------------------

    def record_irn(
        self,
        *,
        job_id: str,
        irn: str,
        ack_no: str,
        ack_date: str,
        signed_invoice: str,
        signed_qr_code: str,
        adopted_existing: bool,
        traceparent: str | None,
    ) -> bool:
        """Record the IRN the portal issued. Recording the same IRN again changes nothing (a job
        redelivered after a crash), so this returns False instead of emitting a second event."""
        if self.einvoice is not None:
            if self.einvoice["irn"] == irn:
                return False
            raise IrnAlreadyRecorded(f"invoice {self.number} already has IRN {self.einvoice['irn']}")
        self._irn_generated(
            job_id=job_id,
            irn=irn,
            ack_no=ack_no,
            ack_date=ack_date,
            signed_invoice=signed_invoice,
            signed_qr_code=signed_qr_code,
            adopted_existing=adopted_existing,
            traceparent=traceparent,
            tenant_id=self.tenant_id,
        )
        return True

    @event(IrnGenerated)
    def _irn_generated(
        self,
        *,
        job_id: str,
        irn: str,
        ack_no: str,
        ack_date: str,
        signed_invoice: str,
        signed_qr_code: str,
        adopted_existing: bool,
        traceparent: str | None,
        tenant_id: UUID,
    ) -> None:
        self.einvoice = {
            "irn": irn,
            "ack_no": ack_no,
            "ack_date": ack_date,
            "signed_invoice": signed_invoice,
            "signed_qr_code": signed_qr_code,
            "adopted_existing": adopted_existing,
        }
        self.einvoice_failure = None

    def record_irn_failure(
        self,
        *,
        job_id: str,
        operation: str,
        error_class: str,
        code: str,
        message: str,
        attempts: int,
        traceparent: str | None,
    ) -> bool:
        """Record why the portal call failed for good; the same job's failure is recorded once."""
        if self.einvoice_failure is not None and self.einvoice_failure["job_id"] == job_id:
            return False
        self._irn_failed(
            job_id=job_id,
            operation=operation,
            error_class=error_class,
            code=code,
            message=message,
            attempts=attempts,
            traceparent=traceparent,
            tenant_id=self.tenant_id,
        )
        return True

    @event(IrnFailed)
    def _irn_failed(
        self,
        *,
        job_id: str,
        operation: str,
        error_class: str,
        code: str,
        message: str,
        attempts: int,
        traceparent: str | None,
        tenant_id: UUID,
    ) -> None:
        self.einvoice_failure = {
            "job_id": job_id,
            "operation": operation,
            "error_class": error_class,
            "code": code,
            "message": message,
            "attempts": attempts,
        }

    def record_irn_cancellation(
        self,
        *,
        job_id: str,
        irn: str,
        cancel_date: str,
        reason_code: int,
        remark: str | None,
        traceparent: str | None,
    ) -> bool:
        if self.einvoice_cancellation is not None:
            return False
        self._irn_cancelled(
            job_id=job_id,
            irn=irn,
            cancel_date=cancel_date,
            reason_code=reason_code,
            remark=remark,
            traceparent=traceparent,
            tenant_id=self.tenant_id,
        )
        return True

    @event(IrnCancelled)
    def _irn_cancelled(
        self,
        *,
        job_id: str,
        irn: str,
        cancel_date: str,
        reason_code: int,
        remark: str | None,
        traceparent: str | None,
        tenant_id: UUID,
    ) -> None:
        self.einvoice_cancellation = {
            "irn": irn,
            "cancel_date": cancel_date,
            "reason_code": reason_code,
            "remark": remark,
        }

    def check_not_cancelled(self) -> None:
        if self.status == InvoiceStatus.CANCELLED:
            raise InvoiceAlreadyCancelled(f"invoice {self.number} is already cancelled")


class InvoiceError(Conflict):
    """Base of the invoice's domain errors."""


class InvoiceAlreadyCancelled(InvoiceError):
    """A cancelled invoice cannot be cancelled again."""


class IrnAlreadyRecorded(InvoiceError):
    """An invoice has one IRN; a different one for the same document is a conflict to investigate."""
