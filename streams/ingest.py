"""The ingest agent: invoice commands from upstream systems on ``ingest.invoice.v1``.

Every message must be signed with an ingest key of the tenant it names (``engine/ingest.py``).
Poison messages (unsigned or wrongly signed, bad JSON, unknown tenant, failed validation) go to
``ingest.invoice.dlq.v1`` with their original bytes and headers plus context headers, and the
agent moves on. A PostgreSQL outage is not the message's fault: the agent retries the same
message until the database is back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from engine import db
from engine.application import LedgerService
from engine.bootstrap import build_service
from engine.config import Settings
from engine.ingest import IngestRejected, apply_ingest_message
from engine.security import ingest_keys
from engine.security.secrets import load_key_ring
from streams.dlq import dead_letter_headers

log = logging.getLogger("ledgerflow.ingest")

INGEST_TOPIC = "ingest.invoice.v1"
INGEST_DLQ_TOPIC = "ingest.invoice.dlq.v1"
# Attempts at a message that fails with an error of ours (not a rejection, not a DB outage).
UNEXPECTED_ATTEMPTS = 3


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
        async for event in stream.events():
            message = event.message
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
                    break
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
                    break
                except db.DatabaseUnavailable as exc:
                    log.warning("PostgreSQL unavailable (%s); retrying message in %.1fs", exc, delay)
                    service.clear()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)
                except Exception as exc:
                    if db.is_outage(exc):  # a session PostgreSQL dropped, unmapped: an outage too
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
                        log.warning(
                            "unexpected error on %s (%r); retrying in %.1fs", message.offset, exc, delay
                        )
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 10)
                        continue
                    log.exception("giving up on %s[%d]@%d", message.topic, message.partition, message.offset)
                    await dead_letter(message, headers, "processing_failed", f"{type(exc).__name__}: {exc}")
                    break

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
