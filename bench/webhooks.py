"""The outbound webhook stage: deliveries per second to a fast receiver while a slow endpoint of the
same tenant is present, beside a bare httpx POST loop to the same receiver in the same run.

Path measured: invoices stored -> relay -> ledger topic -> ``ledgerflow webhooks run`` (intake into
``webhook_deliveries``, per-endpoint dispatch, Standard Webhooks signing, POST) -> the receiver sandbox
(``connectors/webhook_receiver.py``, a separate process). The figure is the fast endpoint's deliveries
divided by the time from its first attempt to its last success (database clock). The slow receiver
holds each answer ``SLOW_DELAY_S``; the point is that the fast figure does not depend on it.

The per-endpoint rate limit is lifted for the measurement (``LEDGERFLOW_WEBHOOK_RATE``): its default,
50/s, would otherwise be the figure.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from bench import workload
from bench.env import BenchEnv, free_port, retry
from engine.config import PROJECT_ROOT
from engine.security.secrets import load_key_ring
from engine.webhook_signing import LedgerEvent, body, signature_headers

SLOW_DELAY_S = 2.0
RATE = "none"
# The worker's default per-endpoint concurrency; the bare loop gets the same number of requests in flight.
IN_FLIGHT = 8


@dataclass(frozen=True)
class WebhookFigures:
    deliveries: int
    seconds: float
    per_s: float
    slow_delivered: int
    bare_per_s: float
    bare_seconds: float


class Receiver:
    """``python -m connectors.webhook_receiver`` as a process of the run."""

    def __init__(self, env: BenchEnv) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = env.start_command(
            "webhook-receiver",
            [sys.executable, "-m", "connectors.webhook_receiver", "--port", str(port)],
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

    def slow_down(self, name: str, seconds: float) -> None:
        self.http.put(f"/_sandbox/receivers/{name}", json={"delay_s": seconds}).raise_for_status()

    def close(self) -> None:
        self.http.close()


def measure(env: BenchEnv, n: int) -> WebhookFigures:
    from engine.bootstrap import build_service
    from engine.webhooks import WebhookService, open_store

    env.ensure_topics()
    service = retry(lambda: build_service(env.settings, pool_size=4))
    hooks = WebhookService(
        open_store(env.settings), service.pool, load_key_ring(env.settings.var_dir), "development"
    )
    receiver = Receiver(env)
    try:
        tenant, _ = retry(lambda: workload.register_tenant(service))
        receiver.slow_down("slow", SLOW_DELAY_S)
        types = ["ledgerflow.invoice.issued"]
        fast, _ = hooks.create(
            tenant.id,
            url=f"{receiver.url}/hooks/fast",
            event_types=types,
            description="",
            body_format="cloudevents",
        )
        hooks.create(
            tenant.id,
            url=f"{receiver.url}/hooks/slow",
            event_types=types,
            description="",
            body_format="cloudevents",
        )
        for first in range(0, n, 250):
            batch = [workload.build(tenant, f"WH{i}") for i in range(first, min(n, first + 250))]
            retry(lambda batch=batch: service.ledger.save(*batch))  # type: ignore[misc]
        cli = [sys.executable, "-m", "engine.cli"]
        env.start_command("relay", [*cli, "relay"], cwd=PROJECT_ROOT)
        env.start_command(
            "webhooks", [*cli, "webhooks", "run"], env={"LEDGERFLOW_WEBHOOK_RATE": RATE}, cwd=PROJECT_ROOT
        )
        deadline = time.monotonic() + max(300.0, n / 5)
        while _delivered(env, fast.id) < n:
            env.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{_delivered(env, fast.id)} of {n} webhooks delivered in time")
            time.sleep(0.2)
        seconds = float(
            env.scalar(
                "SELECT extract(epoch FROM max(d.finished_at) - min(a.attempted_at))::float8"
                " FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.delivery_id"
                " WHERE d.endpoint_id = %s",
                (fast.id,),
            )
        )
        slow_delivered = int(
            env.scalar(
                "SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e USING (endpoint_id)"
                " WHERE e.url LIKE %s AND d.status = 'delivered'",
                ("%/hooks/slow",),
            )
            or 0
        )
        for name in ("webhooks", "relay"):  # the bare loop runs alone with the receiver
            env.stop(name)
        sample = env.scalar("SELECT event FROM webhook_deliveries WHERE endpoint_id = %s LIMIT 1", (fast.id,))
        bare_seconds = asyncio.run(_bare_loop(f"{receiver.url}/hooks/bare", n, LedgerEvent(**sample)))
        return WebhookFigures(n, seconds, n / seconds, slow_delivered, n / bare_seconds, bare_seconds)
    finally:
        receiver.close()
        hooks.close()
        service.close()


def _delivered(env: BenchEnv, endpoint_id: Any) -> int:
    return int(
        env.scalar(
            "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = %s AND status = 'delivered'",
            (endpoint_id,),
        )
        or 0
    )


async def _bare_loop(url: str, n: int, event: LedgerEvent) -> float:
    """``n`` POSTs of the same body a delivery sends, signed the same way, ``IN_FLIGHT`` at a time: what
    one process does with no queue, no order rule and no bookkeeping."""
    raw, content_type = body(event, "cloudevents")
    secret = "whsec_" + "a" * 43
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    async with httpx.AsyncClient(timeout=10) as client:

        async def sender() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                headers = {
                    **signature_headers(f"bare-{i}", raw, [secret], datetime.now(UTC)),
                    "Content-Type": content_type,
                }
                (await client.post(url, content=raw, headers=headers)).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
        return time.perf_counter() - started
