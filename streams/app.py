"""The faust application: one per worker process, built from the settings.

At-least-once processing (faust's default); effects are idempotent (ce_id as idempotency key),
so a redelivered message after a crash creates nothing new. faust's exactly_once mode is not used:
see the architecture guide for the duplicate/crash reports against it.
"""

from __future__ import annotations

import faust

from engine.config import Settings


def create_app(settings: Settings, *, app_id: str = "ledgerflow-streams") -> faust.App:
    datadir = settings.var_dir / "faust" / f"{settings.topic_prefix}{app_id}-data"
    datadir.parent.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        f"{settings.topic_prefix}{app_id}",
        broker=f"kafka://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
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
    from streams import einvoicing, ingest

    ingest.register(app, settings)
    einvoicing.register(app, settings)
    return app
