"""Kafka topic administration for the engine's processes: creating missing topics and choosing
their replication. The write side, the stream workers and the operator tooling all create topics
(``ledgerflow topics ensure``, a connector's retry tiers, faust's own topics), so this lives in the
core beside engine/kafka_clients.py; the local stack (ops/stack.py) re-exports it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from engine import kafka_clients
from engine.config import Settings
from engine.kafka import KafkaRequestFailed, admin_client, translate

# Kafka error code for "topic already exists": a concurrent creator (or auto-creation) won the race.
_TOPIC_ALREADY_EXISTS = 36

T = TypeVar("T")


class TopicsNotCreated(KafkaRequestFailed):
    """The broker refused to create one or more topics (the message names each with its error code)."""


def _say(message: str) -> None:
    # `ledgerflow topics ensure` prints what it found; unbuffered, like the local stack's progress.
    print(message, flush=True)


def ensure_topics(settings: Settings, names: list[str], partitions: int) -> list[str]:
    """Create the topics in ``names`` that do not exist yet; return the names it created.

    New topics are replicated as `topic_replication` decides (one replica on the single local
    broker, three with min.insync.replicas=2 on a cluster of three or more). Existing topics are
    left as they are (a different partition count or replication factor is reported, not changed:
    adding partitions would move keys to other partitions and break per-aggregate order).
    """
    unique = list(dict.fromkeys(names))
    try:
        return run_sync(
            _ensure_topics(
                settings.kafka_bootstrap,
                unique,
                partitions,
                settings.replication_factor,
                kafka_clients.aiokafka_security(settings),
            )
        )
    except (KafkaError, OSError) as exc:  # the adapter's errors (engine/kafka.py), not aiokafka's
        raise translate(exc, settings.kafka_bootstrap) from exc


@dataclass(frozen=True)
class TopicReplication:
    """How the engine's topics are replicated on a given cluster."""

    factor: int
    # With acks=all, a write is acknowledged once this many replicas have it; below this many
    # in-sync replicas the partition refuses writes instead of accepting them on too few copies.
    min_insync_replicas: int


def replication_for(brokers: int, configured: int | None = None) -> TopicReplication:
    """Replication for new topics: ``configured`` (LEDGERFLOW_REPLICATION_FACTOR) if set, else as
    many replicas as brokers, up to three. min.insync.replicas is one less than the factor, at
    most two: RF 3 / ISR 2 is the usual production pair (a write survives one broker loss and the
    topic stays writable while one broker is down); RF 1 keeps the single-broker stack as it was."""
    factor = configured if configured is not None else max(1, min(3, brokers))
    return TopicReplication(factor=factor, min_insync_replicas=max(1, min(2, factor - 1)))


def topic_replication(settings: Settings) -> TopicReplication:
    """`replication_for` the cluster at ``settings.kafka_bootstrap`` (asked only when the setting
    leaves it open); faust uses it for the topics it creates itself."""
    if settings.replication_factor is not None:
        return replication_for(0, settings.replication_factor)
    try:
        brokers = run_sync(broker_count(settings.kafka_bootstrap, kafka_clients.aiokafka_security(settings)))
    except (KafkaError, OSError) as exc:
        raise translate(exc, settings.kafka_bootstrap) from exc
    return replication_for(brokers)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even when a loop is already running.

    The CLI calls us without a loop; async tests and faust apps call us with one, where
    ``asyncio.run`` is not allowed, so the coroutine then gets a private loop in a thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="ledgerflow-kafka-admin")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


async def broker_count(bootstrap: str, security: Mapping[str, Any] | None = None) -> int:
    async with admin_client(bootstrap, 5000, security) as admin:
        cluster = await admin.describe_cluster()
    return len(cluster["brokers"])


async def _ensure_topics(
    bootstrap: str,
    names: list[str],
    partitions: int,
    replication_factor: int | None,
    security: Mapping[str, Any] | None = None,
) -> list[str]:
    async with admin_client(bootstrap, security=security) as admin:
        described = await admin.describe_topics()
        existing = {t["topic"]: len(t["partitions"]) for t in described}
        replicas = {
            t["topic"]: max((len(p["replicas"]) for p in t["partitions"]), default=0) for t in described
        }
        missing = [n for n in names if n not in existing]
        brokers = len((await admin.describe_cluster())["brokers"])
        replication = replication_for(brokers, replication_factor)
        for name in names:
            if name in existing and existing[name] != partitions:
                _say(f"topics: {name} has {existing[name]} partitions (wanted {partitions}); left as is")
            if name in existing and replicas[name] < replication.factor:
                wanted = replication.factor
                _say(f"topics: {name} has {replicas[name]} replica(s) (wanted {wanted}); left as is")
        if not missing:
            return []
        # Only a replicated topic gets its own min.insync.replicas: a single replica keeps the
        # broker's defaults, exactly as the single-broker stack always had them.
        configs = (
            {"min.insync.replicas": str(replication.min_insync_replicas)} if replication.factor > 1 else {}
        )
        response = await admin.create_topics(
            [
                NewTopic(
                    name=n,
                    num_partitions=partitions,
                    replication_factor=replication.factor,
                    topic_configs=configs,
                )
                for n in missing
            ]
        )
    created: list[str] = []
    failures: list[str] = []
    for topic_error in response.topic_errors:
        topic, code = topic_error[0], topic_error[1]
        if code == 0:
            created.append(topic)
        elif code != _TOPIC_ALREADY_EXISTS:
            message = topic_error[2] if len(topic_error) > 2 else ""
            failures.append(f"{topic}: error {code} {message or ''}".strip())
    if failures:
        raise TopicsNotCreated("could not create topics: " + "; ".join(failures))
    await _until_described(bootstrap, created, partitions, security)
    return sorted(created, key=missing.index)


async def _until_described(
    bootstrap: str,
    names: list[str],
    partitions: int,
    security: Mapping[str, Any] | None,
    timeout_s: float = 30.0,
) -> None:
    """Wait until a fresh metadata request lists every topic in ``names`` with all its partitions led.

    KRaft acknowledges CreateTopics before every broker's metadata cache holds the topic, so a reader
    started right after (a rebuild, a partition listing) could be told it does not exist; CI met that
    under parallel load. Gives up quietly after ``timeout_s``: the topics exist, only slow to show."""
    wanted = set(names)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while wanted:
        async with admin_client(bootstrap, security=security) as admin:
            described = [t for t in await admin.describe_topics() if t["topic"] in wanted]
        for t in described:
            led = [p for p in t["partitions"] if p.get("leader", -1) >= 0]
            if t.get("error_code", 0) == 0 and len(led) >= partitions:
                wanted.discard(t["topic"])
        if not wanted or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.2)
