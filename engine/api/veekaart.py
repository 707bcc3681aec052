"""The VeeKaart shop's own endpoints (issue 13, seed "EzBillify <-> VeeKaart"): run a sync and read
the sync history, the auto-sync schedule, and regeneration of the partner's API key and webhook
secret. The integration itself is configured with ``PUT /v1/integrations/veekaart`` like any other.
"""

import secrets
from collections.abc import Callable
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from connectors.catalogue import checked_transport
from connectors.veekaart import sync
from connectors.veekaart.endpoints import ENDPOINTS
from connectors.veekaart.settings import PARTNER_API_KEY, PROVIDER, WEBHOOK_SECRET
from engine import db, integrations
from engine.api.contract import ErrorBody
from engine.api.errors import ApiError
from engine.api.tenant import caller_of
from engine.application import LedgerService
from engine.config import Settings
from engine.security.secrets import KeyRing

BASE = "/v1/integrations/veekaart"
NOT_CONFIGURED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "veekaart is not configured for this tenant"}
}
RUN_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "Not configured, or another sync of the tenant is running"}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No such sync run"}}


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["full", "incremental"] = "incremental"


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool
    # The seed puts a full push at 2-5 minutes; more often than every 5 minutes only queues runs.
    interval_minutes: Annotated[int, Field(ge=5, le=7 * 24 * 60)] = 60


def _not_configured() -> ApiError:
    return ApiError(409, "integration_not_configured", "veekaart is not configured for this tenant")


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Any],
    service: Callable[..., Any],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    router = APIRouter(tags=["veekaart"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806

    @router.post(
        f"{BASE}/sync-runs", status_code=201, summary="Push the catalogue now", responses=RUN_REFUSED
    )
    async def run(body: SyncRequest, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        try:
            return await sync.run_sync(
                svc,
                key_ring(),
                tenant_id,
                kind=body.kind,
                trigger="manual",
                transport_for=lambda loaded: checked_transport(loaded, settings.mode),
            )
        except sync.NotConfigured as exc:
            raise _not_configured() from exc
        except sync.SyncInProgress as exc:
            raise ApiError(
                409,
                "sync_in_progress",
                "another sync of this shop is running; see its record, then try again",
                {"run_id": str(exc.run_id) if exc.run_id else None},
            ) from exc

    @router.get(f"{BASE}/sync-runs", summary="Sync history, newest first")
    def runs(
        tenant_id: Tenant, svc: Service, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            return {"items": sync.list_runs(conn, tenant_id, limit)}

    @router.get(f"{BASE}/sync-runs/{{run_id}}", summary="One sync run", responses=NOT_FOUND)
    def one_run(run_id: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        try:
            parsed = UUID(run_id)
        except ValueError as exc:
            raise ApiError(404, "not_found", "no such sync run") from exc
        with db.transaction(svc.pool) as conn:
            found = sync.get_run(conn, tenant_id, parsed)
        if found is None:
            raise ApiError(404, "not_found", "no such sync run")
        return found

    @router.put(
        f"{BASE}/schedule",
        summary="Set the auto-sync (incremental, every interval_minutes)",
        responses=NOT_CONFIGURED,
    )
    def set_schedule(body: Schedule, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            if integrations.get_view(conn, tenant_id, PROVIDER) is None:
                raise _not_configured()
            return sync.set_schedule(
                conn, tenant_id, enabled=body.enabled, interval_minutes=body.interval_minutes
            )

    @router.get(f"{BASE}/schedule", summary="The auto-sync schedule")
    def get_schedule(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            found = sync.get_schedule(conn, tenant_id)
        return found or {"enabled": False, "interval_minutes": None, "next_run_at": None}

    def regenerate(request: Request, tenant_id: UUID, svc: LedgerService, field: str) -> str:
        with db.transaction(svc.pool) as conn:
            current = integrations.get_view(conn, tenant_id, PROVIDER)
        if current is None:
            raise _not_configured()
        # 32 random bytes: the strength of the seed's "cryptographic keys"; URL-safe for headers.
        value = "vk_" + secrets.token_urlsafe(32)
        svc.save_integration(
            key_ring(),
            tenant_id,
            PROVIDER,
            changed_by=caller_of(request),
            enabled=bool(current["enabled"]),
            environment=None,
            base_url=None,
            credentials={field: value},
            endpoints=ENDPOINTS,
            mode=settings.mode,
        )
        return value

    @router.post(
        f"{BASE}/partner-key",
        summary="Issue a new partner API key (shown once; the old one stops working now)",
        responses=NOT_CONFIGURED,
    )
    async def new_partner_key(request: Request, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        value = await run_in_threadpool(regenerate, request, tenant_id, svc, PARTNER_API_KEY)
        return {PARTNER_API_KEY: value}

    @router.post(
        f"{BASE}/webhook-secret",
        summary="Issue a new webhook secret (shown once; the old one still verifies for 24 hours)",
        responses=NOT_CONFIGURED,
    )
    async def new_webhook_secret(request: Request, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        value = await run_in_threadpool(regenerate, request, tenant_id, svc, WEBHOOK_SECRET)
        return {WEBHOOK_SECRET: value}

    return router
