"""A connector's rate limit holds in every one-second window as the provider counts arrivals.

Several workers (each its own PostgreSQL pool, sharing nothing but the database, as separate
processes do) send requests through :class:`RateLimitedTransport` to a sandbox, whose ``peak_rps``
counts the most requests that arrived within any one second. Between taking its permit and reaching
the sandbox each request is held back a random 0-150 ms: what a loaded CPU, DNS, connecting or TLS
do to a request. That delay is what let the earlier limiter (a start time per request) put 11
requests into one second at a 10/s limit.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from connectors.gstin_lookup.client import LookupClient, LookupCredentials
from connectors.gstin_lookup.sandbox import ACTIVE, SandboxAccount, create_app
from engine import db
from engine.config import Settings
from streams.connectors.rate_limit import Limit, RateLimitedTransport
from tests.connectors.contract import LiveServer, Operator

pytestmark = pytest.mark.integration

ACCOUNT = SandboxAccount()
CREDENTIALS = LookupCredentials(ACCOUNT.client_id, ACCOUNT.client_secret)
RATE = 10.0
WORKERS = 3
SEARCHES_PER_WORKER = 14


class LateSender(httpx.AsyncBaseTransport):
    """Forwards each request after a random pause, as a busy process would."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.rng.uniform(0.0, 0.15))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _worker(settings: Settings, url: str, seed: int) -> None:
    pool = AsyncConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=4,
        open=False,
        kwargs={"options": f"-c search_path={settings.db_schema}"},
    )
    await pool.open()
    try:
        transport = RateLimitedTransport(pool, "rate-test", RATE, inner=LateSender(random.Random(seed)))
        async with LookupClient(url, CREDENTIALS, transport=transport) as client:
            await client.authenticate()
            found = await asyncio.gather(*(client.search(ACTIVE) for _ in range(SEARCHES_PER_WORKER)))
        assert all(f is not None for f in found)
    finally:
        await pool.close()


async def _run(settings: Settings, url: str) -> None:
    await asyncio.gather(*(_worker(settings, url, seed) for seed in range(WORKERS)))


def test_workers_sending_late_never_put_more_requests_into_one_second_than_the_limit(
    settings: Settings,
) -> None:
    db.ensure_schema(settings)
    with LiveServer(create_app(account=ACCOUNT)) as server:
        operator = Operator(server.url)
        asyncio.run(_run(settings, server.url))
        stats = operator.stats()

    assert stats["requests"] == WORKERS * (SEARCHES_PER_WORKER + 1), stats
    assert stats["peak_rps"] <= RATE, f"{stats['peak_rps']} requests within one second at {RATE}/s"
    # And the limit is not met by starving: the busiest second is full.
    assert stats["peak_rps"] == RATE, stats


def test_a_rate_is_counted_in_whole_requests_per_window() -> None:
    assert Limit.of(10) == Limit(10, 1.0)
    assert Limit.of(2.5) == Limit(2, 1.0)  # 3 in one second would be 3/s
    assert Limit.of(0.5) == Limit(1, 2.0)
    with pytest.raises(ValueError):
        Limit.of(0)
