"""Outbound webhook endpoints: the service behind ``/v1/webhooks`` and the delivery worker's look-ups.

Where things are:

* the aggregate and its rules: ``engine/domain/webhook_endpoint.py``; its events live in their own
  event store table (``webhookendpoints_events``, application ``WebhookEndpoints``), beside the
  ledger's: they are configuration history, not ledger facts, so the relay does not publish them;
* the look-up table ``webhook_endpoints`` (written after every save), the delivery queue
  ``webhook_deliveries`` and ``webhook_attempts``: ``engine/webhooks.sql``;
* signing secrets: sealed in ``connector_secrets`` (provider ``webhooks``) like every runtime secret,
  the previous one with an expiry 24 h after a rotation;
* the body and signatures of a delivery: ``engine/webhook_signing.py``; the worker:
  ``streams/webhooks.py``.

Every method takes the caller's tenant and answers ``EndpointNotFound`` for another tenant's endpoint,
exactly as for one that does not exist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import psycopg
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, OperationalError, PersistenceError
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from engine import db
from engine.application import open_event_store
from engine.config import Settings
from engine.domain.webhook_endpoint import (
    ROTATION_OVERLAP,
    InvalidEndpoint,
    WebhookEndpoint,
    check_description,
    check_event_types,
    check_format,
    covered_by,
)
from engine.errors import Conflict, NotFound
from engine.publishing import published_ce_types
from engine.security import connector_secrets
from engine.security.egress import DeploymentMode, EgressRefused, parse_url, public_address
from engine.security.secrets import KeyRing
from engine.webhook_signing import new_secret

SECRETS_PROVIDER = "webhooks"
MAX_URL = 2000


class WebhookEndpoints(Application[UUID]):
    """The event store of WebhookEndpoint aggregates (table ``webhookendpoints_events``)."""

    name = "WebhookEndpoints"


def open_store(settings: Settings) -> WebhookEndpoints:
    return open_event_store(settings, WebhookEndpoints)


class EndpointNotFound(NotFound):
    pass


class DeliveryNotFound(NotFound):
    pass


class EndpointChangedConcurrently(Conflict):
    pass


@dataclass(frozen=True)
class EndpointView:
    id: UUID
    tenant_id: UUID
    url: str
    event_types: list[str]
    description: str
    format: str
    status: str
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None
    failing_since: datetime | None


@dataclass(frozen=True)
class Attempt:
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None


@dataclass(frozen=True)
class DeliveryView:
    id: UUID
    event_id: str
    event_type: str
    status: str
    attempts: list[Attempt]
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    last_error: str | None


def check_url(url: str, mode: DeploymentMode) -> str:
    """The receiver URL as stored. Refused early here when it can never be reached; the delivery
    worker checks the resolved address again at connect time (``streams/webhooks.py``)."""
    if len(url) > MAX_URL:
        raise InvalidEndpoint("url", f"url: at most {MAX_URL} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise InvalidEndpoint("url", "url must not contain spaces or control characters")
    try:
        parts = parse_url(url)
    except EgressRefused as exc:
        raise InvalidEndpoint("url", exc.message.replace("base_url", "url")) from exc
    try:
        # What the worker's client will make of it: a host that is no valid IDNA name (e.g. one with
        # U+2028 in it) passes urlsplit but could never be requested.
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidEndpoint("url", f"url is not a valid URL: {exc}") from exc
    if mode == "production":
        if parts.scheme != "https":
            raise InvalidEndpoint("url", "a production deployment delivers webhooks over https only")
        host = parts.hostname or ""
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if host == "localhost" or (literal is not None and not public_address(literal)):
            raise InvalidEndpoint("url", f"{host} is not a public address")
    return url


class WebhookService:
    def __init__(self, store: WebhookEndpoints, pool: ConnectionPool, ring: KeyRing, mode: DeploymentMode):
        self.store = store
        self.pool = pool
        self.ring = ring
        self.mode = mode

    def close(self) -> None:
        self.store.close()

    # -- commands ---------------------------------------------------------------------------

    def create(
        self, tenant_id: UUID, *, url: str, event_types: Sequence[str], description: str, body_format: str
    ) -> tuple[EndpointView, str]:
        """A new endpoint and its signing secret (the only time the secret is shown)."""
        endpoint = WebhookEndpoint(
            tenant_id=tenant_id,
            url=check_url(url, self.mode),
            event_types=self._event_types(event_types),
            description=check_description(description),
            body_format=check_format(body_format),
        )
        secret = new_secret()
        self._save(endpoint)
        with db.transaction(self.pool) as conn:
            connector_secrets.put(
                conn, self.ring, tenant_id, SECRETS_PROVIDER, _scope(endpoint.id), secret.encode()
            )
            self._project(conn, endpoint)
        return self.get(tenant_id, endpoint.id), secret

    def update(
        self,
        tenant_id: UUID,
        endpoint_id: UUID,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        body_format: str | None = None,
    ) -> EndpointView:
        endpoint = self._load(tenant_id, endpoint_id)
        endpoint.change(
            url=endpoint.url if url is None else check_url(url, self.mode),
            event_types=endpoint.event_types if event_types is None else self._event_types(event_types),
            description=endpoint.description if description is None else check_description(description),
            body_format=endpoint.body_format if body_format is None else check_format(body_format),
        )
        return self._commit(endpoint)

    def rotate_secret(self, tenant_id: UUID, endpoint_id: UUID) -> tuple[str, datetime]:
        """A new secret; the old one keeps signing (as a second signature) until the returned time."""
        endpoint = self._load(tenant_id, endpoint_id)
        now = datetime.now(UTC)
        endpoint.rotate_secret(rotated_at=now)
        secret = new_secret()
        until = now + ROTATION_OVERLAP
        self._save(endpoint)
        with db.transaction(self.pool) as conn:
            current = connector_secrets.get(conn, self.ring, tenant_id, SECRETS_PROVIDER, _scope(endpoint_id))
            if current is not None:
                connector_secrets.put(
                    conn,
                    self.ring,
                    tenant_id,
                    SECRETS_PROVIDER,
                    _scope(endpoint_id, "previous"),
                    current,
                    expires_at=until,
                )
            connector_secrets.put(
                conn, self.ring, tenant_id, SECRETS_PROVIDER, _scope(endpoint_id), secret.encode()
            )
            self._project(conn, endpoint)
        return secret, until

    def pause(self, tenant_id: UUID, endpoint_id: UUID) -> EndpointView:
        endpoint = self._load(tenant_id, endpoint_id)
        endpoint.pause()
        return self._commit(endpoint)

    def resume(self, tenant_id: UUID, endpoint_id: UUID) -> EndpointView:
        endpoint = self._load(tenant_id, endpoint_id)
        endpoint.resume()
        view = self._commit(endpoint)
        with db.transaction(self.pool) as conn:
            conn.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL WHERE endpoint_id = %s", (endpoint_id,)
            )
        return view

    def delete(self, tenant_id: UUID, endpoint_id: UUID) -> None:
        endpoint = self._load(tenant_id, endpoint_id)
        endpoint.delete()
        self._save(endpoint)
        with db.transaction(self.pool) as conn:
            self._project(conn, endpoint)
            for which in ("current", "previous"):
                connector_secrets.delete(conn, tenant_id, SECRETS_PROVIDER, _scope(endpoint_id, which))

    def disable(self, endpoint_id: UUID, reason: str) -> bool:
        """The worker's verdict (410 Gone, failing for 5 days); False if it was not active."""
        try:
            endpoint: WebhookEndpoint = self.store.repository.get(endpoint_id)
        except AggregateNotFoundError:
            return False
        if endpoint.status != "active":
            return False
        endpoint.disable(reason=reason)
        try:
            self._commit(endpoint)
        except EndpointChangedConcurrently:
            return False
        return True

    def resend(self, tenant_id: UUID, endpoint_id: UUID, delivery_id: UUID) -> DeliveryView:
        """Deliver again from the start of the schedule (a delivered one too: the receiver asked)."""
        self.get(tenant_id, endpoint_id)
        with db.transaction(self.pool) as conn:
            row = conn.execute(
                "UPDATE webhook_deliveries SET status = 'pending', schedule_step = 0,"
                " next_attempt_at = now(), finished_at = NULL"
                " WHERE delivery_id = %s AND endpoint_id = %s AND tenant_id = %s RETURNING delivery_id",
                (delivery_id, endpoint_id, tenant_id),
            ).fetchone()
        if row is None:
            raise DeliveryNotFound(f"no delivery {delivery_id} of webhook endpoint {endpoint_id}")
        return self.delivery(tenant_id, endpoint_id, delivery_id)

    # -- queries ----------------------------------------------------------------------------

    def list_endpoints(self, tenant_id: UUID) -> list[EndpointView]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE tenant_id = %s AND status <> 'deleted'"
                " ORDER BY created_at, endpoint_id",
                (tenant_id,),
            ).fetchall()
        return [_view(r) for r in rows]

    def get(self, tenant_id: UUID, endpoint_id: UUID) -> EndpointView:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                f"SELECT {_COLUMNS} FROM webhook_endpoints"
                " WHERE endpoint_id = %s AND tenant_id = %s AND status <> 'deleted'",
                (endpoint_id, tenant_id),
            ).fetchone()
        if row is None:
            raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
        return _view(row)

    def deliveries(
        self, tenant_id: UUID, endpoint_id: UUID, *, limit: int = 50, status: str | None = None
    ) -> list[DeliveryView]:
        """The newest deliveries first, each with every attempt."""
        self.get(tenant_id, endpoint_id)
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT * FROM webhook_deliveries WHERE endpoint_id = %s AND tenant_id = %s"
                " AND (%s::text IS NULL OR status = %s) ORDER BY seq DESC LIMIT %s",
                (endpoint_id, tenant_id, status, status, limit),
            ).fetchall()
            return _with_attempts(cur, rows)

    def delivery(self, tenant_id: UUID, endpoint_id: UUID, delivery_id: UUID) -> DeliveryView:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT * FROM webhook_deliveries"
                " WHERE delivery_id = %s AND endpoint_id = %s AND tenant_id = %s",
                (delivery_id, endpoint_id, tenant_id),
            ).fetchall()
            found = _with_attempts(cur, rows)
        if not found:
            raise DeliveryNotFound(f"no delivery {delivery_id} of webhook endpoint {endpoint_id}")
        return found[0]

    def live_secrets(self, conn: psycopg.Connection, tenant_id: UUID, endpoint_id: UUID) -> list[str]:
        """The secrets a delivery is signed with now: the current one first, then the previous one
        while its 24 h overlap lasts."""
        found = [
            connector_secrets.get(conn, self.ring, tenant_id, SECRETS_PROVIDER, _scope(endpoint_id, which))
            for which in ("current", "previous")
        ]
        return [s.decode() for s in found if s is not None]

    # -- internals --------------------------------------------------------------------------

    def _event_types(self, given: Sequence[str]) -> list[str]:
        types = check_event_types(given)
        unknown = covered_by(types, published_ce_types())
        if unknown:
            raise InvalidEndpoint("event_types", f"no ledger event has the type {unknown[0]!r}")
        return types

    def _load(self, tenant_id: UUID, endpoint_id: UUID) -> WebhookEndpoint:
        try:
            endpoint: WebhookEndpoint = self.store.repository.get(endpoint_id)
        except AggregateNotFoundError as exc:
            raise EndpointNotFound(f"no webhook endpoint {endpoint_id}") from exc
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        if endpoint.tenant_id != tenant_id or endpoint.status == "deleted":
            raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
        return endpoint

    def _save(self, endpoint: WebhookEndpoint) -> None:
        try:
            self.store.save(endpoint)
        except IntegrityError as exc:
            raise EndpointChangedConcurrently(
                f"webhook endpoint {endpoint.id} was changed by another request; read it and retry"
            ) from exc
        except (OperationalError, PersistenceError) as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc

    def _commit(self, endpoint: WebhookEndpoint) -> EndpointView:
        self._save(endpoint)
        with db.transaction(self.pool) as conn:
            self._project(conn, endpoint)
        return self.get(endpoint.tenant_id, endpoint.id) if endpoint.status != "deleted" else _from(endpoint)

    @staticmethod
    def _project(conn: psycopg.Connection, endpoint: WebhookEndpoint) -> None:
        # Guarded by version: two requests finishing out of order leave the newer state.
        conn.execute(
            """INSERT INTO webhook_endpoints (endpoint_id, tenant_id, url, event_types, description,
                   body_format, status, disabled_reason, version, created_at, updated_at, secret_rotated_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (endpoint_id) DO UPDATE SET url = EXCLUDED.url,
                   event_types = EXCLUDED.event_types, description = EXCLUDED.description,
                   body_format = EXCLUDED.body_format, status = EXCLUDED.status,
                   disabled_reason = EXCLUDED.disabled_reason, version = EXCLUDED.version,
                   updated_at = EXCLUDED.updated_at, secret_rotated_at = EXCLUDED.secret_rotated_at
               WHERE webhook_endpoints.version < EXCLUDED.version""",
            (
                endpoint.id,
                endpoint.tenant_id,
                endpoint.url,
                endpoint.event_types,
                endpoint.description,
                endpoint.body_format,
                endpoint.status,
                endpoint.disabled_reason,
                endpoint.version,
                endpoint.created_on,
                endpoint.modified_on,
                endpoint.secret_rotated_at,
            ),
        )


def _scope(endpoint_id: UUID, which: str = "current") -> str:
    return f"endpoint:{endpoint_id}:{which}"


_COLUMNS = (
    "endpoint_id, tenant_id, url, event_types, description, body_format, status, disabled_reason,"
    " created_at, updated_at, secret_rotated_at, failing_since"
)


def _view(row: dict[str, Any]) -> EndpointView:
    return EndpointView(
        id=row["endpoint_id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        event_types=list(row["event_types"]),
        description=row["description"],
        format=row["body_format"],
        status=row["status"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        secret_rotated_at=row["secret_rotated_at"],
        failing_since=row["failing_since"],
    )


def _from(endpoint: WebhookEndpoint) -> EndpointView:
    return EndpointView(
        id=endpoint.id,
        tenant_id=endpoint.tenant_id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        description=endpoint.description,
        format=endpoint.body_format,
        status=endpoint.status,
        disabled_reason=endpoint.disabled_reason,
        created_at=endpoint.created_on,
        updated_at=endpoint.modified_on,
        secret_rotated_at=endpoint.secret_rotated_at,
        failing_since=None,
    )


def _with_attempts(cur: psycopg.Cursor[dict[str, Any]], rows: list[dict[str, Any]]) -> list[DeliveryView]:
    ids = [r["delivery_id"] for r in rows]
    attempts: dict[UUID, list[Attempt]] = {i: [] for i in ids}
    if ids:
        for a in cur.execute(
            "SELECT * FROM webhook_attempts WHERE delivery_id = ANY(%s) ORDER BY delivery_id, attempt", (ids,)
        ).fetchall():
            attempts[a["delivery_id"]].append(
                Attempt(a["attempt"], a["attempted_at"], a["status_code"], a["latency_ms"], a["error"])
            )
    return [
        DeliveryView(
            id=r["delivery_id"],
            event_id=r["event_id"],
            event_type=r["ce_type"],
            status=r["status"],
            attempts=attempts[r["delivery_id"]],
            next_attempt_at=r["next_attempt_at"] if r["status"] == "pending" else None,
            created_at=r["created_at"],
            finished_at=r["finished_at"],
            last_error=r["last_error"],
        )
        for r in rows
    ]
