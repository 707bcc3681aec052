"""The connector runtime against the real Kafka and PostgreSQL, with a fake provider behind our own interface.

Delays are seconds long here (RetryPolicy built with seconds, breaker open for 3 s) so that the
same code paths as production's minutes run within a test's time.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError, RetryableError
from engine import kafka
from engine.config import Settings
from streams.connectors import (
    BreakerSettings,
    ConnectorSpec,
    ConnectorWorker,
    FailureSink,
    Job,
    JobHandler,
    JobResult,
    RetryPolicy,
    dlq_discard,
    dlq_list,
    dlq_redrive,
    publish_job,
    render_dead_letter,
    render_dlq_list,
    render_status,
    status,
)
from tests.conftest import BackgroundLoop, wait_for

pytestmark = pytest.mark.integration

TENANT = "7d1c1a52-3f2e-4a55-9f7b-1b2f6f0d8c11"


@dataclass(frozen=True)
class Call:
    job_id: str
    attempt: int
    at: float  # wall clock: not-before is wall clock too


class FakeProvider(JobHandler):
    """Answers each job with its scripted errors, in order, then success; remembers every call."""

    def __init__(self, script: dict[str, list[ConnectorError]] | None = None) -> None:
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.calls: list[Call] = []
        self.succeeded: dict[str, int] = {}  # job id -> attempt that succeeded
        self.fail_everything_with: ConnectorError | None = None
        self._lock = threading.Lock()

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        with self._lock:
            self.calls.append(Call(job.job_id, attempt, time.time()))
            planned = self.script.get(job.job_id)
            error = planned.pop(0) if planned else self.fail_everything_with
            if error is None:
                self.succeeded[job.job_id] = attempt
        if error is not None:
            raise error
        return JobResult({"irn": f"irn-{job.job_id}"})

    def calls_of(self, job_id: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.job_id == job_id]


@dataclass
class RecordingSink(FailureSink):
    failures: list[tuple[str, str, int]] = field(default_factory=list)

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        self.failures.append((job.job_id, error.code, attempts))


def job(job_id: str, subject: str | None = None) -> Job:
    return Job(job_id, "fake", "generate_irn", TENANT, subject or str(uuid.uuid4()), {"invoice": job_id})


async def _publish(settings: Settings, jobs: list[Job], raw: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for j in jobs:
            await publish_job(producer, settings, j)
        for value in raw:
            await producer.send_and_wait(settings.topic("connector.fake.jobs.v1"), value=value, key=b"x")
    finally:
        await producer.stop()


def publish(settings: Settings, *jobs: Job, raw: tuple[bytes, ...] = ()) -> None:
    asyncio.run(_publish(settings, list(jobs), list(raw)))


async def _records_in(settings: Settings, logical_topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        topic = settings.topic(logical_topic)
        tps = (await kafka.topic_partitions(settings, re.compile(re.escape(topic) + "$")))[topic]
        end = await consumer.end_offsets(tps)
        return sum(end.values())
    finally:
        await consumer.stop()


def records_in(settings: Settings, logical_topic: str) -> int:
    return asyncio.run(_records_in(settings, logical_topic))


@pytest.fixture
def run_workers(settings: Settings, background: BackgroundLoop) -> Iterator[Any]:
    """Start connector workers in the background; waits until they hold partitions."""
    started: list[ConnectorWorker] = []

    def start(spec: ConnectorSpec, count: int = 1) -> list[ConnectorWorker]:
        workers = [ConnectorWorker(settings, [spec]) for _ in range(count)]
        for w in workers:
            background.start(w.run)
        started.extend(workers)
        jobs_topic = settings.topic(f"connector.{spec.name}.jobs.v1")

        def all_hold_jobs_partitions() -> bool:
            background.check()
            return all(any(t == jobs_topic for t, _ in w.assigned().get(spec.name, [])) for w in workers)

        wait_for(all_hold_jobs_partitions, timeout=60, what=f"{count} worker(s) holding jobs partitions")
        return workers

    yield start
    background.check()


def test_a_job_that_fails_twice_goes_through_two_delay_topics_and_succeeds_on_attempt_3(
    settings: Settings, run_workers: Any
) -> None:
    provider = FakeProvider({"j1": [RetryableError("http_503", "busy"), RetryableError("timeout", "slow")]})
    run_workers(ConnectorSpec("fake", provider, RetryPolicy((1.0, 2.0))))

    publish(settings, job("j1"))

    wait_for(lambda: "j1" in provider.succeeded, what="job j1 succeeding")
    calls = provider.calls_of("j1")
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert calls[1].at - calls[0].at >= 1.0, "attempt 2 came before its not-before"
    assert calls[2].at - calls[1].at >= 2.0, "attempt 3 came before its not-before"
    assert records_in(settings, "connector.fake.retry.1s.v1") == 1
    assert records_in(settings, "connector.fake.retry.2s.v1") == 1
    assert records_in(settings, "connector.fake.dlq.v1") == 0


def test_exhausted_retries_go_to_the_dlq_with_context_headers_and_the_failure_sink_is_told_once(
    settings: Settings, run_workers: Any
) -> None:
    sink = RecordingSink()
    provider = FakeProvider()
    provider.fail_everything_with = RetryableError("http_502", "bad gateway")
    run_workers(ConnectorSpec("fake", provider, RetryPolicy((0.0, 1.0)), on_failure=sink))

    publish(settings, job("j1"))

    letters = wait_for(lambda: dlq_list(settings, "fake"), what="a dead letter")
    [letter] = letters
    assert [c.attempt for c in provider.calls_of("j1")] == [1, 2, 3]
    assert (letter.job_id, letter.kind, letter.tenant_id) == ("j1", "generate_irn", TENANT)
    assert (letter.error_class, letter.error_code, letter.error_message) == (
        "retryable",
        "http_502",
        "bad gateway",
    )
    assert letter.attempts == 3
    assert letter.state == "pending"
    assert letter.original.startswith(settings.topic("connector.fake.retry.1s.v1"))
    headers = dict(letter.headers)
    for name in (
        "original-topic",
        "original-partition",
        "original-offset",
        "connector",
        "attempts",
        "error-class",
        "error-code",
        "error-message",
        "first-failure-at",
        "last-failure-at",
        "failed-at",
    ):
        assert headers.get(name), f"dead letter lacks header {name}: {sorted(headers)}"
    assert headers["connector"] == b"fake"
    assert headers["first-failure-at"] < headers["last-failure-at"]
    wait_for(lambda: sink.failures, what="the failure sink being called")
    assert sink.failures == [("j1", "http_502", 3)]
    [fake] = wait_for(lambda: [s for s in status(settings) if s.in_flight == 0], what="status settled")
    assert fake.dlq_depth == 1
    assert fake.attempts_last_hour == 3
    assert fake.success_rate == 0.0
    assert "0.0% of 3" in render_status([fake])
    assert "http_502" in render_dlq_list(letters)
    assert "original-offset: " in render_dead_letter(letter)


def test_permanent_and_needs_attention_errors_and_undecodable_jobs_go_to_the_dlq_at_once(
    settings: Settings, run_workers: Any
) -> None:
    sink = RecordingSink()
    provider = FakeProvider(
        {
            "bad-gstin": [PermanentError("2172", "invalid buyer GSTIN")],
            "expired-token": [NeedsAttentionError("1005", "invalid token")],
        }
    )
    run_workers(ConnectorSpec("fake", provider, RetryPolicy((1.0,)), on_failure=sink))

    publish(settings, job("bad-gstin"), job("expired-token"), raw=(b"not json",))

    letters = wait_for(
        lambda: len(dlq_list(settings, "fake")) == 3 and dlq_list(settings, "fake"), what="3 dead letters"
    )
    by_code = {d.error_code: d for d in letters}
    assert by_code["2172"].error_class == "permanent" and by_code["2172"].attempts == 1
    assert by_code["1005"].error_class == "needs_attention" and by_code["1005"].attempts == 1
    assert by_code["undecodable_job"].error_class == "permanent"
    assert len(provider.calls) == 2
    assert sorted(sink.failures) == [("bad-gstin", "2172", 1), ("expired-token", "1005", 1)]
    assert records_in(settings, "connector.fake.retry.1s.v1") == 0


def test_a_providers_retry_after_is_honoured_in_a_delay_topic_long_enough(
    settings: Settings, run_workers: Any
) -> None:
    provider = FakeProvider({"j1": [RetryableError("http_429", "slow down", retry_after=2.5)]})
    run_workers(ConnectorSpec("fake", provider, RetryPolicy((1.0, 4.0))))

    publish(settings, job("j1"))

    wait_for(lambda: "j1" in provider.succeeded, what="job j1 succeeding")
    first, second = provider.calls_of("j1")
    assert second.attempt == 2
    assert second.at - first.at >= 2.5, "Retry-After of 2.5 s not honoured"
    assert records_in(settings, "connector.fake.retry.4s.v1") == 1
    assert records_in(settings, "connector.fake.retry.1s.v1") == 0


def test_five_failures_open_the_circuit_and_jobs_wait_for_it_without_using_attempts(
    settings: Settings, run_workers: Any
) -> None:
    provider = FakeProvider({f"down-{i}": [RetryableError("http_503", "down")] for i in range(5)})
    breaker = BreakerSettings(failure_threshold=5, open_for=3.0, probe_wait=0.5)
    run_workers(ConnectorSpec("fake", provider, RetryPolicy((1.0, 1.0)), breaker=breaker))

    publish(settings, *(job(f"down-{i}") for i in range(5)))

    def open_circuits() -> list[Any]:
        return [c for s in status(settings) for c in s.circuits if c.state == "open"]

    [circuit] = wait_for(open_circuits, what="the circuit opening")
    assert circuit.tenant_id == TENANT
    assert circuit.consecutive_failures >= 5
    opened = max(c.at for c in provider.calls)
    publish(settings, *(job(f"late-{i}") for i in range(3)))

    everything = [f"down-{i}" for i in range(5)] + [f"late-{i}" for i in range(3)]
    wait_for(
        lambda: all(j in provider.succeeded for j in everything), timeout=45, what="every job succeeding"
    )
    assert {j: provider.succeeded[j] for j in everything} == {
        **{f"down-{i}": 2 for i in range(5)},
        **{f"late-{i}": 1 for i in range(3)},
    }, "waiting for the circuit used up attempts"
    after = [c for c in provider.calls if c.at > opened]
    assert min(c.at for c in after) >= opened + 3.0 - 0.05, (
        "the provider was called while the circuit was open"
    )
    wait_for(lambda: not [c for s in status(settings) for c in s.circuits], what="the circuit closing")


def test_two_workers_sharing_a_connector_never_exceed_its_rate_limit(
    settings: Settings, run_workers: Any
) -> None:
    provider = FakeProvider()
    run_workers(ConnectorSpec("fake", provider, RetryPolicy((1.0,)), rate_limit_per_s=5), count=2)

    jobs = [job(f"j{i}") for i in range(25)]
    publish(settings, *jobs)

    wait_for(lambda: len(provider.succeeded) == 25, timeout=60, what="25 jobs succeeding")
    times = sorted(c.at for c in provider.calls)
    busiest = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert busiest <= 5, f"{busiest} calls within one second with a limit of 5/s"


def test_a_redriven_dead_letter_completes_and_is_not_redriven_twice(
    settings: Settings, run_workers: Any
) -> None:
    provider = FakeProvider({"j1": [PermanentError("2172", "invalid buyer GSTIN")]})
    run_workers(ConnectorSpec("fake", provider, RetryPolicy((1.0,))))
    publish(settings, job("j1"))
    [letter] = wait_for(lambda: dlq_list(settings, "fake"), what="a dead letter")

    report = dlq_redrive(settings, "fake", "all")

    assert report.done == [letter.offset], str(report)
    wait_for(lambda: "j1" in provider.succeeded, what="the redriven job succeeding")
    assert [c.attempt for c in provider.calls_of("j1")] == [1, 1], "a redrive starts again at attempt 1"
    again = dlq_redrive(settings, "fake", "all")
    assert again.done == [] and again.skipped == {letter.offset: "already redriven"}, str(again)
    discarded = dlq_discard(settings, "fake", [letter.offset, 99])
    assert discarded.done == [] and discarded.missing == [99], str(discarded)
    assert [d.state for d in dlq_list(settings, "fake")] == ["redriven"]
    assert status(settings)[0].dlq_depth == 0
    assert len(provider.calls_of("j1")) == 2
