"""The real projector catching up a kept bench run, one projection or several at a time: the
events/s of `ledgerflow projector` and the CPU of its processes and of PostgreSQL's, counted apart.
Where ``bench.projection_costs`` times each ``apply`` in one process, this runs what production
runs (fetching, decoding once for all, batches, share processes, commits), so the figures of
projections measured apart can be set beside those of all of them together.

    make bench BENCH_ARGS="--only relay --keep"          # prints the schema, e.g. bench_1a2b3c4d5e
    python -m bench.projector_catchup bench_1a2b3c4d5e   # the register alone, then every projection
    python -m bench.projector_catchup bench_1a2b3c4d5e audit_trail --each

Timed from the projector's first "assigned" line (start-up excluded, as the bench's projection
stage) to the last position stored. PostgreSQL's CPU is every server process's (the cluster is
assumed otherwise idle). It empties each measured projection's table and positions first, so it
accepts bench schemas only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace

import psutil
import psycopg
from aiokafka import AIOKafkaConsumer
from psycopg import sql

from bench.env import ensure_database
from engine.config import Settings, load_settings
from engine.kafka_clients import aiokafka_kwargs
from projections.catalogue import PROJECTIONS

TOPIC = "ledger.invoice.v1"


@dataclass(frozen=True)
class CatchUp:
    projections: list[str]
    events: int
    seconds: float
    projector_cpu_s: float
    postgres_cpu_s: float
    peak_rss_mb: list[float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def _topic_end(settings: Settings) -> int:
    """Records in the kept topic (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(settings.topic(TOPIC), **aiokafka_kwargs(settings), group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


def _postgres_cpu() -> float:
    total = 0.0
    for process in psutil.process_iter(["name"]):
        try:
            if "postgres" in (process.info["name"] or ""):
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _tree_cpu(root: psutil.Process, seen: dict[int, float], rss: dict[int, float]) -> float:
    """CPU seconds of ``root`` and its children so far; a child that has exited keeps its last figure."""
    try:
        for process in [root, *root.children(recursive=True)]:
            times = process.cpu_times()
            seen[process.pid] = times.user + times.system
            rss[process.pid] = max(rss.get(process.pid, 0.0), process.memory_info().rss / 1e6)
    except psutil.Error:
        pass
    return sum(seen.values())


def catch_up(settings: Settings, names: list[str], processes: int, timeout: float = 600.0) -> CatchUp:
    """Empty ``names``' tables and positions, run `ledgerflow projector` over the kept topic until every
    one of them has applied all of it, and stop it."""
    tables = {p.name: p.table for p in PROJECTIONS}
    topic = settings.topic(TOPIC)
    with psycopg.connect(
        settings.database_url, autocommit=True, options=f"-c search_path={settings.db_schema}"
    ) as conn:
        for name in names:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(tables[name])))
            conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (name,))
            conn.execute("DELETE FROM projection_dead_letters WHERE projection = %s", (name,))
        # Nothing of the truncation left for the measured window to write out.
        conn.execute("CHECKPOINT")
    total = asyncio.run(_topic_end(settings))
    env = dict(
        os.environ,
        LEDGERFLOW_DATABASE_URL=settings.database_url,
        LEDGERFLOW_DB_SCHEMA=settings.db_schema,
        LEDGERFLOW_TOPIC_PREFIX=settings.topic_prefix,
    )
    command = [sys.executable, "-m", "engine.cli", "projector", "--processes", str(processes)]
    for name in names:
        command += ["--projection", name]
    applied = (
        "SELECT CASE WHEN count(*) = %s THEN min(applied) ELSE 0 END FROM ("
        ' SELECT projection, sum("offset" + 1) AS applied FROM projection_tracking'
        " WHERE topic = %s AND projection = ANY(%s) GROUP BY projection) AS per_projection"
    )
    cpu: dict[int, float] = {}
    rss: dict[int, float] = {}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        ready: float | None = None
        cpu_at_ready = postgres_at_ready = 0.0
        deadline = time.monotonic() + timeout
        try:
            with psycopg.connect(
                settings.database_url, autocommit=True, options=f"-c search_path={settings.db_schema}"
            ) as conn:
                while True:
                    spent = _tree_cpu(root, cpu, rss)
                    if ready is None:
                        log.seek(0)
                        if "assigned" in log.read():
                            ready, cpu_at_ready, postgres_at_ready = time.monotonic(), spent, _postgres_cpu()
                    row = conn.execute(applied, (len(names), topic, names)).fetchone()
                    if ready is not None and row is not None and (row[0] or 0) >= total:
                        done = time.monotonic()
                        break
                    if proc.poll() is not None:
                        log.seek(0)
                        raise SystemExit(
                            f"the projector stopped (exit {proc.returncode}):\n{log.read()[-3000:]}"
                        )
                    if time.monotonic() > deadline:
                        raise SystemExit(f"the projector did not catch up within {timeout:g} s")
                    time.sleep(0.02)
            postgres = _postgres_cpu() - postgres_at_ready
            projector = _tree_cpu(root, cpu, rss) - cpu_at_ready
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    return CatchUp(names, total, done - ready, projector, postgres, sorted(rss.values()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], prog="python -m bench.projector_catchup"
    )
    parser.add_argument("schema", help="a bench schema kept with --keep (bench_<hex>)")
    parser.add_argument(
        "projections",
        nargs="*",
        help="names (default: invoice_register, then every projection of the invoice topic together)",
    )
    parser.add_argument(
        "--each", action="store_true", help="each projection named (or of the topic) alone too"
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="projector processes (default 2, as the bench)"
    )
    args = parser.parse_args()
    if not args.schema.startswith("bench_"):
        parser.error("only a bench schema: the measured tables are emptied first")
    base = load_settings()
    settings = replace(
        base,
        database_url=ensure_database(base.database_url),
        db_schema=args.schema,
        topic_prefix=f"bench{args.schema.removeprefix('bench_')}.",
    )
    of_topic = [p.name for p in PROJECTIONS if TOPIC in p.topics]
    unknown = set(args.projections) - set(of_topic)
    if unknown:
        parser.error(f"not a projection of {TOPIC}: {', '.join(sorted(unknown))}")
    chosen = args.projections or of_topic
    runs = [[name] for name in chosen] if args.each else []
    runs += [chosen] if args.projections else [["invoice_register"], of_topic]
    head = ("projections", "events/s", "projector CPU", "µs/ev", "PostgreSQL CPU", "µs/ev")
    print("{:42} {:>9} {:>14} {:>6} {:>15} {:>6}".format(*head))
    for names in runs:
        c = catch_up(settings, names, args.processes)
        label = ", ".join(names) if len(names) < len(of_topic) else f"all {len(names)} of the topic"
        projector_us = 1e6 * c.projector_cpu_s / c.events
        postgres_us = 1e6 * c.postgres_cpu_s / c.events
        rss = ", ".join(f"{m:.0f}" for m in c.peak_rss_mb)
        print(
            f"{label[:42]:42} {c.rate:9,.0f} {c.projector_cpu_s:12.2f} s {projector_us:6.0f}"
            f" {c.postgres_cpu_s:13.2f} s {postgres_us:6.0f}   peak RSS {rss} MB"
        )


if __name__ == "__main__":
    main()
