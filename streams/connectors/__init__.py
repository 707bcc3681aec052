"""The connector runtime: job topics, retries through delay topics, DLQ, circuit breakers, rate limits.

Where things are::

    jobs.py        Job, JobResult, JobHandler, FailureSink, publish_job (the job record and its headers)
    spec.py        ConnectorSpec, topics_for, ensure_connector_topics
    retry.py       RetryPolicy and the next step after a failure (pure)
    breaker.py     circuit breaker state machine (pure)
    attempts.py    attempts and circuits in PostgreSQL
    rate_limit.py  per-connector rate limit in PostgreSQL
    worker.py      ConnectorWorker: the consumers
    ops.py         status, render_status, dlq_list/show/redrive/discard
    runtime.sql    the tables
"""

from streams.connectors.breaker import BreakerSettings, CircuitState
from streams.connectors.jobs import FailureSink, Job, JobHandler, JobResult, publish_job
from streams.connectors.ops import (
    ConnectorStatus,
    DeadLetter,
    DlqReport,
    dlq_discard,
    dlq_list,
    dlq_redrive,
    dlq_show,
    render_dead_letter,
    render_dlq_list,
    render_status,
    status,
)
from streams.connectors.retry import RetryPolicy
from streams.connectors.spec import ConnectorSpec, ensure_connector_topics, topics_for
from streams.connectors.worker import ConnectorWorker

__all__ = [
    "BreakerSettings",
    "CircuitState",
    "ConnectorSpec",
    "ConnectorStatus",
    "ConnectorWorker",
    "DeadLetter",
    "DlqReport",
    "FailureSink",
    "Job",
    "JobHandler",
    "JobResult",
    "RetryPolicy",
    "dlq_discard",
    "dlq_list",
    "dlq_redrive",
    "dlq_show",
    "ensure_connector_topics",
    "publish_job",
    "render_dead_letter",
    "render_dlq_list",
    "render_status",
    "status",
    "topics_for",
]
