"""The ``etims`` handler: dispatches a job by kind, and reaches KRA for the sales queue.

* ``sale`` (routes.py) -> :class:`connectors.etims.sales.SaleQueue`: queue the sale (invcNo
  allocated), send the branch's queue in order, record the results on the invoice.
* ``drain`` (routes.drain_job, queued by the operator's resend or void) -> send a branch's queue.
* ``device.*``, ``codes.*``, ``item.*`` -> etims-devices' :func:`connectors.etims.devices.run_device_job`.

:class:`KraChannel` is the sales queue's way to KRA: the branch's initialised device
(``active_device``: its CMC key from the sealed runtime secrets, never logged), an ``EtimsClient``
on the context's transport (the endpoint policy: a sandbox tenant's traffic cannot reach a
production host, and production only KRA's hosts), the sale mapped by ``mapping.sale_payload``.
Every answer (or its absence) is noted on the device (``record_device_success/failure``), which is
how a device is seen to go offline and come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from connectors.errors import ConnectorError, ErrorClass, NeedsAttentionError, PermanentError, RetryableError
from connectors.etims.client import DEFAULT_TIMEOUT, PROVIDER, EtimsClient
from connectors.etims.devices import (
    DEVICE_JOB_PREFIXES,
    ActiveDevice,
    active_device,
    item_class_of,
    record_device_failure,
    record_device_success,
    run_device_job,
    start_device_watch,
)
from connectors.etims.errors import DuplicateSale, SaleLookupUnavailable
from connectors.etims.mapping import SaleReceipt, receipt_qr_url, sale_payload
from connectors.etims.sales import (
    DRAIN,
    SALE,
    DuplicateAnswer,
    EtimsResults,
    QueuedSale,
    Receipt,
    SaleChannel,
    SaleDocument,
    SaleQueue,
)
from engine import db
from engine.errors import RequestRefused
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult

log = logging.getLogger("ledgerflow.etims")
T = TypeVar("T")

TIMEOUT_ENV = "LEDGERFLOW_ETIMS_TIMEOUT_S"
"""Seconds a KRA call may take (default the client's 45 s, Odoo's: "eTIMS can often have
congestion"); tests shorten it to see a lost answer quickly."""


def call_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    return float(raw) if raw else DEFAULT_TIMEOUT


class KraChannel(SaleChannel):
    """One branch's device, for the sales queue."""

    def __init__(self, context: HandlerContext, device: ActiveDevice, client: EtimsClient) -> None:
        self.context = context
        self.device = device
        self.client = client
        self.device_type = device.device_type

    def __repr__(self) -> str:
        return f"KraChannel({self.device!r})"

    async def _note(self, failure: ConnectorError | None) -> None:
        d = self.device

        def write() -> None:
            with db.connect(self.context.settings) as conn, conn.transaction():
                if failure is None:
                    record_device_success(conn, d.tenant_id, d.environment, d.bhf_id)
                else:
                    record_device_failure(
                        conn, d.tenant_id, d.environment, d.bhf_id, failure.code, failure.message
                    )

        await self.context.blocking(write)

    async def _item_classes(self, record: Mapping[str, Any]) -> dict[str, str]:
        codes = {str(line.get("item_code")) for line in record.get("lines") or [] if line.get("item_code")}
        d = self.device

        def read() -> dict[str, str]:
            with db.connect(self.context.settings) as conn:
                found = {code: item_class_of(conn, d.tenant_id, d.environment, code) for code in codes}
            return {code: cls for code, cls in found.items() if cls}

        return await self.context.blocking(read)

    async def save_sale(self, sale: QueuedSale, *, org_invc_no: int | None) -> Receipt:
        payload = sale_payload(
            sale.record,
            invc_no=sale.invc_no,
            org_invc_no=org_invc_no,
            item_classes=await self._item_classes(sale.record),
            # When it was queued, not when this attempt runs: a resend after a lost answer sends the
            # same document KRA may already hold.
            now=sale.queued_at or sale.sent_at or _now(),
            device_type=self.device_type,
        )
        try:
            answer = await self.client.save_sale(payload)
        except DuplicateSale:
            await self._note(None)  # KRA answered
            raise DuplicateAnswer() from None
        except ConnectorError as exc:
            # Only an answer that never came (timeout, outage, 5xx) says the device is unreachable.
            await self._note(exc if exc.error_class is ErrorClass.RETRYABLE else None)
            raise
        await self._note(None)
        return self._receipt(sale, answer, adopted=False)

    async def find_sale(self, sale: QueuedSale) -> Receipt | None:
        try:
            found = await self.client.find_sale(sale.invc_no)
        except SaleLookupUnavailable:
            return None
        return self._receipt(sale, found, adopted=True) if found is not None else None

    def _receipt(self, sale: QueuedSale, answer: SaleReceipt, *, adopted: bool) -> Receipt:
        seller = sale.record.get("seller") or {}
        pin = str(seller.get("kra_pin") or self.device.tin)
        return Receipt(
            receipt_no=answer.receipt_no,
            total_receipt_no=answer.total_receipt_no,
            internal_data=answer.internal_data,
            receipt_signature=answer.receipt_signature,
            # OSCU answers carry neither: they come from the device's initialisation.
            sdc_id=answer.sdc_id or self.device.sdc_id,
            mrc_no=answer.mrc_no or self.device.mrc_no,
            sdc_datetime=answer.sdc_datetime,
            qr_url=receipt_qr_url(sale.environment, pin, sale.bhf_id, answer.receipt_signature),
            device_type=self.device_type,
            adopted_existing=adopted,
        )


def _now() -> datetime:
    return datetime.now(UTC)


class EtimsJobs:
    """Handler and failure sink of the ``etims`` connector (one per worker process)."""

    def __init__(self, context: HandlerContext, results: EtimsResults | None = None) -> None:
        self.context = context
        self.results: EtimsResults = results if results is not None else context.service
        settings = context.settings
        self._pool = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=8,
            open=False,
            kwargs={"autocommit": True, "options": f"-c search_path={settings.db_schema}"},
        )
        self._clients: dict[tuple[str, ...], EtimsClient] = {}
        self._watch: asyncio.Task[None] | None = None
        self.queue = SaleQueue(
            self._connection, self.results, self._channel_for, self._record, settings.db_schema
        )

    async def _record(self, work: Callable[[], T]) -> T:
        """A result written to the ledger. The ledger refusing it (no such invoice, a conflicting
        result already recorded) is for a person: retrying the same write cannot change the answer."""
        try:
            return await self.context.blocking(work)
        except RequestRefused as exc:
            raise NeedsAttentionError("ledger_refused", f"{type(exc).__name__}: {exc}") from exc

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self._pool.closed:
            await self._pool.open()
        try:
            async with self._pool.connection() as conn:
                yield conn
        except db.DatabaseUnavailable as exc:
            raise RetryableError("database_unavailable", str(exc)) from exc

    async def _channel_for(self, sale: QueuedSale) -> SaleChannel:
        try:
            device = await active_device(self.context, sale.tenant_id, sale.bhf_id)
            if device.environment != sale.environment:
                raise RetryableError(
                    "environment_changed",
                    f"invcNo {sale.invc_no} was issued in {sale.environment}; the integration is now"
                    f" {device.environment}: switch it back to send the sales queued there",
                )
            loaded = await self.context.integration(sale.tenant_id)
        except ConnectorError as exc:
            if exc.error_class is ErrorClass.RETRYABLE:
                raise
            # The device needs a person (init failed, no key, no device for the branch): that is no
            # refusal of this sale, so the branch is not blocked and nothing is dead-lettered; the
            # sales wait (the device raised its own alert) and go out once the device is ready.
            raise RetryableError("device_not_ready", exc.message) from exc
        fingerprint = hashlib.sha256(device.cmc_key.encode()).hexdigest()
        key = (
            str(sale.tenant_id),
            device.environment,
            device.bhf_id,
            device.device_type,
            loaded.base_url,
            fingerprint,
        )
        client = self._clients.get(key)
        if client is None:
            client = EtimsClient(
                loaded.base_url,
                device_type=device.device_type,
                tin=device.tin,
                bhf_id=device.bhf_id,
                cmc_key=device.cmc_key,
                transport=await self.context.transport(loaded),
                timeout=call_timeout(),
            )
            self._clients[key] = client
        return KraChannel(self.context, device, client)

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        if self._watch is None:
            self._watch = start_device_watch(self.context)
        if job.kind == SALE:
            document = job.payload.get("invoice")
            if not isinstance(document, Mapping):
                raise _invalid(job, "the job carries no invoice")
            sale = SaleDocument.from_record(document)
            return JobResult(await self.queue.sale_job(sale, job_id=job.job_id))
        if job.kind == DRAIN:
            environment, bhf_id = str(job.payload["environment"]), str(job.payload["bhf_id"])
            return JobResult(await self.queue.drain_job(UUID(job.tenant_id), environment, bhf_id))
        if job.kind.startswith(DEVICE_JOB_PREFIXES):
            return await run_device_job(self.context, job, attempt)
        raise _invalid(job, f"{PROVIDER} has no job kind {job.kind!r}")

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        """A sale job dead-lettered (its record is no Kenyan sale, or a bug): say so on the invoice.
        Refusals by KRA never get here: they block the branch (sales.py) and are recorded there."""
        if job.kind != SALE:
            log.warning("etims job %s (%s) dead-lettered: %s", job.job_id, job.kind, error.code)
            return
        document = job.payload.get("invoice") or {}
        invoice_id = job.payload.get("invoice_id") or document.get("invoice_id")
        if not invoice_id:
            return
        with db.connect(self.context.settings) as conn:
            row = conn.execute(
                "SELECT invc_no FROM etims_sales WHERE invoice_id = %s", (UUID(str(invoice_id)),)
            ).fetchone()
        self.results.record_etims_failed(
            UUID(job.tenant_id),
            UUID(str(invoice_id)),
            job_id=job.job_id,
            environment=str(document.get("environment") or ""),
            branch_id=str(document.get("branch_id") or ""),
            invc_no=int(row[0]) if row else 0,
            result_code=error.code,
            error_class="permanent" if error.error_class is ErrorClass.PERMANENT else "needs_attention",
            message=error.message,
        )

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        if not self._pool.closed:
            await self._pool.close()
        await self.context.close()


def _invalid(job: Job, message: str) -> ConnectorError:
    return PermanentError("invalid_job", f"job {job.job_id}: {message}")


def build(context: HandlerContext) -> EtimsJobs:
    """The handler factory the connector declaration names (connectors/etims/__init__.py)."""
    return EtimsJobs(context)
