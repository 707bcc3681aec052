"""Where a projector's time goes, projection by projection: each one's ``apply`` timed alone on the
events of a kept bench run, with the Python CPU of this process and the CPU of its PostgreSQL
backend counted apart (wall time alone hides which side to work on, and is what other load on the
machine disturbs most).

    make bench BENCH_ARGS="--only relay --keep"        # prints the schema, e.g. bench_1a2b3c4d5e
    python -m bench.projection_costs bench_1a2b3c4d5e  # all projections of the invoice topic
    python -m bench.projection_costs bench_1a2b3c4d5e audit_trail --batch 2000

It empties each measured projection's table first, so it accepts bench schemas only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from dataclasses import dataclass

import psutil
import psycopg
from aiokafka import AIOKafkaConsumer
from psycopg import sql

from bench.env import kept_settings
from engine.config import Settings
from projections.catalogue import PROJECTIONS
from projections.events import ProjectedEvent, decode_message, event_types

TOPIC = "ledger.invoice.v1"


@dataclass(frozen=True)
class Cost:
    projection: str
    events: int
    rows: int
    wall_us: float
    python_us: float
    postgres_us: float


async def _read(settings: Settings) -> list[object]:
    consumer = AIOKafkaConsumer(
        settings.topic(TOPIC),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    records: list[object] = []
    try:
        while batches := await consumer.getmany(timeout_ms=2000, max_records=5000):
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure(settings: Settings, events: list[ProjectedEvent], name: str, batch: int) -> Cost:
    projection = next(p for p in PROJECTIONS if p.name == name)
    wanted = event_types(projection)
    mine = [e for e in events if wanted is None or e.ce_type in wanted]
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(projection.table)))
        backend = psutil.Process(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        conn.commit()
        pg0, py0, wall0 = _cpu(backend), time.process_time(), time.perf_counter()
        for start in range(0, len(mine), batch):
            with conn.transaction():
                projection.apply(conn, mine[start : start + batch])
        wall, python, postgres = time.perf_counter() - wall0, time.process_time() - py0, _cpu(backend) - pg0
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(projection.table)))
        count = rows.fetchone()[0]  # type: ignore[index]
    per = 1e6 / max(1, len(mine))
    return Cost(name, len(mine), count, wall * per, python * per, postgres * per)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], prog="python -m bench.projection_costs"
    )
    parser.add_argument("schema", help="a bench schema kept with --keep (bench_<hex>)")
    parser.add_argument(
        "projections", nargs="*", help="names (default: every projection of the invoice topic)"
    )
    parser.add_argument(
        "--batch", type=int, default=5000, help="events per transaction (the projector's batch)"
    )
    args = parser.parse_args()
    if not args.schema.startswith("bench_"):
        parser.error("only a bench schema: the measured tables are emptied first")
    settings = kept_settings(args.schema)
    # The collector's thresholds of `ledgerflow projector` (engine/cli.py): with the default ones a
    # collection walks the 50,000 decoded events now and then, 13-30 µs per event added to whichever
    # projection happens to run (measured on the perf-rows branch).
    gc.set_threshold(50_000, 20, 100)
    records = asyncio.run(_read(settings))
    started = time.process_time()
    events = [decode_message(r) for r in records]
    decode_us = 1e6 * (time.process_time() - started) / max(1, len(events))
    print(
        f"{len(events):,} events of {settings.topic(TOPIC)}; decoding: {decode_us:.0f} µs/event of Python CPU"
    )
    names = args.projections or [p.name for p in PROJECTIONS if TOPIC in p.topics]
    print(
        f"{'projection':24} {'events':>8} {'rows':>8} {'wall µs':>8} {'Python µs':>10} {'PostgreSQL µs':>14}"
    )
    for name in names:
        c = measure(settings, events, name, args.batch)
        figures = f"{c.wall_us:8.0f} {c.python_us:10.0f} {c.postgres_us:14.0f}"
        print(f"{c.projection:24} {c.events:8,} {c.rows:8,} {figures}")


if __name__ == "__main__":
    main()
