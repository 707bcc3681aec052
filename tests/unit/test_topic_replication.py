"""How many replicas new topics get, and where a local cluster's nodes listen (pure parts of
ops/stack.py; the cluster itself is exercised in tests/integration/test_cluster.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.stack import KafkaCluster, StackError, TopicReplication, replication_for


@pytest.mark.parametrize(
    ("brokers", "configured", "expected"),
    [
        # The single-broker stack: one replica, the broker's own min.insync.replicas.
        (1, None, TopicReplication(factor=1, min_insync_replicas=1)),
        (2, None, TopicReplication(factor=2, min_insync_replicas=1)),
        # The production pair: a write survives one broker loss and stays possible with one down.
        (3, None, TopicReplication(factor=3, min_insync_replicas=2)),
        # More brokers do not mean more copies of every partition.
        (5, None, TopicReplication(factor=3, min_insync_replicas=2)),
        # LEDGERFLOW_REPLICATION_FACTOR wins over what the cluster looks like.
        (1, 3, TopicReplication(factor=3, min_insync_replicas=2)),
        (3, 1, TopicReplication(factor=1, min_insync_replicas=1)),
        (6, 5, TopicReplication(factor=5, min_insync_replicas=2)),
        # A metadata answer listing no broker still yields a valid request.
        (0, None, TopicReplication(factor=1, min_insync_replicas=1)),
    ],
)
def test_replication_follows_the_cluster_size_unless_configured(
    brokers: int, configured: int | None, expected: TopicReplication
) -> None:
    assert replication_for(brokers, configured) == expected


def test_a_three_broker_cluster_listens_on_consecutive_ports_with_controllers_a_hundred_above() -> None:
    cluster = KafkaCluster.on_ports(Path("/tmp/c"), 3, 19092)
    assert [(n.node_id, n.port, n.controller_port) for n in cluster.nodes] == [
        (1, 19092, 19192),
        (2, 19093, 19193),
        (3, 19094, 19194),
    ]
    assert cluster.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert cluster.node(2).home == Path("/tmp/c/node-2")


def test_a_cluster_layout_is_recorded_and_read_back(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, (31001, 31007, 31003), (31002, 31004, 31009))
    cluster.record()
    assert KafkaCluster.load(tmp_path) == cluster
    assert KafkaCluster.load(tmp_path / "elsewhere") is None


def test_a_cluster_whose_ports_overlap_is_refused() -> None:
    with pytest.raises(StackError, match="overlap"):
        KafkaCluster(Path("/tmp/c"), (19092, 19093), (19093, 19192))
    with pytest.raises(StackError, match="at least one broker"):
        KafkaCluster.on_ports(Path("/tmp/c"), 0)
