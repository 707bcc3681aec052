"""engine/kafka.py against the real broker: partition listing that never creates a topic, offsets,
and a reliable producer from the adapter."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from engine import kafka
from engine.config import Settings
from engine.kafka_admin import ensure_topics

pytestmark = pytest.mark.integration


def test_listing_partitions_finds_existing_topics_and_never_creates_a_missing_one(settings: Settings) -> None:
    present, absent = settings.topic("adapter.present.v1"), settings.topic("adapter.absent.v1")
    ensure_topics(settings, [present], 3)

    found = asyncio.run(kafka.topic_partitions(settings, [present, absent]))

    assert found == {present: [TopicPartition(present, p) for p in range(3)]}
    assert absent not in asyncio.run(kafka.topic_partitions(settings))


def test_requiring_a_missing_topic_names_it(settings: Settings) -> None:
    present, absent = settings.topic("adapter.present.v1"), settings.topic("adapter.absent.v1")
    ensure_topics(settings, [present], 1)

    with pytest.raises(kafka.TopicNotFound) as raised:
        asyncio.run(kafka.require_partitions(settings, [present, absent]))

    assert raised.value.topic == absent
    assert absent not in asyncio.run(kafka.topic_partitions(settings))


def test_a_reliable_producer_writes_and_the_offsets_count_its_records(settings: Settings) -> None:
    topic = settings.topic("adapter.offsets.v1")
    ensure_topics(settings, [topic], 1)

    async def write_and_read() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        producer = await kafka.start_producer(settings, "reliable")
        try:
            for n in range(5):
                await producer.send_and_wait(topic, f"record {n}".encode(), partition=0)
        finally:
            await producer.stop()
        return await kafka.offsets(settings, [TopicPartition(topic, 0)])

    begin, end = asyncio.run(write_and_read())

    assert begin == {TopicPartition(topic, 0): 0}
    assert end == {TopicPartition(topic, 0): 5}
