"""The engine's one Kafka adapter: how every process builds its producers and consumers, lists
partitions and reads end offsets, and the errors it reports when Kafka fails.

- Producers come from named profiles (`PRODUCER_PROFILES`): every producer of the code base is
  idempotent with acks=all, so a send retried after a lost acknowledgement is not written twice and
  a write counts only once min.insync.replicas brokers have it. "bulk" adds the relay's batching.
- Consumers get the connection, security and auto-commit-off options here; each caller keeps its
  own group and fetch sizes.
- Partition listing describes the whole cluster and filters, and never names a topic in a metadata
  request: on a broker with auto.create.topics.enable, asking about a missing topic creates it.
  Creating topics is `engine.kafka_admin.ensure_topics` (its errors mapped the same way).
- aiokafka's exceptions are mapped here (`raise ... from exc`) to `KafkaUnavailable`,
  `TopicNotFound` or `KafkaRequestFailed`, caught together as `KAFKA_ERRORS`; callers translate those into
  their own messages.

Connection and SASL settings still come from engine/kafka_clients.py (also used by faust and
confluent-kafka clients, which this adapter does not wrap).
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any, Final, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NoBrokersAvailable,
    NodeNotReadyError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)

from engine.config import Settings
from engine.errors import ConfigurationError, Unavailable
from engine.kafka_clients import aiokafka_kwargs, aiokafka_security


class KafkaUnavailable(Unavailable, RuntimeError):
    """The cluster could not be reached or did not answer in time: an outage, wait and retry."""


class TopicNotFound(ConfigurationError, RuntimeError):
    """A topic the caller needs does not exist."""

    def __init__(self, topic: str, bootstrap: str) -> None:
        super().__init__(f"no topic {topic} on {bootstrap}")
        self.topic = topic
        self.bootstrap = bootstrap


class KafkaRequestFailed(ConfigurationError, RuntimeError):
    """The cluster answered with an error (authorisation, an invalid request, ...): retrying the same
    request will not help until the deployment changes."""


# The adapter's errors sit in two families of engine/errors.py (an outage, or a deployment the
# broker refuses), so they share no class of their own: catch them with this tuple.
KafkaAdapterError = KafkaUnavailable | TopicNotFound | KafkaRequestFailed
KAFKA_ERRORS: Final = (KafkaUnavailable, TopicNotFound, KafkaRequestFailed)


_UNREACHABLE: Final = (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    NoBrokersAvailable,
    RequestTimedOutError,
    OSError,
    TimeoutError,
)


def translate(exc: BaseException, bootstrap: str) -> KafkaAdapterError:
    """The adapter's error for an aiokafka (or socket) error raised talking to ``bootstrap``."""
    if isinstance(exc, KAFKA_ERRORS):
        return exc
    if isinstance(exc, UnknownTopicOrPartitionError):
        return KafkaRequestFailed(f"Kafka at {bootstrap}: unknown topic or partition ({exc})")
    if isinstance(exc, _UNREACHABLE):
        return KafkaUnavailable(f"Kafka at {bootstrap} is not reachable: {exc}")
    return KafkaRequestFailed(f"Kafka at {bootstrap} refused the request: {exc}")


# -- producers ---------------------------------------------------------------------------------

ProducerProfile = Literal["reliable", "bulk"]

PRODUCER_PROFILES: Final[Mapping[str, Mapping[str, Any]]] = {
    # Dead letters, connector jobs and redrives: few records, each must land exactly once.
    "reliable": {"acks": "all", "enable_idempotence": True},
    # The relay's settings (bench figures depend on them): 256 KiB batches, no compression (gzip
    # cost the relay 8% more CPU; 64 KiB or 1 MiB batches made no difference: docs/performance.md).
    # The relay closes its batches when full; linger (a short one fills batches under load without
    # delaying a lone event noticeably) serves send() callers such as replay; 30 s covers a leader
    # election.
    "bulk": {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30_000,
    },
}


def producer_options(settings: Settings, profile: ProducerProfile, **overrides: Any) -> dict[str, Any]:
    """The AIOKafkaProducer keyword arguments of ``profile`` (plus ``overrides``)."""
    if profile not in PRODUCER_PROFILES:
        raise ValueError(f"unknown producer profile {profile!r}; known: {', '.join(PRODUCER_PROFILES)}")
    return aiokafka_kwargs(settings, **{**PRODUCER_PROFILES[profile], **overrides})


async def start_producer(settings: Settings, profile: ProducerProfile, **overrides: Any) -> AIOKafkaProducer:
    """A started producer of ``profile``; `KafkaUnavailable` (nothing left open) if it cannot start."""
    producer = AIOKafkaProducer(**producer_options(settings, profile, **overrides))
    try:
        await producer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        raise translate(exc, settings.kafka_bootstrap) from exc
    return producer


# -- partitioning --------------------------------------------------------------------------------

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{n}I") for n in range(64)]


def murmur2_python(data: bytes) -> int:
    """Kafka's murmur2 hash of a key (org.apache.kafka.common.utils.Utils.murmur2, unsigned), as
    aiokafka's default partitioner computes it, reading four bytes at a time with ``struct``: about
    half the time of aiokafka's byte-by-byte version (tests/unit/test_partitioning.py compares the
    two on random keys). ``murmur2`` is the C build of the same walk when it is built."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    whole = length & ~3
    words = length >> 2
    unpack = _WORDS[words].unpack if words < 64 else struct.Struct(f"<{words}I").unpack
    for k in unpack(data[:whole]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    extra = length & 3
    if extra >= 3:
        h ^= data[whole + 2] << 16
    if extra >= 2:
        h ^= data[whole + 1] << 8
    if extra >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


try:
    # ~0.05 µs against ~2 µs a key, about 6 % of the relay encoders' CPU per event
    # (docs/performance.md, "relay-murmur2"). Built by `pip install -e .`.
    from engine._native_kafka import murmur2
except ImportError:  # an install that skipped the C build
    murmur2 = murmur2_python


def partition_for(key: bytes, partitions: list[int]) -> int:
    """The partition aiokafka's (and the Java client's) default partitioner gives a keyed message:
    ``partitions`` sorted by id, all of the topic's, available or not."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


# -- consumers ---------------------------------------------------------------------------------


def consumer(
    settings: Settings, *topics: str, group_id: str | None = None, **options: Any
) -> AIOKafkaConsumer:
    """An unstarted consumer with auto-commit off (the engine commits or stores positions itself)
    and the caller's ``options`` (fetch sizes, auto_offset_reset, ...)."""
    return AIOKafkaConsumer(
        *topics, **aiokafka_kwargs(settings, group_id=group_id, enable_auto_commit=False, **options)
    )


# -- admin, partitions and offsets -------------------------------------------------------------


@contextlib.asynccontextmanager
async def admin_client(
    bootstrap: str, timeout_ms: int = 10000, security: Mapping[str, Any] | None = None
) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client (raw: its errors are aiokafka's; callers map them with `translate`)."""
    # ``security``: the engine's credentials (engine.kafka_clients) when talking to the configured
    # cluster; the local stack's own brokers speak PLAINTEXT.
    client = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **(security or {})
    )
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def topic_partitions(
    settings: Settings, wanted: re.Pattern[str] | Collection[str] | None = None
) -> dict[str, list[TopicPartition]]:
    """The sorted partitions of every existing topic whose full name is in (or matches) ``wanted``
    (all topics if None). Never creates a topic."""
    described = await partitions_at(settings.kafka_bootstrap, aiokafka_security(settings))

    def chosen(topic: str) -> bool:
        if wanted is None:
            return True
        if isinstance(wanted, re.Pattern):
            return wanted.match(topic) is not None
        return topic in wanted

    return {topic: partitions for topic, partitions in described.items() if chosen(topic)}


async def partitions_at(
    bootstrap: str, security: Mapping[str, Any] | None = None, timeout_ms: int = 10_000
) -> dict[str, list[TopicPartition]]:
    """The sorted partitions of every topic of the cluster at ``bootstrap`` (the local stack asks
    its own PLAINTEXT brokers this way, without the engine's settings)."""
    try:
        async with admin_client(bootstrap, timeout_ms, security) as admin:
            described = await admin.describe_topics()
    except (KafkaError, OSError) as exc:
        raise translate(exc, bootstrap) from exc
    return {
        t["topic"]: sorted(TopicPartition(t["topic"], p["partition"]) for p in t["partitions"])
        for t in described
    }


async def require_partitions(settings: Settings, names: Collection[str]) -> dict[str, list[TopicPartition]]:
    """Like `topic_partitions` for ``names``, but `TopicNotFound` for the first of them missing."""
    found = await topic_partitions(settings, set(names))
    for name in names:
        if name not in found:
            raise TopicNotFound(name, settings.kafka_bootstrap)
    return found


async def offsets(
    settings: Settings, partitions: Collection[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(beginning, end) offsets of ``partitions``, read with a short-lived consumer."""
    tps = list(partitions)
    if not tps:
        return {}, {}
    reader = consumer(settings)
    try:
        await reader.start()
        # Without the topics in its metadata, end_offsets waits for a periodic metadata refresh
        # (about 2 s per call, measured in ops/lag.py); asking for them first answers at once.
        await reader._client.set_topics(sorted({tp.topic for tp in tps}))
        begin = await reader.beginning_offsets(tps)
        end = await reader.end_offsets(tps)
    except (KafkaError, OSError) as exc:
        raise translate(exc, settings.kafka_bootstrap) from exc
    finally:
        await reader.stop()
    return begin, end


async def end_offsets(
    settings: Settings, partitions: Collection[TopicPartition]
) -> dict[TopicPartition, int]:
    """The end offset (the next offset to be written) of each of ``partitions``."""
    return (await offsets(settings, partitions))[1]
