"""E-invoicing routes: which invoice events become jobs for the ``gst-irp`` connector.

Tenant policy: a tenant whose ``gst-irp`` integration is enabled gets an IRN for every invoice
that the IRP accepts (B2B, SEZ and exports; there are no B2C e-invoices), and a cancellation job
when such an invoice is cancelled. The job id derives from the event's ``ce_id``, so a re-published
event makes the same job and the connector's at-most-once checks see it as one.

A record the router cannot route goes to ``router.einvoicing.dlq.v1`` (original bytes and headers
plus the context headers of ``streams/dlq.py``) and the router moves on: undecodable
(``undecodable_event``), an invoice event without its ``ce_type`` or ``ce_id`` header
(``missing_header``: the job id derives from ``ce_id``), or an error of ours that three tries in a
row did not get past (``processing_failed``). PostgreSQL or Kafka being away is waited out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import faust
import httpx
import orjson
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind
from psycopg_pool import AsyncConnectionPool

from connectors.catalogue import checked_transport
from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError, RetryableError
from connectors.gst_irp.client import IrnResult, IrpClient, IrpCredentials
from connectors.gst_irp.errors import INVOICE_NOT_ACTIVE
from connectors.gst_irp.mapping import SellerProfile, to_einvoice
from connectors.gst_irp.service import generate_or_adopt
from engine import db, integrations, logs, telemetry
from engine.application import CANCELLATION_REASON_CODES, IST, InvoiceNotFound, LedgerService
from engine.config import Settings
from engine.domain.invoice import Invoice, InvoiceStatus
from engine.domain.tenant import Tenant
from engine.publishing import invoice_document
from engine.security.secrets import KeyRing
from schemas import codec, registry
from streams.connectors.jobs import Delivery, Job, JobResult, jobs_topic
from streams.connectors.rate_limit import RateLimitedTransport
from streams.dlq import dead_letter_headers

T = TypeVar("T")

log = logging.getLogger("ledgerflow.einvoicing")

CONNECTOR = "gst-irp"
INVOICE_TOPIC = "ledger.invoice.v1"
ROUTER_AGENT = "route-einvoicing"
ROUTER_DLQ_TOPIC = "router.einvoicing.dlq.v1"
# Tries at a record that fails with an error of ours (not an outage) before it is dead-lettered.
UNEXPECTED_ATTEMPTS = 3
GENERATE = "generate_irn"
CANCEL = "cancel_irn"
POLICY_CACHE_SECONDS = 10.0
EINVOICE_SUPPLY_TYPES = frozenset({"B2B", "SEZWP", "SEZWOP", "EXPWP", "EXPWOP", "DEXP"})


def job_for(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Job | None:
    """The connector job an invoice event asks for, before tenant policy (pure)."""
    if ce_type == "ledgerflow.invoice.issued" and record["supply_type"] in EINVOICE_SUPPLY_TYPES:
        return Job.for_event(
            CONNECTOR,
            GENERATE,
            ce_id=ce_id,
            tenant_id=record["tenant_id"],
            subject=record["invoice_id"],
            payload={"invoice_id": record["invoice_id"], "number": record["number"]},
        )
    if ce_type == "ledgerflow.invoice.cancelled":
        return Job.for_event(
            CONNECTOR,
            CANCEL,
            ce_id=ce_id,
            tenant_id=record["tenant_id"],
            subject=record["invoice_id"],
            payload={
                "invoice_id": record["invoice_id"],
                "reason_code": CANCELLATION_REASON_CODES.get(record["reason"], 4),
                "remark": record.get("remark") or record["reason"].replace("_", " "),
            },
        )
    return None


SendJob = Callable[[Job, list[tuple[str, bytes]]], Awaitable[None]]
DeadLetter = Callable[[Any, str, str], Awaitable[None]]
"""``dead_letter(record, code, message)``: must return only once Kafka has the dead letter."""


def _is_outage(exc: BaseException) -> bool:
    return db.is_outage(exc) or isinstance(exc, (KafkaError, OSError, TimeoutError))


class EinvoicingRouter:
    """What the ``route-einvoicing`` agent does with one ``ledger.invoice.v1`` record.

    Kept apart from faust so that the logic (and its span) can be driven by any consumer of the
    topic; ``send_job(job, headers)`` must return only once Kafka has the job, because the record's
    offset is committed after ``route`` returns.
    """

    def __init__(self, settings: Settings, send_job: SendJob, dead_letter: DeadLetter | None = None) -> None:
        self.settings = settings
        self.send_job = send_job
        self.dead_letter = dead_letter
        # Tenant policy changes rarely; a short cache spares one database connection per invoice event.
        self._policy: dict[str, tuple[bool, float]] = {}

    def enabled(self, tenant_id: str) -> bool:
        now = time.monotonic()
        cached = self._policy.get(tenant_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        with db.connect(self.settings) as conn:
            wanted = integrations.enabled_for(conn, UUID(tenant_id), CONNECTOR)
        self._policy[tenant_id] = (wanted, now + POLICY_CACHE_SECONDS)
        return wanted

    async def route(self, message: Any) -> Job | None:
        """Queue the job ``message`` (a Kafka record: headers, value, topic, partition, offset) asks
        for, if any; returns it. A record that cannot be routed is dead-lettered (when the router has
        a ``dead_letter``; otherwise logged and skipped) and None returned; outages are waited out."""
        failures, delay = 0, 0.5
        verdict: tuple[str, str] | None = None  # (code, message) once the record is given up
        while True:
            try:
                if verdict is None:
                    try:
                        return await self._route(message)
                    except _Unroutable as exc:
                        verdict = (exc.code, exc.message)
                await self._give_up(message, *verdict)
                return None
            except Exception as exc:
                # Also when the dead letter itself could not be written: the record is never
                # acknowledged before it is routed or dead-lettered.
                if _is_outage(exc):
                    log.warning("routing %d: outage (%s); retrying in %.1fs", message.offset, exc, delay)
                elif verdict is None:
                    failures += 1
                    if failures >= UNEXPECTED_ATTEMPTS:
                        log.exception(
                            "giving up on %s[%d]@%d", message.topic, message.partition, message.offset
                        )
                        verdict = ("processing_failed", f"{type(exc).__name__}: {exc}")
                        continue
                    log.warning(
                        "unexpected error routing %d (%r); retrying in %.1fs", message.offset, exc, delay
                    )
                else:
                    log.error("could not dead-letter %d (%r); retrying in %.1fs", message.offset, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _give_up(self, message: Any, code: str, text: str) -> None:
        log.error(
            "cannot route %s[%d]@%d (%s: %s)%s",
            message.topic,
            message.partition,
            message.offset,
            code,
            text,
            "; dead-lettered" if self.dead_letter else "; skipped",
        )
        if self.dead_letter is not None:
            await self.dead_letter(message, code, text)

    async def _route(self, message: Any) -> Job | None:
        headers = {k: (v or b"").decode(errors="replace") for k, v in (message.headers or [])}
        ce_type = headers.get("ce_type", "")
        if not ce_type:
            raise _Unroutable("missing_header", "no ce_type header: cannot tell which event this is")
        if ce_type not in ("ledgerflow.invoice.issued", "ledgerflow.invoice.cancelled"):
            return None
        if not headers.get("ce_id"):
            raise _Unroutable(
                "missing_header", f"{ce_type} without a ce_id header: its job id derives from it"
            )
        incoming = headers.get("traceparent")
        with (
            telemetry.tracer.start_as_current_span(
                f"process {INVOICE_TOPIC}",
                context=telemetry.parent_context(incoming),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": message.topic,
                    "messaging.consumer.group.name": ROUTER_AGENT,
                    "messaging.destination.partition.id": str(message.partition),
                    "messaging.kafka.offset": message.offset,
                    "messaging.message.id": headers.get("ce_id", ""),
                    "cloudevents.event_type": ce_type,
                },
            ) as span,
            logs.log_context(traceparent=incoming),
        ):
            try:
                record = registry.decode_event(message.value, ce_type)
            except (codec.CodecError, registry.UnknownEventType, ValueError, KeyError, TypeError) as exc:
                raise _Unroutable("undecodable_event", f"{type(exc).__name__}: {exc}") from exc
            job = job_for(ce_type, headers["ce_id"], record)
            if job is None:
                return None
            logs.bind_tenant(job.tenant_id)
            span.set_attribute("ledgerflow.tenant_id", job.tenant_id)
            try:
                UUID(job.tenant_id), UUID(job.subject)
            except ValueError as exc:
                raise _Unroutable("invalid_event", f"tenant or invoice id is not a UUID: {exc}") from exc
            wanted = await asyncio.to_thread(self.enabled, job.tenant_id)
            if not wanted:
                return None
            span.set_attribute("ledgerflow.job_id", job.job_id)
            traceparent = telemetry.current_traceparent() or incoming
            await self.send_job(job, Delivery(traceparent=traceparent).headers())
            log.info("queued %s for invoice %s", job.kind, job.subject)
            return job


class _Unroutable(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def register(app: faust.App, settings: Settings) -> None:
    source = app.topic(settings.topic(INVOICE_TOPIC), value_serializer="raw", key_serializer="raw")
    jobs = app.topic(settings.topic(jobs_topic(CONNECTOR)), value_serializer="raw", key_serializer="raw")

    async def send_job(job: Job, headers: list[tuple[str, bytes]]) -> None:
        fut = await jobs.send(key=job.subject.encode(), value=job.encode(), headers=headers)
        await fut  # durable before this event's offset can be committed

    dlq = app.topic(settings.topic(ROUTER_DLQ_TOPIC), value_serializer="raw", key_serializer="raw")

    async def dead_letter(message: Any, code: str, text: str) -> None:
        fut = await dlq.send(
            key=message.key,
            value=message.value,
            headers=dead_letter_headers(
                message.headers or [],
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                code=code,
                message=text,
                extra=[("router", ROUTER_AGENT)],
            ),
        )
        await fut  # delivered before the record's offset can be committed: nothing is lost

    router = EinvoicingRouter(settings, send_job, dead_letter)

    @app.agent(source, name=ROUTER_AGENT)
    async def route_einvoicing(stream: Any) -> None:
        async for event in stream.events():
            await router.route(event.message)


# ---------------------------------------------------------------------------------------------
# The connector's job handler: one attempt of an IRN job against the tenant's IRP.


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

    def __init__(
        self, settings: Settings, service: LedgerService, ring: KeyRing, *, rate_limit_per_s: float | None
    ) -> None:
        self.settings = settings
        self.service = service
        self.ring = ring
        self.rate_limit_per_s = rate_limit_per_s
        self._clients: dict[tuple[str, str, str], IrpClient] = {}
        # Rate-limit slots come from PostgreSQL; the pool opens on the first job (in the event loop).
        self._pool: AsyncConnectionPool | None = None
        if rate_limit_per_s is not None:
            self._pool = AsyncConnectionPool(
                settings.database_url,
                min_size=1,
                max_size=4,
                open=False,
                kwargs={"options": f"-c search_path={settings.db_schema}"},
            )

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        if self._pool is not None and not self._pool.closed:
            await self._pool.close()

    def _transport(self, loaded: integrations.IntegrationSettings) -> httpx.AsyncBaseTransport:
        # Every request passes the URL policy and the connect-time address check (connectors/egress.py),
        # so a stored URL that a newer policy or a production deployment refuses is never called.
        checked = checked_transport(loaded, self.settings.mode)
        if self._pool is None:
            return checked
        # One job can make three calls (auth, generate, look-up of a duplicate): the portal's limit
        # is on requests, so every request takes a slot, shared by all workers.
        return RateLimitedTransport(self._pool, CONNECTOR, self.rate_limit_per_s, inner=checked)

    def _settings_for(self, tenant_id: UUID) -> integrations.IntegrationSettings:
        with db.connect(self.settings) as conn:
            loaded = integrations.load(conn, self.ring, tenant_id, CONNECTOR)
        if loaded is None or not loaded.enabled:
            raise NeedsAttentionError(
                "integration_disabled", f"{CONNECTOR} is not enabled for tenant {tenant_id}"
            )
        return loaded

    def _client(self, loaded: integrations.IntegrationSettings) -> IrpClient:
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
            self._clients[key] = IrpClient(loaded.base_url, credentials, transport=self._transport(loaded))
        return self._clients[key]

    async def _open_pool(self) -> None:
        if self._pool is not None and self._pool.closed:
            await self._pool.open()

    async def _blocking(self, work: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(work)
        except db.DatabaseUnavailable as exc:
            raise RetryableError("database_unavailable", str(exc)) from exc

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        tenant_id, invoice_id = UUID(job.tenant_id), UUID(job.subject)
        try:
            invoice = await self._blocking(lambda: self.service.get_invoice(tenant_id, invoice_id))
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
        tenant = await self._blocking(lambda: self.service.get_tenant(invoice.tenant_id))
        payload = to_einvoice(invoice_document(invoice, invoice.id), seller_profile(tenant))
        loaded = await self._blocking(lambda: self._settings_for(invoice.tenant_id))
        await self._open_pool()
        lookups = _Lookups(self._client(loaded))
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
        await self._blocking(lambda: self.service.record_irn(invoice.tenant_id, invoice.id, **recorded))
        return JobResult({"irn": result.irn, "ack_no": result.ack_no, "adopted_existing": lookups.looked_up})

    async def _cancel(self, job: Job, invoice: Invoice) -> JobResult:
        if invoice.einvoice is None:
            return JobResult({"skipped": "no IRN to cancel"})
        if invoice.einvoice_cancellation is not None:
            return JobResult({"skipped": "IRN already cancelled"})
        loaded = await self._blocking(lambda: self._settings_for(invoice.tenant_id))
        await self._open_pool()
        irn = invoice.einvoice["irn"]
        client = self._client(loaded)
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
        await self._blocking(
            lambda: self.service.record_irn_cancellation(invoice.tenant_id, invoice.id, **recorded)
        )
        return JobResult({"irn": irn, "cancelled": True})

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        """Give the invoice the reason it has no IRN (called once the job is dead-lettered)."""
        try:
            self.service.record_irn_failure(
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
