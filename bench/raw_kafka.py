"""Baseline: raw aiokafka produce and consume of messages shaped like the relay's, on the same broker."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from engine.config import Settings
from engine.kafka_clients import aiokafka_kwargs

RAW_TOPIC = "bench.raw.v1"
WARM_UP_TOPIC = "bench.warmup.v1"


async def produce(
    settings: Settings,
    count: int,
    shape: dict[str, Any],
    *,
    batch: int = 2000,
    progress: Callable[[int], None] | None = None,
    logical_topic: str = RAW_TOPIC,
) -> float:
    """Send ``count`` messages like the relay does (idempotent, acks=all, await each send, gather
    each batch's acknowledgements); messages/s."""
    topic = settings.topic(logical_topic)
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings),
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    values = [os.urandom(shape["value_bytes"]) for _ in range(64)]
    keys = [os.urandom(shape["key_bytes"] // 2).hex().encode()[: shape["key_bytes"]] for _ in range(997)]
    headers = shape["headers"]
    try:
        started = time.perf_counter()
        sent = 0
        while sent < count:
            size = min(batch, count - sent)
            pending = [
                await producer.send(topic, value=values[i % 64], key=keys[(sent + i) % 997], headers=headers)
                for i in range(size)
            ]
            await asyncio.gather(*pending)
            sent += size
            if progress:
                progress(size)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def consume(
    settings: Settings,
    count: int,
    *,
    max_records: int = 5000,
    progress: Callable[[int], None] | None = None,
    logical_topic: str = RAW_TOPIC,
) -> float:
    """Read ``count`` messages from the beginning with ``getmany`` (same fetch sizes as the
    projection runner); messages/s, timed from the consumer's start (no group: all partitions at once)."""
    topic = settings.topic(logical_topic)
    consumer = AIOKafkaConsumer(
        topic,
        group_id=None,
        **aiokafka_kwargs(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    try:
        started = time.perf_counter()
        seen = 0
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            for messages in batches.values():
                seen += len(messages)
                if progress:
                    progress(len(messages))
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()
