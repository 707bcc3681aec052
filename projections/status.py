"""``ledgerflow projections list`` and ``ledgerflow projections status``.

A projection's position is the last offset it applied, kept in PostgreSQL (``projection_tracking``)
in the same transaction as its rows; that is what counts, not the group's offsets in Kafka. Lag on
a partition is the topic's end offset minus (applied offset + 1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import TopicPartition

from engine import db, kafka
from engine.config import Settings
from projections import dead_letters
from projections.catalogue import PROJECTIONS
from projections.runner import Projection
from streams.connectors.ops import _run


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    applied: int | None
    """Last applied offset; None when nothing from this partition was applied yet."""
    end: int
    """Offset of the next record to be written (last record + 1)."""
    lag: int
    updated_at: datetime | None


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    group: str
    topics: list[str]
    partitions: list[PartitionStatus] = field(default_factory=list)
    dead_letters: int = 0
    """Pending dead letters: events set aside that the table lacks (``ledgerflow dlq list --projection``)."""

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def last_update(self) -> datetime | None:
        times = [p.updated_at for p in self.partitions if p.updated_at is not None]
        return max(times) if times else None


def _chosen(names: Sequence[str] | None) -> list[Projection]:
    return [p for p in PROJECTIONS if not names or p.name in names]


def render_projection_list(settings: Settings) -> str:
    """What ``ledgerflow projections list`` prints: each projection, its group and its topics."""
    lines = [f"{'projection':<24} {'consumer group':<56} topics"]
    for p in PROJECTIONS:
        group = f"{settings.topic_prefix}ledgerflow.projection.{p.name}"
        lines.append(f"{p.name:<24} {group:<56} {', '.join(settings.topic(t) for t in p.topics)}")
    return "\n".join(lines)


async def _ends(settings: Settings, topics: set[str]) -> dict[str, dict[int, tuple[int, int]]]:
    """(beginning, end) offsets per partition of each topic that exists."""
    if not topics:
        return {}
    pattern = re.compile("^(" + "|".join(re.escape(t) for t in sorted(topics)) + ")$")
    partitions = await kafka.topic_partitions(settings, pattern)
    tps: list[TopicPartition] = [tp for t in partitions for tp in partitions[t]]
    if not tps:
        return {}
    begin, end = await kafka.offsets(settings, tps)
    found: dict[str, dict[int, tuple[int, int]]] = {}
    for tp in tps:
        found.setdefault(tp.topic, {})[tp.partition] = (begin[tp], end[tp])
    return found


def status(settings: Settings, names: Sequence[str] | None = None) -> list[ProjectionStatus]:
    """Per projection (all, or the ones named) and partition: applied offset, end offset, lag."""
    chosen = _chosen(names)
    db.ensure_schema(settings)
    topics = {settings.topic(t) for p in chosen for t in p.topics}
    kafka = _run(_ends(settings, topics))
    with db.connect(settings) as conn:
        rows = conn.execute(
            'SELECT projection, topic, partition, "offset", updated_at FROM projection_tracking'
        ).fetchall()
        pending = dead_letters.pending_counts(conn)
    applied = {(r[0], r[1], int(r[2])): (int(r[3]), r[4]) for r in rows}
    out: list[ProjectionStatus] = []
    for p in chosen:
        parts: list[PartitionStatus] = []
        full = [settings.topic(t) for t in p.topics]
        for topic in full:
            for partition, (begin, end) in sorted(kafka.get(topic, {}).items()):
                done, updated = applied.get((p.name, topic, partition), (None, None))
                next_offset = done + 1 if done is not None else begin
                parts.append(
                    PartitionStatus(
                        topic, partition, done, end, max(0, end - max(next_offset, begin)), updated
                    )
                )
        group = f"{settings.topic_prefix}ledgerflow.projection.{p.name}"
        out.append(ProjectionStatus(p.name, group, full, parts, pending.get(p.name, 0)))
    return out


def render_projection_status(statuses: Sequence[ProjectionStatus]) -> str:
    """What ``ledgerflow projections status`` prints: per projection a summary, then its partitions."""
    if not statuses:
        return "no projections"
    lines: list[str] = []
    for s in statuses:
        last = s.last_update.isoformat(timespec="seconds") if s.last_update else "never"
        lines.append(f"{s.name}  lag={s.lag}  last update {last}")
        if s.dead_letters:
            lines.append(
                f"  {s.dead_letters} pending dead letter(s): ledgerflow dlq list --projection {s.name}"
            )
        if not s.partitions:
            lines.append(f"  (topics not created yet: {', '.join(s.topics)})")
            continue
        lines.append(f"  {'topic':<48} {'part':>4} {'applied':>10} {'end':>10} {'lag':>8}  updated")
        for p in s.partitions:
            applied = "-" if p.applied is None else str(p.applied)
            updated = p.updated_at.isoformat(timespec="seconds") if p.updated_at else "-"
            lines.append(f"  {p.topic:<48} {p.partition:>4} {applied:>10} {p.end:>10} {p.lag:>8}  {updated}")
    return "\n".join(lines)
