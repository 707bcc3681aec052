"""``ledgerflow projector --processes N``: N projector processes sharing the partitions.

Why processes: one projector process is bound to one core by decoding and building rows (issue 15:
catch-up at 0.03-0.06 of raw consume on 2 cores, with ``bench --projectors 2`` giving 1.4-3x).

Process i of N reads the partitions p with p % N == i of every topic (``--share i/N``), assigned
directly, as the rebuild's fill workers share partitions (projections/rebuild.py), and keeps its
positions per partition in PostgreSQL (``projection_tracking``) exactly as a single process does. Not
through the Kafka consumer group: on this 2-core machine under load, two processes joining the
shared group of 16 topics kept expelling each other ("member_id was not recognized" right after each
assignment) and applied nothing for minutes, on main's runner as well. With fixed shares no two
processes ever own one partition, so there is no rebalance during which both could apply a batch;
a process that dies loses nothing (its open transaction rolls back) and the pool starts it again,
from the stored positions. The offsets still reach each group for ``ledgerflow lag`` and the health
check (the memberless commit of projections/visibility.py).

The parent only supervises (``ops.supervisor.ChildSupervisor``: restart with backoff, restarts
counted for ``GET /metrics``) and forwards SIGTERM/SIGINT. Each child asks the kernel for a SIGTERM
when its parent dies (``PR_SET_PDEATHSIG``), so a SIGKILLed parent does not leave orphans applying
batches beside its replacement.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from engine.config import Settings
from ops.supervisor import COLOURS, Child, ChildSupervisor, restart_recorder

# Past four processes PostgreSQL on the same machine is the limit (as for the rebuild's fill
# workers, projections/rebuild.py), and more than there are partitions sit idle.
MAX_DEFAULT = 4
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def default_processes(settings: Settings) -> int:
    """One per core, at most ``MAX_DEFAULT`` and at most one per partition."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT, settings.partitions))


def parse_share(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` -> (i, N); None stays None (a lone process reading through the group)."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    share = int(index), int(count)
    if not 0 <= share[0] < share[1]:
        raise ValueError(f"no share {text!r}: want i/N with 0 <= i < N")
    return share


def child_args(
    names: Sequence[str], share: tuple[int, int] | None = None, python: str = sys.executable
) -> list[str]:
    """A single projector process of ``names`` (all projections when empty), reading ``share``."""
    chosen = [arg for name in names for arg in ("--projection", name)]
    part = ["--share", f"{share[0]}/{share[1]}"] if share else []
    return [python, "-m", "engine.cli", "projector", "--processes", "1", *part, *chosen]


def children(names: Sequence[str], processes: int, first_colour: int = 2) -> list[Child]:
    """The projector children of ``ledgerflow run`` or of a pool: ``projector`` alone, or
    ``projector-1`` ... ``projector-N``."""
    if processes <= 1:
        return [Child("projector", child_args(names), COLOURS[first_colour % len(COLOURS)])]
    return [
        Child(
            f"projector-{i + 1}",
            child_args(names, (i, processes)),
            COLOURS[(first_colour + i) % len(COLOURS)],
        )
        for i in range(processes)
    ]


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM it when the pool's process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: children then outlive a SIGKILLed parent
        pass


class _PoolSupervisor(ChildSupervisor):
    def start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            preexec_fn=_die_with_parent,  # only prctl between fork and exec: no lock is taken
        )
        child.started_at = self.clock()
        child.restart_due = None
        threading.Thread(target=self._pump, args=(child, child.process), daemon=True).start()


def run_pool(settings: Settings, names: Sequence[str], processes: int) -> int:
    """Run ``processes`` projector processes until SIGTERM/SIGINT; restart those that exit."""
    supervisor = _PoolSupervisor(
        children(names, processes), env=dict(os.environ), on_restart=restart_recorder(settings)
    )
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    supervisor.run(stopping, interval=0.2)
    return 0
