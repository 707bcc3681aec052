"""The router: asks every connector's routes which jobs a ledger event makes, and queues them.

One agent for all connectors (connectors/registry.py): a ``ledger.invoice.v1`` record is decoded once
and handed to each connector whose ``route_event_types`` names its ``ce_type``; each job is queued on
``connector.<name>.jobs.v1`` if the tenant's integration for that connector is enabled. A job id
derives from the event's ``ce_id``, so a re-published event makes the same job and the connector's
at-most-once checks see it as one.

A record the router cannot route goes to ``router.einvoicing.dlq.v1`` (original bytes and headers
plus the context headers of ``streams/dlq.py``) and the router moves on: undecodable
(``undecodable_event``), a routed event without its ``ce_type`` or ``ce_id`` header
(``missing_header``: the job id derives from ``ce_id``), or an error of ours that three tries in a
row did not get past (``processing_failed``). PostgreSQL or Kafka being away is waited out.

The agent's name (``route-einvoicing``, also its consumer group) and its DLQ topic keep the names
they had when e-invoicing was the only connector: renaming would start a new consumer group at the
earliest offset and re-route every invoice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

import faust
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind

from connectors.kit import Connector
from engine import db, integrations, logs, telemetry
from engine.config import Settings
from schemas import codec, registry
from streams.connectors.jobs import Delivery, Job, jobs_topic
from streams.dlq import dead_letter_headers

log = logging.getLogger("ledgerflow.router")

INVOICE_TOPIC = "ledger.invoice.v1"
TENANT_TOPIC = "ledger.tenant.v1"
PAYOUT_TOPIC = "ledger.payout.v1"
PAYMENT_TOPIC = "ledger.payment.v1"
EXPENSE_TOPIC = "ledger.expense.v1"
ROUTER_AGENT = "route-einvoicing"
ROUTER_DLQ_TOPIC = "router.einvoicing.dlq.v1"
# Tries at a record that fails with an error of ours (not an outage) before it is dead-lettered.
UNEXPECTED_ATTEMPTS = 3
POLICY_CACHE_SECONDS = 10.0


def _routing(connectors: Sequence[Connector] | None) -> list[Connector]:
    if connectors is None:
        from connectors.registry import CONNECTORS

        connectors = CONNECTORS
    return [c for c in connectors if c.route_event_types]


SendJob = Callable[[Job, list[tuple[str, bytes]]], Awaitable[None]]
DeadLetter = Callable[[Any, str, str], Awaitable[None]]
"""``dead_letter(record, code, message)``: must return only once Kafka has the dead letter."""


def _is_outage(exc: BaseException) -> bool:
    return db.is_outage(exc) or isinstance(exc, (KafkaError, OSError, TimeoutError))


class ConnectorRouter:
    """What the ``route-einvoicing`` agent does with one ``ledger.invoice.v1`` record.

    Kept apart from faust so that the logic (and its span) can be driven by any consumer of the
    topic; ``send_job(job, headers)`` must return only once Kafka has the job, because the record's
    offset is committed after ``route`` returns.
    """

    def __init__(
        self,
        settings: Settings,
        send_job: SendJob,
        dead_letter: DeadLetter | None = None,
        *,
        connectors: Sequence[Connector] | None = None,
    ) -> None:
        self.settings = settings
        self.send_job = send_job
        self.dead_letter = dead_letter
        self.connectors = _routing(connectors)
        self.event_types = frozenset(t for c in self.connectors for t in c.route_event_types)
        # Tenant policy changes rarely; a short cache spares one database connection per invoice event.
        self._policy: dict[tuple[str, str], tuple[bool, float]] = {}

    def enabled(self, tenant_id: str, connector: str) -> bool:
        now = time.monotonic()
        cached = self._policy.get((tenant_id, connector))
        if cached is not None and cached[1] > now:
            return cached[0]
        with db.connect(self.settings) as conn:
            wanted = integrations.enabled_for(conn, UUID(tenant_id), connector)
        self._policy[(tenant_id, connector)] = (wanted, now + POLICY_CACHE_SECONDS)
        return wanted

    async def route(self, message: Any) -> list[Job]:
        """Queue the jobs ``message`` (a Kafka record: headers, value, topic, partition, offset) asks
        for, if any; returns them. A record that cannot be routed is dead-lettered (when the router
        has a ``dead_letter``; otherwise logged and skipped) and nothing returned; outages are
        waited out. Retrying a record re-sends its jobs: the same ids, which connectors dedupe."""
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
                return []
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

    async def _route(self, message: Any) -> list[Job]:
        headers = {k: (v or b"").decode(errors="replace") for k, v in (message.headers or [])}
        ce_type = headers.get("ce_type", "")
        if not ce_type:
            raise _Unroutable("missing_header", "no ce_type header: cannot tell which event this is")
        if ce_type not in self.event_types:
            return []
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
            wanted = [
                job
                for connector in self.connectors
                if ce_type in connector.route_event_types
                for job in connector.routes(ce_type, headers["ce_id"], record)
            ]
            if not wanted:
                return []
            tenant_id = wanted[0].tenant_id
            logs.bind_tenant(tenant_id)
            span.set_attribute("ledgerflow.tenant_id", tenant_id)
            try:
                for job in wanted:
                    UUID(job.tenant_id), UUID(job.subject)
            except ValueError as exc:
                raise _Unroutable("invalid_event", f"tenant or subject id is not a UUID: {exc}") from exc
            queued: list[Job] = []
            for job in wanted:
                if not await asyncio.to_thread(self.enabled, job.tenant_id, job.connector):
                    continue
                span.set_attribute("ledgerflow.job_id", job.job_id)
                traceparent = telemetry.current_traceparent() or incoming
                await self.send_job(job, Delivery(traceparent=traceparent).headers())
                log.info("queued %s for %s (%s)", job.kind, job.subject, job.connector)
                queued.append(job)
            return queued


class _Unroutable(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def source_topics(connectors: Sequence[Connector]) -> list[str]:
    """The ledger topics the router reads: invoices always; tenants too when a connector routes a tenant
    event (eTIMS initialises devices when its integration is saved: ``integration_settings_changed``)."""
    wanted = [INVOICE_TOPIC]
    if any(t.startswith("ledgerflow.tenant.") for c in connectors for t in c.route_event_types):
        wanted.append(TENANT_TOPIC)
    # The bank connector submits payouts when they are requested or released (connectors/bank).
    if any(t.startswith("ledgerflow.payout.") for c in connectors for t in c.route_event_types):
        wanted.append(PAYOUT_TOPIC)
    # Payments too when a connector routes them (QuickBooks pushes captured payments).
    if any(t.startswith("ledgerflow.payment.") for c in connectors for t in c.route_event_types):
        wanted.append(PAYMENT_TOPIC)
    # Expenses when a connector routes them (Tally posts approved and paid expenses).
    if any(t.startswith("ledgerflow.expense.") for c in connectors for t in c.route_event_types):
        wanted.append(EXPENSE_TOPIC)
    return wanted


def register(app: faust.App, settings: Settings, connectors: Sequence[Connector] | None = None) -> None:
    routing = _routing(connectors)
    source = app.topic(
        *(settings.topic(t) for t in source_topics(routing)), value_serializer="raw", key_serializer="raw"
    )
    jobs = {
        c.name: app.topic(settings.topic(jobs_topic(c.name)), value_serializer="raw", key_serializer="raw")
        for c in routing
    }

    async def send_job(job: Job, headers: list[tuple[str, bytes]]) -> None:
        fut = await jobs[job.connector].send(key=job.subject.encode(), value=job.encode(), headers=headers)
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

    router = ConnectorRouter(settings, send_job, dead_letter, connectors=routing)

    @app.agent(source, name=ROUTER_AGENT)
    async def route_to_connectors(stream: Any) -> None:
        async for event in stream.events():
            await router.route(event.message)
