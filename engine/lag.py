"""``ledgerflow lag``: consumer lag per group, topic and partition, and the state of each group.

Committed offsets and group states come from Kafka (the admin API), end offsets from a consumer's
``end_offsets``. A group's lag on a partition is the end offset minus its committed offset (minus
the earliest retained offset when the group has committed nothing there yet).

Projection runners keep their true positions in PostgreSQL and commit to Kafka only for
visibility: ``ledgerflow projections status`` shows the positions that matter for them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import (
    DescribeGroupsRequest_v0,
    DescribeGroupsRequest_v1,
    DescribeGroupsRequest_v2,
)
from aiokafka.protocol.api import Request

from engine.config import Settings
from streams.connectors.ops import _run, topic_partitions


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    """Next offset the group will read (Kafka's committed offset); None if it never committed here."""
    end: int
    """Offset of the next record to be written (last record + 1)."""
    lag: int


@dataclass(frozen=True)
class GroupLag:
    group: str
    state: str
    """As Kafka reports it: Stable, Empty, PreparingRebalance, CompletingRebalance or Dead."""
    members: int
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def stable(self) -> bool:
        return self.state == "Stable"


class _DescribeGroups(
    Request[DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]
):
    """DescribeGroups capped at v2.

    aiokafka 0.14's ``describe_consumer_groups`` negotiates v3, whose request class is paired with
    the v2 response schema (no ``authorized_operations``): decoding the broker's answer fails with
    "Buffer underrun" and the connection is dropped. v2 returns the state and members we need.
    """

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups

    def build(
        self,
        request_struct_class: type[
            DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2
        ],
    ) -> DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2:
        return request_struct_class(self.groups)


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, tuple[str, int]]:
    """group id -> (state, number of members)."""
    by_node: dict[int, list[str]] = {}
    for name in names:
        by_node.setdefault(await admin.find_coordinator(name), []).append(name)
    found: dict[str, tuple[str, int]] = {}
    for node, groups in by_node.items():
        response = await admin._send_request(_DescribeGroups(groups), node)
        for g in response.groups:
            # (error_code, group, state, protocol_type, protocol, members)
            found[g[1]] = (g[2] or "Dead", len(g[5]))
    return found


def default_group_prefix(settings: Settings) -> str:
    """The engine's groups (projections, connectors, ...) of this deployment start with this."""
    return f"{settings.topic_prefix}ledgerflow"


async def _lag(settings: Settings, groups: Sequence[str] | None) -> list[GroupLag]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        if groups is None:
            prefix = default_group_prefix(settings)
            listed = await admin.list_consumer_groups()
            names = sorted({g[0] for g in listed if str(g[0]).startswith(prefix)})
        else:
            names = sorted(set(groups))
        if not names:
            return []
        described = await _describe(admin, names)
        committed: dict[str, dict[TopicPartition, Any]] = {}
        for name in names:
            committed[name] = await admin.list_consumer_group_offsets(name)
        topics = {tp.topic for offsets in committed.values() for tp in offsets}
        partitions: dict[str, list[TopicPartition]] = {}
        if topics:
            pattern = re.compile("^(" + "|".join(re.escape(t) for t in sorted(topics)) + ")$")
            partitions = await topic_partitions(settings.kafka_bootstrap, pattern)
        tps = [tp for t in sorted(partitions) for tp in partitions[t]]
        end = await consumer.end_offsets(tps) if tps else {}
        begin = await consumer.beginning_offsets(tps) if tps else {}
        out: list[GroupLag] = []
        for name in names:
            state, members = described.get(name, ("Dead", 0))
            rows: list[PartitionLag] = []
            for topic in sorted({tp.topic for tp in committed[name]}):
                for tp in partitions.get(topic, []):
                    meta = committed[name].get(tp)
                    done = meta.offset if meta is not None and meta.offset >= 0 else None
                    lag = max(0, end[tp] - max(done if done is not None else 0, begin[tp]))
                    rows.append(PartitionLag(tp.topic, tp.partition, done, end[tp], lag))
            out.append(GroupLag(name, state, members, rows))
        return out
    finally:
        await consumer.stop()
        await admin.close()


def lag(settings: Settings, groups: list[str] | None = None) -> list[GroupLag]:
    """Lag of the named groups, or of every group whose id starts with ``<prefix>ledgerflow``."""
    return _run(_lag(settings, groups))


def render_lag(groups: Sequence[GroupLag]) -> str:
    """What ``ledgerflow lag`` prints: per group a summary line, then one line per partition."""
    if not groups:
        return "no consumer groups"
    lines: list[str] = []
    for g in groups:
        flag = "" if g.stable else "  <- not stable"
        lines.append(f"{g.group}  state={g.state} members={g.members} total lag={g.total}{flag}")
        if not g.partitions:
            lines.append("  (no committed offsets)")
            continue
        lines.append(f"  {'topic':<48} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}")
        for p in g.partitions:
            committed = "-" if p.committed is None else str(p.committed)
            lines.append(f"  {p.topic:<48} {p.partition:>4} {committed:>10} {p.end:>10} {p.lag:>8}")
    return "\n".join(lines)
