"""The circuit breaker state machine, driven by an explicit clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streams.connectors.breaker import (
    Admitted,
    Breaker,
    BreakerSettings,
    CircuitState,
    Rejected,
    admit,
    record_failure,
    record_ignored,
    record_success,
)

SEED = BreakerSettings()  # 5 failures, 60 s open, one probe, 2 successes to close
CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF = CircuitState.HALF_OPEN


@dataclass(frozen=True)
class Step:
    at: float
    event: str  # "call" (admit), "ok", "fail", "ignored"
    expect_state: CircuitState
    expect_admit: bool | None = None  # for "call"
    expect_retry_at: float | None = None  # for a rejected call


def run(steps: list[Step], settings: BreakerSettings = SEED) -> None:
    b = Breaker()
    probe = False
    for i, step in enumerate(steps):
        if step.event == "call":
            decision, b = admit(b, settings, step.at)
            assert isinstance(decision, Admitted) == step.expect_admit, f"step {i}: {decision}"
            if isinstance(decision, Admitted):
                probe = decision.probe
            elif step.expect_retry_at is not None:
                assert decision == Rejected(step.expect_retry_at), f"step {i}"
        elif step.event == "ok":
            b = record_success(b, settings, step.at, probe=probe)
        elif step.event == "fail":
            b = record_failure(b, settings, step.at, probe=probe)
        else:
            b = record_ignored(b, settings, step.at, probe=probe)
        assert b.state is step.expect_state, f"step {i} ({step}): {b}"


def failures(n: int, at: float = 0.0) -> list[Step]:
    out: list[Step] = []
    for i in range(n):
        out.append(Step(at + i, "call", CLOSED, True))
        out.append(Step(at + i, "fail", OPEN if i == 4 else CLOSED))
    return out


def test_four_failures_keep_the_circuit_closed_and_a_success_resets_the_count() -> None:
    run(
        [*failures(4), Step(5, "call", CLOSED, True), Step(5, "ok", CLOSED)]
        + [s for s in failures(4, at=10)]
        + [Step(20, "call", CLOSED, True)]
    )


def test_five_consecutive_failures_open_the_circuit_for_60_seconds() -> None:
    run([*failures(5), Step(10, "call", OPEN, False, 64.0), Step(63.9, "call", OPEN, False, 64.0)])


def test_after_the_open_time_one_probe_at_a_time_and_two_successes_close() -> None:
    run(
        [
            *failures(5),  # opened at t=4
            Step(64, "call", HALF, True),
            Step(64.5, "call", HALF, False, 69.5),  # a second caller waits for the probe
            Step(65, "ok", HALF),
            Step(66, "call", HALF, True),
            Step(66.1, "ok", CLOSED),
            Step(67, "call", CLOSED, True),
        ]
    )


def test_a_failed_probe_reopens_for_another_full_period() -> None:
    run(
        [
            *failures(5),
            Step(64, "call", HALF, True),
            Step(65, "fail", OPEN),
            Step(100, "call", OPEN, False, 125.0),
            Step(125, "call", HALF, True),
        ]
    )


def test_a_success_then_a_failed_probe_starts_counting_successes_again() -> None:
    run(
        [
            *failures(5),
            Step(64, "call", HALF, True),
            Step(64, "ok", HALF),
            Step(65, "call", HALF, True),
            Step(65, "fail", OPEN),
            Step(125, "call", HALF, True),
            Step(125, "ok", HALF),
            Step(126, "call", HALF, True),
            Step(126, "ok", CLOSED),
        ]
    )


def test_permanent_errors_neither_open_nor_close_the_circuit() -> None:
    run(
        [
            *failures(4),
            Step(5, "call", CLOSED, True),
            Step(5, "ignored", CLOSED),
            Step(6, "call", CLOSED, True),
            Step(6, "fail", OPEN),  # the 5th consecutive retryable failure
            Step(66, "call", HALF, True),
            Step(66, "ignored", HALF),  # frees the probe slot, counts for nothing
            Step(67, "call", HALF, True),
            Step(67, "ok", HALF),
        ]
    )


def test_a_lost_probe_frees_its_slot_after_the_probe_timeout() -> None:
    run(
        [
            *failures(5),
            Step(64, "call", HALF, True),  # its worker dies: no outcome ever arrives
            Step(100, "call", HALF, False),
            Step(124, "call", HALF, True),
        ]
    )


def test_late_outcomes_of_calls_admitted_before_the_circuit_opened_do_not_close_it() -> None:
    settings = SEED
    b = Breaker()
    for t in range(5):
        b = record_failure(b, settings, float(t), probe=False)
    assert b.state is OPEN
    assert record_success(b, settings, 5.0, probe=False).state is OPEN


@pytest.mark.parametrize(
    "kwargs", [{"failure_threshold": 0}, {"open_for": 0}, {"successes_to_close": 0}, {"probe_wait": -1}]
)
def test_settings_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="BreakerSettings"):
        BreakerSettings(**kwargs)  # type: ignore[arg-type]
