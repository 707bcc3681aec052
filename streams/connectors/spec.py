"""A connector as the runtime sees it: a name, a handler and how to treat its failures; and its topics."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine import kafka_admin
from engine.config import Settings
from streams.connectors.breaker import BreakerSettings
from streams.connectors.jobs import AlertSink, FailureSink, JobHandler, jobs_topic
from streams.connectors.retry import RetryPolicy, label

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

# Kafka Connect creates its dead-letter topics with one partition: the DLQ is small, read by people,
# and one partition makes an offset name a record (`ledgerflow dlq show --connector x 12`).
DLQ_PARTITIONS = 1


@dataclass(frozen=True)
class ConnectorSpec:
    name: str
    handler: JobHandler
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    rate_limit_per_s: float | None = None
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    on_failure: FailureSink | None = None
    alerts: AlertSink | None = None
    """Told of dead letters and circuits opening (streams/connectors/health.py); None: no alerts."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"connector name {self.name!r}: use lower case letters, digits, - and _")
        if self.rate_limit_per_s is not None and self.rate_limit_per_s <= 0:
            raise ValueError(f"connector {self.name}: rate_limit_per_s must be > 0 or None (unlimited)")


def retry_topic(name: str, delay: float) -> str:
    return f"connector.{name}.retry.{label(delay)}.v1"


def dlq_topic(name: str) -> str:
    return f"connector.{name}.dlq.v1"


def group_id(settings: Settings, name: str) -> str:
    """The connector's consumer group; carries the topic prefix so that tests cannot share a group."""
    return f"{settings.topic_prefix}ledgerflow.connector.{name}"


def topics_for(spec: ConnectorSpec) -> list[str]:
    """Logical topic names of a connector: jobs, one per delay tier (shortest first), DLQ."""
    tiers = [retry_topic(spec.name, d) for d in spec.retry_policy.tiers()]
    return [jobs_topic(spec.name), *dict.fromkeys(tiers), dlq_topic(spec.name)]


def ensure_connector_topics(
    settings: Settings, specs: Sequence[ConnectorSpec], partitions: int | None = None
) -> list[str]:
    """Create the connectors' missing topics (DLQs with one partition); return the full names created."""
    work: list[str] = []
    dlqs: list[str] = []
    for spec in specs:
        *jobs_and_retries, dlq = topics_for(spec)
        work += [settings.topic(t) for t in jobs_and_retries]
        dlqs.append(settings.topic(dlq))
    created = kafka_admin.ensure_topics(settings, work, partitions or settings.partitions)
    return created + kafka_admin.ensure_topics(settings, dlqs, DLQ_PARTITIONS)
