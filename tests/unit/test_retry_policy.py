"""Retry schedules: the seed's default, per-code overrides, Retry-After and the delay tier chosen."""

from __future__ import annotations

import pytest

from streams.connectors.retry import GiveUp, Retry, RetryPolicy, choose_tier, label, next_step

SEED = RetryPolicy()
NEFT = RetryPolicy(per_code={"bank_offline": (1800.0, 1800.0)})


@pytest.mark.parametrize(
    ("policy", "attempt", "code", "retry_after", "expected"),
    [
        # The seed "College Accounts": immediately, 1 min, 5 min, 15 min, 1 h, then DLQ.
        (SEED, 1, "http_503", None, Retry(next_attempt=2, wait=0.0, tier=0.0)),
        (SEED, 2, "http_503", None, Retry(next_attempt=3, wait=60.0, tier=60.0)),
        (SEED, 3, "http_503", None, Retry(next_attempt=4, wait=300.0, tier=300.0)),
        (SEED, 4, "http_503", None, Retry(next_attempt=5, wait=900.0, tier=900.0)),
        (SEED, 5, "http_503", None, Retry(next_attempt=6, wait=3600.0, tier=3600.0)),
        (SEED, 6, "http_503", None, GiveUp(attempts=6)),
        # NEFT bank_offline: retry after 30 min, twice; other codes keep the default schedule.
        (NEFT, 1, "bank_offline", None, Retry(next_attempt=2, wait=1800.0, tier=1800.0)),
        (NEFT, 2, "bank_offline", None, Retry(next_attempt=3, wait=1800.0, tier=1800.0)),
        (NEFT, 3, "bank_offline", None, GiveUp(attempts=3)),
        (NEFT, 2, "timeout", None, Retry(next_attempt=3, wait=60.0, tier=60.0)),
        # Retry-After wins when longer; the wait is exact, the tier is the smallest one covering it.
        (SEED, 1, "http_429", 30.0, Retry(next_attempt=2, wait=30.0, tier=60.0)),
        (SEED, 2, "http_429", 120.0, Retry(next_attempt=3, wait=120.0, tier=300.0)),
        (SEED, 3, "http_429", 10.0, Retry(next_attempt=4, wait=300.0, tier=300.0)),
        # Longer than every tier: the largest tier, still waiting the full time.
        (SEED, 2, "http_429", 7200.0, Retry(next_attempt=3, wait=7200.0, tier=3600.0)),
        # A policy with short delays (tests): the same arithmetic in seconds.
        (RetryPolicy((1.0, 2.0)), 1, "x", None, Retry(2, 1.0, 1.0)),
        (RetryPolicy((1.0, 2.0)), 2, "x", None, Retry(3, 2.0, 2.0)),
        (RetryPolicy((1.0, 2.0)), 3, "x", None, GiveUp(3)),
        # No retries at all: the first retryable failure is final.
        (RetryPolicy(()), 1, "x", None, GiveUp(1)),
        # Forever (eTIMS): past the schedule its last delay repeats and nothing is given up;
        # Retry-After still wins when longer. An empty schedule has no delay to repeat.
        (RetryPolicy((0.0, 60.0, 900.0), forever=True), 3, "x", None, Retry(4, 900.0, 900.0)),
        (RetryPolicy((0.0, 60.0, 900.0), forever=True), 500, "x", None, Retry(501, 900.0, 900.0)),
        (RetryPolicy((0.0, 60.0, 900.0), forever=True), 9, "x", 1200.0, Retry(10, 1200.0, 900.0)),
        (RetryPolicy((), forever=True), 1, "x", None, GiveUp(1)),
    ],
)
def test_next_step_follows_the_schedule(
    policy: RetryPolicy, attempt: int, code: str, retry_after: float | None, expected: Retry | GiveUp
) -> None:
    assert next_step(policy, attempt=attempt, code=code, retry_after=retry_after) == expected


def test_tiers_are_the_distinct_non_zero_delays_of_every_schedule() -> None:
    assert SEED.tiers() == (60.0, 300.0, 900.0, 3600.0)
    assert NEFT.tiers() == (60.0, 300.0, 900.0, 1800.0, 3600.0)
    assert RetryPolicy((0.0, 0.0)).tiers() == ()


@pytest.mark.parametrize(
    ("tiers", "wait", "expected"),
    [
        ((60.0, 300.0), 0.0, 0.0),
        ((60.0, 300.0), 0.5, 60.0),
        ((60.0, 300.0), 60.0, 60.0),
        ((60.0, 300.0), 61.0, 300.0),
        ((60.0, 300.0), 301.0, 300.0),
        # No delay topics: the only place left is the jobs topic (its consumer honours not-before).
        ((), 5.0, 0.0),
    ],
)
def test_choose_tier(tiers: tuple[float, ...], wait: float, expected: float) -> None:
    assert choose_tier(tiers, wait) == expected


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (60.0, "1m"),
        (300.0, "5m"),
        (900.0, "15m"),
        (3600.0, "1h"),
        (5400.0, "90m"),
        (2.0, "2s"),
        (0.5, "500ms"),
    ],
)
def test_delay_labels(delay: float, expected: str) -> None:
    assert label(delay) == expected


def test_scaled_policy_keeps_its_shape() -> None:
    assert NEFT.scaled(0.001) == RetryPolicy((0.0, 0.06, 0.3, 0.9, 3.6), {"bank_offline": (1.8, 1.8)})


def test_negative_delays_are_refused_with_the_place_named() -> None:
    with pytest.raises(ValueError, match=r"per_code\['x'\]"):
        RetryPolicy(per_code={"x": (-1.0,)})
