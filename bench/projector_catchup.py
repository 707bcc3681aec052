"""The real projector catching up a kept bench run, one projection or several at a time: the
events/s of `ledgerflow projector` and the CPU of its processes and of PostgreSQL's, counted apart.
Where ``bench.projection_costs`` times each ``apply`` in one process, this runs what production
runs (fetching, decoding once for all, batches, share processes, commits), so the figures of
projections measured apart can be set beside those of all of them together.

    make bench BENCH_ARGS="--only relay --keep"          # prints the schema, e.g. bench_1a2b3c4d5e
    python -m bench.projector_catchup bench_1a2b3c4d5e   # the register alone, then every projection
    python -m bench.projector_catchup bench_1a2b3c4d5e audit_trail --each
    python -m bench.projector_catchup bench_1a2b3c4d5e --bare   # and PostgreSQL alone, same rows

Timed from the projector's first "assigned" line (start-up excluded, as the bench's projection
stage) to the last position stored. PostgreSQL's CPU is every server process's (the cluster is
assumed otherwise idle). It empties each measured projection's table and positions first, so it
accepts bench schemas only.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from psycopg import sql

from bench.env import BenchEnv, CpuPerEvent, Poller, topic_size
from bench.read_model_writes import store_again
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


def catch_up(env: BenchEnv, names: list[str], processes: int, timeout: float = 600.0) -> CatchUp:
    """Empty ``names``' tables and positions, run `ledgerflow projector` over the kept topic until every
    one of them has applied all of it, and stop it."""
    tables = {p.name: p.table for p in PROJECTIONS}
    topic = env.settings.topic(TOPIC)
    with env.connect() as conn:
        for name in names:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(tables[name])))
            conn.execute("DELETE FROM projection_tracking WHERE projection = %s", (name,))
            conn.execute("DELETE FROM projection_dead_letters WHERE projection = %s", (name,))
        # Nothing of the truncation left for the measured window to write out.
        conn.execute("CHECKPOINT")
    total = topic_size(env, TOPIC)
    poll = Poller(env)
    options = [arg for name in names for arg in ("--projection", name)]
    proc = env.start("projector", "projector", "--processes", str(processes), *options)
    try:
        ready = proc.wait_log("assigned")
        cpu = CpuPerEvent(proc)
        deadline = ready + timeout
        while poll.projected(topic, names) < total:
            proc.check()
            if time.monotonic() > deadline:
                raise SystemExit(f"the projector did not catch up within {timeout:g} s")
            time.sleep(0.02)
        done = time.monotonic()
        projector, postgres = cpu.seconds()
    finally:
        env.stop("projector")
        poll.close()
    peaks = sorted(rss / 1e6 for rss in env.peak_each.pop("projector", {}).values())
    return CatchUp(names, total, done - ready, projector, postgres, peaks)


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
        "--bare",
        action="store_true",
        help="after each run, PostgreSQL alone storing the same rows again (bench.read_model_writes)",
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="projector processes (default 2, as the bench)"
    )
    args = parser.parse_args()
    if not args.schema.startswith("bench_"):
        parser.error("only a bench schema: the measured tables are emptied first")
    of_topic = [p.name for p in PROJECTIONS if TOPIC in p.topics]
    unknown = set(args.projections) - set(of_topic)
    if unknown:
        parser.error(f"not a projection of {TOPIC}: {', '.join(sorted(unknown))}")
    env = BenchEnv.kept(args.schema)
    chosen = args.projections or of_topic
    runs = [[name] for name in chosen] if args.each else []
    runs += [chosen] if args.projections else [["invoice_register"], of_topic]
    head = ("projections", "events/s", "projector CPU", "µs/ev", "PostgreSQL CPU", "µs/ev")
    print("{:42} {:>9} {:>14} {:>6} {:>15} {:>6}".format(*head))
    try:
        for names in runs:
            c = catch_up(env, names, args.processes)
            label = ", ".join(names) if len(names) < len(of_topic) else f"all {len(names)} of the topic"
            projector_us = 1e6 * c.projector_cpu_s / c.events
            postgres_us = 1e6 * c.postgres_cpu_s / c.events
            rss = ", ".join(f"{m:.0f}" for m in c.peak_rss_mb)
            print(
                f"{label[:42]:42} {c.rate:9,.0f} {c.projector_cpu_s:12.2f} s {projector_us:6.0f}"
                f" {c.postgres_cpu_s:13.2f} s {postgres_us:6.0f}   peak RSS {rss} MB"
            )
            if args.bare:
                tables = [p.table for p in PROJECTIONS if p.name in names]
                b = store_again(env.connect, tables, c.events, args.processes)
                label = f"  PostgreSQL alone, {b.writers} writers"
                print(
                    f"{label:42} {b.rate:9,.0f} {'':>14} {'':>6}"
                    f" {b.postgres_cpu_s:13.2f} s {b.postgres_us_per_event:6.0f}   {b.rows:,} rows"
                )
    finally:
        # keep=True: the kept run's schema and topics stay (only the processes stop).
        env.close(keep=True)


if __name__ == "__main__":
    main()
