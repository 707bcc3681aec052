"""The bench's world: a fresh schema and topic prefix, the ``ledgerflow`` processes, their RSS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse, urlunparse

import psutil
import psycopg
from aiokafka import AIOKafkaConsumer
from psycopg import sql

from engine.config import PROJECT_ROOT, Settings, load_settings
from engine.kafka_clients import aiokafka_kwargs
from projections.catalogue import PROJECTIONS

T = TypeVar("T")

BENCH_DATABASE = "ledgerflow_bench"
# What the processes log when Kafka or PostgreSQL goes away under them (others' crash tests).
OUTAGE = re.compile(
    r"Unable connect|NodeNotReady|PostgreSQL (unavailable|connection lost)|Kafka not reachable"
)
# The project's own virtualenv; a git worktree has none, so there the interpreter's (the processes
# still import the worktree's code: ``process_env`` passes PYTHONPATH on).
_LOCAL = PROJECT_ROOT / ".venv" / "bin" / "ledgerflow"
LEDGERFLOW = str(_LOCAL if _LOCAL.exists() else Path(sys.executable).parent / "ledgerflow")


def postgres_cpu() -> dict[tuple[int, float], float]:
    """CPU seconds so far of each PostgreSQL server process, by (pid, start time): a pid can be
    another process's by the next sample on a busy machine (the cluster is assumed otherwise idle);
    ``cpu_since`` takes the difference."""
    found: dict[tuple[int, float], float] = {}
    for process in psutil.process_iter(["name", "create_time"]):
        try:
            if "postgres" in (process.info["name"] or ""):
                found[process.pid, process.info["create_time"]] = sum(process.cpu_times()[:2])
        except psutil.Error:
            continue
    return found


def cpu_since(before: dict[tuple[int, float], float]) -> float:
    """PostgreSQL's CPU seconds since ``before`` (``postgres_cpu()``), by process: a server process
    that ended meanwhile (a stopped projector's connections) would otherwise take its whole
    lifetime's CPU off the difference, and one started meanwhile counts from zero."""
    return sum(cpu - before.get(key, 0.0) for key, cpu in postgres_cpu().items())


def _with_database(url: str, database: str) -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path=f"/{database}"))


def ensure_database(base_url: str) -> str:
    """The URL of ``ledgerflow_bench``, created on first use (falls back to ``ledgerflow_test``)."""
    target = _with_database(base_url, BENCH_DATABASE)
    try:
        with psycopg.connect(target, connect_timeout=5):
            return target
    except psycopg.OperationalError:
        pass
    try:
        with psycopg.connect(base_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DATABASE)))
        return target
    except psycopg.Error:
        return _with_database(base_url, "ledgerflow_test")


def kept_settings(schema: str) -> Settings:
    """The settings of the bench run whose schema is ``schema`` (``bench_<hex>``): its database,
    schema and topic prefix (``bench<hex>.``)."""
    base = load_settings()
    return replace(
        base,
        database_url=ensure_database(base.database_url),
        db_schema=schema,
        topic_prefix=f"bench{schema.removeprefix('bench_')}.",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def retry(work: Callable[[], T], *, attempts: int = 60, what: str = "") -> T:
    """Run ``work``, retrying while PostgreSQL restarts under us (other engineers' crash tests)."""
    for attempt in range(attempts):
        try:
            return work()
        except (psycopg.OperationalError, psycopg.InterfaceError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    raise AssertionError(what)


@dataclass
class Proc:
    """A ``ledgerflow`` child process, its log file and its sampled peak RSS (with children)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float
    peak_rss: int = 0
    # The largest single process among it and its children (a rebuild's fill workers are separate
    # processes; issue 15's limit is per process).
    peak_single_rss: int = 0
    # Characters already in the log when this process started (a restart appends to the same log).
    log_start: int = 0
    # Peak RSS of the process and of each child on its own, by role (``rss_each``).
    peak_each: dict[str, int] = field(default_factory=dict)
    worker_numbers: dict[int, int] = field(default_factory=dict)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 60.0) -> float:
        """Wait for a log line matching ``pattern``; the monotonic time it was first seen."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if regex.search(self.log_text()[self.log_start :]):
                return time.monotonic()
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            time.sleep(0.01)
        raise TimeoutError(f"{self.name}: no log line /{pattern}/ within {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def rss(self) -> int:
        try:
            parent = psutil.Process(self.popen.pid)
            total = largest = parent.memory_info().rss
            for child in parent.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    own = child.memory_info().rss
                    total += own
                    largest = max(largest, own)
            self.peak_single_rss = max(self.peak_single_rss, int(largest))
            return int(total)
        except psutil.Error:
            return 0

    def rss_each(self) -> dict[str, int]:
        """RSS of the process and of each child on its own, by role: ``main``, ``worker N`` for a
        uvicorn worker (``--workers``), else the child's name. The per-process limit applies to
        each, so an API with N workers is not judged by their sum."""
        found: dict[str, int] = {}
        try:
            parent = psutil.Process(self.popen.pid)
            found["main"] = int(parent.memory_info().rss)
            for child in parent.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    command = " ".join(child.cmdline())
                    if not command or child.status() == psutil.STATUS_ZOMBIE:
                        # A child exiting (its memory already released: no command line, 0 MB) or
                        # exited and not yet reaped: it became a row "python3 0.0 MB" of its own.
                        continue
                    if "resource_tracker" in command:
                        role = "resource tracker"
                    elif "engine.relay_encoders" in command:
                        number = self.worker_numbers.setdefault(child.pid, len(self.worker_numbers) + 1)
                        role = f"encoder {number}"
                    elif " --share " in command:  # a process of a projector pool (ops/projector_pool.py)
                        role = "share " + command.split(" --share ", 1)[1].split()[0]
                    elif "spawn_main" in command:
                        number = self.worker_numbers.setdefault(child.pid, len(self.worker_numbers) + 1)
                        role = f"worker {number}"
                    else:
                        role = child.name()
                    found[role] = max(found.get(role, 0), int(child.memory_info().rss))
        except psutil.Error:
            pass
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far (with children)."""
        try:
            parent = psutil.Process(self.popen.pid)
            procs = [parent, *parent.children(recursive=True)]
            return float(sum(sum(p.cpu_times()[:2]) for p in procs))
        except psutil.Error:
            return 0.0

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.peak_rss = max(self.peak_rss, self.rss())
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


class CpuPerEvent:
    """CPU per event of a stage from now on: the process's (with its children) and PostgreSQL's."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.process_at_start, self.postgres_at_start = proc.cpu_seconds(), postgres_cpu()

    def seconds(self) -> tuple[float, float]:
        """(process, PostgreSQL) seconds of CPU since this was made."""
        return self.proc.cpu_seconds() - self.process_at_start, cpu_since(self.postgres_at_start)

    def since(self, events: int) -> tuple[float, float]:
        """(process, PostgreSQL) µs of CPU per event since this was made."""
        per_event = 1e6 / max(events, 1)
        process, postgres = self.seconds()
        return process * per_event, postgres * per_event


@dataclass
class BenchEnv:
    settings: Settings
    workdir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    # Per process name: the peak RSS of each of its processes on its own, by role (Proc.rss_each).
    peak_each: dict[str, dict[str, int]] = field(default_factory=dict)
    _sampler: threading.Thread | None = None
    _stop_sampling: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def create(cls, partitions: int | None = None) -> BenchEnv:
        """A fresh run: a new schema ``bench_<hex>`` and topic prefix ``bench<hex>.``."""
        settings = kept_settings(f"bench_{uuid.uuid4().hex[:10]}")
        return cls._sampled(replace(settings, partitions=partitions or settings.partitions))

    @classmethod
    def kept(cls, schema: str) -> BenchEnv:
        """The schema and topics of a run kept with ``--keep`` (close it with ``keep=True``)."""
        return cls._sampled(kept_settings(schema))

    @classmethod
    def _sampled(cls, settings: Settings) -> BenchEnv:
        suffix = settings.db_schema.removeprefix("bench_")
        env = cls(settings, Path(tempfile.mkdtemp(prefix=f"ledgerflow-bench-{suffix}-")))
        env._sampler = threading.Thread(target=env._sample, daemon=True, name="rss-sampler")
        env._sampler.start()
        return env

    # -- topics and tables ------------------------------------------------------------------

    def ensure_topics(self, extra: list[str] | None = None) -> None:
        from engine import db
        from ops import stack
        from ops.topics import TOPICS

        names = [self.settings.topic(t) for t in [*TOPICS, *(extra or [])]]
        deadline = time.monotonic() + 120
        while True:
            try:
                stack.ensure_topics(self.settings, names, self.settings.partitions)
                break
            except Exception:  # Kafka restarting under us: wait for it
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        retry(lambda: db.ensure_schema(self.settings))

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(
            self.settings.database_url,
            autocommit=True,
            connect_timeout=5,
            options=f"-c search_path={self.settings.db_schema}",
        )

    def scalar(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        def run() -> Any:
            with self.connect() as conn:
                row = conn.execute(query, params).fetchone()
            return row[0] if row else None

        return retry(run)

    # -- processes --------------------------------------------------------------------------

    def process_env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "LEDGERFLOW_DATABASE_URL": s.database_url,
            "LEDGERFLOW_DB_SCHEMA": s.db_schema,
            "LEDGERFLOW_TOPIC_PREFIX": s.topic_prefix,
            "LEDGERFLOW_KAFKA": s.kafka_bootstrap,
            "LEDGERFLOW_PARTITIONS": str(s.partitions),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """Start ``ledgerflow <args>`` as process ``name`` (cwd: the run's scratch directory), with
        ``env`` on top of the run's settings. A running process of that name is returned as is."""
        return self.start_command(name, [LEDGERFLOW, *args], env=env)

    def start_command(
        self, name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Proc:
        """Start any command as process ``name``; its output is appended to ``<name>.log``."""
        if name in self.procs and self.procs[name].popen.poll() is None:
            return self.procs[name]
        log_path = self.workdir / f"{name}.log"
        log_start = len(log_path.read_text(errors="replace")) if log_path.exists() else 0
        log = open(log_path, "ab")  # noqa: SIM115
        popen = subprocess.Popen(
            argv,
            env={**self.process_env(), **(env or {})},
            cwd=cwd or self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        # By keyword: positionally, log_start landed in peak_single_rss once that field was added
        # before it, and a restarted process's wait_log then matched its predecessor's lines (the
        # webhook_intake stage took the old API's start-up for the new one's: connection refused).
        proc = Proc(
            name,
            popen,
            log_path,
            time.monotonic(),
            peak_rss=self.peak_rss.get(name, 0),
            log_start=log_start,
        )
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None:
            proc.stop()
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), proc.peak_rss)

    def log_marks(self) -> dict[str, int]:
        """Current log sizes, to look for outages logged during a stage (see ``disrupted``)."""
        return {name: len(proc.log_text()) for name, proc in self.procs.items()}

    def disrupted(self, marks: dict[str, int]) -> list[str]:
        """Processes that logged a lost Kafka or PostgreSQL connection since ``marks``."""
        found = []
        for name, proc in self.procs.items():
            if OUTAGE.search(proc.log_text()[marks.get(name, 0) :]):
                found.append(name)
        return found

    def check(self) -> None:
        for proc in self.procs.values():
            if proc.name in self.procs and proc.popen.returncode is None:
                proc.check()

    def _sample(self) -> None:
        while not self._stop_sampling.wait(0.1):
            for proc in list(self.procs.values()):
                if proc.popen.poll() is None:
                    proc.peak_rss = max(proc.peak_rss, proc.rss())
                    self.peak_rss[proc.name] = max(self.peak_rss.get(proc.name, 0), proc.peak_rss)
                    each = self.peak_each.setdefault(proc.name, {})
                    for role, rss in proc.rss_each().items():
                        each[role] = max(each.get(role, 0), rss)

    # -- teardown ---------------------------------------------------------------------------

    def close(self, *, keep: bool = False) -> None:
        for name in list(self.procs):
            self.stop(name)
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        if keep:
            return
        with contextlib.suppress(psycopg.Error):
            retry(self._drop_schema, attempts=20)
        with contextlib.suppress(Exception):
            asyncio.run(self._delete_topics())

    def _drop_schema(self) -> None:
        with psycopg.connect(self.settings.database_url, autocommit=True, connect_timeout=5) as conn:
            # The reporting views' schema too (engine/db.py creates it beside the run's schema); it was
            # left behind empty after every run.
            for name in (self.settings.db_schema, self.settings.reporting_schema):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))

    async def _delete_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**aiokafka_kwargs(self.settings))
        await admin.start()
        try:
            ours = [t for t in await admin.list_topics() if t.startswith(self.settings.topic_prefix)]
            if ours:
                await admin.delete_topics(ours)
        finally:
            await admin.close()


class Poller:
    """One autocommit connection for frequent small queries, reconnecting after a restart."""

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.conn: psycopg.Connection | None = None

    def scalar(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        def run() -> Any:
            if self.conn is None or self.conn.closed:
                self.conn = self.env.connect()
            try:
                row = self.conn.execute(query, params).fetchone()
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self.conn = None
                raise
            return row[0] if row else None

        return retry(run)

    def relay_position(self) -> int:
        return int(self.scalar("SELECT coalesce(max(notification_id), 0) FROM relay_position") or 0)

    def max_notification(self) -> int:
        return int(self.scalar("SELECT coalesce(max(notification_id), 0) FROM ledger_events") or 0)

    def projected(self, topic: str, only: str | Sequence[str] | None = None) -> int:
        """Records of ``topic`` applied by every projection that reads it (the least advanced one): the
        projector has caught up when all of them have, not when their positions add up to the topic.
        ``only``: by that projection (or those) alone."""
        if only:
            readers = [only] if isinstance(only, str) else list(only)
        else:
            readers = [p.name for p in PROJECTIONS if topic.endswith(tuple(p.topics))]
        return int(
            self.scalar(
                "SELECT CASE WHEN count(*) = %s THEN min(applied) ELSE 0 END FROM ("
                ' SELECT projection, sum("offset" + 1) AS applied FROM projection_tracking'
                " WHERE topic = %s AND projection = ANY(%s) GROUP BY projection) AS per_projection",
                (len(readers), topic, readers),
            )
            or 0
        )

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


async def _end_offsets(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(topic, **aiokafka_kwargs(settings), group_id=None)
    await consumer.start()
    try:
        partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


def topic_size(env: BenchEnv, logical: str) -> int:
    return asyncio.run(_end_offsets(env.settings, env.settings.topic(logical)))
