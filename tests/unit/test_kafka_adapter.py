"""The Kafka adapter's producer profiles, consumer options and error mapping (engine/kafka.py)."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from engine import kafka
from engine.config import Settings

# Nothing listens on port 1: connecting is refused at once.
NOWHERE = Settings(kafka_bootstrap="127.0.0.1:1", kafka_security_protocol="PLAINTEXT")


def test_every_producer_profile_is_idempotent_with_acks_all() -> None:
    for profile in ("reliable", "bulk"):
        options = kafka.producer_options(NOWHERE, profile)
        assert options["acks"] == "all"
        assert options["enable_idempotence"] is True
        assert options["bootstrap_servers"] == "127.0.0.1:1"


def test_the_bulk_profile_keeps_the_relays_batching_the_bench_figures_were_taken_with() -> None:
    options = kafka.producer_options(NOWHERE, "bulk")
    assert (options["linger_ms"], options["max_batch_size"], options["request_timeout_ms"]) == (
        5,
        256 * 1024,
        30_000,
    )


def test_a_caller_can_override_one_option_of_a_profile() -> None:
    options = kafka.producer_options(NOWHERE, "bulk", max_batch_size=512 * 1024)
    assert options["max_batch_size"] == 512 * 1024
    assert options["linger_ms"] == 5


def test_an_unknown_profile_is_refused_with_the_known_ones_named() -> None:
    with pytest.raises(ValueError, match="reliable, bulk"):
        kafka.producer_options(NOWHERE, "fast")  # type: ignore[arg-type]


async def test_a_consumer_never_auto_commits_and_keeps_the_callers_fetch_sizes() -> None:
    consumer = kafka.consumer(NOWHERE, group_id="g", max_partition_fetch_bytes=4 * 1024 * 1024)
    try:
        assert consumer._enable_auto_commit is False
        assert consumer._group_id == "g"
        assert consumer._max_partition_fetch_bytes == 4 * 1024 * 1024
    finally:
        await consumer.stop()  # never started: only releases its client


def test_connection_errors_become_kafka_unavailable_and_refusals_kafka_request_failed() -> None:
    unreachable = kafka.translate(KafkaConnectionError("refused"), "b:9092")
    assert isinstance(unreachable, kafka.KafkaUnavailable)
    assert "b:9092" in str(unreachable)
    refused = kafka.translate(TopicAuthorizationFailedError(), "b:9092")
    assert isinstance(refused, kafka.KafkaRequestFailed)


async def test_a_producer_that_cannot_reach_kafka_raises_kafka_unavailable() -> None:
    with pytest.raises(kafka.KafkaUnavailable, match=r"127\.0\.0\.1:1\b"):
        await kafka.start_producer(NOWHERE, "reliable")


async def test_listing_partitions_without_kafka_raises_kafka_unavailable() -> None:
    with pytest.raises(kafka.KafkaUnavailable, match=r"127\.0\.0\.1:1\b"):
        await kafka.topic_partitions(NOWHERE)


def test_creating_topics_without_kafka_raises_kafka_unavailable_not_an_aiokafka_error() -> None:
    from engine.kafka_admin import ensure_topics

    with pytest.raises(kafka.KafkaUnavailable, match=r"127\.0\.0\.1:1\b"):
        ensure_topics(NOWHERE, ["nowhere.v1"], 1)
