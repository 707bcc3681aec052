"""``/v1/tally``: the ledgers a college's Tally company holds, and which of them our vouchers post to.

- ``GET /v1/tally/ledger-map`` / ``PUT /v1/tally/ledger-map``: roles (``bank``, ``sales``, output tax
  ledgers, ``debtors``, ``party:<customer>``) -> ledger names of the tenant's Tally company
  (connectors/tally/mapping.py, docs/tally.md). A PUT replaces the whole map; who changed it last is
  the caller's principal, never a body field.
- ``GET /v1/tally/ledgers``: the seed's ledger list, as last read from Tally (cached, no Tally call).
- ``POST /v1/tally/ledgers/sync``: read the "List of Accounts" from Tally now and replace the cache.
- ``GET|PUT /v1/tally/schedule`` ``{enabled, run_at: "HH:MM", timezone}``: the daily ledger sync
  (connectors/tally/sync.py; default on, 03:00 Asia/Kolkata), its last day and last error.
- ``GET /v1/tally/reconciliations``: monthly reconciliations (connectors/tally/reconcile.py), newest first.
- ``/v1/tally/vouchers``: vouchers posted through the API (engine/api/tally_vouchers.py).

Every read and write is the caller's tenant's.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures.
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from connectors.catalogue import checked_transport
from connectors.errors import ConnectorError, ErrorClass
from connectors.tally import ledgers, reconcile
from connectors.tally import sync as tally_sync
from connectors.tally.client import PROVIDER, TallyClient
from connectors.tally.mapping import ROLES, check_role
from connectors.tally.vouchers import MAX_NAME, VoucherRefused, check_name
from engine import db, integrations
from engine.api.accountant import Schedule
from engine.api.contract import ErrorBody
from engine.api.errors import ApiError
from engine.api.principal import principal_of
from engine.api.tally_vouchers import build_router as vouchers_router
from engine.application import LedgerService
from engine.config import Settings
from engine.security.secrets import KeyRing

BASE = "/v1/tally"
MAX_ROLES = 500
SYNC_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "tally is not configured (or not enabled) for this tenant"},
    502: {"model": ErrorBody, "description": "Tally did not answer, or refused the request"},
}


# A role is a word, or a prefix ("party:", "vendor:", "expense:") and a name; a ledger name has at most
# MAX_NAME characters (connectors/tally/vouchers.py). What each may hold is checked in _checked_map.
Role = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME + 10)]
LedgerName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]


class LedgerMapBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ledgers: dict[Role, LedgerName] = Field(
        max_length=MAX_ROLES,
        description='role -> Tally ledger name, e.g. {"bank": "ICICI Bank", "party:Acme": "Acme Ltd"}',
    )


class SyncSchedule(Schedule):
    """The accountant's schedule body (checked the same way), with the ledger sync's default time."""

    run_at: str = Field(default="03:00", description="Local time of day, HH:MM")


def _checked_map(body: LedgerMapBody) -> dict[str, str]:
    checked: dict[str, str] = {}
    for role, name in body.ledgers.items():
        try:
            checked[check_role(role)] = check_name(name)
        except VoucherRefused as exc:
            raise ApiError(422, "invalid_ledger_map", exc.message, {"role": role[:60]}) from exc
    return checked


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Any],
    service: Callable[..., Any],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    router = APIRouter(tags=["tally"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806

    @router.get(f"{BASE}/ledger-map", summary="Which Tally ledgers our vouchers post to")
    def get_map(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            return {**ledgers.map_view(conn, tenant_id), "roles": ROLES}

    @router.put(
        f"{BASE}/ledger-map",
        summary="Replace the ledger map",
        responses={422: {"model": ErrorBody, "description": "A role or ledger name is not acceptable"}},
    )
    def put_map(body: LedgerMapBody, request: Request, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        checked = _checked_map(body)
        actor = principal_of(request).actor
        with db.transaction(svc.pool) as conn:
            ledgers.put_map(conn, tenant_id, checked, actor)
            return {**ledgers.map_view(conn, tenant_id), "roles": ROLES}

    @router.get(f"{BASE}/ledgers", summary="The ledgers of the tenant's Tally company, as last synced")
    def get_ledgers(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            return ledgers.ledgers_view(conn, tenant_id)

    @router.post(f"{BASE}/ledgers/sync", summary="Read the ledgers from Tally now", responses=SYNC_REFUSED)
    async def sync(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        def load() -> integrations.IntegrationSettings | None:
            with db.transaction(svc.pool) as conn:
                return integrations.load(conn, key_ring(), tenant_id, PROVIDER)

        loaded = await run_in_threadpool(load)
        if loaded is None or not loaded.enabled:
            raise ApiError(409, "integration_not_configured", "tally is not configured for this tenant")
        company = str(loaded.credentials.get("company") or "")
        try:
            async with TallyClient(
                loaded.base_url, company, transport=checked_transport(loaded, settings.mode)
            ) as client:
                found = await client.ledgers()
        except ConnectorError as exc:
            retry = exc.error_class == ErrorClass.RETRYABLE
            raise ApiError(
                502,
                "tally_unavailable" if retry else "tally_refused",
                f"Tally: {exc.message}"[:500],
                {"provider_code": exc.code[:60]},
            ) from exc

        def store() -> dict[str, Any]:
            with db.transaction(svc.pool) as conn:
                ledgers.replace_ledgers(conn, tenant_id, found, datetime.now(UTC))
                return ledgers.ledgers_view(conn, tenant_id)

        return await run_in_threadpool(store)

    @router.get(f"{BASE}/schedule", summary="When the ledgers are synced from Tally each day")
    def get_schedule(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            return tally_sync.schedule_view(conn, tenant_id)

    @router.put(
        f"{BASE}/schedule",
        summary="Set the daily ledger sync's time and zone, or turn it off",
        responses={422: {"model": ErrorBody, "description": "run_at is not HH:MM or timezone unknown"}},
    )
    def put_schedule(body: SyncSchedule, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        run_at = datetime.strptime(body.run_at, "%H:%M").time()
        with db.transaction(svc.pool) as conn:
            tally_sync.put_schedule(conn, tenant_id, body.enabled, run_at, body.timezone)
            return tally_sync.schedule_view(conn, tenant_id)

    @router.get(
        f"{BASE}/reconciliations",
        summary="Monthly: Tally's expense ledgers against our approved expenses, and the differences",
    )
    def get_reconciliations(
        tenant_id: Tenant, svc: Service, limit: Annotated[int, Query(ge=1, le=120)] = 24
    ) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            return {"reconciliations": reconcile.listed(conn, tenant_id, limit)}

    router.include_router(vouchers_router(settings, current_tenant, service, key_ring))
    return router
