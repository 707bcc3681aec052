"""``GET /healthz/consumers``: whether the engine's consumer groups make progress, and the lag monitor.

A probe (Kubernetes, a load balancer, cron with curl) gets 200 while no group is stalled and 503,
in the API's error shape, naming the stalled groups and why, when one is. Each request samples lag
from Kafka, stores the sample and judges it against the stored history (``ops/lag.py``,
``ops/stall.py``), exactly as ``ledgerflow lag --check`` does.

The router also runs the lag monitor in the API process (its lifespan): the API is the one
long-running process every deployment has, and the monitor keeps sampling between probes so that
a stall is seen, and logged, even when nobody asks. ``LEDGERFLOW_LAG_SAMPLE_S`` sets its interval
(0 turns it off); ``LEDGERFLOW_STALL_AFTER_S`` the seconds without progress that make a stall.

The body also counts each projection's pending dead letters (``projection_dead_letters`` and
``dead_letters`` per projection group). They never turn the answer into a 503: a probe's 503 gets
the process restarted or taken out of rotation, which cannot fix a poison event the projector has
already set aside while it keeps up; ``ledgerflow_projection_dead_letters_pending`` is for alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query

from engine.api.errors import RETRY_AFTER_SECONDS, ApiError
from engine.api.ops_token import ops_token_check
from engine.config import Settings
from ops.lag import (
    KafkaUnavailable,
    LagMonitor,
    consumer_health,
    monitor_interval_from_env,
    stall_after_from_env,
)

# Seconds a health answer is reused for (see consumer_health_router).
HEALTH_CACHE_SECONDS = 3.0

GroupIds = Annotated[
    list[str] | None,
    Query(description="Only these consumer groups (full ids; repeat the parameter). Default: the engine's."),
]


def consumer_health_router(
    settings: Settings, *, stall_after: float | None = None, monitor_every: float | None = None
) -> APIRouter:
    """The endpoint and the monitor; limits default to the environment (see the module docstring)."""
    limit = stall_after if stall_after is not None else stall_after_from_env()
    interval = monitor_every if monitor_every is not None else monitor_interval_from_env()

    @asynccontextmanager
    async def monitor(app: FastAPI) -> AsyncIterator[None]:
        if interval <= 0:
            yield
            return
        stop = asyncio.Event()
        task = asyncio.create_task(LagMonitor(settings, interval=interval, stall_after=limit).run(stop))
        try:
            yield
        finally:
            stop.set()
            # A sample in progress runs in a thread that cannot be interrupted; do not wait for it.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    router = APIRouter(lifespan=monitor)
    # Probes may come every second from several places; one sample per few seconds is plenty
    # (each sample asks Kafka for every group's offsets and writes the history).
    cache: dict[tuple[str, ...], tuple[float, Any]] = {}
    cache_lock = threading.Lock()

    def _cached_health(names: tuple[str, ...]) -> Any:
        with cache_lock:
            hit = cache.get(names)
            if hit is not None and time.monotonic() - hit[0] < HEALTH_CACHE_SECONDS:
                return hit[1]
            report = consumer_health(settings, list(names) or None, stall_after=limit)
            cache[names] = (time.monotonic(), report)
            return report

    @router.get(
        "/healthz/consumers",
        tags=["health"],
        summary="Consumer groups: 200 unless one is stalled (503 names it and why)",
        dependencies=[Depends(ops_token_check(settings))],
    )
    def consumers(group: GroupIds = None) -> dict[str, Any]:
        names = group or []
        ours = f"{settings.topic_prefix}ledgerflow"
        # Open to anyone while no operators' token is set, so only the engine's own groups: the
        # probe must not become a way to make the API sample (and store lag history for) any
        # group on a shared broker.
        if any(not g.startswith(ours) or len(g) > 255 for g in names):
            raise ApiError(
                422,
                "validation_failed",
                f"group: only the engine's consumer groups (ids starting with {ours!r},"
                " at most 255 characters)",
                {
                    "fields": [
                        {"path": "group", "code": "invalid_group", "message": f"must start with {ours!r}"}
                    ]
                },
            )
        try:
            report = _cached_health(tuple(sorted(names)))
        except KafkaUnavailable as exc:
            raise ApiError(
                503,
                "kafka_unavailable",
                f"consumer lag could not be read: {exc}",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from exc
        if not report.history_stored:
            # One sample cannot show a stall: without the history this check cannot vouch for anything.
            raise ApiError(
                503,
                "database_unavailable",
                "the lag history in PostgreSQL is unreachable, so stalls cannot be judged; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        body: dict[str, Any] = {
            "status": "stalled" if report.stalled else "ok",
            "stall_after_s": report.stall_after,
            "groups": [g.as_json() for g in report.groups],
            # Pending projection dead letters do not make this 503: the projector has set them aside
            # and keeps up, so restarting or replacing it would not help; they need a person
            # (ledgerflow dlq ... --projection), and /metrics carries them for alerting.
            "projection_dead_letters": report.dead_letters,
        }
        if report.stalled:
            why = "; ".join(f"{g.group}: {g.assessment.reason}" for g in report.stalled)
            raise ApiError(
                503,
                "consumers_stalled",
                f"{len(report.stalled)} consumer group(s) stalled: {why}",
                {**body, "stalled": [g.group for g in report.stalled]},
            )
        return body

    return router
