"""Stalled consumers: deciding from lag samples whether a consumer group still makes progress.

Pure code, no I/O: ``ops/lag.py`` takes the samples (from Kafka) and keeps them (in PostgreSQL);
this module only reads them.

A partition of a group is **stalled** when its committed offset has not moved for ``stall_after``
seconds while the group had lag on it in every sample over that time. A group is stalled when
any of its partitions is. The decision is per partition, not for the group as a whole: one stuck
worker among three holds only its own partitions while the other two keep committing, and a
group-wide "have the offsets moved?" would hide it behind their progress.

Some partitions hold records back on purpose: a connector's delay topic pauses until its head
record is due, at most one tier's delay after it was published (``streams/connectors/retry.py``).
Such a topic gets that delay as ``grace`` on top of ``stall_after``.

The four statuses, first match wins:

- ``no members``: no consumer is running in the group (Kafka reports it ``Empty`` or ``Dead``).
  Nothing is stuck; nothing is consuming either. Not counted as stalled: old groups of consumers
  that are no longer deployed stay listed with this status until Kafka expires them.
- ``stalled``: at least one partition is stalled (above).
- ``lagging``: records are waiting, and the committed offsets are moving (or have not stood still
  for long enough yet).
- ``ok``: no lag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Status = Literal["ok", "lagging", "stalled", "no members"]

DEFAULT_STALL_AFTER = 60.0


@dataclass(frozen=True)
class Sample:
    """One partition of one group, as sampled at one moment."""

    at: datetime
    committed: int | None
    """The group's committed offset (next offset to read); None if it never committed there."""
    lag: int


@dataclass(frozen=True)
class StalledPartition:
    topic: str
    partition: int
    committed: int | None
    since: datetime
    """The first sample of the stretch without progress (the offset may have stopped a little earlier)."""
    seconds: float
    lag_then: int
    lag_now: int

    def describe(self) -> str:
        at = "nothing committed" if self.committed is None else f"offset {self.committed}"
        trend = (
            f"lag {self.lag_now}"
            if self.lag_then == self.lag_now
            else f"lag {self.lag_then} -> {self.lag_now}"
        )
        return f"{self.topic}[{self.partition}] at {at} for {self.seconds:.0f}s, {trend}"


@dataclass(frozen=True)
class Assessment:
    status: Status
    reason: str
    stalled: tuple[StalledPartition, ...] = ()


def standing_since(history: Sequence[Sample]) -> Sample | None:
    """The earliest sample of the latest stretch in which the committed offset stood still and
    there was lag in every sample; None when the latest sample has no lag.

    ``history`` is one partition's samples in time order, the latest last.
    """
    if not history or history[-1].lag <= 0:
        return None
    latest = history[-1]
    since = latest
    for sample in reversed(history[:-1]):
        if sample.committed != latest.committed or sample.lag <= 0:
            break
        since = sample
    return since


def assess(
    members: int,
    partitions: Mapping[tuple[str, int], Sequence[Sample]],
    *,
    stall_after: float = DEFAULT_STALL_AFTER,
    grace: Mapping[str, float] | None = None,
) -> Assessment:
    """The status of one group from its number of members now and each partition's samples
    (time order, the latest last; the latest is "now")."""
    if stall_after <= 0:
        raise ValueError(f"stall_after must be > 0 seconds, not {stall_after}")
    grace = grace or {}
    total = sum(history[-1].lag for history in partitions.values() if history)
    if members == 0:
        return Assessment("no members", f"no consumer is running in the group; lag {total}")
    if total == 0:
        return Assessment("ok", "no lag")

    stalled: list[StalledPartition] = []
    longest: tuple[float, str] | None = None  # the longest stand-still that is not (yet) a stall
    compared = False  # whether any partition with lag has a sample to compare with
    for (topic, partition), history in sorted(partitions.items()):
        since = standing_since(history)
        if since is None:
            continue
        compared = compared or len(history) > 1
        latest = history[-1]
        seconds = (latest.at - since.at).total_seconds()
        limit = stall_after + grace.get(topic, 0.0)
        if seconds >= limit:
            stalled.append(
                StalledPartition(topic, partition, latest.committed, since.at, seconds, since.lag, latest.lag)
            )
        elif seconds > 0 and (longest is None or seconds > longest[0]):
            longest = (seconds, f"{topic}[{partition}] {seconds:.0f}s of {limit:.0f}s")

    if stalled:
        shown = "; ".join(p.describe() for p in stalled[:3])
        more = f" (and {len(stalled) - 3} more partitions)" if len(stalled) > 3 else ""
        return Assessment(
            "stalled",
            f"no progress for {stall_after:.0f}s or more while records wait: {shown}{more}",
            tuple(stalled),
        )
    if not compared:
        return Assessment("lagging", f"lag {total}; one sample so far, progress not known yet")
    if longest is None:
        return Assessment("lagging", f"lag {total}; committed offsets moving")
    return Assessment("lagging", f"lag {total}; longest without progress: {longest[1]}")
