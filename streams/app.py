"""The faust application: one per worker process, built from the settings.

At-least-once processing (faust's default); effects are idempotent (ce_id as idempotency key),
so a redelivered message after a crash creates nothing new. faust's exactly_once mode is not used:
see the architecture guide for the duplicate/crash reports against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer as FaustAIOKafkaProducer
from faust.types import ProducerT

from engine import kafka, kafka_admin, kafka_clients
from engine.config import Settings


class IdempotentProducer(FaustAIOKafkaProducer):
    """faust's aiokafka producer with Kafka's idempotence and acks=all, as every producer of the
    engine has: a send retried after a lost acknowledgement (a broker killed mid-request) is not
    written twice, and a write counts only once min.insync.replicas brokers have it. faust turns
    idempotence on only inside its exactly_once transactions, which we do not use."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), **kafka.PRODUCER_PROFILES["reliable"]}


class LedgerflowApp(faust.App):
    """The faust app with `IdempotentProducer` as its producer."""

    def _new_producer(self) -> ProducerT:
        return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)


def create_app(settings: Settings, *, app_id: str = "ledgerflow-streams") -> faust.App:
    datadir = settings.var_dir / "faust" / f"{settings.topic_prefix}{app_id}-data"
    datadir.parent.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    # faust creates some topics itself (its partition assignor's leader topic, table changelogs):
    # they get the replication of the engine's own topics, so losing a broker never strands them.
    replication = kafka_admin.topic_replication(settings)
    app = LedgerflowApp(
        f"{settings.topic_prefix}{app_id}",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=kafka_clients.faust_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=replication.factor,
        producer_acks=-1,  # acks=all (IdempotentProducer insists on it too)
        store="memory://",
        # faust keeps a per-app directory even with in-memory tables; by default it lands in the
        # working directory (the repository, for tests and `make run`).
        datadir=str(datadir),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=500,
        broker_commit_interval=1.0,
        # faust's default session timeout (60 s) leaves a crashed worker's partitions idle for a
        # minute before the group reassigns them (measured in the crash tests); 10 s is Kafka's default.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
    from streams import ingest, router

    ingest.register(app, settings)
    router.register(app, settings)
    return app
