"""`ledgerflow run` keeps the engine up: a crashed child is restarted with backoff, said in its
prefixed log, counted in PostgreSQL and shown by /metrics, while the other children keep running."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import click
import httpx
import psycopg
import pytest

from engine import db
from engine.bootstrap import migrate
from engine.config import Settings
from ops.supervisor import (
    DEMO_BODY,
    Child,
    ChildSupervisor,
    RestartPolicy,
    child_environment,
    demo_tenant,
    ensure_runtime_login,
    least_privileged,
    restart_recorder,
)
from tests.conftest import wait_for
from tests.integration.helpers import client_for
from tests.integration.processes import free_port, settings_env

pytestmark = pytest.mark.integration

# Exits with code 1 on its first two starts, then stays up: a crash loop that heals.
FLAKY = """
import pathlib, sys, time
starts = pathlib.Path(sys.argv[1])
count = int(starts.read_text()) if starts.exists() else 0
starts.write_text(str(count + 1))
if count < 2:
    print(f"start {count + 1}: failing", flush=True)
    sys.exit(1)
print(f"start {count + 1}: up", flush=True)
time.sleep(600)
"""
STEADY = "import time; print('steady up', flush=True); time.sleep(600)"


class Output:
    """The supervisor's terminal, as plain text lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def echo(self, line: str) -> None:
        with self._lock:
            self.lines.append(click.unstyle(line))

    def has(self, text: str) -> bool:
        with self._lock:
            return any(text in line for line in self.lines)


@pytest.fixture
def schema(settings: Settings) -> Settings:
    db.ensure_schema(settings)
    return settings


@pytest.fixture
def running(schema: Settings, tmp_path: Path) -> Iterator[tuple[ChildSupervisor, Output, threading.Event]]:
    output = Output()
    children = [
        Child("flaky", [sys.executable, "-c", FLAKY, str(tmp_path / "starts")], "cyan"),
        Child("steady", [sys.executable, "-c", STEADY], "green"),
    ]
    supervisor = ChildSupervisor(
        children, policy=RestartPolicy(), echo=output.echo, on_restart=restart_recorder(schema)
    )
    stopping = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stopping, 0.1), daemon=True)
    thread.start()
    yield supervisor, output, stopping
    stopping.set()
    thread.join(timeout=60)


def test_a_crashed_child_is_restarted_with_backoff_while_the_others_keep_running(
    schema: Settings, running: tuple[ChildSupervisor, Output, threading.Event]
) -> None:
    supervisor, output, stopping = running
    flaky, steady = supervisor.children
    wait_for(lambda: output.has("steady | steady up"), timeout=60, what="the steady child starting")
    assert steady.process is not None
    steady_pid = steady.process.pid

    wait_for(lambda: output.has("flaky  | start 3: up"), timeout=90, what="the flaky child staying up")

    assert output.has("flaky  | flaky exited with code 1; restart 1 in 1s")
    assert output.has("flaky  | flaky exited with code 1; restart 2 in 2s")
    assert output.has("flaky  | flaky restarted (restart 2, pid")
    assert not output.has("restart 3")
    assert steady.process.pid == steady_pid and steady.process.poll() is None
    assert flaky.process is not None and flaky.process.poll() is None

    with psycopg.connect(schema.database_url, options=f"-c search_path={schema.db_schema}") as conn:
        counted = conn.execute("SELECT process, restarts, last_exit_code FROM process_restarts").fetchall()
    assert counted == [("flaky", 2, 1)]
    scraped = client_for(schema).get("/metrics").text
    assert any(
        line.startswith("ledgerflow_process_restarts_total{")
        and 'process="flaky"' in line
        and line.endswith(" 2.0")
        for line in scraped.splitlines()
    ), scraped

    stopping.set()
    wait_for(lambda: output.has("stopped."), timeout=60, what="the supervisor stopping its children")
    assert flaky.process.poll() is not None and steady.process.poll() is not None


def test_stopping_during_a_pending_restart_starts_nothing_more(
    running: tuple[ChildSupervisor, Output, threading.Event],
) -> None:
    supervisor, output, stopping = running
    wait_for(lambda: output.has("restart 1 in 1s"), timeout=60, what="the first crash")
    stopping.set()
    wait_for(lambda: output.has("stopped."), timeout=60, what="the supervisor stopping")
    assert all(c.process is not None and c.process.poll() is not None for c in supervisor.children)
    assert not output.has("flaky restarted")


class Clock:
    """A settable monotonic clock, so the backoff can be checked without waiting a minute."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_backoff_doubles_in_a_crash_loop_and_starts_over_after_the_child_stayed_up() -> None:
    output = Output()
    clock = Clock()
    crashing = Child("crashing", [sys.executable, "-c", "import sys; sys.exit(3)"], "cyan")
    supervisor = ChildSupervisor(
        [crashing],
        policy=RestartPolicy(first_delay=1, max_delay=4, stable_after=30),
        echo=output.echo,
        clock=clock,
    )

    def crash_then_check(at: float) -> None:
        assert crashing.process is not None
        wait_for(
            lambda: crashing.process is not None and crashing.process.poll() is not None, what="the crash"
        )
        clock.now = at
        supervisor.check()

    supervisor.start_all()
    delays = []
    for _ in range(4):
        crash_then_check(clock.now)
        delays.append(crashing.restart_due - clock.now if crashing.restart_due is not None else None)
        clock.now = crashing.restart_due or clock.now
        supervisor.check()  # due: started again
    assert delays == [1, 2, 4, 4]
    assert output.has("crashing exited with code 3; restart 4 in 4s")

    # This start "stayed up" 30 s by the clock before crashing: a new crash loop, from 1 s again.
    crash_then_check(clock.now + 30)
    assert crashing.restarts == 1 and output.lines[-1].endswith("restart 1 in 1s")
    supervisor.stop_all()


# -- least privilege: `ledgerflow run`'s children log in as the runtime role ----------------------

OWNER_URL = "postgresql://ledgerflow:ledgerflow@127.0.0.1:5432/ledgerflow"


def login(url: str) -> str:
    return urlsplit(url).username or ""


def test_by_default_the_children_log_in_as_the_runtime_role_and_never_get_the_owners_url() -> None:
    chosen = least_privileged(Settings(database_url=OWNER_URL, owner_database_url=""), environ={})
    # Migrations (the supervisor itself) as the owner, everything else as ledgerflow_app.
    assert login(chosen.owner_url) == "ledgerflow"
    assert chosen.runtime_role == "ledgerflow_app"
    assert chosen.database_url == "postgresql://ledgerflow_app:ledgerflow_app@127.0.0.1:5432/ledgerflow"

    inherited = {"PATH": "/usr/bin", "LEDGERFLOW_OWNER_DATABASE_URL": "", "LEDGERFLOW_LOG_FORMAT": ""}
    env = child_environment(chosen, inherited)
    assert env["LEDGERFLOW_DATABASE_URL"] == chosen.database_url
    assert "LEDGERFLOW_OWNER_DATABASE_URL" not in env
    assert env["PATH"] == "/usr/bin" and env["LEDGERFLOW_LOG_FORMAT"] == "text"


def test_urls_the_user_configured_are_kept_and_the_owners_stays_out_of_the_children() -> None:
    runtime = "postgresql://app_rw:s%40cret@db.internal:6432/books"
    owner = "postgresql://books_owner:o@db.internal:6432/books"
    environ = {"LEDGERFLOW_DATABASE_URL": runtime, "LEDGERFLOW_OWNER_DATABASE_URL": owner}
    configured = Settings(database_url=runtime, owner_database_url=owner)
    chosen = least_privileged(configured, environ)
    assert chosen == configured
    env = child_environment(chosen, environ)
    assert env["LEDGERFLOW_DATABASE_URL"] == runtime
    assert "LEDGERFLOW_OWNER_DATABASE_URL" not in env

    # One URL only: a single-role deployment the user chose; ledgerflow run does not second-guess it.
    single = Settings(database_url=OWNER_URL, owner_database_url="")
    assert least_privileged(single, {"LEDGERFLOW_DATABASE_URL": OWNER_URL}) == single


def test_a_child_api_started_the_least_privileged_way_serves_the_demo_tenant(
    settings: Settings, tmp_path: Path
) -> None:
    """What `ledgerflow run` does before starting its children, then its API child: the owner
    migrates, the demo tenant is created as the runtime role, and the API logs in as that role."""
    chosen = least_privileged(replace(settings, var_dir=tmp_path), environ={})
    ensure_runtime_login(chosen)
    migrate(chosen)
    demo = demo_tenant(chosen)

    port = free_port()
    environ = {**settings_env(settings), "LEDGERFLOW_VAR": str(tmp_path)}
    output = Output()
    api = Child("api", [sys.executable, "-m", "engine.cli", "api", "--port", str(port)], "cyan")
    supervisor = ChildSupervisor([api], env=child_environment(chosen, environ), echo=output.echo)
    supervisor.start_all()
    try:
        assert api.process is not None
        seen = Path(f"/proc/{api.process.pid}/environ").read_bytes().split(b"\0")
        assert f"LEDGERFLOW_DATABASE_URL={chosen.database_url}".encode() in seen
        assert not any(v.startswith(b"LEDGERFLOW_OWNER_DATABASE_URL=") for v in seen)

        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert api.process is not None and api.process.poll() is None, "\n".join(output.lines)
            try:
                return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=120, interval=0.2, what="the API child answering /readyz")
        issued = httpx.post(
            f"{base}/v1/invoices",
            content=DEMO_BODY,
            headers={"Authorization": f"Bearer {demo['api_key']}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert issued.status_code == 201, issued.text
    finally:
        supervisor.stop_all()
