"""The relay's encoder processes (engine/relay_encoders.py) never outlive it: killed with SIGKILL
alone (not its process group, as a supervisor or an OOM kill may do), it leaves no encoder behind.
And an encoder killed under the relay costs a retry, not the relay: it starts new encoders and
publishes the page again."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse
from uuid import UUID

import psutil
import pytest

from engine import db, telemetry
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.relay import Relay
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import invoice_body, register_tenant
from tests.integration.processes import Processes
from tests.integration.test_projection_poison import read_topic
from tests.integration.test_relay_unencodable import relay_position

pytestmark = pytest.mark.integration


@pytest.fixture
def processes(settings: Settings, topics: list[str], tmp_path: Path) -> Iterator[Processes]:
    group = Processes(settings, tmp_path)
    yield group
    group.close()


def encoders_of(pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "engine.relay_encoders" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_encoder_processes_exit_when_the_relay_is_killed_alone(processes: Processes) -> None:
    relay = processes.start("relay")  # `ledgerflow relay`: two encoder processes by default
    encoders = processes.wait_for(
        lambda: found if len(found := encoders_of(relay.pid)) == 2 else None,
        timeout=60,
        what="the relay's two encoder processes",
        watch=[relay],
    )
    os.kill(relay.pid, signal.SIGKILL)  # the relay only: its encoders are not signalled
    relay.popen.wait(timeout=30)
    processes.wait_for(
        lambda: all(gone(e) for e in encoders),
        timeout=30,
        what="the encoders exiting after their relay died",
        explain=lambda: str([(e.pid, e.status()) for e in encoders if not gone(e)]),
    )


def test_an_encoder_killed_under_the_relay_is_replaced_and_its_page_published_again(
    service: LedgerService,
    settings: Settings,
    topics: list[str],
    background: BackgroundLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The relay encodes in process while spans are recorded. OpenTelemetry installs its SDK provider
    # once per process, so a tracing test run earlier in this pytest-xdist worker leaves it on for
    # good: this in-process relay is told what a fresh, untraced `ledgerflow relay` would see.
    monkeypatch.setattr(telemetry, "tracing_enabled", lambda: False)
    tenant_id, _ = register_tenant(service)

    def issue(number: str) -> str:
        body = IssueInvoice.model_validate(invoice_body(number))
        return str(service.issue_invoice(UUID(tenant_id), body).invoice.id)

    before = [issue(f"ENC-{i}") for i in range(3)]
    relay = Relay(settings, idle_wait=0.02, encoders=1, encoder_chunk=2, encoder_min_page=1)
    background.start(relay.run)
    first = wait_for(lambda: relay._pool and relay_position(settings), timeout=60, what="a first page")
    assert relay._pool is not None and relay.stats.pooled_pages > 0
    killed = relay._pool.pids[0]
    os.kill(killed, signal.SIGKILL)

    after = [issue(f"ENC-AFTER-{i}") for i in range(3)]
    last = int(service.ledger.recorder.max_notification_id() or 0)
    assert last > first
    wait_for(lambda: relay_position(settings) == last, timeout=60, what=f"the relay reaching {last}")
    assert relay.stats.encoder_restarts == 1
    assert relay._pool is not None and relay._pool.pids[0] != killed
    # Every invoice's event on the topic (at least once: a page retried may repeat what was sent).
    keys = {m.key().decode() for m in read_topic(settings, "ledger.invoice.v1")}
    assert keys == set(before + after)


def test_an_encoder_whose_database_connection_is_dropped_reads_its_chunk_again(
    service: LedgerService,
    settings: Settings,
    topics: list[str],
    background: BackgroundLoop,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each encoder reads its chunks of a page from PostgreSQL itself (LogRange). A dropped session
    # (here pg_terminate_backend of the encoders' own sessions; a restart in production) is an
    # outage: the relay waits and publishes the page again, the encoder reconnects, nothing is lost.
    monkeypatch.setattr(telemetry, "tracing_enabled", lambda: False)  # as in the test above
    tenant_id, _ = register_tenant(service)

    def issue(number: str) -> str:
        body = IssueInvoice.model_validate(invoice_body(number))
        return str(service.issue_invoice(UUID(tenant_id), body).invoice.id)

    before = [issue(f"DROP-{i}") for i in range(4)]
    relay = Relay(settings, batch_size=7, idle_wait=0.02, encoders=2, encoder_chunk=2, encoder_min_page=1)
    background.start(relay.run)
    last = int(service.ledger.recorder.max_notification_id() or 0)
    wait_for(lambda: relay_position(settings) == last, timeout=60, what=f"the relay reaching {last}")
    assert relay._pool is not None and relay.stats.pooled_pages > 0
    port = urlparse(settings.database_url).port or 5432
    ours = [
        c.laddr.port
        for pid in relay._pool.pids
        for c in psutil.Process(pid).net_connections("tcp")
        if c.raddr and c.raddr.port == port
    ]
    assert len(ours) == 2, "each encoder keeps its own session"
    with db.connect(settings, autocommit=True) as conn:
        dropped = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = ANY(%s)", (ours,)
        ).fetchall()
    assert dropped == [(True,), (True,)]

    with caplog.at_level(logging.WARNING, logger="ledgerflow.relay"):
        after = [issue(f"DROP-AFTER-{i}") for i in range(4)]
        last = int(service.ledger.recorder.max_notification_id() or 0)
        wait_for(lambda: relay_position(settings) == last, timeout=60, what=f"the relay reaching {last}")
    retried = [r for r in caplog.records if "PostgreSQL unavailable" in r.getMessage()]
    assert any("will retry the same page" in r.getMessage() for r in retried), caplog.text
    assert relay.stats.encoder_restarts == 0, "the same encoders, reconnected"
    keys = {m.key().decode() for m in read_topic(settings, "ledger.invoice.v1")}
    assert keys == set(before + after)
