"""Connector jobs: what a router asks a connector to do, as one JSON record on ``connector.<name>.jobs.v1``.

The record key is the job's subject (the aggregate id) so that one invoice's jobs stay in one
partition, in order. The value never changes between attempts; what changes travels in headers:

* ``attempt``          1-based attempt number this delivery is for
* ``not-before``       epoch milliseconds before which the job must not be attempted
* ``first-failure-at`` / ``last-failure-at``  ISO-8601 UTC times of the job's failures so far
* ``traceparent``      W3C trace context of whatever asked for the job
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import orjson
from aiokafka import AIOKafkaProducer

from connectors.errors import ConnectorError
from engine.config import Settings
from streams.connectors.telemetry import current_traceparent

ATTEMPT = "attempt"
NOT_BEFORE = "not-before"
FIRST_FAILURE_AT = "first-failure-at"
LAST_FAILURE_AT = "last-failure-at"
TRACEPARENT = "traceparent"


@dataclass(frozen=True)
class Job:
    job_id: str
    """Stable across deliveries (e.g. the triggering event's ce_id + kind): the idempotency key."""
    connector: str
    kind: str
    tenant_id: str
    subject: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @staticmethod
    def for_event(
        connector: str, kind: str, *, ce_id: str, tenant_id: str, subject: str, payload: Mapping[str, Any]
    ) -> Job:
        """The job an event asks for; its id is stable so a re-published event makes the same job."""
        return Job(f"{ce_id}:{kind}", connector, kind, tenant_id, subject, payload)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "job_id": self.job_id,
                "connector": self.connector,
                "kind": self.kind,
                "tenant_id": self.tenant_id,
                "subject": self.subject,
                "payload": dict(self.payload),
                "created_at": self.created_at.isoformat(),
            }
        )

    @staticmethod
    def decode(value: bytes | None) -> Job:
        """Raises ``ValueError`` for a value that is not a job."""
        try:
            data = orjson.loads(value or b"")
            return Job(
                job_id=str(data["job_id"]),
                connector=str(data["connector"]),
                kind=str(data["kind"]),
                tenant_id=str(data["tenant_id"]),
                subject=str(data["subject"]),
                payload=dict(data.get("payload") or {}),
                created_at=datetime.fromisoformat(data["created_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a connector job: {exc}") from exc


@dataclass(frozen=True)
class JobResult:
    """What the provider gave back (e.g. ``{"irn": ...}``), for the log and the caller's result command."""

    data: Mapping[str, Any] = field(default_factory=dict)


class JobHandler(Protocol):
    """Does one attempt of a job against the provider.

    Returns on success; raises :class:`connectors.errors.ConnectorError` classified as retryable,
    permanent or needs-attention otherwise. Timeouts belong to the handler's HTTP client.
    """

    async def __call__(self, job: Job, attempt: int) -> JobResult: ...


class FailureSink(Protocol):
    """Told once when a job is given up (dead-lettered), e.g. to record a failure event on the invoice.

    Called in a worker thread, after the dead-letter record is durable.
    """

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None: ...


class AlertSink(Protocol):
    """Where the runtime raises alerts (``LedgerService.raise_alert``): a job dead-lettered, a
    circuit opened. Identical alerts within a window collapse into one (engine/domain/alert.py)."""

    def __call__(
        self,
        tenant_id: UUID,
        *,
        severity: str,
        cause: str,
        subject: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """The headers of one delivery of a job, parsed."""

    attempt: int = 1
    not_before_ms: int = 0
    first_failure_at: str | None = None
    last_failure_at: str | None = None
    traceparent: str | None = None

    @staticmethod
    def parse(headers: Iterable[tuple[str, bytes | None]]) -> Delivery:
        h = {k: (v or b"").decode(errors="replace") for k, v in headers}
        try:
            attempt = max(1, int(h.get(ATTEMPT, "1")))
        except ValueError:
            attempt = 1
        try:
            not_before = int(h.get(NOT_BEFORE, "0"))
        except ValueError:
            not_before = 0
        return Delivery(
            attempt, not_before, h.get(FIRST_FAILURE_AT), h.get(LAST_FAILURE_AT), h.get(TRACEPARENT)
        )

    def headers(self) -> list[tuple[str, bytes]]:
        out = [(ATTEMPT, str(self.attempt)), (NOT_BEFORE, str(self.not_before_ms))]
        if self.first_failure_at:
            out.append((FIRST_FAILURE_AT, self.first_failure_at))
        if self.last_failure_at:
            out.append((LAST_FAILURE_AT, self.last_failure_at))
        if self.traceparent:
            out.append((TRACEPARENT, self.traceparent))
        return [(k, v.encode()) for k, v in out]


def jobs_topic(name: str) -> str:
    return f"connector.{name}.jobs.v1"


async def publish_job(
    producer: AIOKafkaProducer, settings: Settings, job: Job, *, traceparent: str | None = None
) -> None:
    """Queue ``job`` for its connector (attempt 1, due now); returns once Kafka acknowledged it.

    The job's trace continues ``traceparent`` if given, else the caller's current span.
    """
    await producer.send_and_wait(
        settings.topic(jobs_topic(job.connector)),
        value=job.encode(),
        key=job.subject.encode(),
        headers=Delivery(traceparent=traceparent or current_traceparent()).headers(),
    )
