"""Retry schedules: after a failed attempt, how long to wait and which delay topic to wait in.

Pure functions, no I/O. A policy is a list of delays between attempts (the seed "College
Accounts": immediately, 1 min, 5 min, 15 min, 1 h, then the DLQ), overridable per provider error
code (NEFT ``bank_offline``: 30 min). A provider's ``Retry-After`` is honoured by waiting
``max(scheduled delay, retry_after)``.

Each distinct non-zero delay of a policy has its own delay topic ``connector.<name>.retry.<label>.v1``;
a delay of 0 re-publishes to the jobs topic. A wait goes to the smallest tier whose delay is at least
the wait, so every message in one delay topic has a not-before no later than "published + tier
delay" and the tier's consumer, which pauses until the head's not-before, is never early and at
most one tier's delay late. The exact time travels in the ``not-before`` header.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

# The seed "College Accounts": retry immediately, then after 1 min, 5 min, 15 min and 1 h, then DLQ.
SEED_SCHEDULE: tuple[float, ...] = (0.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass(frozen=True)
class RetryPolicy:
    """Delays (seconds) before attempts 2, 3, ...; a job that fails after the last one is dead-lettered.

    ``per_code`` replaces ``delays`` for errors with that provider code, e.g.
    ``{"bank_offline": (1800.0, 1800.0)}``.
    """

    delays: tuple[float, ...] = SEED_SCHEDULE
    per_code: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    forever: bool = False
    """Never dead-letter a retryable failure: after the schedule, wait its last delay again and
    again (eTIMS: a sale must reach KRA under its number however long KRA is away, kenya-etims.md).
    Permanent and needs-attention errors still go to the DLQ."""

    def __post_init__(self) -> None:
        for code, schedule in [("", self.delays), *self.per_code.items()]:
            bad = [d for d in schedule if not (d >= 0 and math.isfinite(d))]
            if bad:
                where = f"per_code[{code!r}]" if code else "delays"
                raise ValueError(f"RetryPolicy.{where} has invalid delays {bad}: use finite seconds >= 0")

    def schedule_for(self, code: str) -> tuple[float, ...]:
        return self.per_code.get(code, self.delays)

    def tiers(self) -> tuple[float, ...]:
        """The distinct non-zero delays, ascending: one delay topic each."""
        every = set(self.delays).union(*self.per_code.values())
        return tuple(sorted(d for d in every if d > 0))

    def scaled(self, factor: float) -> RetryPolicy:
        """The same schedule with every delay multiplied by ``factor`` (tests, demos)."""
        return RetryPolicy(
            tuple(d * factor for d in self.delays),
            {code: tuple(d * factor for d in s) for code, s in self.per_code.items()},
            self.forever,
        )


@dataclass(frozen=True)
class Retry:
    """Wait ``wait`` seconds in tier ``tier`` (0 = the jobs topic) before ``next_attempt``."""

    next_attempt: int
    wait: float
    tier: float


@dataclass(frozen=True)
class GiveUp:
    """The schedule is exhausted after ``attempts`` attempts: dead-letter the job."""

    attempts: int


def next_step(policy: RetryPolicy, *, attempt: int, code: str, retry_after: float | None) -> Retry | GiveUp:
    """What to do after attempt ``attempt`` (1-based) failed retryably with provider code ``code``."""
    schedule = policy.schedule_for(code)
    if attempt > len(schedule) and not (policy.forever and schedule):
        return GiveUp(attempt)
    wait = max(schedule[min(attempt, len(schedule)) - 1], retry_after or 0.0)
    return Retry(next_attempt=attempt + 1, wait=wait, tier=choose_tier(policy.tiers(), wait))


def choose_tier(tiers: tuple[float, ...], wait: float) -> float:
    """The smallest tier whose delay covers ``wait``; the largest if none does; 0 (jobs topic) for no wait.

    A wait longer than every tier (a long Retry-After) still waits its full time: the tier's
    consumer pauses until the exact not-before.
    """
    if wait <= 0 or not tiers:
        return 0.0
    return next((t for t in tiers if t >= wait), tiers[-1])


def label(delay: float) -> str:
    """Topic label of a delay: ``1h``, ``15m``, ``2s``, ``500ms``."""
    if delay <= 0:
        raise ValueError("a delay of 0 has no delay topic (it re-publishes to the jobs topic)")
    ms = round(delay * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
