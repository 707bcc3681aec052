"""A ``tally`` job -> one voucher imported into the tenant's Tally company.

At most one voucher per document whatever fails in between: the voucher's REMOTEID is derived from
the tenant and the document (vouchers.remote_id), so a retry after a timeout whose import Tally
finished anyway alters that voucher (ALTERED) instead of adding a second one. A voucher Tally refuses
(an unknown ledger, unbalanced legs) is a permanent error carrying Tally's LINEERROR: the runtime
dead-letters it with that message; once the ledger exists, a redrive posts it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError
from connectors.tally import journal, ledgers, mapping, posting, routes
from connectors.tally.client import TallyClient
from connectors.tally.vouchers import Voucher, VoucherRefused
from engine import db
from engine.application import InvoiceNotFound
from engine.domain.payment import Payment
from engine.expenses import ExpenseBook, ExpenseNotFound
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult


class TallyHandler:
    def __init__(self, context: HandlerContext) -> None:
        self.context = context

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        if job.kind == routes.POST_VOUCHER:
            return await self._post_voucher(job)
        tenant_id = UUID(job.tenant_id)
        loaded = await self.context.integration(tenant_id)
        ledger_map = await self.context.blocking(lambda: self._ledger_map(tenant_id))
        voucher = await self.context.blocking(lambda: self._voucher(tenant_id, job, ledger_map))
        transport = await self.context.transport(loaded)
        company = str(loaded.credentials.get("company") or "")
        async with TallyClient(loaded.base_url, company, transport=transport) as client:
            result = await client.import_vouchers([voucher])
        return JobResult(
            {
                "voucher_type": voucher.voucher_type,
                "remote_id": voucher.remote_id,
                "action": "created" if result.count("CREATED") else "altered",
                "tally_voucher_id": result.last_voucher_id,
            }
        )

    async def _post_voucher(self, job: Job) -> JobResult:
        """A voucher of POST /v1/tally/vouchers, read from its row (the job's tenant's only)."""
        try:
            tenant_id, voucher_id = UUID(job.tenant_id), UUID(job.subject)
        except ValueError as exc:
            raise PermanentError("malformed_job", "the job's tenant or subject is not a UUID") from exc

        def row() -> dict[str, Any] | None:
            with db.connect(self.context.settings) as conn:
                return posting.get(conn, tenant_id, voucher_id)

        found = await self.context.blocking(row)
        if found is None:
            raise PermanentError("malformed_job", "no such voucher for the job's tenant")
        if found["status"] == "posted":
            return JobResult({**dict(found["tally_answer"] or {}), "already_done": True})
        try:
            voucher = journal.voucher_of(str(tenant_id), journal.from_document(found["document"]))
        except VoucherRefused as exc:
            raise PermanentError(exc.code, exc.message) from exc
        loaded = await self.context.integration(tenant_id)
        transport = await self.context.transport(loaded)
        company = str(loaded.credentials.get("company") or "")
        async with TallyClient(loaded.base_url, company, transport=transport) as client:
            result = await client.import_vouchers([voucher])
        answer = {
            "voucher_type": voucher.voucher_type,
            "remote_id": voucher.remote_id,
            "action": "created" if result.count("CREATED") else "altered",
            "tally_voucher_id": result.last_voucher_id,
        }

        def posted() -> None:
            with db.connect(self.context.settings) as conn, conn.transaction():
                posting.mark_posted(conn, voucher_id, answer)

        await self.context.blocking(posted)
        return JobResult(answer)

    def _ledger_map(self, tenant_id: UUID) -> mapping.LedgerMap:
        with db.connect(self.context.settings) as conn:
            return ledgers.ledger_map(conn, tenant_id)

    def _voucher(self, tenant_id: UUID, job: Job, ledger_map: mapping.LedgerMap) -> Voucher:
        try:
            if job.kind in (routes.POST_SALES, routes.POST_CREDIT_NOTE):
                record = dict(job.payload["invoice"])
                if str(record.get("tenant_id")) != str(tenant_id):
                    raise PermanentError("malformed_job", "the invoice is not the job's tenant's")
                build = (
                    mapping.sales_voucher if job.kind == routes.POST_SALES else mapping.credit_note_voucher
                )
                return build(str(tenant_id), record, ledger_map)
            if job.kind == routes.POST_RECEIPT:
                return mapping.receipt_voucher(str(tenant_id), self._payment(tenant_id, job), ledger_map)
            if job.kind in (routes.POST_PURCHASE, routes.POST_PAYMENT):
                expense = self._expense(tenant_id, job)
                if job.kind == routes.POST_PURCHASE:
                    return mapping.purchase_voucher(str(tenant_id), expense, ledger_map)
                return mapping.payment_voucher(str(tenant_id), expense, ledger_map)
        except mapping.LedgerNotMapped as exc:
            raise NeedsAttentionError("ledger_not_mapped", str(exc)) from exc
        except VoucherRefused as exc:
            raise PermanentError(exc.code, exc.message) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentError(
                "malformed_job", f"the job's document is unreadable: {type(exc).__name__}"
            ) from exc
        raise PermanentError("unknown_job_kind", f"tally has no job kind {job.kind[:40]!r}")

    def _payment(self, tenant_id: UUID, job: Job) -> dict[str, Any]:
        """The captured payment as mapping.receipt_voucher wants it, read from the ledger (the status
        event carries no amount), with the buyer of the invoice it names as the paying party."""
        service = self.context.service
        try:
            payment: object = service.ledger.repository.get(UUID(str(job.payload["payment_id"])))
        except (AggregateNotFoundError, ValueError) as exc:
            raise PermanentError("payment_not_found", "the payment is not in the ledger") from exc
        if not isinstance(payment, Payment) or payment.tenant_id != tenant_id:
            raise PermanentError("payment_not_found", "the payment is not in the ledger")
        reference = dict(payment.reference)
        number, party = reference.get("invoice_number"), None
        invoice_id = reference.get("invoice_id")
        try:
            if invoice_id:
                invoice = service.get_invoice(tenant_id, UUID(invoice_id))
                number, party = invoice.number, invoice.buyer.get("name")
        except (InvoiceNotFound, ValueError):
            pass  # a reference we cannot resolve: the receipt still posts, to the debtors ledger
        return {
            "payment_id": str(payment.id),
            "provider_payment_id": payment.provider_payment_id,
            "amount": payment.amount,
            "paid_at": payment.paid_at,
            "invoice_number": number,
            "party_name": party,
        }

    def _expense(self, tenant_id: UUID, job: Job) -> dict[str, Any]:
        """The expense as mapping wants it, read from the event store (its events carry no amounts)."""
        try:
            expense = ExpenseBook(self.context.service).load_expense(
                tenant_id, UUID(str(job.payload["expense_id"]))
            )
        except (ExpenseNotFound, ValueError) as exc:
            raise PermanentError("expense_not_found", "the expense is not in the ledger") from exc
        paid_on = getattr(expense, "paid_on", None)
        if job.kind == routes.POST_PAYMENT and paid_on is None:
            raise PermanentError("expense_not_paid", "the expense has no payment recorded")
        return {
            "expense_id": str(expense.id),
            "expense_number": expense.expense_number,
            "amount": expense.amount,
            "category": expense.category,
            "expense_date": expense.expense_date,
            "vendor_name": expense.vendor_name,
            "description": expense.description,
            "paid_on": paid_on,
            "payment_reference": getattr(expense, "payment_reference", None),
            "tds_deducted": getattr(expense, "tds_deducted", None),
        }

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        # The DLQ record carries the job and Tally's LINEERROR in its error headers. A voucher of
        # POST /v1/tally/vouchers also shows it: GET /v1/tally/vouchers/{id} answers failed, with it.
        if job.kind != routes.POST_VOUCHER:
            return
        try:
            voucher_id = UUID(job.subject)
        except ValueError:
            return
        error_document = {
            "error_class": str(error.error_class),
            "code": error.code,
            "message": error.message,
            "line_errors": list(error.details.get("line_errors") or []),
            "attempts": attempts,
        }
        with db.connect(self.context.settings) as conn, conn.transaction():
            posting.mark_failed(conn, voucher_id, error_document)

    async def close(self) -> None:
        return None


def create_handler(context: HandlerContext) -> TallyHandler:
    return TallyHandler(context)
