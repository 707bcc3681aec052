"""Integration health, logs, sync and removal (seed 003 "Monitoring", docs/integrations.md).

``GET /v1/integrations`` (engine/api/app.py) adds to each configured provider the fields of
:func:`health_fields`; this router adds ``GET /v1/integrations/{provider}/logs``, ``POST
/v1/integrations/{provider}/sync`` and ``DELETE /v1/integrations/{provider}``. Every route reads and
changes only the caller's tenant; a provider another tenant configured is simply not configured here.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from connectors.errors import ConnectorError
from connectors.registry import BY_NAME
from engine import db, integration_health, integrations
from engine.api.errors import ApiError
from engine.api.tenant import caller_of
from engine.application import LedgerService
from engine.config import Settings
from engine.security.secrets import KeyRing


def health_fields(conn: psycopg.Connection, tenant_id: UUID, item: dict[str, Any]) -> dict[str, Any]:
    """The health fields of one configured provider (``item`` is its settings view)."""
    provider = item["provider"]
    fields = integration_health.health_view(
        item["enabled"], integration_health.health(conn, tenant_id, provider)
    )
    last_sync: datetime | None = None
    next_sync: datetime | None = None
    connector = BY_NAME.get(provider)
    if connector is not None and connector.sync is not None:
        loaded = integrations.IntegrationSettings(
            tenant_id, provider, item["enabled"], item["environment"], item["base_url"], {}
        )
        last_sync = connector.sync.last_synced(conn, loaded)
        every = connector.sync.every()
        if every is not None and item["enabled"]:
            next_sync = (last_sync + every) if last_sync is not None else None
    fields["sync"] = {
        "supported": connector is not None and connector.sync is not None,
        "last_sync_at": last_sync.isoformat() if last_sync else None,
        "next_sync_at": next_sync.isoformat() if next_sync else None,
    }
    fields["last_sync_at"] = fields["sync"]["last_sync_at"]
    fields["next_sync_at"] = fields["sync"]["next_sync_at"]
    return fields


def with_health(
    conn: psycopg.Connection, tenant_id: UUID, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``items`` (settings views) with their health fields added; existing fields unchanged."""
    return [{**item, **health_fields(conn, tenant_id, item)} for item in items]


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Any],
    service: Callable[..., Any],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    router = APIRouter(tags=["integrations"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806

    @router.get("/v1/integrations/{provider}/logs", summary="The provider's recent calls, newest first")
    def integration_logs(
        provider: str,
        tenant_id: Tenant,
        svc: Service,
        limit: Annotated[int, Query(ge=1, le=integration_health.MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=20)] = None,
    ) -> dict[str, Any]:
        integrations.check_provider(provider)
        before: int | None = None
        if cursor is not None:
            if not cursor.isdigit() or len(cursor) > 18:
                raise ApiError(
                    422,
                    "validation_failed",
                    "cursor is the next_cursor of a previous page",
                    {"fields": [{"path": "cursor", "code": "invalid_cursor", "message": "not a cursor"}]},
                )
            before = int(cursor)
        with db.transaction(svc.pool) as conn:
            page = integration_health.attempts_page(conn, tenant_id, provider, limit=limit, before=before)
        return {"provider": provider, **page}

    @router.post(
        "/v1/integrations/{provider}/sync",
        status_code=202,
        summary="Start the provider's sync now (409 if the connector has none)",
    )
    async def sync_integration(provider: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        integrations.check_provider(provider)
        connector = BY_NAME.get(provider)
        if connector is None or connector.sync is None:
            raise ApiError(409, "sync_not_supported", f"{provider} has nothing to sync")
        with db.transaction(svc.pool) as conn:
            loaded = integrations.load(conn, key_ring(), tenant_id, provider)
        if loaded is None:
            raise ApiError(404, "not_found", f"{provider} is not configured for this tenant")
        if not loaded.enabled:
            raise ApiError(409, "integration_disabled", f"{provider} is disabled for this tenant")
        try:
            job_id = await connector.sync.start(settings, loaded)
        except ConnectorError as exc:
            raise ApiError(409, exc.code, exc.message) from exc
        return {"provider": provider, "queued": job_id}

    @router.delete(
        "/v1/integrations/{provider}",
        status_code=204,
        summary="Disable the provider and forget its credentials",
    )
    async def delete_integration(
        provider: str, request: Request, tenant_id: Tenant, svc: Service
    ) -> Response:
        integrations.check_provider(provider)
        removed = await run_in_threadpool(
            svc.remove_integration, key_ring(), tenant_id, provider, changed_by=caller_of(request)
        )
        if not removed:
            raise ApiError(404, "not_found", f"{provider} is not configured for this tenant")
        return Response(status_code=204)

    return router
