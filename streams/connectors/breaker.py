"""Circuit breaker state machine, per (tenant, connector). Pure: the caller passes the clock.

The seed "College Accounts": 5 consecutive failures open the circuit for 60 s; then one probe at
a time is let through (half-open); 2 successful probes close it, a failed probe reopens it.
Only retryable failures (the provider is down, slow or throttling) count. Permanent and
needs-attention errors mean the provider answered, so they neither count as failures nor as
successes (Resilience4j calls these "ignored" exceptions); a probe that gets one frees its slot.

The state is shared by every worker through PostgreSQL (``connector_breakers``, see
``breaker_store.py``); this module only says how one state moves to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    open_for: float = 60.0
    successes_to_close: int = 2
    # A half-open probe whose outcome never arrived (its worker died) frees its slot after this long.
    probe_timeout: float = 60.0
    # Jobs turned away while a probe is in flight look again after this long.
    probe_wait: float = 5.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.successes_to_close < 1:
            raise ValueError("BreakerSettings: failure_threshold and successes_to_close must be >= 1")
        if min(self.open_for, self.probe_timeout, self.probe_wait) <= 0:
            raise ValueError("BreakerSettings: open_for, probe_timeout and probe_wait must be > 0")


@dataclass(frozen=True)
class Breaker:
    """One circuit's state. Times are epoch seconds."""

    state: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    half_open_successes: int = 0
    opened_at: float | None = None
    probe_started_at: float | None = None


@dataclass(frozen=True)
class Admitted:
    """Call the provider; ``probe`` says this call is the half-open probe."""

    probe: bool


@dataclass(frozen=True)
class Rejected:
    """Do not call the provider before ``retry_at`` (epoch seconds)."""

    retry_at: float


def admit(b: Breaker, s: BreakerSettings, now: float) -> tuple[Admitted | Rejected, Breaker]:
    """May a call go to the provider now? Returns the decision and the new state."""
    if b.state is CircuitState.CLOSED:
        return Admitted(probe=False), b
    if b.state is CircuitState.OPEN:
        assert b.opened_at is not None
        half_open_at = b.opened_at + s.open_for
        if now < half_open_at:
            return Rejected(half_open_at), b
        return Admitted(probe=True), replace(
            b, state=CircuitState.HALF_OPEN, half_open_successes=0, probe_started_at=now
        )
    # Half-open: one probe at a time.
    if b.probe_started_at is not None and now < b.probe_started_at + s.probe_timeout:
        return Rejected(now + s.probe_wait), b
    return Admitted(probe=True), replace(b, probe_started_at=now)


def record_success(b: Breaker, s: BreakerSettings, now: float, *, probe: bool) -> Breaker:
    if b.state is CircuitState.CLOSED:
        return replace(b, consecutive_failures=0)
    if b.state is CircuitState.HALF_OPEN and probe:
        successes = b.half_open_successes + 1
        if successes >= s.successes_to_close:
            return Breaker()
        return replace(b, half_open_successes=successes, probe_started_at=None)
    # A call admitted before the circuit opened: the provider's state is being judged by probes now.
    return b


def record_failure(b: Breaker, s: BreakerSettings, now: float, *, probe: bool) -> Breaker:
    """A retryable failure."""
    if b.state is CircuitState.CLOSED:
        failures = b.consecutive_failures + 1
        if failures >= s.failure_threshold:
            return Breaker(CircuitState.OPEN, failures, 0, opened_at=now)
        return replace(b, consecutive_failures=failures)
    if b.state is CircuitState.HALF_OPEN and probe:
        return Breaker(CircuitState.OPEN, b.consecutive_failures + 1, 0, opened_at=now)
    return replace(b, consecutive_failures=b.consecutive_failures + 1)


def record_ignored(b: Breaker, s: BreakerSettings, now: float, *, probe: bool) -> Breaker:
    """A permanent or needs-attention error: the provider answered; only a probe slot is freed."""
    if b.state is CircuitState.HALF_OPEN and probe:
        return replace(b, probe_started_at=None)
    return b
