"""Stall detection from lag samples (ops/stall.py): which samples make a group stalled."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from ops.stall import Sample, assess, standing_since

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
TOPIC = "ingest.invoice.v1"


def samples(*points: tuple[float, int | None, int]) -> list[Sample]:
    """(seconds after T0, committed offset, lag) -> samples in time order."""
    return [Sample(T0 + timedelta(seconds=s), committed, lag) for s, committed, lag in points]


def one_partition(*points: tuple[float, int | None, int]) -> dict[tuple[str, int], list[Sample]]:
    return {(TOPIC, 0): samples(*points)}


# (what, members, partitions, expected status)
CASES: list[tuple[str, int, dict[tuple[str, int], list[Sample]], str]] = [
    ("no samples at all: nothing to read", 1, {}, "ok"),
    ("caught up", 1, one_partition((0, 10, 0), (90, 10, 0)), "ok"),
    (
        "idle with nothing to read is not a stall, however long",
        1,
        one_partition((0, 10, 0), (3600, 10, 0)),
        "ok",
    ),
    ("a single sample with lag cannot show a stall", 1, one_partition((0, 10, 50)), "lagging"),
    (
        "lag, offsets moving between every sample",
        2,
        one_partition((0, 10, 50), (30, 40, 60), (60, 70, 55), (90, 95, 30)),
        "lagging",
    ),
    (
        "lag growing, offset unchanged for 90 s",
        3,
        one_partition((0, 10, 50), (30, 10, 80), (60, 10, 120), (90, 10, 160)),
        "stalled",
    ),
    (
        "lag constant and non-zero, offset unchanged for exactly stall_after",
        1,
        one_partition((0, 10, 5), (60, 10, 5)),
        "stalled",
    ),
    ("unchanged for just under stall_after", 1, one_partition((0, 10, 5), (59.5, 10, 5)), "lagging"),
    (
        "moved 30 s ago after a long stand-still: only the time since the move counts",
        1,
        one_partition((0, 10, 5), (100, 10, 5), (130, 12, 5), (160, 12, 5)),
        "lagging",
    ),
    (
        "records arrived 20 s ago at an offset that had been idle for an hour",
        1,
        one_partition((0, 10, 0), (3580, 10, 0), (3600, 10, 3)),
        "lagging",
    ),
    (
        "stand-still counted from the first sample with lag (50 s), not from the last move (120 s)",
        1,
        one_partition((0, 10, 0), (70, 10, 4), (120, 10, 9)),
        "lagging",
    ),
    (
        "never committed on the partition and records waiting for 2 minutes",
        1,
        one_partition((0, None, 7), (120, None, 7)),
        "stalled",
    ),
    (
        "one stuck partition among progressing ones stalls the group",
        3,
        {
            (TOPIC, 0): samples((0, 100, 20), (90, 400, 25)),
            (TOPIC, 1): samples((0, 100, 20), (90, 380, 30)),
            (TOPIC, 2): samples((0, 57, 20), (90, 57, 300)),
        },
        "stalled",
    ),
    (
        "no members: nobody consumes, which is not a stalled consumer",
        0,
        one_partition((0, 10, 50), (300, 10, 500)),
        "no members",
    ),
    ("no members and no lag", 0, one_partition((0, 10, 0)), "no members"),
]


@pytest.mark.parametrize(
    ("members", "partitions", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_status_from_samples(
    members: int, partitions: dict[tuple[str, int], list[Sample]], expected: str
) -> None:
    assert assess(members, partitions, stall_after=60).status == expected


# (what, samples, seconds after T0 of the sample the stand-still starts at, or None)
STANDING: list[tuple[str, Sequence[tuple[float, int | None, int]], float | None]] = [
    ("no lag now", [(0, 5, 3), (30, 5, 0)], None),
    ("only one sample", [(0, 5, 3)], 0),
    ("unchanged throughout", [(0, 5, 3), (30, 5, 4), (60, 5, 9)], 0),
    ("moved, then still", [(0, 2, 3), (30, 5, 4), (60, 5, 9)], 30),
    ("lag gap breaks the stretch", [(0, 5, 3), (30, 5, 0), (60, 5, 1), (90, 5, 2)], 60),
    ("moved in the last sample", [(0, 5, 3), (30, 5, 4), (60, 6, 9)], 60),
]


@pytest.mark.parametrize(
    ("points", "start"), [case[1:] for case in STANDING], ids=[case[0] for case in STANDING]
)
def test_standing_since(points: Sequence[tuple[float, int | None, int]], start: float | None) -> None:
    since = standing_since(samples(*points))
    assert (None if since is None else (since.at - T0).total_seconds()) == start


def test_a_delay_topic_may_hold_its_records_for_its_delay_on_top_of_stall_after() -> None:
    # A connector's 5-minute delay topic pauses until its head record is due.
    delay_topic = "connector.gst-irp.retry.5m.v1"
    waiting = {(delay_topic, 0): samples((0, 3, 1), (200, 3, 1))}
    assert assess(1, waiting, stall_after=60, grace={delay_topic: 300}).status == "lagging"
    overdue = {(delay_topic, 0): samples((0, 3, 1), (400, 3, 1))}
    assert assess(1, overdue, stall_after=60, grace={delay_topic: 300}).status == "stalled"
    # The grace is the delay topic's only: the jobs topic stalls after stall_after.
    jobs = {("connector.gst-irp.jobs.v1", 0): samples((0, 3, 1), (200, 3, 1))}
    assert assess(1, jobs, stall_after=60, grace={delay_topic: 300}).status == "stalled"


def test_the_reason_names_the_stuck_partition_its_offset_and_how_lag_moved() -> None:
    partitions = {
        (TOPIC, 0): samples((0, 100, 0), (75, 160, 0)),
        (TOPIC, 4): samples((0, 812, 120), (75, 812, 480)),
    }
    result = assess(3, partitions, stall_after=60)
    assert result.status == "stalled"
    (stuck,) = result.stalled
    assert (stuck.topic, stuck.partition, stuck.committed) == (TOPIC, 4, 812)
    assert (stuck.seconds, stuck.lag_then, stuck.lag_now, stuck.since) == (75, 120, 480, T0)
    assert "ingest.invoice.v1[4] at offset 812 for 75s, lag 120 -> 480" in result.reason


def test_lagging_says_how_long_the_slowest_partition_has_stood_still() -> None:
    result = assess(1, one_partition((0, 10, 5), (10, 10, 5), (40, 10, 8)), stall_after=60)
    assert result.status == "lagging"
    assert result.reason == f"lag 8; longest without progress: {TOPIC}[0] 40s of 60s"


def test_stall_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stall_after must be > 0"):
        assess(1, one_partition((0, 10, 5)), stall_after=0)
