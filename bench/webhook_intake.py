"""Inbound webhook intake: ``python -m bench --only webhook_intake``.

Signed Razorpay ``payment.captured`` deliveries are posted to the running API's receiver,
``POST /v1/hooks/razorpay/{tenant_id}``, ``IN_FLIGHT`` at a time, as Razorpay's senders would: each
is verified on its raw body (``X-Razorpay-Signature``, the tenant's secret decrypted from the key
ring), deduplicated on ``X-Razorpay-Event-Id`` and stored in the inbox before its ``200``. The figures
are verified deliveries per second (all answered 200, counted in the inbox afterwards) and the p99 of
the time from sending a delivery to its ``200``. The hook processor does not run meanwhile: what it
does afterwards is not the intake.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from bench.api import percentile
from connectors.razorpay.signature import EVENT_ID_HEADER, SIGNATURE_HEADER, signature

IN_FLIGHT = 16
SECRET = "bench-webhook-secret"
PAID_AT = 1_780_000_000


@dataclass(frozen=True)
class IntakeFigures:
    deliveries: int
    seconds: float
    per_s: float
    p50_ms: float
    p99_ms: float


def configure(api_url: str, api_key: str) -> None:
    """The tenant's Razorpay integration with the webhook secret the deliveries are signed with."""
    answer = httpx.put(
        f"{api_url}/v1/integrations/razorpay",
        json={
            "environment": "sandbox",
            "base_url": "http://127.0.0.1:9",
            "credentials": {"key_id": "rzp_test_bench", "key_secret": "bench", "webhook_secret": SECRET},
        },
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    answer.raise_for_status()


def delivery(i: int) -> tuple[bytes, dict[str, str]]:
    event_id = f"evt_bench{i:010d}"
    body = orjson.dumps(
        {
            "entity": "event",
            "event": "payment.captured",
            "payload": {
                "payment": {
                    "entity": {
                        "id": f"pay_bench{i:010d}",
                        "entity": "payment",
                        "amount": 118_000 + i,
                        "currency": "INR",
                        "status": "captured",
                        "method": "upi",
                        "email": "accounts@reliable.example",
                        "notes": {"invoice_number": f"INV-{i}"},
                        "created_at": PAID_AT,
                    }
                }
            },
            "created_at": PAID_AT + 60,
        }
    )
    headers = {
        SIGNATURE_HEADER: signature(SECRET, body),
        EVENT_ID_HEADER: event_id,
        "Content-Type": "application/json",
    }
    return body, headers


async def _post_all(url: str, n: int) -> tuple[float, list[float], dict[int, int]]:
    prepared = [delivery(i) for i in range(n)]  # signing is the sender's work, not the receiver's
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for item in prepared:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def sender() -> None:
            while not queue.empty():
                body, headers = queue.get_nowait()
                sent = time.perf_counter()
                answer = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - sent)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
        seconds = time.perf_counter() - started
    return seconds, latencies, statuses


def measure(api_url: str, api_key: str, tenant_id: Any, n: int, stored: Any) -> IntakeFigures:
    """Post ``n`` deliveries; ``stored()`` counts the inbox's deliveries afterwards (all must be there)."""
    configure(api_url, api_key)
    before = int(stored())
    url = f"{api_url}/v1/hooks/razorpay/{tenant_id}"
    # One warm-up delivery (first secret decryption, connection set-up), not counted.
    body, headers = delivery(-1 - uuid.uuid4().int % 1000)
    httpx.post(url, content=body, headers=headers, timeout=30).raise_for_status()
    seconds, latencies, statuses = asyncio.run(_post_all(url, n))
    if statuses != {200: n}:
        raise RuntimeError(f"the receiver answered {statuses} to {n} deliveries")
    kept = int(stored()) - before - 1
    if kept != n:
        raise RuntimeError(f"{n} deliveries answered 200 but {kept} are in the inbox")
    return IntakeFigures(
        deliveries=n,
        seconds=seconds,
        per_s=n / seconds,
        p50_ms=1000 * percentile(latencies, 50),
        p99_ms=1000 * percentile(latencies, 99),
    )
