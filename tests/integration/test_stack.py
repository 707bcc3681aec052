"""The local stack answers: a real broker and a real PostgreSQL, as `ledgerflow stack up` leaves them.

These check the services through clients other than the ones `ops.stack` uses where possible
(confluent-kafka/librdkafka for the metadata), so that a bug in our own helper cannot hide a
broker that is not really there.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

from engine.config import Settings, load_settings
from ops import stack
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def settings() -> Settings:
    return load_settings()


def test_ensure_topics_creates_a_topic_with_the_requested_partitions(settings: Settings) -> None:
    name = f"test.stack.{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        assert stack.ensure_topics(settings, [name], 3) == [name]
        # A second call finds it and creates nothing: `ledgerflow topics ensure` is safe to repeat.
        assert stack.ensure_topics(settings, [name], 3) == []

        # CreateTopics answers once the controller has the topic; a broker's metadata cache may
        # learn of it a moment later (seen on a loaded machine), so poll for it.
        def listed() -> Any:
            topic = admin.list_topics(topic=name, timeout=10).topics[name]
            return topic if topic.error is None and topic.partitions else None

        topic = wait_for(listed, timeout=30, what=f"{name} appearing in the broker's metadata")
        assert len(topic.partitions) == 3
    finally:
        admin.delete_topics([name], operation_timeout=10)[name].result(timeout=20)


def test_topics_on_the_single_broker_keep_one_replica_and_the_brokers_own_min_insync(
    settings: Settings,
) -> None:
    # The replicated cluster's rules (tests/integration/test_cluster.py) must not leak here: one
    # broker cannot hold a second replica, and min.insync.replicas=2 would refuse every write.
    name = f"test.stack.{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        assert stack.ensure_topics(settings, [name], 2) == [name]
        # A topic just created may be missing from the metadata of the broker asked for a moment.
        partitions = wait_for(
            lambda: admin.list_topics(topic=name, timeout=10).topics[name].partitions,
            timeout=30,
            what=f"{name} in the broker's metadata",
        )
        assert {len(p.replicas) for p in partitions.values()} == {1}
        (future,) = admin.describe_configs([ConfigResource("topic", name)]).values()
        min_insync = future.result(timeout=20)["min.insync.replicas"]
        # Inherited from the broker (Kafka 4 records it as a cluster-wide default), not set on the topic.
        assert (min_insync.value, min_insync.source) == (
            "1",
            ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value,
        )
        assert stack.topic_replication(settings) == stack.TopicReplication(1, 1)
    finally:
        admin.delete_topics([name], operation_timeout=10)[name].result(timeout=20)


def test_postgres_accepts_a_login_to_the_test_database(settings: Settings) -> None:
    url = psycopg.conninfo.conninfo_to_dict(settings.database_url)
    url["dbname"] = f"{url.get('dbname', 'ledgerflow')}_test"
    with psycopg.connect(**url, connect_timeout=5) as conn:
        row = conn.execute("SELECT current_user, current_database(), current_setting('fsync')").fetchone()
    assert row is not None
    user, database, fsync = row
    assert (user, database) == (url["user"], url["dbname"])
    # Durability tests depend on it: the local cluster must not trade fsync for speed.
    assert fsync == "on"


def test_status_reports_both_services_answering(settings: Settings) -> None:
    by_name = {s.name: s for s in stack.status(settings)}
    assert set(by_name) == {"kafka", "postgres"}
    assert "answers metadata" in by_name["kafka"].detail
    assert "accepts login" in by_name["postgres"].detail
