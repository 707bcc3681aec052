"""Attempts and circuit breakers in PostgreSQL, shared by every worker of a connector.

Before an attempt, ``begin_attempt`` asks the (connector, tenant) circuit whether the provider may
be called and, if so, records the attempt as in flight, in one transaction holding the circuit's
row lock. After it, ``finish_attempt`` records the outcome and moves the circuit, again in one
transaction. Times come from PostgreSQL's clock so that workers on several machines agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from connectors.errors import ErrorClass
from streams.connectors import breaker
from streams.connectors.breaker import Breaker, BreakerSettings, CircuitState
from streams.connectors.jobs import Job

SUCCESS = "success"


@dataclass(frozen=True)
class Started:
    attempt_id: int
    probe: bool


@dataclass(frozen=True)
class CircuitOpen:
    """The circuit is open (or its probe is out): try again at ``retry_at`` (epoch seconds)."""

    retry_at: float


async def _locked_breaker(conn: AsyncConnection, connector: str, tenant_id: str) -> tuple[Breaker, float]:
    query = """
        SELECT state, consecutive_failures, half_open_successes,
               extract(epoch FROM opened_at)::float8, extract(epoch FROM probe_started_at)::float8,
               extract(epoch FROM clock_timestamp())::float8
          FROM connector_breakers WHERE connector = %s AND tenant_id = %s FOR UPDATE"""
    row = await (await conn.execute(query, (connector, tenant_id))).fetchone()
    if row is None:
        await conn.execute(
            "INSERT INTO connector_breakers (connector, tenant_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (connector, tenant_id),
        )
        row = await (await conn.execute(query, (connector, tenant_id))).fetchone()
        assert row is not None
    state, failures, successes, opened_at, probe_at, now = row
    return Breaker(CircuitState(state), failures, successes, opened_at, probe_at), now


async def _store_breaker(conn: AsyncConnection, connector: str, tenant_id: str, b: Breaker) -> None:
    await conn.execute(
        """UPDATE connector_breakers
              SET state = %s, consecutive_failures = %s, half_open_successes = %s,
                  opened_at = to_timestamp(%s), probe_started_at = to_timestamp(%s), updated_at = now()
            WHERE connector = %s AND tenant_id = %s""",
        (
            b.state.value,
            b.consecutive_failures,
            b.half_open_successes,
            b.opened_at,
            b.probe_started_at,
            connector,
            tenant_id,
        ),
    )


async def begin_attempt(
    pool: AsyncConnectionPool, settings: BreakerSettings, job: Job, attempt: int
) -> Started | CircuitOpen:
    async with pool.connection() as conn, conn.transaction():
        current, now = await _locked_breaker(conn, job.connector, job.tenant_id)
        decision, new = breaker.admit(current, settings, now)
        if new != current:
            await _store_breaker(conn, job.connector, job.tenant_id, new)
        if isinstance(decision, breaker.Rejected):
            return CircuitOpen(decision.retry_at)
        row = await (
            await conn.execute(
                """INSERT INTO connector_attempts (connector, tenant_id, job_id, kind, attempt)
                   VALUES (%s, %s, %s, %s, %s) RETURNING id""",
                (job.connector, job.tenant_id, job.job_id, job.kind, attempt),
            )
        ).fetchone()
        assert row is not None
        return Started(row[0], decision.probe)


async def finish_attempt(
    pool: AsyncConnectionPool,
    settings: BreakerSettings,
    job: Job,
    started: Started,
    *,
    error_class: ErrorClass | None,
    error_code: str | None,
    latency_ms: float,
) -> Breaker:
    """Record the outcome (``error_class`` None = success) and move the circuit; returns its new state."""
    async with pool.connection() as conn, conn.transaction():
        current, now = await _locked_breaker(conn, job.connector, job.tenant_id)
        if error_class is None:
            new = breaker.record_success(current, settings, now, probe=started.probe)
        elif error_class is ErrorClass.RETRYABLE:
            new = breaker.record_failure(current, settings, now, probe=started.probe)
        else:
            new = breaker.record_ignored(current, settings, now, probe=started.probe)
        if new != current:
            await _store_breaker(conn, job.connector, job.tenant_id, new)
        await conn.execute(
            """UPDATE connector_attempts
                  SET finished_at = clock_timestamp(), outcome = %s, error_code = %s, latency_ms = %s
                WHERE id = %s""",
            (
                SUCCESS if error_class is None else error_class.value,
                error_code,
                latency_ms,
                started.attempt_id,
            ),
        )
        return new


async def prune_attempts(pool: AsyncConnectionPool, connector: str) -> None:
    """Forget attempts older than two hours (status reads the last one)."""
    async with pool.connection() as conn:
        await conn.execute(
            "DELETE FROM connector_attempts WHERE connector = %s AND started_at < now() - interval '2 hours'",
            (connector,),
        )
