"""A ``quickbooks`` job -> QuickBooks Online calls: push an invoice, void it, push a payment.

At most once per document, whatever fails in between: every write carries a ``requestid`` derived
from the job id (Intuit answers a repeated one with the first answer), and every job first looks the
document up by its identity (mapping.py), so a create whose answer was lost is found, not repeated.
An invoice that exists but differs is updated sparsely with its current SyncToken.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from connectors.egress import CheckedTransport
from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError, RetryableError
from connectors.oauth import CONNECTED, DISCONNECTED, TokenKeeper, connection
from connectors.quickbooks import mapping, routes
from connectors.quickbooks.client import QuickBooksClient
from connectors.quickbooks.settings import ENDPOINTS, OAUTH, PROVIDER, tax_code_map
from engine import db
from engine.application import InvoiceNotFound
from engine.domain.payment import Payment
from engine.integrations import IntegrationSettings
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult


class QuickBooksHandler:
    def __init__(self, context: HandlerContext) -> None:
        self.context = context
        self.keeper = TokenKeeper(
            context.settings,
            context.ring,
            context.service,
            {PROVIDER: OAUTH},
            lambda loaded: CheckedTransport(ENDPOINTS, context.settings.mode, loaded.environment),
        )

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        tenant_id = UUID(job.tenant_id)
        loaded = await self.context.integration(tenant_id)
        realm = await self._realm(tenant_id)
        if realm is None:
            # Never connected (or disconnected on purpose): the tenant does not sync, as with a
            # disabled integration. A connection that needs re-authorisation raises instead, so its
            # jobs wait in the DLQ for a redrive (docs/runbooks/quickbooks-needs-reauth.md).
            return JobResult({"action": "skipped_not_connected"})

        async def token(force: bool) -> str:
            if force:
                return await self.keeper.refresh(tenant_id, PROVIDER)
            return await self.keeper.access_token(tenant_id, PROVIDER)

        transport = await self.context.transport(loaded)
        try:
            async with QuickBooksClient(loaded.base_url, realm, token, transport=transport) as client:
                if job.kind == routes.PUSH_INVOICE:
                    return await self._push_invoice(client, loaded, job)
                if job.kind == routes.VOID_INVOICE:
                    return await self._void_invoice(client, job)
                if job.kind == routes.PUSH_PAYMENT:
                    return await self._push_payment(client, loaded, job)
        except mapping.MappingError as exc:
            raise NeedsAttentionError(exc.code, str(exc)) from exc
        raise PermanentError("unknown_job_kind", f"quickbooks has no job kind {job.kind[:40]!r}")

    async def _realm(self, tenant_id: UUID) -> str | None:
        def read() -> Any:
            with db.connect(self.context.settings) as conn:
                return connection(conn, tenant_id, PROVIDER)

        row = await self.context.blocking(read)
        if row is None or row["status"] == DISCONNECTED:
            return None
        if row["status"] != CONNECTED or not row["account_id"]:
            raise NeedsAttentionError(
                "not_connected", f"quickbooks is {row['status']} for this tenant: connect it again"
            )
        return str(row["account_id"])

    async def _one(
        self, client: QuickBooksClient, entity: str, field: str, value: str
    ) -> dict[str, Any] | None:
        rows = await client.query(entity, mapping.select(entity, field, value))
        return rows[0] if rows else None

    async def _customer(self, client: QuickBooksClient, buyer: dict[str, Any], job: Job) -> str:
        name = mapping.customer_name(buyer)
        found = await self._one(client, "Customer", "DisplayName", name)
        if found is None:
            found = await client.create("Customer", mapping.customer_body(buyer), f"{job.job_id}:customer")
        return str(found["Id"])

    async def _item(self, client: QuickBooksClient, name: str, income_account: str, job: Job) -> str:
        found = await self._one(client, "Item", "Name", name)
        if found is None:
            found = await client.create(
                "Item", mapping.item_body(name, income_account), f"{job.job_id}:item:{name}"
            )
        return str(found["Id"])

    async def _push_invoice(
        self, client: QuickBooksClient, loaded: IntegrationSettings, job: Job
    ) -> JobResult:
        record = dict(job.payload["invoice"])
        codes = _codes(loaded)
        customer_id = await self._customer(client, dict(record.get("buyer") or {}), job)
        income = loaded.credentials["income_account_id"]
        item_ids: dict[str, str] = {}
        for line in record.get("lines") or []:
            name = mapping.item_name(line)
            if name not in item_ids:
                item_ids[name] = await self._item(client, name, income, job)
        wanted = mapping.invoice_body(record, customer_id, item_ids, codes)
        found = await self._one(client, "Invoice", "DocNumber", wanted["DocNumber"])
        if found is None:
            created = await client.create("Invoice", wanted, f"{job.job_id}:invoice")
            return JobResult({"quickbooks_invoice_id": created["Id"], "action": "created"})
        if mapping.same_invoice(found, wanted):
            return JobResult({"quickbooks_invoice_id": found["Id"], "action": "unchanged"})
        updated = await client.sparse_update(
            "Invoice",
            {**wanted, "Id": found["Id"], "SyncToken": found["SyncToken"]},
            f"{job.job_id}:invoice:{found['SyncToken']}",
        )
        return JobResult({"quickbooks_invoice_id": updated["Id"], "action": "updated"})

    async def _void_invoice(self, client: QuickBooksClient, job: Job) -> JobResult:
        tenant_id, invoice_id = UUID(job.tenant_id), UUID(str(job.payload["invoice_id"]))
        try:
            invoice = await self.context.blocking(
                lambda: self.context.service.get_invoice(tenant_id, invoice_id)
            )
        except InvoiceNotFound as exc:
            raise PermanentError("invoice_not_found", "the cancelled invoice is not in the ledger") from exc
        found = await self._one(client, "Invoice", "DocNumber", mapping.doc_number(str(invoice.number)))
        if found is None or found.get("PrivateNote", "").split(" ")[0] != mapping.invoice_marker(
            str(invoice_id)
        ):
            # Never pushed (or the number belongs to a document we did not write): nothing of ours to void.
            return JobResult({"action": "not_in_quickbooks"})
        if mapping.is_voided(found):
            return JobResult({"quickbooks_invoice_id": found["Id"], "action": "already_voided"})
        voided = await client.void_invoice(
            str(found["Id"]), str(found["SyncToken"]), f"{job.job_id}:void:{found['SyncToken']}"
        )
        return JobResult({"quickbooks_invoice_id": voided["Id"], "action": "voided"})

    async def _push_payment(
        self, client: QuickBooksClient, loaded: IntegrationSettings, job: Job
    ) -> JobResult:
        tenant_id = UUID(job.tenant_id)
        record = await self.context.blocking(lambda: self._payment_record(tenant_id, job))
        if record is None:
            return JobResult({"action": "no_invoice_reference"})
        number = mapping.doc_number(str(record["invoice_number"]))
        invoice = await self._one(client, "Invoice", "DocNumber", number)
        if invoice is None:
            # The invoice's own job has not run yet (another partition): wait for it.
            raise RetryableError("invoice_not_synced", f"invoice {number} is not in QuickBooks yet")
        existing = await self._one(client, "Payment", "PaymentRefNum", mapping.payment_ref(record))
        if existing is not None:
            return JobResult({"quickbooks_payment_id": existing["Id"], "action": "unchanged"})
        body = mapping.payment_body(record, invoice, loaded.credentials["deposit_account_id"])
        created = await client.create("Payment", body, f"{job.job_id}:payment")
        return JobResult({"quickbooks_payment_id": created["Id"], "action": "created"})

    def _payment_record(self, tenant_id: UUID, job: Job) -> dict[str, Any] | None:
        """The captured payment as mapping.py wants it, read from the ledger (the status event that
        made the job carries no amount), with the number of the invoice it pays; None when it names
        no invoice."""
        service = self.context.service
        try:
            payment: object = service.ledger.repository.get(UUID(str(job.payload["payment_id"])))
        except (AggregateNotFoundError, ValueError) as exc:
            raise PermanentError("payment_not_found", "the payment is not in the ledger") from exc
        if not isinstance(payment, Payment) or payment.tenant_id != tenant_id:
            raise PermanentError("payment_not_found", "the payment is not in the ledger")
        reference = dict(payment.reference)
        number = reference.get("invoice_number")
        if not number and reference.get("invoice_id"):
            try:
                number = service.get_invoice(tenant_id, UUID(reference["invoice_id"])).number
            except (InvoiceNotFound, ValueError):
                number = None
        if not number:
            return None
        return {
            "payment_id": str(payment.id),
            "provider_payment_id": payment.provider_payment_id,
            "amount": payment.amount,
            "paid_at": int(payment.paid_at.timestamp() * 1000),
            "invoice_number": number,
        }

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        # The DLQ record (with its error headers) is the failure's record; a document that never
        # reached the books is also visible to the accountant in QuickBooks itself.
        return None

    async def close(self) -> None:
        return None


def _codes(loaded: IntegrationSettings) -> dict[Any, str]:
    try:
        return tax_code_map(loaded.credentials.get("tax_codes", ""))
    except ValueError as exc:
        raise NeedsAttentionError("invalid_tax_codes", str(exc)) from exc


def create_handler(context: HandlerContext) -> QuickBooksHandler:
    return QuickBooksHandler(context)
