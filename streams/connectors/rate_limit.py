"""A per-connector rate limit that holds across every worker: one slot at a time, handed out by PostgreSQL.

GCRA with no burst: each caller takes the slot ``GREATEST(next_at, now())`` and moves ``next_at``
one emission interval on, in one statement, so two workers can never take the same slot. The caller
then awaits its slot (a timer, not a poll). Slots are spaced 5 % wider than ``1 / rate`` because a
timer can only be late: if call *i* starts a little later than its slot and call *i + rate* does
not, a strict spacing would let ``rate + 1`` calls into one second as the provider measures it.
"""

from __future__ import annotations

import asyncio

import httpx
from psycopg_pool import AsyncConnectionPool

SPACING_MARGIN = 1.05


def emission_interval(rate_per_s: float) -> float:
    return SPACING_MARGIN / rate_per_s


async def take_slot(pool: AsyncConnectionPool, connector: str, rate_per_s: float) -> float:
    """Reserve the next call slot; returns how many seconds from now it starts (0 = now)."""
    interval = emission_interval(rate_per_s)
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                """INSERT INTO connector_rate AS r (connector, next_at)
                   VALUES (%(c)s, clock_timestamp() + make_interval(secs => %(i)s))
                   ON CONFLICT (connector) DO UPDATE
                      SET next_at = GREATEST(r.next_at, clock_timestamp()) + make_interval(secs => %(i)s)
                   RETURNING extract(epoch FROM r.next_at - clock_timestamp())::float8 - %(i)s""",
                {"c": connector, "i": interval},
            )
        ).fetchone()
    assert row is not None
    return max(0.0, float(row[0]))


async def wait_for_slot(pool: AsyncConnectionPool, connector: str, rate_per_s: float | None) -> None:
    """Return when this caller may call the provider; at once when the connector is unlimited."""
    if rate_per_s is None:
        return
    delay = await take_slot(pool, connector, rate_per_s)
    if delay > 0:
        await asyncio.sleep(delay)


class RateLimitedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that takes a slot before every request.

    For connectors whose one job makes several provider calls (authenticate, generate, look up a
    duplicate): limiting jobs would let the request rate exceed the provider's limit.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        connector: str,
        rate_per_s: float | None,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.pool = pool
        self.connector = connector
        self.rate_per_s = rate_per_s
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await wait_for_slot(self.pool, self.connector, self.rate_per_s)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
