"""Offsets committed to a consumer group the committing consumer is not a member of.

A runner that drives several projections reads with one shared group, but ``ledgerflow lag``, the
consumer health check and the metrics look at each projection's own group
(``ledgerflow.projection.<name>``). Kafka accepts an OffsetCommit for a group without members when
it carries generation -1 and no member id (the "simple consumer" commit of the Kafka protocol's
OffsetCommit API, the form a standalone consumer uses); a group that does have members (an older
per-projection runner still running) refuses it, which only costs visibility: positions are kept
in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.client import ConnectionGroup, CoordinationType
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.commit import OffsetCommitRequest

log = logging.getLogger("ledgerflow.projections")

_coordinators: dict[str, int] = {}


async def commit_group_offsets(consumer: Any, group: str, offsets: dict[tuple[str, int], int]) -> bool:
    """Commit ``offsets`` (last applied offset per (topic, partition)) as ``group``'s next offsets,
    through ``consumer``'s connections. Returns False (and logs) if Kafka refused it."""
    if not offsets:
        return True
    client = consumer._client  # aiokafka's AIOKafkaClient: its connections and metadata
    by_topic: dict[str, list[tuple[int, int, str]]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, []).append((partition, offset + 1, ""))
    request = OffsetCommitRequest(
        group,
        OffsetCommitRequest.DEFAULT_GENERATION_ID,
        "",
        OffsetCommitRequest.DEFAULT_RETENTION_TIME,
        list(by_topic.items()),
    )
    try:
        node = _coordinators.get(group)
        if node is None:
            node = _coordinators[group] = await client.coordinator_lookup(CoordinationType.GROUP, group)
        response = await client.send(node, request, group=ConnectionGroup.COORDINATION)
    except KafkaError as exc:
        _coordinators.pop(group, None)
        log.info("could not commit %s's offsets (%s); positions are safe in PostgreSQL", group, exc)
        return False
    errors = {for_code(code).__name__ for _, parts in response.topics for _, code in parts if code}
    if errors:
        _coordinators.pop(group, None)  # a moved coordinator answers NotCoordinator: ask again next time
        log.info("Kafka refused %s's offsets (%s); positions are safe in PostgreSQL", group, sorted(errors))
        return False
    return True


async def find_coordinators(consumer: Any, groups: list[str]) -> None:
    """Look up the coordinator of every group in ``groups`` at once, before the first commit.

    The lookup goes to the broker over the connection that also carries the consumer's fetches, and
    a broker answers one connection's requests in order: behind a fetch waiting for new records
    (``fetch_max_wait_ms``, 500 ms) each lookup waited that long. Looked up one after another at
    the first commit, the five projections' groups and the shared one held a fresh projector's
    second batch for about 3 s (bench of 2026-12-03). A failed lookup is left to the first commit."""
    client = consumer._client
    missing = [g for g in dict.fromkeys(groups) if g not in _coordinators]
    found = await asyncio.gather(
        *(client.coordinator_lookup(CoordinationType.GROUP, g) for g in missing), return_exceptions=True
    )
    for group, node in zip(missing, found, strict=True):
        if isinstance(node, BaseException):
            if not isinstance(node, Exception):
                raise node
            log.info("no coordinator for %s yet (%s); the first commit asks again", group, node)
        else:
            _coordinators[group] = node
