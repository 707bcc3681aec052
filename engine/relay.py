"""The relay: tails the event store's notification log and publishes every event to Kafka.

Order of work per batch: read notifications after the stored position, publish them all with an
idempotent producer (acks=all) and wait for every acknowledgement, then store the new position.
A crash between the two re-publishes the same events with the same ``ce_id``; nothing is skipped,
because eventsourcing's PostgreSQL recorder serialises inserts (notification id order is commit
order), so a reader never passes over a row that commits later with a smaller id.

A stored event is a fact: the relay never skips one. An event it cannot turn into a message (no
mapping, a value the Avro schema refuses) stops it with :class:`UnencodableEvent`, logged at
CRITICAL with ``alert=true``, naming the event; the events before it in the batch are published
and the position stored, so a restart stops at exactly that event until the code (the mapping or
the schema) is fixed. Consumers see a delay, never a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from eventsourcing.persistence import Notification
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from engine import db, kafka, telemetry
from engine.application import Ledger, open_ledger
from engine.config import Settings
from engine.errors import IntegrityFault
from engine.publishing import OutboundEvent, headers_for, outbound_from_stored
from schemas import registry

log = logging.getLogger("ledgerflow.relay")

published = telemetry.meter.create_counter(
    "ledgerflow.relay.published", unit="{event}", description="Events the relay published (acknowledged)"
)

RELAY_NAME = "ledger"


class UnencodableEvent(IntegrityFault):
    """A stored event the relay cannot encode; the relay stops rather than skip it."""

    def __init__(self, notification: Notification, error: Exception) -> None:
        self.notification_id = notification.id
        self.originator_id = str(notification.originator_id)
        self.originator_version = notification.originator_version
        self.stored_topic = notification.topic
        self.error = error
        super().__init__(
            f"cannot encode stored event: notification {notification.id}, originator"
            f" {notification.originator_id} version {notification.originator_version}, topic"
            f" {notification.topic}: {type(error).__name__}: {error}"
        )


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    position: int = 0


class Relay:
    """Publishes stored events to their ``ledger.<aggregate>.v1`` topics, at least once, in order."""

    def __init__(
        self, settings: Settings, *, batch_size: int = 2000, idle_wait: float = 0.05, name: str = RELAY_NAME
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.name = name
        self.stats = RelayStats()
        self._ledger: Ledger | None = None
        # The mapper is pure (no connection), so it survives the ledger being reopened by the reader.

    # -- position ---------------------------------------------------------------------------

    def load_position(self) -> int:
        with db.connect(self.settings) as conn:
            row = conn.execute(
                "SELECT notification_id FROM relay_position WHERE relay = %s", (self.name,)
            ).fetchone()
        return int(row[0]) if row else 0

    def save_position(self, notification_id: int) -> None:
        with db.connect(self.settings) as conn, conn.transaction():
            conn.execute(
                "INSERT INTO relay_position (relay, notification_id) VALUES (%s, %s)"
                " ON CONFLICT (relay) DO UPDATE SET notification_id = EXCLUDED.notification_id,"
                " updated_at = now()",
                (self.name, notification_id),
            )

    # -- loop -------------------------------------------------------------------------------

    def _read(self, after: int) -> Sequence[Notification]:
        ledger = self._ledger
        if ledger is None:
            ledger = self._ledger = open_ledger(self.settings)
        return ledger.recorder.select_notifications(
            start=after, limit=self.batch_size, inclusive_of_start=False
        )

    async def publish(self, producer: AIOKafkaProducer, notifications: Sequence[Notification]) -> None:
        # Spans only where something records them: creating one costs about 25 µs, an eighth of
        # the relay's whole budget per event at 5,000 events/s. With tracing on, one PRODUCER span
        # per sampled event (parent: the event's stored trace context; unsampled events, e.g. under
        # OTEL_TRACES_SAMPLER=parentbased_traceidratio, pass their context on unchanged), ended
        # once the batch is acknowledged. The message carries the span's own context, so the
        # consumers' spans are its children.
        tracing = telemetry.tracing_enabled()
        spans: list[Span] = []
        pending: list[asyncio.Future[Any]] = []
        try:
            for notification in notifications:
                try:
                    # Straight from the stored JSON (no cipher or compressor is configured on the store).
                    outbound = outbound_from_stored(
                        notification.originator_id,
                        notification.originator_version,
                        notification.topic,
                        notification.state,
                    )
                    value, schema = registry.encode_event(outbound.ce_type, outbound.record)
                except Exception as exc:
                    # What was sent before it is still delivered (the caller stores that position).
                    await asyncio.gather(*pending)
                    published.add(len(pending), {"relay": self.name})
                    raise UnencodableEvent(notification, exc) from exc
                topic = self.settings.topic(outbound.topic)
                traceparent = None
                if tracing and (not outbound.stored_trace or telemetry.is_sampled(outbound.traceparent)):
                    span = _publish_span(outbound, topic, notification.id)
                    spans.append(span)
                    traceparent = telemetry.span_traceparent(span)
                pending.append(
                    await producer.send(
                        topic,
                        value=value,
                        key=outbound.key.encode(),
                        headers=headers_for(outbound, schema.fingerprint_hex, traceparent),
                    )
                )
            await asyncio.gather(*pending)
        except Exception as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            raise
        finally:
            for span in spans:
                span.end()
        published.add(len(notifications), {"relay": self.name})

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        producer = await self._start_producer(stop)
        if producer is None:
            return
        next_read: asyncio.Future[Any] | None = None
        try:
            position = await self._retrying(self.load_position, stop)
            if position is None:
                return
            self.stats.position = position
            log.info("relay %s starting after notification %d", self.name, position)
            while not stop.is_set():
                if next_read is None:
                    next_read = self._read_after(self.stats.position, stop)
                notifications = await next_read
                next_read = None
                if notifications is None:
                    return
                if not notifications:
                    await _wait(stop, self.idle_wait)
                    continue
                last = notifications[-1].id
                # Read the next batch while this one is encoded and published: the database's work
                # and the transfer overlap the CPU-bound encoding. Only positions are stored, after
                # the acknowledgements, so a failure below just discards the read-ahead.
                next_read = self._read_after(last, stop)
                try:
                    await self.publish(producer, notifications)
                except UnencodableEvent as exc:
                    await _discard(next_read)
                    next_read = None
                    before = [n.id for n in notifications if n.id < exc.notification_id]
                    if before:
                        await self._retrying(lambda: self.save_position(before[-1]), stop)  # noqa: B023
                        self.stats.position = before[-1]
                        self.stats.published += len(before)
                    log.critical(
                        "relay %s stopped: %s. Nothing after it is published until the mapping or"
                        " schema is fixed; the event stays in the store and is published then",
                        self.name,
                        exc,
                        extra={
                            "alert": True,
                            "notification_id": exc.notification_id,
                            "originator_id": exc.originator_id,
                            "originator_version": exc.originator_version,
                            "stored_topic": exc.stored_topic,
                        },
                    )
                    raise
                except KafkaError as exc:
                    log.warning("publish failed, will retry the same batch: %s", exc)
                    await _discard(next_read)
                    next_read = None
                    await _wait(stop, 1.0)
                    continue
                if await self._retrying(lambda: self.save_position(last), stop) is None:  # noqa: B023
                    return
                self.stats.position = last
                self.stats.published += len(notifications)
                self.stats.batches += 1
        finally:
            await _discard(next_read)
            await producer.stop()

    def _read_after(self, after: int, stop: asyncio.Event) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self._retrying(lambda: self._read(after), stop))

    async def _start_producer(self, stop: asyncio.Event) -> AIOKafkaProducer | None:
        delay = 0.5
        while not stop.is_set():
            try:
                return await kafka.start_producer(self.settings, "bulk")
            except kafka.KAFKA_ERRORS as exc:
                log.warning("Kafka not reachable (%s); retrying in %.1fs", exc, delay)
                await _wait(stop, delay)
                delay = min(delay * 2, 10)
        return None

    async def _retrying(self, work, stop: asyncio.Event):
        """Run blocking database work in a thread, retrying while PostgreSQL is unreachable."""
        delay = 0.5
        while not stop.is_set():
            try:
                result = await asyncio.to_thread(work)
                return result if result is not None else True
            except db.DatabaseUnavailable as exc:
                log.warning("PostgreSQL unavailable (%s); retrying in %.1fs", exc, delay)
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                log.warning("PostgreSQL connection lost (%s); retrying in %.1fs", exc, delay)
                self._ledger = None
            await _wait(stop, delay)
            delay = min(delay * 2, 10)
        return None


def _publish_span(outbound: OutboundEvent, topic: str, notification_id: int) -> Span:
    return telemetry.tracer.start_span(
        f"publish {outbound.topic}",
        context=telemetry.parent_context(outbound.traceparent) if outbound.stored_trace else None,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.kafka.message.key": outbound.key,
            "messaging.message.id": outbound.ce_id,
            "cloudevents.event_type": outbound.ce_type,
            "ledgerflow.tenant_id": outbound.tenant_id,
            "ledgerflow.notification_id": notification_id,
        },
    )


def _is_connection_error(exc: Exception) -> bool:
    return db.is_outage(exc)


async def _discard(read: asyncio.Future[Any] | None) -> None:
    """Cancel a read-ahead (its thread finishes on its own; the result is dropped)."""
    if read is not None:
        read.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await read


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
