"""The backoff of `ledgerflow run` between restarts of a crashed process."""

from __future__ import annotations

from ops.supervisor import RestartPolicy


def test_restarts_wait_one_second_doubling_up_to_a_minute() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_a_long_crash_loop_never_overflows_the_delay() -> None:
    assert RestartPolicy().delay(10_000) == 60
    assert RestartPolicy(first_delay=0.5, max_delay=3).delay(3) == 2
