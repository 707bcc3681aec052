"""Replay into a topic, beside its own raw baseline measured in the same run on the same broker.

Both copy the same source topic, whose records are shaped like the relay's (value, key and header
sizes, the real CloudEvents headers), into a fresh topic of the same partition count:

- **raw**: the plainest aiokafka loop that does the job: ``getmany`` without a group, each record
  sent to the same partition with an idempotent ``acks=all`` producer, each batch's
  acknowledgements gathered before the next fetch;
- **replay**: ``ops.replay`` as ``ledgerflow replay --into-topic`` runs it.

Both rates are records/s from the first fetch to the last acknowledgement (clients' start-up
excluded) and both run on uvloop, as the ``ledgerflow`` command does.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine.config import Settings
from engine.kafka_clients import aiokafka_kwargs
from ops.replay import ReplaySummary, parse_request, replay

SOURCE = "bench.replay.source.v1"
RAW_TARGET = "bench.replay.raw.v1"
REPLAY_TARGET = "bench.replay.into.v1"
TOPICS = [SOURCE, RAW_TARGET, REPLAY_TARGET]
# Fewer records than this copy in a fraction of a second, where start-up jitter would dominate.
MIN_RECORDS = 20_000


class _Bar:
    """ops.replay's progress interface over the bench's ``advance`` callable."""

    def __init__(self, advance: Callable[[int], None]) -> None:
        self._advance = advance

    def start(self, description: str, total: int) -> None:
        return None

    def advance(self, offsets: int) -> None:
        self._advance(offsets)

    def finish(self) -> None:
        return None


async def _fill(
    settings: Settings, count: int, shape: dict[str, Any], progress: Callable[[int], None]
) -> None:
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings), acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    values = [os.urandom(shape["value_bytes"]) for _ in range(64)]
    keys = [os.urandom(shape["key_bytes"] // 2).hex().encode()[: shape["key_bytes"]] for _ in range(997)]
    headers = shape["headers"]
    try:
        sent = 0
        while sent < count:
            size = min(2000, count - sent)
            pending = [
                await producer.send(
                    settings.topic(SOURCE), value=values[i % 64], key=keys[(sent + i) % 997], headers=headers
                )
                for i in range(size)
            ]
            await asyncio.gather(*pending)
            sent += size
            progress(size)
    finally:
        await producer.stop()


def fill(settings: Settings, count: int, shape: dict[str, Any], progress: Callable[[int], None]) -> None:
    """Write ``count`` relay-shaped records to the source topic."""
    uvloop.run(_fill(settings, count, shape, progress))


async def _raw_copy(settings: Settings, count: int, progress: Callable[[int], None]) -> float:
    source = settings.topic(SOURCE)
    consumer = AIOKafkaConsumer(
        **aiokafka_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings),
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(source, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        target = settings.topic(RAW_TARGET)
        started = time.perf_counter()
        copied = 0
        while copied < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            pending = [
                await producer.send(
                    target, value=r.value, key=r.key, headers=list(r.headers), partition=r.partition
                )
                for records in batches.values()
                for r in records
            ]
            await asyncio.gather(*pending)
            copied += len(pending)
            progress(len(pending))
        return copied / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()


def raw_copy(settings: Settings, count: int, progress: Callable[[int], None]) -> float:
    """Records/s of the plain aiokafka consume+produce loop over the source topic."""
    return uvloop.run(_raw_copy(settings, count, progress))


def replay_copy(settings: Settings, progress: Callable[[int], None]) -> ReplaySummary:
    """``ledgerflow replay --topic <source> --into-topic <target>``, in-process."""
    return replay(settings, parse_request(SOURCE, into_topic=REPLAY_TARGET), _Bar(progress))
