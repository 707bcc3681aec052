"""Projection rebuild of a large topic: ``ledgerflow projections rebuild invoice_register``.

The stage fills ``ledger.invoice.v1`` of its own fresh schema and topic prefix with ``invoice.issued``
events exactly as the relay writes them (Avro single-object encoding, CloudEvents headers), each
a distinct invoice built from one real 5-line invoice, then runs the rebuild as its own process
and reads the summary it prints (``--json``). Producing the events directly, rather than issuing
a million invoices through the write side and the relay, keeps the set-up to about a minute.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import uvloop
from aiokafka import AIOKafkaProducer

from bench import workload
from bench.env import BenchEnv
from engine.kafka_clients import aiokafka_kwargs
from engine.publishing import OutboundEvent, headers_for, to_outbound
from schemas import registry

LOGICAL_TOPIC = "ledger.invoice.v1"
NAMESPACE = uuid.UUID("6f1c5a52-3c1e-4d55-9a43-1b6f3f6a0c11")


def template(tenant: Any) -> OutboundEvent:
    """The relay's message for one real invoice (5 lines, computed taxes)."""
    invoice = workload.build(tenant, "RB-TEMPLATE")
    (issued,) = invoice.collect_events()
    return to_outbound(issued)


def variant(base: OutboundEvent, i: int) -> OutboundEvent:
    invoice_id = str(uuid.uuid5(NAMESPACE, f"invoice-{i}"))
    ce_id = str(uuid.uuid5(NAMESPACE, f"event-{i}"))
    record = {**base.record, "invoice_id": invoice_id, "number": f"RB-{i:07d}", "event_id": ce_id}
    return replace(base, key=invoice_id, subject=invoice_id, ce_id=ce_id, record=record)


async def _fill(env: BenchEnv, base: OutboundEvent, count: int, progress: Callable[[int], None]) -> None:
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(env.settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=10,
        max_batch_size=1024 * 1024,
    )
    await producer.start()
    topic = env.settings.topic(LOGICAL_TOPIC)
    try:
        step = 2000
        for start in range(0, count, step):
            pending = []
            for i in range(start, min(count, start + step)):
                event = variant(base, i)
                value, schema = registry.encode_event(event.ce_type, event.record)
                pending.append(
                    await producer.send(
                        topic,
                        value=value,
                        key=event.key.encode(),
                        headers=headers_for(event, schema.fingerprint_hex),
                    )
                )
            await asyncio.gather(*pending)
            progress(len(pending))
    finally:
        await producer.stop()


def fill(env: BenchEnv, tenant: Any, count: int, progress: Callable[[int], None]) -> None:
    uvloop.run(_fill(env, template(tenant), count, progress))


def applied(env: BenchEnv) -> int:
    """Events the rebuild in progress has applied (0 before it starts and after the swap)."""
    found = env.scalar(
        "SELECT coalesce(sum(events_applied), 0) FROM projection_rebuilds WHERE projection = %s",
        ("invoice_register",),
    )
    return int(found or 0)


def run_rebuild(env: BenchEnv, count: int, progress: Callable[[int], None]) -> dict[str, Any]:
    """Run the rebuild command to completion; its JSON summary plus the process's wall time."""
    proc = env.start("rebuild", "projections", "rebuild", "invoice_register", "--json")
    seen = 0
    while proc.popen.poll() is None:
        now = applied(env)
        if now > seen:
            progress(now - seen)
            seen = now
        time.sleep(0.2)
    wall = time.monotonic() - proc.started
    if proc.popen.returncode != 0:
        raise RuntimeError(f"rebuild exited with {proc.popen.returncode}:\n{proc.tail()}")
    # The summary is the indented JSON object at the end (log lines before it are one line each).
    text = proc.log_text()[proc.log_start :]
    start = text.rindex("\n{\n") + 1 if not text.startswith("{\n") else 0
    summary: dict[str, Any] = orjson.loads(text[start:])
    progress(max(0, count - seen))
    summary["wall_seconds"] = wall
    return summary
