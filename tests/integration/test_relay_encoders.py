"""The relay's encoder processes (engine/relay_encoders.py) never outlive it: killed with SIGKILL
alone (not its process group, as a supervisor or an OOM kill may do), it leaves no encoder behind."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from engine.config import Settings
from tests.integration.processes import Processes

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
