"""A per-connector rate limit that holds across every worker, in every one-second window the provider sees.

The guarantee: with a limit of ``N`` requests per second (``N`` = the rate rounded down; a rate
below 1/s allows one request per ``1/rate`` seconds), no window of one second, wherever it starts,
contains more than ``N`` of our requests *as the provider receives them*. It holds whatever happens
between taking a permit and the request reaching the provider (a busy event loop, DNS, connecting,
TLS), because it never reasons about when a request will arrive, only about what must already have
happened:

* a request arrives at the provider after its permit was granted, and before its permit is released
  (the caller releases after the answer came back, or after the request failed);
* a permit is granted only while fewer than ``N`` permits are either still held, or released less
  than one window ago.

So for any ``N + 1`` requests, look at the one whose permit was granted last, at time ``g``: of the
``N`` before it, at least one had been released at some ``r <= g - 1 s``, so that one arrived before
``g - 1 s`` and this one after ``g``: the ``N + 1`` arrivals span more than a second. The permits
live in PostgreSQL (``connector_rate_permits``), taken under a per-connector advisory lock, and every
time is PostgreSQL's ``clock_timestamp()``, so workers on different machines share one clock.

The earlier limiter (GCRA: a slot time per request, spaced ``1.05 / rate`` apart) could not promise
this: it fixed when a request *may start*, and a request that started late (a loaded CPU; 11
requests in one second were seen at a 10/s limit in a full ``make bench`` run) bunched up with the
next ones in the provider's window.

Cost: at most ``N`` requests per ``1 s + latency`` rather than per second, and two statements per
request. A permit whose holder died is taken back after :data:`LEASE_SECONDS`: longer than any
request may take (connect 10 s + read 30 s, connectors' DEFAULT_TIMEOUT), so it has long arrived.
(A limit on jobs holds its permit for a whole attempt; an attempt longer than the lease would lose
its permit early, so such a connector should count requests instead.)
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("ledgerflow.connectors.rate_limit")

WINDOW_SECONDS = 1.0
LEASE_SECONDS = 120.0
MARGIN_SECONDS = 0.01
"""Added to the window when counting: the provider's clock is not PostgreSQL's (NTP may slew them
apart by up to 0.5 ms a second), and a provider may count both ends of its window."""
BUSY_POLL_SECONDS = 0.02
"""How often to look again while all permits are held by requests still in flight."""


@dataclass(frozen=True)
class Limit:
    """``permits`` requests per ``window`` seconds: the rate as the provider counts it."""

    permits: int
    window: float

    @staticmethod
    def of(rate_per_s: float) -> Limit:
        if rate_per_s <= 0:
            raise ValueError("a rate limit must be > 0 (None for unlimited)")
        if rate_per_s >= 1:
            # A provider counts whole requests in its window: 10.5/s allows 10 in any one second.
            return Limit(math.floor(rate_per_s), WINDOW_SECONDS)
        return Limit(1, WINDOW_SECONDS / rate_per_s)


async def try_acquire(pool: AsyncConnectionPool, connector: str, limit: Limit) -> tuple[int | None, float]:
    """One try for a permit: ``(permit id, 0)``, or ``(None, seconds to wait before trying again)``."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('ledgerflow.rate.' || %s, 0))", (connector,)
        )
        # Forget what can no longer count: released a full window ago, or held past the lease.
        await conn.execute(
            """DELETE FROM connector_rate_permits
                WHERE connector = %(c)s
                  AND (released_at <= clock_timestamp() - make_interval(secs => %(w)s)
                       OR granted_at <= clock_timestamp() - make_interval(secs => %(lease)s))""",
            {"c": connector, "w": limit.window + MARGIN_SECONDS, "lease": LEASE_SECONDS},
        )
        row = await (
            await conn.execute(
                """SELECT count(*),
                          extract(epoch FROM min(released_at) + make_interval(secs => %(w)s)
                                             - clock_timestamp())::float8
                     FROM connector_rate_permits WHERE connector = %(c)s""",
                {"c": connector, "w": limit.window + MARGIN_SECONDS},
            )
        ).fetchone()
        assert row is not None
        held, earliest_free = int(row[0]), row[1]
        if held < limit.permits:
            granted = await (
                await conn.execute(
                    "INSERT INTO connector_rate_permits (connector) VALUES (%s) RETURNING id", (connector,)
                )
            ).fetchone()
            assert granted is not None
            return int(granted[0]), 0.0
    if earliest_free is None:  # every permit is held by a request in flight
        return None, BUSY_POLL_SECONDS
    return None, max(0.001, float(earliest_free))


async def release(pool: AsyncConnectionPool, permit: int) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE connector_rate_permits SET released_at = clock_timestamp() WHERE id = %s", (permit,)
        )


@asynccontextmanager
async def permit(pool: AsyncConnectionPool, connector: str, rate_per_s: float | None) -> AsyncIterator[None]:
    """Hold one of ``connector``'s permits around one request (or job); at once when unlimited.

    Release happens when the block ends, however it ends: the request has reached the provider or
    never will. If the release itself fails (PostgreSQL away), the permit stays held until the lease
    runs out: slower, never faster.
    """
    if rate_per_s is None:
        yield
        return
    limit = Limit.of(rate_per_s)
    while True:
        granted, wait = await try_acquire(pool, connector, limit)
        if granted is not None:
            break
        await asyncio.sleep(wait)
    try:
        yield
    finally:
        try:
            await asyncio.shield(release(pool, granted))
        except Exception as exc:  # the request's own outcome matters more than our bookkeeping
            log.warning(
                "%s: could not release rate-limit permit %d (%s); it lapses in %.0fs",
                connector,
                granted,
                exc,
                LEASE_SECONDS,
            )


class RateLimitedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that holds a permit for every request, until its answer has arrived.

    For connectors whose one job makes several provider calls (authenticate, generate, look up a
    duplicate): limiting jobs would let the request rate exceed the provider's limit. The permit is
    released once the response headers are in: by then the provider has received the request.
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
        async with permit(self.pool, self.connector, self.rate_per_s):
            return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
