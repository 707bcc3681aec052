"""The ingest agent: invoice commands from upstream systems on ``ingest.invoice.v1``.

Messages are taken in batches: each is checked alone, the accepted ones of a batch are stored
with one event-store transaction (``engine.ingest.apply_ingest_batch``), and the batch's offsets
are committed only after that.

Every message must be signed with an ingest key of the tenant it names (``engine/ingest.py``).
Poison messages (unsigned or wrongly signed, bad JSON, unknown tenant, failed validation) go to
``ingest.invoice.dlq.v1`` with their original bytes and headers plus context headers, and the
agent moves on. A PostgreSQL outage is not the messages' fault: the agent retries the same
batch until the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import faust

from engine import db
from engine.application import LedgerService
from engine.bootstrap import build_service
from engine.config import Settings
from engine.ingest import IngestRejected, apply_ingest_batch, apply_ingest_message
from engine.security import ingest_keys
from engine.security.secrets import load_key_ring
from streams.dlq import dead_letter_headers

log = logging.getLogger("ledgerflow.ingest")

INGEST_TOPIC = "ingest.invoice.v1"
INGEST_DLQ_TOPIC = "ingest.invoice.dlq.v1"
# Attempts at a message that fails with an error of ours (not a rejection, not a DB outage).
UNEXPECTED_ATTEMPTS = 3
# A batch is at most BATCH_MAX messages, or what arrived within BATCH_WITHIN_S of the previous
# batch. 500 stores ~1,000 commands/s per worker with one event-store transaction per batch
# (docs/performance.md, "Ingest worker"); the wait bounds the latency a quiet topic adds.
BATCH_MAX = 500
BATCH_WITHIN_S = 0.1
# How long a stopping worker waits for the batch in hand (normally well under a second).
STOP_GRACE_S = 10.0
EXIT_UNCOMMITTED = 75  # EX_TEMPFAIL: the supervisor restarts the worker


def register(app: faust.App, settings: Settings) -> None:
    source = app.topic(settings.topic(INGEST_TOPIC), value_serializer="raw", key_serializer="raw")
    dlq = app.topic(settings.topic(INGEST_DLQ_TOPIC), value_serializer="raw", key_serializer="raw")
    service: dict[str, LedgerService] = {}

    def get_service() -> LedgerService:
        if "s" not in service:
            service["s"] = build_service(settings)
        return service["s"]

    def find_key(key_id: str) -> ingest_keys.StoredIngestKey | None:
        with db.transaction(get_service().pool) as conn:
            return ingest_keys.find(conn, key_id)

    def record_key_use(key_id: str) -> None:
        with db.transaction(get_service().pool) as conn:
            ingest_keys.record_use(conn, key_id)

    signing_keys = ingest_keys.SigningKeys(
        find_key, record_key_use, load_key_ring(settings.var_dir), ttl=settings.ingest_key_cache_seconds
    )

    @app.agent(source, name="ingest-invoices")
    async def ingest_invoices(stream: Any) -> None:
        # take_events acks a batch's events (so their offsets may be committed) only once this
        # loop asks for the next batch: after the batch is stored and its poison dead-lettered.
        # The body must never raise: faust would ack the batch unprocessed on the way out.
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            batch = asyncio.ensure_future(ingest_batch(events))
            try:
                await asyncio.shield(batch)
            except asyncio.CancelledError:
                # The worker is stopping, and take_events acks the batch's events on the way out
                # (faust then commits them): finish storing and dead-lettering them first.
                try:
                    await asyncio.wait_for(batch, STOP_GRACE_S)
                except (TimeoutError, asyncio.CancelledError):
                    # Stuck in an outage: leave without committing anything, as a crash would,
                    # so that the group delivers the batch again instead of losing it.
                    log.critical("stopping with a batch of %d not stored: exiting uncommitted", len(events))
                    os._exit(EXIT_UNCOMMITTED)
                raise

    async def ingest_batch(events: list[Any]) -> None:
        messages = [(list(e.message.headers or []), e.message.value) for e in events]
        delay = 0.5
        while True:
            try:
                outcomes = await asyncio.to_thread(apply_ingest_batch, get_service(), messages, signing_keys)
                break
            except Exception as exc:
                if isinstance(exc, db.DatabaseUnavailable) or db.is_outage(exc):
                    # Not the messages' fault: wait for PostgreSQL with the whole batch (retrying it
                    # is idempotent on ce_id).
                    log.warning("PostgreSQL unavailable (%s); retrying batch in %.1fs", exc, delay)
                    service.clear()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)
                    continue
                # A fault of ours: take the messages one at a time, so that only the one that
                # triggers it ends up in the DLQ (after its retries) and its neighbours are applied.
                log.warning("batch of %d failed (%r); applying its messages one at a time", len(events), exc)
                for event in events:
                    await ingest_one(event.message)
                return
        created = existed = 0
        for event, outcome in zip(events, outcomes, strict=True):
            message = event.message
            if isinstance(outcome, IngestRejected):
                log.warning(
                    "rejected %s[%d]@%d: %s %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    outcome.code,
                    outcome.message,
                )
                await dead_letter(message, list(message.headers or []), outcome.code, outcome.message)
            elif outcome.created:
                created += 1
            else:
                existed += 1
        log.info(
            "ingested a batch of %d: %d created, %d already existed, %d rejected",
            len(events),
            created,
            existed,
            len(events) - created - existed,
        )

    async def ingest_one(message: Any) -> None:
        headers = list(message.headers or [])
        delay = 0.5
        failures = 0
        while True:
            try:
                result = await asyncio.to_thread(
                    apply_ingest_message, get_service(), headers, message.value, signing_keys
                )
                log.info(
                    "ingested %s -> invoice %s (%s)",
                    message.offset,
                    result.invoice_id,
                    "created" if result.created else "already existed",
                )
                return
            except IngestRejected as exc:
                log.warning(
                    "rejected %s[%d]@%d: %s %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    exc.code,
                    exc.message,
                )
                await dead_letter(message, headers, exc.code, exc.message)
                return
            except Exception as exc:
                if isinstance(exc, db.DatabaseUnavailable) or db.is_outage(exc):
                    # A session PostgreSQL dropped, mapped or not: an outage, not the message's fault.
                    log.warning("PostgreSQL unavailable (%s); retrying message in %.1fs", exc, delay)
                    service.clear()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)
                    continue
                # Anything else is a fault of ours, not of the message or the database. Left
                # to faust, the agent would crash and the message could be acknowledged
                # unprocessed. Try again a few times (it may be transient), then park the
                # message in the DLQ, where it waits for a redrive once the fault is fixed.
                failures += 1
                if failures < UNEXPECTED_ATTEMPTS:
                    log.warning("unexpected error on %s (%r); retrying in %.1fs", message.offset, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)
                    continue
                log.exception("giving up on %s[%d]@%d", message.topic, message.partition, message.offset)
                await dead_letter(message, headers, "processing_failed", f"{type(exc).__name__}: {exc}")
                return

    async def dead_letter(message: Any, headers: list[Any], code: str, text: str) -> None:
        letter_headers = dead_letter_headers(
            headers,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            code=code,
            message=text,
        )
        delay = 0.5
        while True:
            try:
                fut = await dlq.send(key=message.key, value=message.value, headers=letter_headers)
                await fut  # delivered before the offset can be committed: nothing is lost
                return
            except Exception as exc:
                # Kafka unreachable is an outage: wait it out on this message (its offset is not
                # committed meanwhile) instead of letting the agent crash.
                log.warning(
                    "could not dead-letter %s[%d]@%d (%r); retrying in %.1fs",
                    message.topic,
                    message.partition,
                    message.offset,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
