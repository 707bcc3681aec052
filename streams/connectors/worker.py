"""Connector workers: consume each connector's jobs and delay topics, call the provider, route the outcome.

One consumer group per connector (``ledgerflow.connector.<name>``) reading its jobs topic and its
delay topics; several workers in a group share the partitions. Processing is at-least-once: a
message's offset is committed only after its outcome is durable (the provider answered success,
the retry was re-published, or the dead letter was written). Because a job id is stable, a job
redelivered after a crash repeats with the same provider idempotency key.

Order and concurrency: each fetched batch of a partition is handled by one task, message after
message, with the partition paused meanwhile; different partitions (hence different subjects) run
concurrently, up to ``concurrency`` jobs at once per connector.

Nothing here sleeps to wait for a job's time. A delivery whose ``not-before`` is in the future
pauses its partition, and a timer resumes it from that message at that time; delay topics are
filled in not-before order, so the rest of the partition is not due either. A retryable failure
is re-published to the delay topic of its next attempt and the partition moves on. An open circuit
sends the job to wait the same way, keeping its attempt number.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from psycopg_pool import AsyncConnectionPool

from connectors.errors import ConnectorError, ErrorClass, NeedsAttentionError, NotYet, PermanentError
from engine import db, kafka, logs
from engine.config import Settings
from streams.connectors import attempts, health, rate_limit, telemetry
from streams.connectors.breaker import CircuitState
from streams.connectors.jobs import (
    ATTEMPT,
    FIRST_FAILURE_AT,
    LAST_FAILURE_AT,
    NOT_BEFORE,
    TRACEPARENT,
    Delivery,
    Job,
    jobs_topic,
)
from streams.connectors.retry import Retry, choose_tier, next_step
from streams.connectors.spec import (
    ConnectorSpec,
    dlq_topic,
    ensure_connector_topics,
    group_id,
    retry_topic,
)
from streams.dlq import ERROR_HEADERS, dead_letter_headers

log = logging.getLogger("ledgerflow.connectors")

# Headers the runtime owns: rewritten on every re-publish, never copied from the previous delivery.
RUNTIME_HEADERS = frozenset({ATTEMPT, NOT_BEFORE, FIRST_FAILURE_AT, LAST_FAILURE_AT, TRACEPARENT})
DLQ_CONTEXT_HEADERS = frozenset({"connector", "attempts", "error-class", "error-details", *ERROR_HEADERS})
# When an outcome could not be made durable (Kafka or PostgreSQL away), try that message again after this.
OUTCOME_RETRY_S = 5.0
# A message whose processing fails this many times in a row with an error about the message itself
# (PostgreSQL refusing its data, a bug on its content) is dead-lettered as processing_failed, so
# that it cannot hold its partition forever; outages are waited out however long they last.
POISON_ATTEMPTS = 3
PRUNE_EVERY_S = 600.0


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def is_poison(exc: BaseException) -> bool:
    """A failure that retrying the same message cannot fix (see engine.db.is_record_fault); Kafka
    and network errors are outages."""
    if isinstance(exc, (KafkaError, OSError, TimeoutError)):
        return False
    return db.is_record_fault(exc)


def breaker_class(error: ConnectorError | None) -> ErrorClass | None:
    """What the circuit breaker records for an attempt's outcome (None: a success). A provider that
    answered "not yet" (a payout still processing) answered: a success, never a failure."""
    if error is None or isinstance(error, NotYet):
        return None
    return error.error_class


def carried_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> list[tuple[str, bytes | None]]:
    """The headers a re-publish keeps from a delivery: the router's own, not the runtime's or the DLQ's."""
    return [(k, v) for k, v in headers or [] if k not in RUNTIME_HEADERS and k not in DLQ_CONTEXT_HEADERS]


class ConnectorWorker:
    """Runs every connector in ``specs`` until ``stop`` is set."""

    def __init__(
        self, settings: Settings, specs: list[ConnectorSpec], *, concurrency: int = 8, max_records: int = 50
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"connector names must be unique: {names}")
        self.settings = settings
        self.specs = specs
        self.concurrency = concurrency
        self.max_records = max_records
        self._runners: list[_ConnectorRunner] = []

    def assigned(self) -> dict[str, list[tuple[str, int]]]:
        """Per connector, the (topic, partition) pairs this worker holds right now."""
        return {
            r.spec.name: sorted((tp.topic, tp.partition) for tp in r.consumer.assignment())
            for r in self._runners
        }

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.to_thread(db.ensure_schema, self.settings)
        except psycopg.errors.UniqueViolation:
            # CREATE SCHEMA IF NOT EXISTS races when several workers start at once; the loser retries.
            await asyncio.to_thread(db.ensure_schema, self.settings)
        await asyncio.to_thread(ensure_connector_topics, self.settings, self.specs)
        pool = AsyncConnectionPool(
            self.settings.database_url,
            min_size=1,
            max_size=len(self.specs) * (self.concurrency + 1) + 1,
            kwargs={"options": f"-c search_path={self.settings.db_schema}", "connect_timeout": 5},
            open=False,
        )
        await pool.open()
        producer = await kafka.start_producer(self.settings, "reliable")
        try:
            self._runners = [_ConnectorRunner(self, spec, pool, producer) for spec in self.specs]
            await asyncio.gather(*(r.run(stop) for r in self._runners))
        finally:
            await producer.stop()
            await pool.close()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, runner: _ConnectorRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runner.release(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("%s assigned %s", self.runner.spec.name, sorted((t.topic, t.partition) for t in assigned))


class _ConnectorRunner:
    """One connector's consumer and the tasks handling its partitions."""

    def __init__(
        self,
        worker: ConnectorWorker,
        spec: ConnectorSpec,
        pool: AsyncConnectionPool,
        producer: AIOKafkaProducer,
    ) -> None:
        self.spec = spec
        self.settings = worker.settings
        self.max_records = worker.max_records
        self.pool = pool
        self.producer = producer
        self.slots = asyncio.Semaphore(worker.concurrency)
        self.jobs_topic = self.settings.topic(jobs_topic(spec.name))
        self.dlq_topic = self.settings.topic(dlq_topic(spec.name))
        tiers = spec.retry_policy.tiers()
        self.tier_topics = {t: self.settings.topic(retry_topic(spec.name, t)) for t in tiers}
        self.consumer = kafka.consumer(
            self.settings,
            group_id=group_id(self.settings, spec.name),
            auto_offset_reset="earliest",
        )
        self.tasks: dict[TopicPartition, asyncio.Task[None]] = {}
        self.timers: dict[TopicPartition, asyncio.TimerHandle] = {}
        self.generation: dict[TopicPartition, int] = {}
        self.done: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.failures: dict[tuple[TopicPartition, int], int] = {}
        """Consecutive poison failures per (partition, offset) of messages not yet done."""

    # -- consumer loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        topics = [self.jobs_topic, *dict.fromkeys(self.tier_topics.values())]
        self.consumer.subscribe(topics, listener=_Rebalance(self))
        await self.consumer.start()
        next_prune = 0.0
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
                for tp, messages in batches.items():
                    if messages:
                        self.consumer.pause(tp)
                        gen = self.generation.get(tp, 0)
                        self.tasks[tp] = asyncio.create_task(self._partition(tp, messages, gen, stop))
                await self._commit()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    await attempts.prune_attempts(self.pool, self.spec.name)
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            await self._commit()
        finally:
            for timer in self.timers.values():
                timer.cancel()
            await self.consumer.stop()

    async def release(self, revoked: list[TopicPartition]) -> None:
        """Partitions are being taken away: finish their current job, commit, forget them."""
        for tp in revoked:
            self.generation[tp] = self.generation.get(tp, 0) + 1
            timer = self.timers.pop(tp, None)
            if timer:
                timer.cancel()
        running = [self.tasks[tp] for tp in revoked if tp in self.tasks]
        await asyncio.gather(*running, return_exceptions=True)
        await self._commit(only=revoked)
        for tp in revoked:
            self.done.pop(tp, None)
            self.committed.pop(tp, None)

    async def _commit(self, only: list[TopicPartition] | None = None) -> None:
        offsets = {
            tp: o
            for tp, o in self.done.items()
            if self.committed.get(tp) != o and (only is None or tp in only)
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
            self.committed.update(offsets)
        except KafkaError as exc:  # the outcomes are durable; the jobs will be redelivered and deduped
            log.warning("%s: could not commit %s: %s", self.spec.name, offsets, exc)

    def _resume(self, tp: TopicPartition, offset: int, gen: int) -> None:
        self.timers.pop(tp, None)
        if self.generation.get(tp, 0) != gen or tp not in self.consumer.assignment():
            return
        self.consumer.seek(tp, offset)
        self.consumer.resume(tp)

    async def _partition(
        self, tp: TopicPartition, messages: list[Any], gen: int, stop: asyncio.Event
    ) -> None:
        """Handle one partition's batch in order; then resume it, now or when its next job is due."""
        next_offset = messages[0].offset  # the first message whose outcome is not durable yet
        due_in = 0.0
        try:
            for message in messages:
                if stop.is_set() or self.generation.get(tp, 0) != gen:
                    return
                delivery = Delivery.parse(message.headers or [])
                wait = delivery.not_before_ms / 1000 - time.time()
                if wait > 0:
                    due_in = wait
                    break
                try:
                    async with self.slots:
                        await self._handle(message, delivery)
                except Exception as exc:
                    if is_poison(exc) and await self._give_up(tp, message, delivery, exc):
                        self.done[tp] = next_offset = message.offset + 1
                        continue
                    # Kafka or PostgreSQL away (or a bug): the outcome is not durable, so the message is
                    # neither committed nor skipped; its partition looks at it again a little later.
                    log.warning(
                        "%s: outcome of %s[%d]@%d not durable (%s); again in %.0fs",
                        self.spec.name,
                        tp.topic,
                        tp.partition,
                        message.offset,
                        exc,
                        OUTCOME_RETRY_S,
                        exc_info=not isinstance(exc, (KafkaError, psycopg.Error, OSError)),
                    )
                    due_in = OUTCOME_RETRY_S
                    break
                self.failures.pop((tp, message.offset), None)
                self.done[tp] = next_offset = message.offset + 1
        finally:
            self.tasks.pop(tp, None)
            if due_in > 0:
                loop = asyncio.get_running_loop()
                self.timers[tp] = loop.call_later(due_in, self._resume, tp, next_offset, gen)
            elif not stop.is_set():
                self._resume(tp, next_offset, gen)

    async def _give_up(self, tp: TopicPartition, message: Any, delivery: Delivery, exc: Exception) -> bool:
        """Count a poison failure of ``message``; at POISON_ATTEMPTS, dead-letter it (True when done)."""
        key = (tp, message.offset)
        self.failures[key] = self.failures.get(key, 0) + 1
        if self.failures[key] < POISON_ATTEMPTS:
            return False
        try:
            job: Job | None = Job.decode(message.value)
        except ValueError:
            job = None
        error = PermanentError(
            "processing_failed",
            f"{type(exc).__name__}: {exc} (failed {self.failures[key]} times in a row before the provider"
            " was called)",
        )
        try:
            await self._dead_letter(message, job, delivery, error)
        except Exception as dlq_exc:  # Kafka away: the message stays, tried again later
            log.warning("%s: could not dead-letter %s@%d: %s", self.spec.name, tp, message.offset, dlq_exc)
            return False
        self.failures.pop(key, None)
        return True

    # -- one job ----------------------------------------------------------------------------------

    async def _handle(self, message: Any, delivery: Delivery) -> None:
        try:
            job = Job.decode(message.value)
        except ValueError as exc:
            log.error("%s: undecodable job at %s@%d: %s", self.spec.name, message.topic, message.offset, exc)
            await self._dead_letter(message, None, delivery, PermanentError("undecodable_job", str(exc)))
            return
        started = await attempts.begin_attempt(self.pool, self.spec.breaker, job, delivery.attempt)
        if isinstance(started, attempts.CircuitOpen):
            await self._wait(message, delivery, started.retry_at)
            telemetry.deferred.add(1, {"connector": self.spec.name})
            return
        # A limit on jobs: the attempt holds a permit until it is over (streams/connectors/rate_limit.py).
        async with rate_limit.permit(self.pool, self.spec.name, self.spec.rate_limit_per_s):
            error, attempt_span = await self._attempt(job, delivery, started)
        if error is None:
            return
        now = time.time()
        failed = replace(
            delivery, first_failure_at=delivery.first_failure_at or _iso(now), last_failure_at=_iso(now)
        )
        if error.error_class is ErrorClass.RETRYABLE:
            step = next_step(
                self.spec.retry_policy,
                attempt=delivery.attempt,
                code=error.code,
                retry_after=error.retry_after,
            )
            if isinstance(step, Retry):
                again = replace(
                    failed, attempt=step.next_attempt, not_before_ms=int((now + step.wait) * 1000)
                )
                await self._republish(message, again, step.tier)
                return
        # The failure sink records a result command: it runs in the failed attempt's trace context.
        with trace.use_span(attempt_span, end_on_exit=False):
            await self._dead_letter(message, job, failed, error)

    async def _attempt(
        self, job: Job, delivery: Delivery, started: attempts.Started
    ) -> tuple[ConnectorError | None, Span]:
        attributes: dict[str, str | int | bool] = {
            "ledgerflow.connector": self.spec.name,
            "ledgerflow.tenant_id": job.tenant_id,
            "ledgerflow.job_id": job.job_id,
            "ledgerflow.job_kind": job.kind,
            "ledgerflow.attempt": delivery.attempt,
            "ledgerflow.circuit_probe": started.probe,
        }
        with (
            telemetry.tracer.start_as_current_span(
                f"connector {self.spec.name} {job.kind}",
                context=telemetry.parent_context(delivery.traceparent),
                kind=SpanKind.CLIENT,
                attributes=attributes,
            ) as span,
            logs.log_context(tenant_id=job.tenant_id, traceparent=delivery.traceparent),
        ):
            t0 = time.perf_counter()
            error: ConnectorError | None = None
            try:
                await self.spec.handler(job, delivery.attempt)
            except ConnectorError as exc:
                error = exc
            except Exception as exc:
                if db.is_outage(exc):
                    # PostgreSQL away under the handler: not the job's fault and not a provider
                    # answer; the partition tries this delivery again (same attempt) shortly.
                    raise
                # A handler must classify its errors; one it did not is a bug a person has to look at.
                log.exception(
                    "%s: handler raised an unclassified error for job %s", self.spec.name, job.job_id
                )
                error = NeedsAttentionError("unclassified_error", f"{type(exc).__name__}: {exc}")
            elapsed = time.perf_counter() - t0
            outcome = "success" if error is None else error.error_class.value
            span.set_attribute("ledgerflow.outcome", outcome)
            if error is not None:
                span.set_attribute("ledgerflow.error_code", error.code)
                span.set_status(Status(StatusCode.ERROR, error.message[:200]))
            telemetry.attempts.add(1, {"connector": self.spec.name, "outcome": outcome})
            telemetry.latency.record(elapsed, {"connector": self.spec.name, "outcome": outcome})
        circuit = await attempts.finish_attempt(
            self.pool,
            self.spec.breaker,
            job,
            started,
            error_class=breaker_class(error),
            error_code=None if error is None else error.code,
            latency_ms=elapsed * 1000,
        )
        # The failure that opened the circuit reached the threshold exactly, or was a failed probe
        # (breaker.record_failure); later failures of calls already in flight do not alert again.
        opened_now = started.probe or circuit.consecutive_failures == self.spec.breaker.failure_threshold
        if error is not None and circuit.state is CircuitState.OPEN and opened_now:
            await health.circuit_opened(self.spec.alerts, self.spec.name, job, error.code)
        return error, span

    async def _wait(self, message: Any, delivery: Delivery, retry_at: float) -> None:
        """Send a job to wait for its circuit without using an attempt."""
        tier = choose_tier(self.spec.retry_policy.tiers(), retry_at - time.time())
        await self._republish(message, replace(delivery, not_before_ms=int(retry_at * 1000)), tier)

    async def _republish(self, message: Any, delivery: Delivery, tier: float) -> None:
        topic = self.tier_topics[tier] if tier > 0 else self.jobs_topic
        await self.producer.send_and_wait(
            topic,
            value=message.value,
            key=message.key,
            headers=[(k, v or b"") for k, v in carried_headers(message.headers)] + delivery.headers(),
        )

    async def _dead_letter(
        self, message: Any, job: Job | None, delivery: Delivery, error: ConnectorError
    ) -> None:
        details = orjson.dumps(error.details, default=str).decode()[:4000]
        headers = dead_letter_headers(
            carried_headers(message.headers) + list(delivery.headers()),
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            code=error.code,
            message=error.message,
            extra=[
                ("connector", self.spec.name),
                ("attempts", str(delivery.attempt)),
                ("error-class", error.error_class.value),
                ("error-details", details),
            ],
        )
        stored = await self.producer.send_and_wait(
            self.dlq_topic, value=message.value, key=message.key, headers=headers
        )
        if job is not None:
            await health.record_dead_letter(
                self.pool,
                self.spec.alerts,
                self.spec.name,
                job,
                error,
                partition=stored.partition,
                offset=stored.offset,
            )
        telemetry.dead_lettered.add(1, {"connector": self.spec.name, "error_class": error.error_class.value})
        log.warning(
            "%s: job %s dead-lettered after %d attempt(s): %s",
            self.spec.name,
            job.job_id if job else f"{message.topic}@{message.offset}",
            delivery.attempt,
            error,
        )
        if job is not None and self.spec.on_failure is not None:
            try:
                await asyncio.to_thread(self.spec.on_failure.record_failure, job, error, delivery.attempt)
            except Exception:
                # The dead letter is the durable record; a failing sink must not make the job run again.
                log.exception("%s: failure sink raised for job %s", self.spec.name, job.job_id)
