"""How a tenant's integrations are doing, from what the connector runtime records.

The connector workers record every provider call in ``connector_attempts`` (connector, tenant, job
kind, outcome, error code, latency; pruned after two hours), each circuit in ``connector_breakers``
and each dead letter in ``connector_dead_letters`` (streams/connectors/). This module reads them per
(tenant, provider): the health score of seed 003 ("0.0 to 1.0 based on success rate") over a window,
the p95 latency, the open circuit, the DLQ depth and the last error. Only machine codes are shown
for errors, never a provider's message or body: those may echo credentials or personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

# The window the score and p95 cover; attempts older than two hours are pruned by the workers.
HEALTH_WINDOW_MINUTES = 60
# Below this success rate an integration that still works is shown as "degraded".
DEGRADED_BELOW = 0.9
MAX_PAGE = 200


@dataclass(frozen=True)
class Health:
    attempts: int
    success_rate: float | None
    p95_latency_ms: float | None
    circuit: str
    circuit_opened_at: datetime | None
    dlq_depth: int
    last_error: dict[str, Any] | None
    last_success_at: datetime | None


def status_of(enabled: bool, health: Health) -> str:
    """``disabled``, ``circuit_open``, ``degraded`` (failing calls or dead letters) or ``active``."""
    if not enabled:
        return "disabled"
    if health.circuit != "closed":
        return "circuit_open"
    if health.dlq_depth > 0 or (health.success_rate is not None and health.success_rate < DEGRADED_BELOW):
        return "degraded"
    return "active"


def health(conn: psycopg.Connection, tenant_id: UUID, provider: str) -> Health:
    tenant = str(tenant_id)
    with conn.cursor(row_factory=dict_row) as cur:
        stats = cur.execute(
            """SELECT count(*) AS n, avg((outcome = 'success')::int)::float8 AS rate,
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,
                      max(finished_at) FILTER (WHERE outcome = 'success') AS last_success
                 FROM connector_attempts
                WHERE connector = %s AND tenant_id = %s AND finished_at IS NOT NULL
                  AND started_at > now() - make_interval(mins => %s)""",
            (provider, tenant, HEALTH_WINDOW_MINUTES),
        ).fetchone()
        circuit = cur.execute(
            "SELECT state, opened_at FROM connector_breakers WHERE connector = %s AND tenant_id = %s",
            (provider, tenant),
        ).fetchone()
        depth = cur.execute(
            """SELECT count(*) AS n FROM connector_dead_letters d
                WHERE d.connector = %s AND d.tenant_id = %s AND NOT EXISTS (
                      SELECT 1 FROM connector_dlq_actions a WHERE a.connector = d.connector
                         AND a.partition = d.partition AND a."offset" = d."offset")""",
            (provider, tenant),
        ).fetchone()
        error = cur.execute(
            """SELECT error_code AS code, outcome, kind AS job_kind, finished_at AS at
                 FROM connector_attempts
                WHERE connector = %s AND tenant_id = %s AND outcome IS NOT NULL AND outcome <> 'success'
                ORDER BY id DESC LIMIT 1""",
            (provider, tenant),
        ).fetchone()
    assert stats is not None and depth is not None
    return Health(
        attempts=stats["n"],
        success_rate=stats["rate"],
        p95_latency_ms=stats["p95"],
        circuit=circuit["state"] if circuit else "closed",
        circuit_opened_at=circuit["opened_at"] if circuit and circuit["state"] != "closed" else None,
        dlq_depth=depth["n"],
        last_error=None if error is None else {**error, "at": _iso(error["at"])},
        last_success_at=stats["last_success"],
    )


def health_view(enabled: bool, h: Health) -> dict[str, Any]:
    """The fields ``GET /v1/integrations`` adds to each provider (docs/integrations.md)."""
    return {
        "status": status_of(enabled, h),
        "health": {
            "window_minutes": HEALTH_WINDOW_MINUTES,
            "attempts": h.attempts,
            "score": None if h.success_rate is None else round(h.success_rate, 4),
            "success_rate": None if h.success_rate is None else round(h.success_rate, 4),
            "p95_latency_ms": None if h.p95_latency_ms is None else round(h.p95_latency_ms, 1),
            "last_success_at": _iso(h.last_success_at),
        },
        "circuit": {"state": h.circuit, "opened_at": _iso(h.circuit_opened_at)},
        "dlq_depth": h.dlq_depth,
        "last_error": h.last_error,
    }


def attempts_page(
    conn: psycopg.Connection, tenant_id: UUID, provider: str, *, limit: int, before: int | None
) -> dict[str, Any]:
    """The tenant's attempts for ``provider``, newest first; ``next_cursor`` pages on (an attempt id)."""
    limit = max(1, min(limit, MAX_PAGE))
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT id, job_id, kind, attempt, started_at, finished_at, outcome, error_code, latency_ms
                 FROM connector_attempts
                WHERE connector = %s AND tenant_id = %s AND (%s::bigint IS NULL OR id < %s::bigint)
                ORDER BY id DESC LIMIT %s""",
            (provider, str(tenant_id), before, before, limit + 1),
        ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [
            {
                "id": str(r["id"]),
                "job_id": r["job_id"],
                "job_kind": r["kind"],
                "attempt": r["attempt"],
                "started_at": _iso(r["started_at"]),
                "finished_at": _iso(r["finished_at"]),
                "outcome": r["outcome"] or "in_flight",
                "error_code": r["error_code"],
                "latency_ms": None if r["latency_ms"] is None else round(r["latency_ms"], 1),
            }
            for r in rows
        ],
        "next_cursor": str(rows[-1]["id"]) if more else None,
    }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None
