"""Garbage collection for processes that decode batches of events: automatic collection off, one
full collection every so many events written (and at least every so often).

Why: a batch's decoded events (~190 objects each, ~15 of them dicts and lists) are alive while it
is decoded and written, so the automatic collections, triggered by allocation counts, walk them
again and again as they age through the generations, and find nothing: the events are freed by
reference counting once written. Measured on the rebuild (docs/performance.md, rebuild60): decode
and the register's apply 36-41 against 39-50 us of Python per event. On the live projector
(docs/performance.md, "Projector: the collector, and a late start") the collector's functions
were a quarter of its Python CPU under ``perf``. The explicit collection still frees whatever
reference cycles the process leaves (asyncio and aiokafka make some even while idle, hence the
time bound), so memory stays bounded.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

# Events written between two explicit collections (about ten batches of the rebuild or the runner).
COLLECT_EVERY = 25_000
# And at least this often while events trickle in or none come at all.
COLLECT_AT_LEAST_EVERY_S = 60.0


class CollectingBetweenBatches:
    """Within the block, no automatic garbage collection: one full collection every ``every``
    events written (``written``), or when ``at_least_every_s`` has passed at a ``written`` or
    ``idle`` call. The collector is left as it was found."""

    def __init__(
        self,
        every: int = COLLECT_EVERY,
        at_least_every_s: float = COLLECT_AT_LEAST_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self.at_least_every_s = at_least_every_s
        self.clock = clock
        self._since = 0
        self._last = clock()
        self._was_enabled = False

    def __enter__(self) -> CollectingBetweenBatches:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._last = self.clock()
        return self

    def written(self, events: int) -> None:
        self._since += events
        if self._since >= self.every:
            self._collect()
        else:
            self.idle()

    def idle(self) -> None:
        """Nothing was written: collect only if the time bound has passed."""
        if self.clock() - self._last >= self.at_least_every_s:
            self._collect()

    def _collect(self) -> None:
        self._since = 0
        gc.collect()
        self._last = self.clock()

    def __exit__(self, *exc: object) -> None:
        if self._was_enabled:
            gc.enable()
