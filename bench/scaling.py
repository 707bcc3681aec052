"""Scaling from one stream worker to two: the same size of backlog of ingest commands drained by
one ``ledgerflow worker``, then by two in one consumer group.

Each round has a topic prefix of its own under the run's (``<run prefix>scale<N>.``): fresh topics,
a fresh backlog and a fresh ``ledgerflow-streams`` group, so the second round inherits nothing
from the first. PostgreSQL (schema, tenant) is the run's. A round starts its workers on empty
topics, waits until the group is stable with all of them and every worker has applied a warm-up
command (its first one opens the database connections), then publishes the backlog and measures
from the first send to the last command applied, like the ``worker`` stage. So the rate is the
group's steady rate; start-up and the rebalances while workers join are reported separately.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from bench import worker as worker_stage
from bench.env import BenchEnv, retry
from bench.report import Row
from ops.lag import GroupLag, lag

MB = 1024 * 1024
ROUNDS = (1, 2)
# Warm-up commands per worker: enough that every worker of the round gets at least one.
WARM_UP_PER_WORKER = 12


@dataclass(frozen=True)
class Drain:
    """One round: ``workers`` stream workers draining ``commands`` ingest commands."""

    workers: int
    commands: int
    startup_s: float
    """From starting the processes to the group stable and every worker warm."""
    seconds: float
    """From the first command published to the last one applied."""
    peak_rss_mb: dict[str, float]
    cpu_share: dict[str, float]
    """Each worker's CPU time over ``seconds`` (1.0 = one core busy all the time)."""

    @property
    def rate(self) -> float:
        return self.commands / self.seconds


def round_env(env: BenchEnv, workers: int) -> BenchEnv:
    """The run's environment with the round's topic prefix. ``replace`` keeps the same process
    table and RSS figures (shared, not copied), so the run samples, reports and stops the round's
    workers like any other process, and deletes its topics (they start with the run's prefix)."""
    return replace(
        env, settings=replace(env.settings, topic_prefix=f"{env.settings.topic_prefix}scale{workers}.")
    )


def streams_group(env: BenchEnv) -> GroupLag | None:
    found = lag(env.settings, [f"{env.settings.topic_prefix}ledgerflow-streams"])
    return found[0] if found else None


def wait_group(env: BenchEnv, members: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        group = streams_group(env)
        if group is not None and group.state == "Stable" and group.members == members:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the stream workers' group never became Stable with {members} members: {group}"
            )
        env.check()
        time.sleep(0.2)


def drain(
    env: BenchEnv,
    tenant_id: UUID,
    workers: int,
    commands: int,
    bar: Callable[[str, int | None], AbstractContextManager[Any]],
) -> Drain:
    from ops.topics import ensure_all

    scoped = round_env(env, workers)
    retry(lambda: ensure_all(scoped.settings))
    names = [f"worker-scaling-{workers}x-{i}" for i in range(1, workers + 1)]
    spawned = time.monotonic()
    for name in names:
        scoped.start(name, "worker")
    try:
        wait_group(scoped, workers)
        warm = worker_stage.new_prefix()
        asyncio.run(worker_stage.publish(scoped, tenant_id, warm, WARM_UP_PER_WORKER * workers))
        worker_stage.wait_applied(scoped, warm, WARM_UP_PER_WORKER * workers, timeout=120)
        ready = time.monotonic()
        prefix = worker_stage.new_prefix()
        cpu_before = {name: scoped.procs[name].cpu_seconds() for name in names}
        with bar(f"scaling: {workers} worker(s), {commands:,} commands", commands) as advance:
            started = time.monotonic()
            asyncio.run(worker_stage.publish(scoped, tenant_id, prefix, commands))
            done = worker_stage.wait_applied(scoped, prefix, commands, timeout=600, progress=advance)
        cpu = {name: scoped.procs[name].cpu_seconds() - cpu_before[name] for name in names}
        for name in names:
            scoped.procs[name].check()
    finally:
        for name in names:
            env.stop(name)
    return Drain(
        workers=workers,
        commands=commands,
        startup_s=ready - spawned,
        seconds=done - started,
        peak_rss_mb={name: env.peak_rss.get(name, 0) / MB for name in names},
        cpu_share={name: used / (done - started) for name, used in cpu.items()},
    )


def measure(
    env: BenchEnv,
    tenant_id: UUID,
    commands: int,
    bar: Callable[[str, int | None], AbstractContextManager[Any]],
) -> list[Drain]:
    return [drain(env, tenant_id, workers, commands, bar) for workers in ROUNDS]


def rows(drains: list[Drain]) -> Iterator[Row]:
    for d in drains:
        yield Row(
            "scaling",
            f"{d.workers} worker{'s' if d.workers > 1 else ''}: invoices/s ({d.commands:,} commands)",
            d.rate,
            "inv/s",
            note=f"CPU per worker {', '.join(f'{c:.0%}' for c in d.cpu_share.values())} of a core;"
            f" start-up to stable group {d.startup_s:.1f} s; peak RSS {max(d.peak_rss_mb.values()):.0f} MB",
        )
    one, *more = drains
    for d in more:
        yield Row(
            "scaling",
            f"{d.workers} workers / 1 worker",
            d.rate / one.rate,
            "×",
            note="same backlog size, fresh topics and group each; one machine's cores shared with"
            " PostgreSQL and Kafka",
        )


def as_json(drains: list[Drain]) -> dict[str, Any]:
    return {
        f"{d.workers}_workers": {
            "commands": d.commands,
            "seconds": d.seconds,
            "invoices_per_s": d.rate,
            "startup_s": d.startup_s,
            "peak_rss_mb": d.peak_rss_mb,
            "cpu_share": d.cpu_share,
        }
        for d in drains
    }
