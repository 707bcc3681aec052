"""Run ``ledgerflow <command>`` as real subprocesses with a test's settings, logging to tmp_path.

Each process gets its own session (process group), so a SIGKILL reaches it and any child it
started, and nothing of the test runner's terminal (Ctrl-C) is forwarded to it. Logs go to
``<tmp_path>/<name>.log`` (one file per start: ``relay.log``, ``relay-2.log``, ...) and the last
lines are quoted in failure messages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

import httpx

from engine.config import Settings, rate_variable
from tests.conftest import wait_for

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a ``ledgerflow`` process use exactly these settings."""
    return {
        **os.environ,
        "LEDGERFLOW_DATABASE_URL": settings.database_url,
        "LEDGERFLOW_OWNER_DATABASE_URL": settings.owner_database_url,
        "LEDGERFLOW_DB_SCHEMA": settings.db_schema,
        "LEDGERFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "LEDGERFLOW_KAFKA": settings.kafka_bootstrap,
        "LEDGERFLOW_PARTITIONS": str(settings.partitions),
        "LEDGERFLOW_REPLICATION_FACTOR": ""
        if settings.replication_factor is None
        else str(settings.replication_factor),
        "LEDGERFLOW_VAR": str(settings.var_dir),
        "LEDGERFLOW_RETRY_DELAYS": ",".join(f"{d:g}" for d in settings.retry_delays or ()),
        "LEDGERFLOW_BREAKER_OPEN_S": f"{settings.breaker_open_seconds:g}",
        **{
            rate_variable(name): "none" if rate is None else f"{rate:g}"
            for name, rate in settings.rate_limits.items()
        },
        "LEDGERFLOW_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "LEDGERFLOW_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "LEDGERFLOW_KAFKA_USERNAME": settings.kafka_username,
        "LEDGERFLOW_KAFKA_PASSWORD": settings.kafka_password,
        "LEDGERFLOW_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "PYTHONUNBUFFERED": "1",
        # One projector process, as these tests were written for (and CI's time budget); the pool
        # of `--processes N` has its own test (test_projector_processes.py), which asks for it.
        "LEDGERFLOW_PROJECTOR_PROCESSES": "1",
    }


class LedgerflowProcess:
    """One ``ledgerflow <command> [args]`` subprocess."""

    def __init__(self, name: str, args: list[str], settings: Settings, log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *args],
            env=settings_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with {self.popen.returncode}"
        return f"{self.name} (pid {self.pid}, {state}); last lines of {self.log_path}:\n{self.log_tail()}"

    def kill(self) -> None:
        """SIGKILL, no chance to clean up: the crash under test."""
        self._signal_group(signal.SIGKILL)
        self.popen.wait(timeout=30)
        self._log.close()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for a clean exit; SIGKILL if it does not come. Returns the exit code."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(timeout=30)
        else:
            # The leader is gone; make sure no child of its session outlives it.
            self._signal_group(signal.SIGKILL)
        self._log.close()
        return self.popen.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        # The process group is the one start_new_session created for this process (pgid == pid).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)


class Processes:
    """The ``ledgerflow`` subprocesses of one test; ``close()`` stops whatever is still running."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.started: list[LedgerflowProcess] = []
        self._clients: list[httpx.Client] = []

    def start_api(
        self, api_key: str | None = None, *, timeout: float = 120, client_timeout: float = 10
    ) -> tuple[LedgerflowProcess, httpx.Client]:
        """``ledgerflow api`` on a free port, once it answers ``/readyz``, with a client for it that
        sends ``api_key`` as its bearer token (closed with the processes)."""
        port = free_port()
        api = self.start("api", "--port", str(port))
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=client_timeout)
        self._clients.append(http)

        def ready() -> bool:
            self.assert_alive(api)
            try:
                return http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        self.wait_for(ready, timeout=timeout, interval=0.2, what="the API answering /readyz", watch=[api])
        return api, http

    def start(self, command: str, *args: str, name: str | None = None) -> LedgerflowProcess:
        name = name or command
        count = sum(1 for p in self.started if p.name == name)
        log_path = self.log_dir / (f"{name}.log" if count == 0 else f"{name}-{count + 1}.log")
        process = LedgerflowProcess(name, [command, *args], self.settings, log_path)
        self.started.append(process)
        return process

    def running(self) -> list[LedgerflowProcess]:
        return [p for p in self.started if p.alive()]

    def assert_alive(self, *processes: LedgerflowProcess) -> None:
        dead = [p for p in processes if not p.alive()]
        assert not dead, "process(es) died:\n\n" + "\n\n".join(p.describe() for p in dead)

    def wait_for(
        self,
        condition: Callable[[], T],
        *,
        what: str,
        watch: Sequence[LedgerflowProcess] = (),
        explain: Callable[[], str] | None = None,
        timeout: float = 30.0,
        interval: float = 0.05,
    ) -> T:
        """``tests.conftest.wait_for``; if it times out, the message adds ``explain()`` (the state
        seen at that moment) and the last log lines of the ``watch`` processes."""
        try:
            return wait_for(condition, timeout=timeout, interval=interval, what=what)
        except AssertionError as exc:
            parts = [str(exc), *([explain()] if explain else []), *(p.describe() for p in watch)]
            raise AssertionError("\n\n".join(parts)) from None

    def close(self) -> None:
        for client in self._clients:
            client.close()
        for process in reversed(self.started):
            if not process._log.closed or process.alive():
                process.stop()
