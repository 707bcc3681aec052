"""The bench's process handling (bench/env.py): a process started again under the same name appends
to the same log, and waiting for its log lines must not find its predecessor's. (The webhook_intake
stage took the stopped API's start-up lines for the new API's and posted to a port nobody listened on.)"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.env import BenchEnv
from engine.config import load_settings


def test_a_restarted_process_waits_for_its_own_log_lines(tmp_path: Path) -> None:
    env = BenchEnv(load_settings(), tmp_path)
    first = env.start_command("api", [sys.executable, "-c", "print('ready', flush=True)"])
    first.wait_log(r"ready")
    first.popen.wait(timeout=60)
    env.stop("api")

    second = env.start_command("api", [sys.executable, "-c", "print('started again', flush=True)"])
    assert second is not first
    assert second.log_start == len("ready\n")
    assert second.peak_single_rss == 0
    second.wait_log(r"started again")
    second.popen.wait(timeout=60)
    assert second.log_text() == "ready\nstarted again\n"
    assert "ready" not in second.log_text()[second.log_start :]
