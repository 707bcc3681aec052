"""The outbound webhook delivery worker (``ledgerflow webhooks run``; docs/webhooks.md).

Two loops in one process:

* **intake** reads every ledger topic (``ledger.<aggregate>.v1``, by pattern, so a topic added later is
  read too), and for each event inserts one ``webhook_deliveries`` row per endpoint of the event's
  tenant that wants its type (and existed when the event happened), then commits the offsets. The row
  is keyed by (endpoint, event id): a re-read or a relay re-publish queues nothing twice.
* **dispatch** starts one task per endpoint that has deliveries due. Each endpoint has its own circuit
  breaker, rate limit and concurrency, so a slow or failing receiver only ever waits for itself. An
  endpoint's task attempts only the oldest pending delivery of each ordering key (the Kafka key: the
  aggregate id), so a later event of an invoice never overtakes an earlier one still retrying, while
  other invoices go on.

Why the queue is a PostgreSQL table rather than the connector runtime's delay topics: the order rule is
per (endpoint, aggregate), and a delay topic cannot hold back the next event of one aggregate for one
endpoint without holding back everyone behind it; a row per delivery also gives the attempts list and
resend for free. The schedule is the connector runtime's (``streams/connectors/retry.py``: the seed's
immediately, 1 min, 5 min, 15 min, 1 h, then dead + an alert), and its breaker state machine is reused.

Outcomes of one attempt: 2xx delivered; 410 Gone disables the endpoint (+ alert) and leaves its
deliveries queued for a resume; a refused address (SSRF rules of a production deployment) is dead at
once; anything else (timeout, connection error, 3xx not followed, 4xx, 5xx) retries, honouring
``Retry-After`` on 429/503. An endpoint that has not succeeded for 5 days is disabled (+ alert).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
from aiokafka.errors import KafkaError
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from connectors.egress import CheckedTransport, EgressRefusedError, Resolver, resolve
from engine import db, kafka
from engine.application import LedgerService
from engine.bootstrap import build_service
from engine.config import Settings
from engine.domain.webhook_endpoint import should_disable, wants
from engine.security.egress import DeploymentMode, EgressRefused, EndpointPolicy, parse_url
from engine.security.secrets import load_key_ring
from engine.webhook_signing import USER_AGENT, LedgerEvent, body, signature_headers, to_json
from engine.webhooks import WebhookService, open_store
from schemas import registry
from streams.connectors import breaker as circuit
from streams.connectors.retry import SEED_SCHEDULE, GiveUp, RetryPolicy, next_step

log = logging.getLogger("ledgerflow.webhooks")

# The seed "College Accounts" section 3.4 and issue 13: 10 s, no redirects.
TIMEOUT_SECONDS = 10.0
# A claimed delivery is the claimer's this long; a worker that died mid-attempt frees it after that.
LEASE_SECONDS = TIMEOUT_SECONDS + 50.0
# Dotted causes and "kind:id" subjects, as docs/topics.md describes ledgerflow.alert.raised.
ALERT_CAUSE_DISABLED = "webhooks.endpoint_disabled"
ALERT_CAUSE_DEAD = "webhooks.delivery_failed"


@dataclass(frozen=True)
class DeliverySettings:
    retry_policy: RetryPolicy = field(default_factory=lambda: RetryPolicy(SEED_SCHEDULE))
    breaker: circuit.BreakerSettings = field(default_factory=circuit.BreakerSettings)
    rate_per_s: float = 50.0
    """Per endpoint and worker process: no receiver gets more than this many requests a second from
    one worker (``float("inf")``: no limit)."""
    concurrency: int = 8
    """Deliveries in flight per endpoint (of different ordering keys)."""
    timeout_s: float = TIMEOUT_SECONDS
    poll_s: float = 0.2
    batch: int = 50


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}ledgerflow.webhooks"


def ledger_topic_pattern(settings: Settings) -> str:
    return "^" + re.escape(settings.topic("ledger.")) + r"[a-z_]+\.v1$"


class ReceiverTransport(CheckedTransport):
    """The egress rules of webhook receivers: any http(s) URL without userinfo (https only in a
    production deployment), whose resolved addresses a production deployment checks at connect time
    (``connectors/egress.py``: private, loopback and link-local refused); redirects never followed."""

    def __init__(self, mode: DeploymentMode, *, resolver: Resolver = resolve) -> None:
        super().__init__(EndpointPolicy(provider="webhooks"), mode, "production", resolver=resolver)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            parts = parse_url(str(request.url))
        except EgressRefused as exc:
            raise EgressRefusedError(exc.code, exc.message) from exc
        if self.mode == "production" and parts.scheme != "https":
            raise EgressRefusedError("url_not_allowed", "a production deployment delivers over https only")
        # The connector URL policy (check_endpoint) is for provider base URLs; a receiver URL is the
        # tenant's own, so only the address rules of the network backend apply.
        response = await super(CheckedTransport, self).handle_async_request(request)
        if 300 <= response.status_code < 400:
            await response.aclose()
            raise EgressRefusedError(
                "redirect_not_followed", f"HTTP {response.status_code} redirect, not followed"
            )
        return response


# -- intake ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """One ledger message, decoded."""

    tenant_id: UUID
    ordering_key: str
    event: LedgerEvent


def decode_message(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> Incoming:
    """A ledger topic message as a delivery sees it; ValueError (or a codec error) if it is not one."""
    attrs = {name: raw.decode() for name, raw in headers if name.startswith("ce_")}
    source = attrs.get("ce_source", "")
    if not source.startswith("/tenants/") or "ce_id" not in attrs or "ce_type" not in attrs:
        raise ValueError("not a ledger event: ce_source, ce_id or ce_type missing")
    tenant_id = UUID(source.removeprefix("/tenants/"))
    data = registry.decode_event(value or b"", attrs["ce_type"])
    event = LedgerEvent(
        id=attrs["ce_id"],
        type=attrs["ce_type"],
        source=source,
        subject=attrs.get("ce_subject", ""),
        time=attrs.get("ce_time", ""),
        data=data,
    )
    return Incoming(tenant_id, (key or b"").decode() or event.subject, event)


def _event_time(event: LedgerEvent) -> datetime | None:
    try:
        return datetime.fromisoformat(event.time.replace("Z", "+00:00"))
    except ValueError:
        return None


def queue_deliveries(conn: psycopg.Connection, batch: Sequence[Incoming]) -> int:
    """One pending delivery per (wanting endpoint, event), in the batch's order; returns how many new."""
    if not batch:
        return 0
    tenants = list({i.tenant_id for i in batch})
    with conn.cursor(row_factory=dict_row) as cur:
        endpoints = cur.execute(
            "SELECT endpoint_id, tenant_id, event_types, created_at FROM webhook_endpoints"
            " WHERE tenant_id = ANY(%s) AND status IN ('active', 'paused')",
            (tenants,),
        ).fetchall()
    by_tenant: dict[UUID, list[dict[str, Any]]] = {}
    for e in endpoints:
        by_tenant.setdefault(e["tenant_id"], []).append(e)
    rows: list[tuple[Any, ...]] = []
    for item in batch:
        happened = _event_time(item.event)
        for e in by_tenant.get(item.tenant_id, []):
            # An endpoint gets the events that happened after it was registered, not the history.
            if happened is not None and happened < e["created_at"]:
                continue
            if not wants(e["event_types"], item.event.type):
                continue
            rows.append(
                (
                    uuid4(),
                    e["endpoint_id"],
                    item.tenant_id,
                    item.event.id,
                    item.event.type,
                    item.ordering_key,
                    _event_json(item.event),
                )
            )
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, tenant_id, event_id, ce_type,"
            " ordering_key, event) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)"
            " ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            rows,
        )
    return len(rows)


def _event_json(event: LedgerEvent) -> str:
    return to_json(
        {
            "id": event.id,
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "time": event.time,
            "data": event.data,
        }
    ).decode()


# -- dispatch --------------------------------------------------------------------------------------


class TokenBucket:
    """In-process rate limit of one endpoint: ``rate`` requests a second, bursts of up to ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, min(rate, 1e9))
        self.tokens = self.capacity
        self.at = time.monotonic()

    async def take(self) -> None:
        if self.rate == float("inf"):
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


@dataclass
class EndpointState:
    breaker: circuit.Breaker = field(default_factory=circuit.Breaker)
    bucket: TokenBucket | None = None
    task: asyncio.Task[None] | None = None
    not_before: float = 0.0


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: int
    error: str | None
    retry_after: float | None = None
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def _retry_after(response: httpx.Response) -> float | None:
    if response.status_code not in (429, 503):
        return None
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


class DeliveryWorker:
    def __init__(self, settings: Settings, options: DeliverySettings | None = None) -> None:
        self.settings = settings
        self.options = options or DeliverySettings()
        self.endpoints: dict[UUID, EndpointState] = {}
        self._pool: ConnectionPool | None = None
        self._hooks: WebhookService | None = None
        self._ledger: LedgerService | None = None
        self._client: httpx.AsyncClient | None = None

    # -- wiring -------------------------------------------------------------------------------

    def _open(self) -> None:
        db.ensure_schema(self.settings)
        self._ledger = build_service(self.settings, pool_size=4)
        self._pool = db.make_pool(self.settings, max_size=8)
        self._hooks = WebhookService(
            open_store(self.settings), self._pool, load_key_ring(self.settings.var_dir), self.settings.mode
        )

    def _close(self) -> None:
        if self._hooks is not None:
            self._hooks.close()
        if self._pool is not None:
            self._pool.close()
        if self._ledger is not None:
            self._ledger.close()

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self._open)
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=5.0)
        self._client = httpx.AsyncClient(
            transport=ReceiverTransport(self.settings.mode),
            timeout=httpx.Timeout(self.options.timeout_s),
            follow_redirects=False,
            limits=limits,
        )
        try:
            await asyncio.gather(self._intake(stop), self._dispatch(stop))
        finally:
            tasks = [s.task for s in self.endpoints.values() if s.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._client.aclose()
            await asyncio.to_thread(self._close)

    # -- intake -------------------------------------------------------------------------------

    async def _intake(self, stop: asyncio.Event) -> None:
        consumer = kafka.consumer(
            self.settings,
            group_id=group_id(self.settings),
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
        )
        consumer.subscribe(pattern=ledger_topic_pattern(self.settings))
        await consumer.start()
        try:
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=200, max_records=500)
                if not fetched:
                    continue
                batch: list[Incoming] = []
                for records in fetched.values():
                    for record in records:
                        try:
                            batch.append(decode_message(record.key, record.value, record.headers))
                        except Exception as exc:  # poison: skipped with a log line, never a stopped consumer
                            log.warning(
                                "webhooks: skipped undecodable message %s[%s]@%s: %s",
                                record.topic,
                                record.partition,
                                record.offset,
                                exc,
                            )
                await self._retrying(self._queue, batch, stop=stop)
                await consumer.commit()
        except KafkaError as exc:
            raise kafka.translate(exc, self.settings.kafka_bootstrap) from exc
        finally:
            await consumer.stop()

    def _queue(self, batch: list[Incoming]) -> None:
        assert self._pool is not None
        with db.transaction(self._pool) as conn:
            queue_deliveries(conn, batch)

    async def _retrying(self, work: Any, *args: Any, stop: asyncio.Event) -> None:
        """PostgreSQL away: wait and retry the same batch (the offsets are not committed before)."""
        while True:
            try:
                await asyncio.to_thread(work, *args)
                return
            except db.DatabaseUnavailable as exc:
                log.warning("webhooks: PostgreSQL unavailable, retrying: %s", exc)
                if stop.is_set():
                    raise
                await asyncio.sleep(1.0)

    # -- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                due = await asyncio.to_thread(self._due_endpoints)
            except db.DatabaseUnavailable as exc:
                log.warning("webhooks: PostgreSQL unavailable: %s", exc)
                due = []
            now = time.monotonic()
            for endpoint_id in due:
                state = self.endpoints.setdefault(endpoint_id, EndpointState())
                if (state.task is None or state.task.done()) and now >= state.not_before:
                    state.task = asyncio.create_task(self._drain(endpoint_id, state))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.poll_s)

    def _due_endpoints(self) -> list[UUID]:
        assert self._pool is not None
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT DISTINCT d.endpoint_id FROM webhook_deliveries d"
                " JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id"
                " WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.status = 'active'"
            ).fetchall()
        return [r["endpoint_id"] for r in rows]

    async def _drain(self, endpoint_id: UUID, state: EndpointState) -> None:
        """Deliver what is due for one endpoint until nothing is; never waits for another endpoint.

        The breaker is asked before every request, not once per batch: after the failures that open
        it, the rest of the batch is put back (its attempts unused) until the circuit half-opens."""
        try:
            while True:
                closed = state.breaker.state is circuit.CircuitState.CLOSED
                claimed = await asyncio.to_thread(self._claim, endpoint_id, None if closed else 1)
                if claimed is None:
                    return
                endpoint, live, rows = claimed
                if not rows:
                    return
                if state.bucket is None:
                    state.bucket = TokenBucket(self.options.rate_per_s)
                gate = asyncio.Semaphore(self.options.concurrency)
                turned_away: list[float] = []

                async def one(
                    row: dict[str, Any],
                    gate: asyncio.Semaphore = gate,
                    endpoint: dict[str, Any] = endpoint,
                    live: list[str] = live,
                    turned_away: list[float] = turned_away,
                ) -> None:
                    async with gate:
                        decision, state.breaker = circuit.admit(
                            state.breaker, self.options.breaker, time.time()
                        )
                        if isinstance(decision, circuit.Rejected):
                            turned_away.append(decision.retry_at)
                            await asyncio.to_thread(self._put_back, row, decision.retry_at)
                            return
                        assert state.bucket is not None
                        await state.bucket.take()
                        await self._attempt(endpoint, live, row, state, decision.probe)

                # A disabled or paused endpoint ends here: the next claim finds it not active.
                await asyncio.gather(*(one(r) for r in rows))
                if turned_away:
                    state.not_before = time.monotonic() + max(0.0, min(turned_away) - time.time())
                    return
        except Exception:
            log.exception("webhooks: delivering to endpoint %s failed; it is retried", endpoint_id)
            state.not_before = time.monotonic() + 1.0

    def _put_back(self, row: Mapping[str, Any], retry_at: float) -> None:
        """A claimed delivery the open circuit turned away: due again when the circuit may half-open,
        without using an attempt of its schedule."""
        assert self._pool is not None
        with db.transaction(self._pool) as conn:
            conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = to_timestamp(%s) WHERE delivery_id = %s",
                (retry_at, row["delivery_id"]),
            )

    def _claim(
        self, endpoint_id: UUID, limit: int | None
    ) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]] | None:
        assert self._pool is not None and self._hooks is not None
        with db.transaction(self._pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            endpoint = cur.execute(
                "SELECT endpoint_id, tenant_id, url, body_format, status, failing_since"
                " FROM webhook_endpoints WHERE endpoint_id = %s",
                (endpoint_id,),
            ).fetchone()
            if endpoint is None or endpoint["status"] != "active":
                return None
            live = self._hooks.live_secrets(conn, endpoint["tenant_id"], endpoint_id)
            if not live:
                return None
            rows = cur.execute(
                """UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => %s)
                   WHERE delivery_id IN (
                       SELECT d.delivery_id FROM webhook_deliveries d
                       WHERE d.endpoint_id = %s AND d.status = 'pending' AND d.next_attempt_at <= now()
                         AND NOT EXISTS (
                             SELECT 1 FROM webhook_deliveries p
                             WHERE p.endpoint_id = d.endpoint_id AND p.ordering_key = d.ordering_key
                               AND p.status = 'pending' AND p.seq < d.seq)
                       ORDER BY d.seq LIMIT %s FOR UPDATE SKIP LOCKED)
                   RETURNING delivery_id, tenant_id, event_id, ce_type, event, attempts,
                             schedule_step, seq""",
                (LEASE_SECONDS, endpoint_id, limit or self.options.batch),
            ).fetchall()
        return endpoint, live, sorted(rows, key=lambda r: r["seq"])

    async def _attempt(
        self,
        endpoint: Mapping[str, Any],
        live: list[str],
        row: Mapping[str, Any],
        state: EndpointState,
        probe: bool,
    ) -> None:
        assert self._client is not None
        stored = row["event"]
        event = LedgerEvent(
            id=stored["id"],
            type=stored["type"],
            source=stored["source"],
            subject=stored["subject"],
            time=stored["time"],
            data=stored["data"],
        )
        raw, content_type = body(event, endpoint["body_format"])
        headers = {
            **signature_headers(event.id, raw, live, datetime.now(UTC)),
            "Content-Type": content_type,
            "User-Agent": USER_AGENT,
        }
        started = time.monotonic()
        attempted_at = datetime.now(UTC)
        try:
            response = await self._client.post(endpoint["url"], content=raw, headers=headers)
            await response.aclose()
            outcome = Outcome(
                response.status_code,
                _ms(started),
                None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}",
                _retry_after(response),
            )
        except EgressRefusedError as exc:
            outcome = Outcome(
                None, _ms(started), f"{exc.code}: {exc}", refused=exc.code != "redirect_not_followed"
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            # Saved under older rules, perhaps: it can never be requested, so retrying cannot help.
            outcome = Outcome(None, _ms(started), f"invalid url: {exc}"[:500], refused=True)
        except httpx.TimeoutException:
            outcome = Outcome(None, _ms(started), f"timed out after {self.options.timeout_s:g} s")
        except httpx.HTTPError as exc:
            outcome = Outcome(None, _ms(started), f"{type(exc).__name__}: {exc}"[:500])
        now = time.time()
        if outcome.delivered or outcome.gone or outcome.refused:
            state.breaker = circuit.record_success(state.breaker, self.options.breaker, now, probe=probe)
        else:
            state.breaker = circuit.record_failure(state.breaker, self.options.breaker, now, probe=probe)
        await asyncio.to_thread(self._record, endpoint, row, attempted_at, outcome)

    def _record(
        self, endpoint: Mapping[str, Any], row: Mapping[str, Any], attempted_at: datetime, outcome: Outcome
    ) -> None:
        assert self._pool is not None and self._hooks is not None and self._ledger is not None
        endpoint_id, tenant_id = endpoint["endpoint_id"], endpoint["tenant_id"]
        attempt = row["attempts"] + 1
        alerts: list[dict[str, Any]] = []
        disable: str | None = None
        with db.transaction(self._pool) as conn:
            conn.execute(
                "INSERT INTO webhook_attempts"
                " (delivery_id, attempt, attempted_at, status_code, latency_ms, error)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    row["delivery_id"],
                    attempt,
                    attempted_at,
                    outcome.status_code,
                    outcome.latency_ms,
                    outcome.error,
                ),
            )
            if outcome.delivered:
                conn.execute(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = %s, finished_at = now(),"
                    " last_error = NULL WHERE delivery_id = %s",
                    (attempt, row["delivery_id"]),
                )
                conn.execute(
                    "UPDATE webhook_endpoints SET failing_since = NULL WHERE endpoint_id = %s", (endpoint_id,)
                )
                return
            conn.execute(
                "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, %s)"
                " WHERE endpoint_id = %s",
                (attempted_at, endpoint_id),
            )
            failing = (
                conn.cursor(row_factory=dict_row)
                .execute("SELECT failing_since FROM webhook_endpoints WHERE endpoint_id = %s", (endpoint_id,))
                .fetchone()
            )
            if outcome.gone:
                # Svix and issue 13: 410 Gone means the receiver is gone for good. The delivery stays
                # queued (not consuming its schedule) for a resume.
                conn.execute(
                    "UPDATE webhook_deliveries SET attempts = %s, last_error = %s, next_attempt_at = now()"
                    " WHERE delivery_id = %s",
                    (attempt, outcome.error, row["delivery_id"]),
                )
                disable = "gone"
            else:
                step = next_step(
                    self.options.retry_policy,
                    attempt=row["schedule_step"] + 1,
                    code=str(outcome.status_code or ""),
                    retry_after=outcome.retry_after,
                )
                if outcome.refused or isinstance(step, GiveUp):
                    conn.execute(
                        "UPDATE webhook_deliveries SET status = 'dead', attempts = %s, schedule_step = %s,"
                        " finished_at = now(), last_error = %s WHERE delivery_id = %s",
                        (attempt, row["schedule_step"] + 1, outcome.error, row["delivery_id"]),
                    )
                    if not _about_webhooks(row):
                        alerts.append(
                            {
                                "severity": "warning",
                                "cause": ALERT_CAUSE_DEAD,
                                "subject": f"webhook_delivery:{row['delivery_id']}",
                                "message": (
                                    f"a webhook delivery of {row['ce_type']} to {endpoint['url']} failed"
                                    f" {attempt} times and was given up: fix the receiver, then resend it"
                                    f" (POST /v1/webhooks/endpoints/{endpoint_id}/deliveries/"
                                    f"{row['delivery_id']}/resend)"
                                ),
                                "details": {
                                    "endpoint_id": endpoint_id,
                                    "event_id": row["event_id"],
                                    "error": outcome.error,
                                },
                            }
                        )
                else:
                    conn.execute(
                        "UPDATE webhook_deliveries SET attempts = %s, schedule_step = %s, last_error = %s,"
                        " next_attempt_at = now() + make_interval(secs => %s) WHERE delivery_id = %s",
                        (attempt, row["schedule_step"] + 1, outcome.error, step.wait, row["delivery_id"]),
                    )
                if failing is not None and should_disable(failing["failing_since"], datetime.now(UTC)):
                    disable = "failing_for_5_days"
        if disable is not None and self._hooks.disable(endpoint_id, disable):
            alerts.append(
                {
                    "severity": "critical",
                    "cause": ALERT_CAUSE_DISABLED,
                    "subject": f"webhook_endpoint:{endpoint_id}",
                    "message": (
                        f"webhook endpoint {endpoint['url']} was disabled ({_WHY[disable]}); fix the"
                        f" receiver, then POST /v1/webhooks/endpoints/{endpoint_id}/resume"
                    ),
                    "details": {"endpoint_id": endpoint_id, "url": endpoint["url"], "reason": disable},
                }
            )
        for alert in alerts:
            self._ledger.raise_alert(tenant_id, **alert)


_WHY = {
    "gone": "it answered 410 Gone",
    "failing_for_5_days": "no delivery succeeded for 5 days",
}


def _about_webhooks(row: Mapping[str, Any]) -> bool:
    """An alert about webhooks, delivered by webhook: no alert when it fails too (no feedback loop)."""
    data = row["event"].get("data") or {}
    return row["ce_type"] == "ledgerflow.alert.raised" and str(data.get("cause", "")).startswith("webhooks.")


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def retry_scale_from(environ: Mapping[str, str]) -> float:
    """``LEDGERFLOW_WEBHOOK_RETRY_SCALE``: multiply the schedule (demos, tests); 1 by default."""
    raw = environ.get("LEDGERFLOW_WEBHOOK_RETRY_SCALE", "1")
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"LEDGERFLOW_WEBHOOK_RETRY_SCALE={raw!r}: use a positive number") from exc
    if not value > 0:
        raise ValueError(f"LEDGERFLOW_WEBHOOK_RETRY_SCALE={raw!r}: use a positive number")
    return value


def settings_from(environ: Mapping[str, str]) -> DeliverySettings:
    scale = retry_scale_from(environ)
    raw = environ.get("LEDGERFLOW_WEBHOOK_RATE", "50")
    try:
        rate = float("inf") if raw.strip().lower() == "none" else float(raw)
    except ValueError as exc:
        raise ValueError(f"LEDGERFLOW_WEBHOOK_RATE={raw!r}: use requests per second, or none") from exc
    if not rate > 0:
        raise ValueError(f"LEDGERFLOW_WEBHOOK_RATE={raw!r}: use requests per second > 0, or none")
    return DeliverySettings(retry_policy=RetryPolicy(SEED_SCHEDULE).scaled(scale), rate_per_s=rate)


__all__ = [
    "DeliverySettings",
    "DeliveryWorker",
    "ReceiverTransport",
    "decode_message",
    "queue_deliveries",
    "settings_from",
]
