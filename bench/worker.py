"""The faust ingest worker: invoice commands from ``ingest.invoice.v1`` applied to the event store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from uuid import UUID

import orjson
from aiokafka import AIOKafkaProducer

from bench.env import BenchEnv, retry
from bench.workload import invoice_body
from engine.ingest import ISSUE_TYPE
from engine.kafka_clients import aiokafka_kwargs
from engine.security import ingest_keys
from engine.security.secrets import load_key_ring
from streams.ingest import INGEST_TOPIC

# One signing key per (schema, tenant) for the whole run: a tenant may hold only two active keys,
# and the worker and scaling stages publish several times.
_keys: dict[tuple[str, UUID], ingest_keys.IssuedIngestKey] = {}


def signing_key(env: BenchEnv, tenant_id: UUID) -> ingest_keys.IssuedIngestKey:
    """The tenant's ingest key for this run, created on first use as the API would create it."""
    slot = (env.settings.db_schema, tenant_id)
    if slot not in _keys:

        def create() -> ingest_keys.IssuedIngestKey:
            with env.connect() as conn, conn.transaction():
                return ingest_keys.create(conn, load_key_ring(env.settings.var_dir), tenant_id)

        _keys[slot] = retry(create)
    return _keys[slot]


def _headers(
    tenant_id: UUID, ce_id: str, value: bytes, key: ingest_keys.IssuedIngestKey
) -> list[tuple[str, bytes]]:
    """A signed ingest command's headers (docs/topics.md): the worker measured is the real one."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_source", f"/tenants/{tenant_id}".encode()),
        ("ce_type", ISSUE_TYPE.encode()),
        ("content-type", b"application/json"),
        (ingest_keys.KEY_ID_HEADER, key.key_id.encode()),
        (ingest_keys.SIGNATURE_HEADER, ingest_keys.signature(key.secret, ce_id, value).encode()),
    ]


async def publish(env: BenchEnv, tenant_id: UUID, prefix: str, count: int) -> None:
    key = signing_key(env, tenant_id)
    producer = AIOKafkaProducer(**aiokafka_kwargs(env.settings), enable_idempotence=True, acks="all")
    await producer.start()
    try:
        topic = env.settings.topic(INGEST_TOPIC)
        pending = []
        for i in range(count):
            value = orjson.dumps(invoice_body(f"{prefix}{i}"))
            pending.append(
                await producer.send(
                    topic, value=value, headers=_headers(tenant_id, f"{prefix}{i}", value, key)
                )
            )
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


def wait_router_idle(env: BenchEnv, timeout: float = 600) -> float:
    """Wait until the worker's e-invoicing router has committed the end of ``ledger.invoice.v1``;
    the seconds it took. The router shares the worker process with the ingest agent: in a full run
    it would otherwise route the backlog's and the API stage's invoices while the ingest stage is
    timed, and the stage would measure the router's catch-up instead (docs/performance.md)."""
    from ops.lag import lag

    group = f"{env.settings.topic_prefix}ledgerflow-streams"
    topic = env.settings.topic("ledger.invoice.v1")
    started = time.monotonic()
    while True:
        found = lag(env.settings, [group])
        partitions = [p for g in found for p in g.partitions if p.topic == topic]
        if partitions and all(p.lag == 0 for p in partitions):
            return time.monotonic() - started
        if not partitions and _no_records(env, topic):
            # The router commits only what it read: with nothing ever relayed to the topic (no
            # relay in `--only worker`) it has no offsets there, and nothing to route either.
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the worker's router did not catch up with {topic} within {timeout:.0f}s")
        env.check()
        time.sleep(0.5)


def _no_records(env: BenchEnv, topic: str) -> bool:
    """Whether ``topic`` holds no record (every partition's beginning offset is its end)."""
    import asyncio

    from engine import kafka

    async def check() -> bool:
        found = await kafka.topic_partitions(env.settings, {topic})
        begin, end = await kafka.offsets(env.settings, found.get(topic, []))
        return all(begin[tp] == end[tp] for tp in end)

    return asyncio.run(check())
