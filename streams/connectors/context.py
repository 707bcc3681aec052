"""What the engine hands a connector's handler: its settings, the tenant's integration, HTTP transport.

One ``HandlerContext`` per connector per worker process. It owns the PostgreSQL pool the rate limiter
takes permits from (opened on first use, inside the event loop) so that no connector builds its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import httpx
from psycopg_pool import AsyncConnectionPool

from connectors.catalogue import checked_transport
from connectors.errors import NeedsAttentionError, RetryableError
from engine import db, integrations
from engine.application import LedgerService
from engine.config import Settings
from engine.security import connector_secrets
from engine.security.secrets import KeyRing
from streams.connectors.rate_limit import RateLimitedTransport

T = TypeVar("T")


class HandlerContext:
    """The engine's side of a connector handler (built by streams/catalogue.py from the registry)."""

    def __init__(
        self,
        settings: Settings,
        service: LedgerService,
        ring: KeyRing,
        *,
        connector: str,
        request_rate_per_s: float | None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.ring = ring
        self.connector = connector
        self.request_rate_per_s = request_rate_per_s
        self._pool: AsyncConnectionPool | None = None
        if request_rate_per_s is not None:
            self._pool = AsyncConnectionPool(
                settings.database_url,
                min_size=1,
                max_size=4,
                open=False,
                kwargs={"options": f"-c search_path={settings.db_schema}"},
            )

    async def blocking(self, work: Callable[[], T]) -> T:
        """Run synchronous engine work (the event store, the integrations table) off the loop; a
        database outage becomes a retryable error, so the job waits in a retry tier, never the DLQ."""
        try:
            return await asyncio.to_thread(work)
        except db.DatabaseUnavailable as exc:
            raise RetryableError("database_unavailable", str(exc)) from exc

    def _integration_now(self, tenant_id: UUID) -> integrations.IntegrationSettings:
        with db.connect(self.settings) as conn:
            loaded = integrations.load(conn, self.ring, tenant_id, self.connector)
        if loaded is None or not loaded.enabled:
            raise NeedsAttentionError(
                "integration_disabled", f"{self.connector} is not enabled for tenant {tenant_id}"
            )
        return loaded

    async def integration(self, tenant_id: UUID) -> integrations.IntegrationSettings:
        """The tenant's settings for this connector, credentials opened; needs-attention if off."""
        return await self.blocking(lambda: self._integration_now(tenant_id))

    async def transport(self, loaded: integrations.IntegrationSettings) -> httpx.AsyncBaseTransport:
        """The transport every provider call goes through: the URL policy and connect-time address
        check (connectors/egress.py), so a stored URL a newer policy refuses is never called; and,
        when the connector's limit counts requests, a rate-limit permit per request."""
        checked = checked_transport(loaded, self.settings.mode)
        if self._pool is None:
            return checked
        if self._pool.closed:
            await self._pool.open()
        return RateLimitedTransport(self._pool, self.connector, self.request_rate_per_s, inner=checked)

    # -- secrets the connector obtains at run time (engine/security/connector_secrets.py) ----------

    async def secret(self, tenant_id: UUID, scope: str) -> bytes | None:
        """The runtime secret stored under ``scope`` for the tenant; None if none or expired."""

        def read() -> bytes | None:
            with db.connect(self.settings) as conn:
                return connector_secrets.get(conn, self.ring, tenant_id, self.connector, scope)

        return await self.blocking(read)

    async def store_secret(
        self, tenant_id: UUID, scope: str, value: bytes, *, expires_at: datetime | None = None
    ) -> None:
        """Keep a secret the provider handed out (sealed, bound to tenant, connector and scope)."""

        def write() -> None:
            with db.connect(self.settings) as conn, conn.transaction():
                connector_secrets.put(
                    conn, self.ring, tenant_id, self.connector, scope, value, expires_at=expires_at
                )

        await self.blocking(write)

    async def forget_secret(self, tenant_id: UUID, scope: str) -> bool:
        def remove() -> bool:
            with db.connect(self.settings) as conn, conn.transaction():
                return connector_secrets.delete(conn, tenant_id, self.connector, scope)

        return await self.blocking(remove)

    async def close(self) -> None:
        if self._pool is not None and not self._pool.closed:
            await self._pool.close()
