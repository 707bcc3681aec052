"""The e-invoicing pipeline against the IRP sandbox: store -> relay -> faust router -> gst-irp connector.

The stage runs in a schema and topic prefix of its own (a second :class:`BenchEnv`): in a full run
the ledger topic of the main one holds the 50,000 backlog invoices, all B2B, which the router would
have to look at before the first IRN job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import psycopg
from aiokafka import AIOKafkaConsumer

from bench import workload
from bench.env import BenchEnv, free_port, retry
from connectors.catalogue import endpoint_policy
from connectors.gst_irp.handler import CONNECTOR
from connectors.gst_irp.sandbox import SandboxAccount
from engine import integrations
from engine.application import LedgerService
from engine.config import PROJECT_ROOT, Settings
from engine.domain.tenant import Tenant
from engine.kafka_clients import aiokafka_kwargs
from engine.security.secrets import load_key_ring

GSTIN = "29AAGCB7383J1Z4"
ACCOUNT = SandboxAccount(gstin=GSTIN)
CREDENTIALS = ACCOUNT.credentials()
ADDRESS = {"line1": "14 Residency Road", "city": "Bengaluru", "pincode": "560025"}
RATE_LIMIT = 10.0
# Short retries, as in the e-invoicing integration test; used by every measurement so that the
# delay topics are the same throughout (only the retry measurement injects faults).
RETRY_DELAYS = "0,1,1,2,2,3,3,5,5,8,8,13"
# With 20 % of requests failing, five failures in a row happen now and then and open the circuit;
# 3 s (as in the integration test) instead of the default 60 s keeps that from dominating the figure.
BREAKER_OPEN_S = "3"
FAULTS: dict[str, Any] = {"error_rate": 0.2, "seed": 1}
PYTHON = str(PROJECT_ROOT / ".venv" / "bin" / "python")


def process_env(rate: str) -> dict[str, str]:
    return {
        "LEDGERFLOW_GST_IRP_RATE": rate,
        "LEDGERFLOW_RETRY_DELAYS": RETRY_DELAYS,
        "LEDGERFLOW_BREAKER_OPEN_S": BREAKER_OPEN_S,
    }


def connector_settings(settings: Settings) -> Settings:
    return replace(settings, retry_delays=tuple(float(d) for d in RETRY_DELAYS.split(",")))


class Sandbox:
    """``python -m connectors.gst_irp.sandbox`` as a process of the run, and its operator endpoints."""

    def __init__(self, env: BenchEnv) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = env.start_command(
            "irp-sandbox",
            [PYTHON, "-m", "connectors.gst_irp.sandbox", "--port", str(port), "--gstin", GSTIN],
            cwd=PROJECT_ROOT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.http.get("/_sandbox/stats").raise_for_status()
                return
            except httpx.HTTPError:
                self.proc.check()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def reset(self, faults: dict[str, Any] | None = None) -> None:
        self.http.post("/_sandbox/reset").raise_for_status()
        if faults:
            self.http.post("/_sandbox/faults", json=faults).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/_sandbox/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def close(self) -> None:
        self.http.close()


def register_tenant(service: LedgerService, settings: Settings, base_url: str) -> Tenant:
    """A Karnataka seller with e-invoicing on and its gst-irp integration pointing at the sandbox."""
    registered = service.register_tenant(
        name="Bench IRN",
        legal_name="Bench IRN Electricals Private Limited",
        country="IN",
        gstin=GSTIN,
        state="29",
        einvoicing_enabled=True,
        address=ADDRESS,
    )
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        integrations.save(
            conn,
            load_key_ring(settings.var_dir),
            registered.tenant_id,
            CONNECTOR,
            enabled=True,
            environment="sandbox",
            base_url=base_url,
            credentials=CREDENTIALS,
            endpoints=endpoint_policy(CONNECTOR),
            mode=settings.mode,
        )
    return service.get_tenant(registered.tenant_id)


def issue(service: LedgerService, tenant: Tenant, count: int, prefix: str, *, batch: int = 250) -> float:
    """Store ``count`` B2B invoices (inter-state, 5 lines) 250 at a time; returns the seconds taken."""
    started = time.perf_counter()
    for first in range(0, count, batch):
        invoices = [workload.build(tenant, f"{prefix}{i}") for i in range(first, min(count, first + batch))]
        retry(lambda invoices=invoices: service.ledger.save(*invoices))  # type: ignore[misc]
    return time.perf_counter() - started


def recorded(env: BenchEnv) -> int:
    """IrnGenerated events in the event store."""
    return int(
        env.scalar("SELECT count(*) FROM ledger_events WHERE topic LIKE %s", ("%Invoice.IrnGenerated",)) or 0
    )


def attempt_mark(env: BenchEnv) -> int:
    return int(env.scalar("SELECT coalesce(max(id), 0) FROM connector_attempts") or 0)


def circuits_open(env: BenchEnv) -> int:
    return int(env.scalar("SELECT count(*) FROM connector_breakers WHERE state <> 'closed'") or 0)


@dataclass(frozen=True)
class Attempts:
    seconds: float  # first attempt started -> last successful attempt finished (database clock)
    total: int
    retryable: int
    other_failures: int


def attempts_since(env: BenchEnv, mark: int) -> Attempts:
    def run() -> tuple[Any, ...]:
        with env.connect() as conn:
            row = conn.execute(
                """SELECT extract(epoch FROM max(finished_at) FILTER (WHERE outcome = 'success')
                                             - min(started_at))::float8,
                          count(*),
                          count(*) FILTER (WHERE outcome = 'retryable'),
                          count(*) FILTER (WHERE outcome IN ('permanent', 'needs_attention'))
                   FROM connector_attempts WHERE id > %s""",
                (mark,),
            ).fetchone()
        assert row is not None
        return tuple(row)

    seconds, total, retryable, other = retry(run)
    return Attempts(float(seconds or 0.0), int(total), int(retryable), int(other))


def topic_end(env: BenchEnv, topic: str) -> int:
    return asyncio.run(_watch(env.settings, topic, None, 0, lambda: None))[2]


def wait_topic(
    env: BenchEnv, topic: str, target: int, timeout: float, progress: Callable[[int], None] | None = None
) -> tuple[float, float]:
    """Wait until ``topic`` holds ``target`` messages; (monotonic time of the first new one, of the last)."""
    first, done, _ = asyncio.run(_watch(env.settings, topic, target, timeout, env.check, progress))
    return first, done


async def _watch(
    settings: Settings,
    topic: str,
    target: int | None,
    timeout: float,
    check: Callable[[], None],
    progress: Callable[[int], None] | None = None,
) -> tuple[float, float, int]:
    consumer = AIOKafkaConsumer(topic, **aiokafka_kwargs(settings), group_id=None)
    await consumer.start()
    try:
        partitions = list(consumer.assignment())
        base = int(sum((await consumer.end_offsets(partitions)).values()))
        if target is None:
            return 0.0, 0.0, base
        deadline = time.monotonic() + timeout
        first = 0.0
        while True:
            end = int(sum((await consumer.end_offsets(partitions)).values()))
            now = time.monotonic()
            if progress:
                progress(end)
            if end > base and not first:
                first = now
            if end >= target:
                return first or now, now, end
            if now > deadline:
                raise TimeoutError(f"{topic} holds {end} of {target} messages after {timeout:.0f}s")
            check()
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
