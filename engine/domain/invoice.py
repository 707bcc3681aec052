"""The Invoice aggregate: the whole life of a tax invoice (an Indian GST invoice or a Kenyan eTIMS
sale or credit note), and nothing about Kafka or HTTP.

An invoice's id is derived from (tenant, financial year, number), so the event store's
per-aggregate optimistic concurrency is what makes invoice numbers unique per tenant and
financial year: a second ``Issued`` event for the same id cannot be stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from engine.errors import Conflict

# The amounts of an Indian line a credit note takes back, tracked one by one (Invoice.credited_parts).
CREDIT_PARTS = ("taxable_value", "cgst", "sgst", "igst", "cess")

INVOICE_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/invoice")


def invoice_id_for(tenant_id: UUID, financial_year: str, number: str) -> UUID:
    """The stable id of invoice ``number`` of ``tenant_id`` in ``financial_year``.

    Numbers compare case-insensitively: the IRP treats "inv-1" and "INV-1" as the same document.
    """
    return uuid5(INVOICE_ID_NAMESPACE, f"{tenant_id}/{financial_year}/{number.strip().upper()}")


class InvoiceStatus:
    ISSUED = "issued"
    CANCELLED = "cancelled"


class DocumentType:
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"
    DEBIT_NOTE = "debit_note"  # India (issue 11): increases what the buyer owes


class EtimsStatus:
    """Where a Kenyan sale stands with KRA's eTIMS (GET /v1/invoices/{id} ``etims.status``)."""

    PENDING = "pending"  # accepted by us, not (yet) signed by KRA
    SIGNED = "signed"
    FAILED = "failed"  # refused for good: the branch's queue waits for a resend or a void
    VOIDED = "voided"  # the operator gave up on the sale, its invcNo left unused with a reason


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
        place_of_supply: str | None  # None on Kenyan invoices (no GST)
        intra_state: bool | None
        lines: list[dict[str, Any]]
        totals: dict[str, Decimal]
        idempotency_key: str | None
        request_hash: str
        source: str
        traceparent: str | None
        # Added with Kenyan invoices (issued v4); events stored before are Indian invoices.
        country: str = "IN"
        document_type: str = DocumentType.INVOICE
        original_invoice_id: str | None = None
        original_number: str | None = None
        refund_reason_code: str | None = None
        environment: str | None = None
        branch_id: str | None = None
        payment_type: str | None = None
        tax_breakdown: list[dict[str, Any]] | None = None
        # Kenya: whether the unit prices included VAT (then a credit note's prices do too). Not
        # published: the lines' amounts already say what was charged.
        prices_include_tax: bool = False
        # Added with GST returns (issued v5, issue 11); Indian invoices stored before have the defaults.
        reverse_charge: bool = False
        ecommerce_gstin: str | None = None
        export: dict[str, Any] | None = None
        note_reason: str | None = None
        original_invoice_date: date | None = None

    class Credited(Aggregate.Event):
        """A credit note took back part of this invoice: per line, the quantity and the amount
        (taxable + VAT) it credited. Stored in the same transaction as the credit note, so the
        invoice's version is what keeps concurrent credit notes from exceeding it together."""

        credit_note_id: str
        credit_note_number: str
        lines: list[dict[str, Any]]  # {line_no, quantity, amount}
        tenant_id: UUID | None = None

    class CreditReleased(Aggregate.Event):
        """A credit note of this invoice was cancelled: what it had taken back is available again.
        Stored in the same transaction as the note's cancellation (India, issue 11)."""

        credit_note_id: str
        credit_note_number: str
        lines: list[dict[str, Any]]  # {line_no, quantity, amount}, as the note's Credited had them
        tenant_id: UUID | None = None

    class EtimsNumbered(Aggregate.Event):
        job_id: str
        environment: str
        branch_id: str
        invc_no: int
        device_type: str
        traceparent: str | None = None
        tenant_id: UUID | None = None

    class EtimsSigned(Aggregate.Event):
        job_id: str
        environment: str
        branch_id: str
        invc_no: int
        receipt_no: int
        total_receipt_no: int
        internal_data: str | None
        receipt_signature: str | None
        sdc_id: str | None
        mrc_no: str | None
        sdc_datetime: str | None
        qr_url: str | None
        device_type: str
        adopted_existing: bool
        traceparent: str | None = None
        tenant_id: UUID | None = None

    class EtimsFailed(Aggregate.Event):
        job_id: str
        environment: str
        branch_id: str
        invc_no: int
        result_code: str
        error_class: str
        message: str
        traceparent: str | None = None
        tenant_id: UUID | None = None

    class EtimsVoided(Aggregate.Event):
        environment: str
        branch_id: str
        invc_no: int
        reason: str
        voided_by: str
        traceparent: str | None = None
        tenant_id: UUID | None = None

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
        # The fields added with Kenyan invoices come before the ``*`` on purpose: eventsourcing
        # treats every keyword-only parameter as required, default or not, and Indian invoices
        # are built without them.
        country: str = "IN",
        document_type: str = DocumentType.INVOICE,
        original_invoice_id: str | None = None,
        original_number: str | None = None,
        refund_reason_code: str | None = None,
        environment: str | None = None,
        branch_id: str | None = None,
        payment_type: str | None = None,
        tax_breakdown: list[dict[str, Any]] | None = None,
        prices_include_tax: bool = False,
        reverse_charge: bool = False,
        ecommerce_gstin: str | None = None,
        export: dict[str, Any] | None = None,
        note_reason: str | None = None,
        original_invoice_date: date | None = None,
        *,
        tenant_id: UUID,
        number: str,
        financial_year: str,
        invoice_date: date,
        currency: str,
        supply_type: str,
        seller: dict[str, Any],
        buyer: dict[str, Any],
        place_of_supply: str | None,
        intra_state: bool | None,
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
        self.country = country
        self.document_type = document_type
        self.original_invoice_id = original_invoice_id
        self.original_number = original_number
        self.refund_reason_code = refund_reason_code
        self.environment = environment
        self.branch_id = branch_id
        self.payment_type = payment_type
        self.tax_breakdown = tax_breakdown or []
        self.prices_include_tax = prices_include_tax
        self.reverse_charge = reverse_charge
        self.ecommerce_gstin = ecommerce_gstin
        self.export = export
        self.note_reason = note_reason
        self.original_invoice_date = original_invoice_date
        # line_no -> {"quantity": Decimal, "amount": Decimal} taken back by credit notes so far
        self.credited: dict[int, dict[str, Decimal]] = {}
        self.credit_notes: list[str] = []
        # credit note id -> its lines as credited, so cancelling the note can give them back
        self.credits_by_note: dict[str, list[dict[str, Any]]] = {}
        # line_no -> the taxable value and taxes credited so far (Indian notes' lines carry them as
        # "parts"), so the note taking the rest of a line takes exactly what is left of each
        self.credited_parts: dict[int, dict[str, Decimal]] = {}
        # The eTIMS state of a Kenyan sale; None for Indian invoices.
        self.etims: dict[str, Any] | None = (
            {"status": EtimsStatus.PENDING, "environment": environment, "branch_id": branch_id}
            if country == "KE"
            else None
        )
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

    # -- credit notes (Kenya) -----------------------------------------------------------------

    def record_credit(
        self, *, credit_note_id: str, credit_note_number: str, lines: list[dict[str, Any]]
    ) -> None:
        """Take ``lines`` ({line_no, quantity, amount}) off what remains of this invoice. The caller
        checked them against :meth:`remaining`; saving this event together with the credit note is
        what makes two concurrent credit notes conflict (the same invoice version)."""
        self._credited(
            credit_note_id=credit_note_id,
            credit_note_number=credit_note_number,
            lines=lines,
            tenant_id=self.tenant_id,
        )

    @event(Credited)
    def _credited(
        self,
        *,
        credit_note_id: str,
        credit_note_number: str,
        lines: list[dict[str, Any]],
        tenant_id: UUID,
    ) -> None:
        for line in lines:
            taken = self.credited.setdefault(
                int(line["line_no"]), {"quantity": Decimal("0"), "amount": Decimal("0.00")}
            )
            taken["quantity"] += Decimal(line["quantity"])
            taken["amount"] += Decimal(line["amount"])
            self._add_parts(int(line["line_no"]), line.get("parts"), 1)
        self.credit_notes.append(credit_note_id)
        self.credits_by_note[credit_note_id] = [dict(line) for line in lines]

    def release_credit(self, *, credit_note_id: str, credit_note_number: str) -> bool:
        """Give back what credit note ``credit_note_id`` took (it was cancelled). False when the note
        took nothing from this invoice or was released already: a retried cancellation adds nothing."""
        lines = self.credits_by_note.get(credit_note_id)
        if lines is None:
            return False
        self._credit_released(
            credit_note_id=credit_note_id,
            credit_note_number=credit_note_number,
            lines=lines,
            tenant_id=self.tenant_id,
        )
        return True

    @event(CreditReleased)
    def _credit_released(
        self,
        *,
        credit_note_id: str,
        credit_note_number: str,
        lines: list[dict[str, Any]],
        tenant_id: UUID,
    ) -> None:
        for line in lines:
            taken = self.credited[int(line["line_no"])]
            taken["quantity"] -= Decimal(line["quantity"])
            taken["amount"] -= Decimal(line["amount"])
            self._add_parts(int(line["line_no"]), line.get("parts"), -1)
        self.credits_by_note.pop(credit_note_id, None)

    def _add_parts(self, line_no: int, parts: Mapping[str, Any] | None, sign: int) -> None:
        if not parts:
            return
        taken = self.credited_parts.setdefault(line_no, {})
        for name, value in parts.items():
            taken[name] = taken.get(name, Decimal("0")) + sign * Decimal(value)

    def remaining_parts(self, line_no: int) -> dict[str, Decimal]:
        """Taxable value and each tax of line ``line_no`` not yet credited (Indian invoices)."""
        line = next(x for x in self.lines if int(x["line_no"]) == line_no)
        taken = self.credited_parts.get(line_no, {})
        return {name: Decimal(line[name]) - taken.get(name, Decimal("0")) for name in CREDIT_PARTS}

    def remaining(self, line_no: int) -> tuple[Decimal, Decimal]:
        """(quantity, amount incl. VAT) of line ``line_no`` not yet credited."""
        line = next(x for x in self.lines if int(x["line_no"]) == line_no)
        taken = self.credited.get(line_no, {"quantity": Decimal("0"), "amount": Decimal("0")})
        return Decimal(line["quantity"]) - taken["quantity"], Decimal(line["total"]) - taken["amount"]

    # -- eTIMS results (Kenya; connectors/etims records them through LedgerService) --------------

    def _etims_state(self) -> dict[str, Any]:
        if self.etims is None:
            raise NotAKenyanSale(f"invoice {self.number} is not a Kenyan (eTIMS) sale")
        return self.etims

    def record_etims_numbered(
        self,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        invc_no: int,
        device_type: str,
        traceparent: str | None = None,
    ) -> bool:
        """The invcNo allocated before the first send. The same number again changes nothing, nor
        does a late numbering of a sale already signed there."""
        state = self._etims_state()
        same_place = state.get("environment") == environment and state.get("branch_id") == branch_id
        if same_place and state.get("invc_no") == invc_no:
            return False
        if same_place and state["status"] == EtimsStatus.SIGNED:
            return False
        self._etims_numbered(
            job_id=job_id,
            environment=environment,
            branch_id=branch_id,
            invc_no=invc_no,
            device_type=device_type,
            traceparent=traceparent,
            tenant_id=self.tenant_id,
        )
        return True

    @event(EtimsNumbered)
    def _etims_numbered(
        self,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        invc_no: int,
        device_type: str,
        traceparent: str | None,
        tenant_id: UUID,
    ) -> None:
        self.etims = {
            "status": EtimsStatus.PENDING,
            "environment": environment,
            "branch_id": branch_id,
            "invc_no": invc_no,
            "device_type": device_type,
            "job_id": job_id,
        }

    def record_etims_signed(
        self,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        receipt: Mapping[str, Any],
        traceparent: str | None = None,
    ) -> bool:
        """KRA's signed receipt. A sale is signed once: a repeated (or different) signing later is
        ignored, so a redelivered job cannot overwrite the receipt."""
        state = self._etims_state()
        if state["status"] == EtimsStatus.SIGNED and state.get("environment") == environment:
            return False
        self._etims_signed(
            job_id=job_id,
            environment=environment,
            branch_id=branch_id,
            invc_no=int(receipt["invc_no"]),
            receipt_no=int(receipt["receipt_no"]),
            total_receipt_no=int(receipt["total_receipt_no"]),
            internal_data=_text(receipt.get("internal_data")),
            receipt_signature=_text(receipt.get("receipt_signature")),
            sdc_id=_text(receipt.get("sdc_id")),
            mrc_no=_text(receipt.get("mrc_no")),
            sdc_datetime=_text(receipt.get("sdc_datetime")),
            qr_url=_text(receipt.get("qr_url")),
            device_type=str(receipt["device_type"]),
            adopted_existing=bool(receipt.get("adopted_existing", False)),
            traceparent=traceparent,
            tenant_id=self.tenant_id,
        )
        return True

    @event(EtimsSigned)
    def _etims_signed(
        self,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        invc_no: int,
        receipt_no: int,
        total_receipt_no: int,
        internal_data: str | None,
        receipt_signature: str | None,
        sdc_id: str | None,
        mrc_no: str | None,
        sdc_datetime: str | None,
        qr_url: str | None,
        device_type: str,
        adopted_existing: bool,
        traceparent: str | None,
        tenant_id: UUID,
    ) -> None:
        self.etims = {
            "status": EtimsStatus.SIGNED,
            "environment": environment,
            "branch_id": branch_id,
            "invc_no": invc_no,
            "device_type": device_type,
            "job_id": job_id,
            "receipt_no": receipt_no,
            "total_receipt_no": total_receipt_no,
            "internal_data": internal_data,
            "receipt_signature": receipt_signature,
            "sdc_id": sdc_id,
            "mrc_no": mrc_no,
            "sdc_datetime": sdc_datetime,
            "qr_url": qr_url,
            "adopted_existing": adopted_existing,
        }

    def record_etims_failed(
        self,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        invc_no: int,
        result_code: str,
        error_class: str,
        message: str,
        traceparent: str | None = None,
    ) -> bool:
        """A refusal for good. Ignored once the sale is signed (a late failure of an earlier attempt
        must not hide the receipt) and when the same failure is already recorded."""
        state = self._etims_state()
        if (
            state["status"] in (EtimsStatus.SIGNED, EtimsStatus.VOIDED)
            and state.get("environment") == environment
        ):
            return False
        failure = state.get("failure") or {}
        if (
            state["status"] == EtimsStatus.FAILED
            and state.get("invc_no") == invc_no
            and failure.get("job_id") == job_id
            and failure.get("code") == result_code
        ):
            return False
        self._etims_failed(
            job_id=job_id,
            environment=environment,
            branch_id=branch_id,
            invc_no=invc_no,
            result_code=result_code,
            error_class=error_class,
            message=message,
            traceparent=traceparent,
            tenant_id=self.tenant_id,
        )
        return True

    @event(EtimsFailed)
    def _etims_failed(
        self,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        invc_no: int,
        result_code: str,
        error_class: str,
        message: str,
        traceparent: str | None,
        tenant_id: UUID,
    ) -> None:
        previous = self.etims or {}
        self.etims = {
            **{k: previous[k] for k in ("device_type",) if k in previous},
            "status": EtimsStatus.FAILED,
            "environment": environment,
            "branch_id": branch_id,
            "invc_no": invc_no,
            "job_id": job_id,
            "failure": {
                "code": result_code,
                "message": message,
                "error_class": error_class,
                "job_id": job_id,
            },
        }

    def record_etims_voided(
        self,
        *,
        environment: str,
        branch_id: str,
        invc_no: int,
        reason: str,
        voided_by: str,
        traceparent: str | None = None,
    ) -> bool:
        """The operator voided the sale (its invcNo stays unused, with the reason). A signed sale
        cannot be voided here: KRA holds it, only a credit note takes it back."""
        state = self._etims_state()
        if state["status"] == EtimsStatus.VOIDED and state.get("invc_no") == invc_no:
            return False
        if state["status"] == EtimsStatus.SIGNED and state.get("environment") == environment:
            raise EtimsAlreadySigned(
                f"invoice {self.number} is signed by KRA (receipt {state.get('receipt_no')}): "
                "issue a credit note instead of voiding it"
            )
        self._etims_voided(
            environment=environment,
            branch_id=branch_id,
            invc_no=invc_no,
            reason=reason,
            voided_by=voided_by,
            traceparent=traceparent,
            tenant_id=self.tenant_id,
        )
        return True

    @event(EtimsVoided)
    def _etims_voided(
        self,
        *,
        environment: str,
        branch_id: str,
        invc_no: int,
        reason: str,
        voided_by: str,
        traceparent: str | None,
        tenant_id: UUID,
    ) -> None:
        previous = self.etims or {}
        self.etims = {
            **{k: previous[k] for k in ("device_type", "job_id", "failure") if k in previous},
            "status": EtimsStatus.VOIDED,
            "environment": environment,
            "branch_id": branch_id,
            "invc_no": invc_no,
            "void": {"reason": reason, "voided_by": voided_by},
        }

    def check_not_cancelled(self) -> None:
        if self.status == InvoiceStatus.CANCELLED:
            raise InvoiceAlreadyCancelled(f"invoice {self.number} is already cancelled")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class InvoiceError(Conflict):
    """Base of the invoice's domain errors."""


class InvoiceAlreadyCancelled(InvoiceError):
    """A cancelled invoice cannot be cancelled again."""


class IrnAlreadyRecorded(InvoiceError):
    """An invoice has one IRN; a different one for the same document is a conflict to investigate."""


class NotAKenyanSale(InvoiceError):
    """An eTIMS result for an invoice that is not a Kenyan sale."""


class EtimsAlreadySigned(InvoiceError):
    """A signed sale cannot be voided (KRA holds it)."""
