"""HTTP stages: ingest throughput of ``POST /v1/invoices`` and end-to-end latency to the register."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import psycopg

from bench.workload import invoice_body
from engine.config import Settings


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


@dataclass
class IngestResult:
    created: int
    errors: int
    seconds: float
    request_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    reported_percentiles: dict[int, float] = field(default_factory=dict)  # from wrk's own histogram

    def request_percentile(self, pct: int) -> float:
        if pct in self.reported_percentiles:
            return self.reported_percentiles[pct]
        return percentile(self.request_ms, pct)

    @property
    def rate(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0


def _client(base_url: str, api_key: str, concurrency: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=httpx.Timeout(30.0),
    )


async def ingest(
    base_url: str,
    api_key: str,
    *,
    seconds: float,
    concurrency: int = 24,
    prefix: str = "A",
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """``concurrency`` requests in flight for ``seconds``; invoices created per second."""
    numbers = itertools.count()
    result = IngestResult(0, 0, 0.0)
    async with _client(base_url, api_key, concurrency) as client:
        # Warm-up: the API builds its service (pool, event store) on the first request.
        for _ in range(3):
            response = await client.post("/v1/invoices", json=invoice_body(f"{prefix}W{next(numbers)}"))
            response.raise_for_status()
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    response = await client.post(
                        "/v1/invoices", json=invoice_body(f"{prefix}{next(numbers)}")
                    )
                    ok = response.status_code == 201
                    if not ok and len(result.error_samples) < 5:
                        result.error_samples.append(f"{response.status_code} {response.text[:200]}")
                except httpx.HTTPError as exc:
                    ok = False
                    if len(result.error_samples) < 5:
                        result.error_samples.append(repr(exc))
                if ok:
                    result.created += 1
                    result.request_ms.append((time.perf_counter() - sent) * 1000)
                    if progress:
                        progress(1)
                else:
                    result.errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


@dataclass
class LatencyResult:
    sent: int
    created: int
    seen: int
    offered_rate: float
    latencies_ms: list[float]
    request_ms: list[float]
    errors: int

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)


async def end_to_end(
    base_url: str,
    api_key: str,
    settings: Settings,
    *,
    rate: float,
    seconds: float,
    poll_interval: float = 0.005,
    settle_timeout: float = 30.0,
    prefix: str = "L",
    progress: Callable[[int], None] | None = None,
) -> LatencyResult:
    """POST at a steady ``rate`` for ``seconds``; for each 201, the time until its row is in
    ``invoice_register`` (polled by id every ``poll_interval``)."""
    total = int(rate * seconds)
    created_at: dict[UUID, float] = {}
    latencies: list[float] = []
    request_ms: list[float] = []
    errors = 0
    sending_done = asyncio.Event()

    async def poll() -> None:
        conn = await psycopg.AsyncConnection.connect(
            settings.database_url,
            autocommit=True,
            options=f"-c search_path={settings.db_schema}",
        )
        try:
            settle_deadline: float | None = None
            while True:
                if created_at:
                    ids = list(created_at)
                    cur = await conn.execute(
                        "SELECT invoice_id FROM invoice_register WHERE invoice_id = ANY(%s)", (ids,)
                    )
                    now = time.perf_counter()
                    for (invoice_id,) in await cur.fetchall():
                        latencies.append((now - created_at.pop(invoice_id)) * 1000)
                        if progress:
                            progress(1)
                if sending_done.is_set():
                    if not created_at:
                        return
                    settle_deadline = settle_deadline or time.perf_counter() + settle_timeout
                    if time.perf_counter() > settle_deadline:
                        return
                await asyncio.sleep(poll_interval)
        finally:
            await conn.close()

    async with _client(base_url, api_key, 64) as client:
        await client.post("/v1/invoices", json=invoice_body(f"{prefix}W0"))  # warm connection

        async def send(i: int) -> None:
            nonlocal errors
            sent = time.perf_counter()
            try:
                response = await client.post("/v1/invoices", json=invoice_body(f"{prefix}{i}"))
            except httpx.HTTPError:
                errors += 1
                return
            if response.status_code != 201:
                errors += 1
                return
            now = time.perf_counter()
            request_ms.append((now - sent) * 1000)
            created_at[UUID(response.json()["id"])] = now

        poller = asyncio.create_task(poll())
        tasks = []
        started = time.perf_counter()
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i)))
        await asyncio.gather(*tasks)
        offered = total / (time.perf_counter() - started)
        sending_done.set()
        await poller
    return LatencyResult(
        sent=total,
        created=len(request_ms),
        seen=len(latencies),
        offered_rate=offered,
        latencies_ms=latencies,
        request_ms=request_ms,
        errors=errors,
    )


# -- wrk: a C load generator, so the client does not eat the CPU the API needs -----------------
# The Python client above spends ~4 ms of CPU per request (httpx, JSON), which on a 2-core machine
# caps the measured rate below what the API sustains. wrk (Debian package `wrk`) sends the same
# 5-line invoice with a unique number per request from a Lua script.

_WRK_SCRIPT = """
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  prefix = "%(prefix)s" .. tid .. "-"
end
request = function()
  counter = counter + 1
  local body = %(head)s .. prefix .. counter .. %(tail)s
  return wrk.format("POST", "/v1/invoices", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer %(key)s"}, body)
end
"""


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\\\", "\\\\\\\\").replace("'", "\\\\'") + "'"


def _wrk_millis(value: str) -> float:
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    for unit in ("us", "ms", "s"):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * units[unit]
    return float(value)


def ingest_wrk(
    base_url: str, api_key: str, *, seconds: float, connections: int = 16, prefix: str = "K"
) -> IngestResult | None:
    """Run wrk against ``POST /v1/invoices``; None when wrk is not installed."""
    import json
    import re
    import shutil
    import subprocess
    import tempfile

    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    marker = "NUMBERMARKER"
    body = json.dumps(invoice_body(marker))
    head, tail = body.split(marker)
    script = _WRK_SCRIPT % {
        "prefix": prefix,
        "head": _lua_string(head),
        "tail": _lua_string(tail),
        "key": api_key,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)

    # Warm-up: each worker builds its service (pool, event store) and FastAPI's route state on its
    # first invoice, which is not the steady state being measured. Sixteen connections at once, so
    # that every worker accepts some (one kept-alive connection, as this was until 2026-12-03,
    # warmed one worker and left the other's first requests inside the measured 20 s).
    def warm(i: int) -> None:
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}) as one:
            for j in range(2):
                one.post("/v1/invoices", json=invoice_body(f"{prefix}W{i}-{j}")).raise_for_status()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(warm, range(16)))
    out = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", handle.name, base_url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    elapsed = _wrk_millis(re.search(r"requests in ([\d.]+\w+),", out).group(1)) / 1000  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (
        sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
    )
    result = IngestResult(created=total - errors, errors=errors, seconds=elapsed)
    for pct in (50, 99):
        found = re.search(rf"^\s+{pct}%\s+([\d.]+\w+)", out, re.MULTILINE)
        if found:
            result.reported_percentiles[pct] = _wrk_millis(found.group(1))
    if errors:
        result.error_samples.append(f"wrk reported {errors} non-2xx responses or socket errors")
    return result


# -- the API's ceiling: bare event-store saves of the same invoices -----------------------------
# What the API could reach if HTTP, validation, idempotency and the response cost nothing: the
# same 5-line invoices, built beforehand, saved with `ledger.save(invoice)`, one per transaction,
# by as many writer processes as the API has workers, each saving one after another.


@dataclass(frozen=True)
class BareSaves:
    saved: int
    seconds: float
    writers: int

    @property
    def rate(self) -> float:
        return self.saved / self.seconds if self.seconds else 0.0


def _bare_writer(
    settings: Settings, tenant_id: UUID, prefix: str, count: int, ready: Any, start: Any, results: Any
) -> None:
    from bench.workload import build
    from engine.application import open_ledger

    ledger = open_ledger(settings)
    try:
        try:
            tenant: Any = ledger.repository.get(tenant_id)
            invoices = [build(tenant, f"{prefix}{i}") for i in range(count)]
            ledger.save(build(tenant, f"{prefix}W"))  # the connection and prepared statements
        except Exception as exc:
            ready.put(repr(exc))
            raise
        ready.put(None)
        deadline = start.get()
        saved = 0
        for invoice in invoices:
            if time.monotonic() >= deadline:
                break
            ledger.save(invoice)
            saved += 1
        results.put((saved, time.monotonic()))
    finally:
        ledger.close()


def bare_saves(
    settings: Settings, tenant_id: UUID, *, writers: int, seconds: float, per_writer: int = 6_000
) -> BareSaves:
    """``writers`` processes saving pre-built invoices one per transaction for ``seconds`` (or
    until each has saved ``per_writer``); the rate over the wall time of the slowest writer."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready, start, results = ctx.Queue(), ctx.Queue(), ctx.Queue()
    run = uuid.uuid4().hex[:6]
    procs = [
        ctx.Process(
            target=_bare_writer,
            # Invoice numbers have at most 16 characters (GST): B<run><writer>-<n>.
            args=(settings, tenant_id, f"B{run}{w}-", per_writer, ready, start, results),
            daemon=True,
        )
        for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            failed = ready.get(timeout=180)
            if failed is not None:
                raise RuntimeError(f"a bare-save writer failed: {failed}")
        started = time.monotonic()
        for _ in procs:
            start.put(started + seconds)
        done = [results.get(timeout=seconds + 120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return BareSaves(
        saved=sum(n for n, _ in done), seconds=max(end for _, end in done) - started, writers=writers
    )
