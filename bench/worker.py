"""The faust ingest worker: invoice commands from ``ingest.invoice.v1`` applied to the event store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from uuid import UUID

import orjson
from aiokafka import AIOKafkaProducer

from bench.env import BenchEnv
from bench.workload import invoice_body
from engine.ingest import ISSUE_TYPE
from streams.ingest import INGEST_TOPIC


def _headers(tenant_id: UUID, ce_id: str) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_source", f"/tenants/{tenant_id}".encode()),
        ("ce_type", ISSUE_TYPE.encode()),
        ("content-type", b"application/json"),
    ]


async def publish(env: BenchEnv, tenant_id: UUID, prefix: str, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=env.settings.kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        topic = env.settings.topic(INGEST_TOPIC)
        pending = [
            await producer.send(
                topic,
                value=orjson.dumps(invoice_body(f"{prefix}{i}")),
                headers=_headers(tenant_id, f"{prefix}{i}"),
            )
            for i in range(count)
        ]
        for future in pending:
            await future
    finally:
        await producer.stop()


def applied(env: BenchEnv, prefix: str) -> int:
    return int(env.scalar("SELECT count(*) FROM idempotency_keys WHERE key LIKE %s", (f"{prefix}%",)))


def wait_applied(
    env: BenchEnv, prefix: str, count: int, timeout: float, progress: Callable[[int], None] | None = None
) -> float:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        now = applied(env, prefix)
        if progress and now > done:
            progress(now - done)
        done = now
        if done >= count:
            return time.monotonic()
        env.check()
        time.sleep(0.05)
    raise TimeoutError(f"the worker applied {done} of {count} ingest messages within {timeout:.0f}s")


def new_prefix() -> str:
    return f"W{uuid.uuid4().hex[:6]}-"
