"""``/v1/etims``: a Kenyan tenant's eTIMS devices and items, and the gateway operator's onboarding.

Tenant routes (API key): ``GET /v1/etims/devices``, ``GET /v1/etims/devices/{id}``,
``POST /v1/etims/devices``, ``POST /v1/etims/codes/sync``, ``POST /v1/etims/items``,
``GET /v1/etims/items``. Operator routes (``LEDGERFLOW_OPERATOR_TOKEN``, like ``POST /v1/tenants``):
``POST /v1/etims/onboard``, ``POST /v1/etims/companies/{tenant_id}/suspend`` and ``/resume``.

The work against KRA happens in the etims connector workers: these routes record what is wanted and
queue a job (``connector.etims.jobs.v1``); the answers show the state (``pending`` until done). The
environment of every device and item is the etims integration's at the time (the one switch).

A suspended company (docs/etims-devices.md): its API keys are refused with 403 ``company_suspended``
(:func:`refuse_suspended`, called by the app's tenant authentication) and its eTIMS jobs, sales
included, wait in retry without calling KRA until it is resumed.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures.
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from connectors.etims import codes as etims_codes
from connectors.etims import devices as etims_devices
from connectors.etims import items as etims_items
from engine import db, integrations
from engine.api.errors import ApiError
from engine.api.tenant import operator_check
from engine.application import LedgerService, ValidationFailed
from engine.commands import Text
from engine.config import Settings
from engine.fields import SafeStr, text
from engine.security.secrets import KeyRing

PROVIDER = "etims"
BranchId = Annotated[SafeStr, text(min_length=2, max_length=2, pattern=r"^[0-9]{2}$")]
Serial = Annotated[SafeStr, text(min_length=1, max_length=100)]
Code = Annotated[SafeStr, text(min_length=1, max_length=20)]
SUSPENSION_CACHE_SECONDS = 5.0


class NewDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bhf_id: BranchId = Field(description="KRA's branch id (bhfId), two digits; never assumed to be 00.")
    device_serial: Serial
    device_type: Literal["oscu", "vscu"]


class NewItemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text
    item_class_code: Code = Field(description="KRA item classification code (selectItemClsList).")
    item_type: Literal["1", "2", "3"] = Field(description="1 raw material, 2 finished product, 3 service.")
    origin: Annotated[SafeStr, text(min_length=2, max_length=2)] = Field(description="Country, e.g. KE.")
    pkg_unit: Code = Field(description="Packaging unit, code list 17 (e.g. NT).")
    qty_unit: Code = Field(description="Quantity unit, code list 10 (e.g. U).")
    tax_type: Literal["A", "B", "C", "D", "E"]
    default_price: Annotated[
        SafeStr, text(min_length=1, max_length=20, pattern=r"^[0-9]{1,15}(\.[0-9]{1,2})?$")
    ]
    bhf_id: BranchId | None = Field(default=None, description="Default: the tenant's first branch.")


class OnboardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    legal_name: Text
    trade_name: Text | None = None
    kra_pin: Annotated[SafeStr, text(min_length=11, max_length=11)]
    environment: Literal["sandbox", "production"] = "sandbox"
    base_url: Annotated[SafeStr, text(min_length=1, max_length=500)] | None = Field(
        default=None, description="Sandbox only; production uses KRA's hosts."
    )
    bhf_id: BranchId
    device_type: Literal["oscu", "vscu"]
    device_serial: Serial


class SuspendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[SafeStr, text(max_length=500)] | None = None


_suspended_cache: dict[UUID, tuple[bool, float]] = {}


def suspension_cached(tenant_id: UUID) -> bool:
    """Whether ``refuse_suspended`` can answer for this tenant without PostgreSQL (the API calls it
    on the event loop then, and from a thread otherwise)."""
    cached = _suspended_cache.get(tenant_id)
    return cached is not None and cached[1] > time.monotonic()


def refuse_suspended(svc: LedgerService, tenant_id: UUID) -> None:
    """403 ``company_suspended`` for a suspended company's API key (cached ``SUSPENSION_CACHE_SECONDS``:
    a suspension or resume reaches every API process within that time)."""
    now = time.monotonic()
    cached = _suspended_cache.get(tenant_id)
    if cached is None or cached[1] <= now:
        try:
            with db.transaction(svc.pool) as conn:
                suspended = etims_devices.is_suspended(conn, tenant_id)
        except psycopg.errors.UndefinedTable:
            suspended = False  # a deployment without the etims connector's tables
        if len(_suspended_cache) > 10_000:
            _suspended_cache.clear()
        cached = _suspended_cache[tenant_id] = (suspended, now + SUSPENSION_CACHE_SECONDS)
    if cached[0]:
        raise ApiError(
            403,
            "company_suspended",
            "this company is suspended by its eTIMS gateway operator: nothing is sent to KRA and its API "
            "keys are refused until the operator resumes it",
        )


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    router = APIRouter()
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806 - a type alias
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806 - a type alias
    Operator = Annotated[str, Depends(operator_check(settings))]  # noqa: N806 - a type alias

    def integration(svc: LedgerService, tenant_id: UUID) -> integrations.IntegrationSettings:
        with db.transaction(svc.pool) as conn:
            loaded = integrations.load(conn, key_ring(), tenant_id, PROVIDER)
        if loaded is None or not loaded.enabled:
            raise ApiError(
                409,
                "etims_not_configured",
                "configure eTIMS first: PUT /v1/integrations/etims with environment and credentials "
                "{tin, bhf_id, device_serial, device_type}",
            )
        return loaded

    def device_or_404(svc: LedgerService, tenant_id: UUID, device_id: str) -> dict[str, Any]:
        try:
            wanted = UUID(device_id)
        except ValueError:
            wanted = None
        found = None
        if wanted is not None:
            with db.transaction(svc.pool) as conn:
                found = etims_devices.get_device(conn, tenant_id, wanted)
        if found is None:
            raise ApiError(404, "not_found", f"no eTIMS device {device_id}")
        return found

    @router.get("/v1/etims/devices", tags=["etims"], summary="The tenant's eTIMS devices and their status")
    def list_devices(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            rows = etims_devices.list_devices(conn, tenant_id)
        return {"items": [etims_devices.device_view(r) for r in rows]}

    @router.get("/v1/etims/devices/{device_id}", tags=["etims"], summary="One eTIMS device (never a key)")
    def get_device(device_id: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        return etims_devices.device_view(device_or_404(svc, tenant_id, device_id))

    @router.post(
        "/v1/etims/devices",
        status_code=202,
        tags=["etims"],
        summary="Register a branch's device in the integration's environment and initialise it",
    )
    async def add_device(body: NewDevice, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        loaded = integration(svc, tenant_id)
        with db.transaction(svc.pool) as conn:
            row, _ = etims_devices.register_device(
                conn,
                tenant_id,
                environment=loaded.environment,
                bhf_id=body.bhf_id,
                device_serial=body.device_serial,
                device_type=body.device_type,
            )
        if row["status"] == "pending":
            job = etims_devices.init_job(tenant_id, loaded.environment, body.bhf_id, reason="api")
            await etims_devices.queue_jobs(settings, [job])
        return etims_devices.device_view(row)

    @router.post(
        "/v1/etims/codes/sync",
        status_code=202,
        tags=["etims"],
        summary="Sync KRA's code lists and item classes for the integration's environment now",
    )
    async def sync_codes(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        loaded = integration(svc, tenant_id)
        job = etims_codes.sync_job(tenant_id, loaded.environment, reason="api")
        await etims_devices.queue_jobs(settings, [job])
        return {"queued": job.job_id, "environment": loaded.environment}

    @router.post(
        "/v1/etims/items",
        status_code=201,
        tags=["etims"],
        summary="Create an item (validated against KRA's code lists) and register it with KRA (saveItem)",
    )
    async def add_item(body: NewItemRequest, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        loaded = integration(svc, tenant_id)
        item = etims_items.NewItem(
            name=body.name,
            item_class_code=body.item_class_code,
            item_type=body.item_type,
            origin=body.origin,
            pkg_unit=body.pkg_unit,
            qty_unit=body.qty_unit,
            tax_type=body.tax_type,
            default_price=Decimal(body.default_price),
            bhf_id=body.bhf_id,
        )
        bhf_id = body.bhf_id or str(loaded.credentials["bhf_id"])
        with db.transaction(svc.pool) as conn:
            violations = etims_items.check_item(conn, loaded.environment, item)
            if violations:
                raise ValidationFailed(tuple(violations))
            row = etims_items.create_item(conn, tenant_id, loaded.environment, bhf_id, item)
        await etims_devices.queue_jobs(settings, [etims_items.save_job(tenant_id, row["id"])])
        return etims_items.item_view(row)

    @router.get("/v1/etims/items", tags=["etims"], summary="The tenant's items and their KRA status")
    def list_items(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            rows = etims_items.list_items(conn, tenant_id)
        return {"items": [etims_items.item_view(r) for r in rows]}

    # -- the gateway operator ---------------------------------------------------------------------

    @router.post(
        "/v1/etims/companies/{tenant_id}/suspend",
        tags=["operator"],
        summary="Suspend a company: its API keys are refused and nothing is sent to KRA (operator token)",
    )
    def suspend(
        tenant_id: UUID, operator: Operator, svc: Service, body: SuspendRequest | None = None
    ) -> dict[str, Any]:
        return _set_suspended(svc, tenant_id, True, operator, body.reason if body else None)

    @router.post(
        "/v1/etims/companies/{tenant_id}/resume",
        tags=["operator"],
        summary="Resume a suspended company: waiting sales go out (operator token)",
    )
    def resume(tenant_id: UUID, operator: Operator, svc: Service) -> dict[str, Any]:
        return _set_suspended(svc, tenant_id, False, operator, None)

    def _set_suspended(
        svc: LedgerService, tenant_id: UUID, suspended: bool, operator: str, reason: str | None
    ) -> dict[str, Any]:
        svc.get_tenant(tenant_id)  # 404 for an unknown company
        with db.transaction(svc.pool) as conn:
            row = etims_devices.set_suspended(conn, tenant_id, suspended, changed_by=operator, reason=reason)
        _suspended_cache.pop(tenant_id, None)
        return {
            "tenant_id": str(tenant_id),
            "suspended": row["suspended"],
            "reason": row["reason"],
            "changed_at": row["changed_at"].isoformat(),
        }

    @router.post(
        "/v1/etims/onboard",
        status_code=201,
        tags=["operator"],
        summary="Onboard a Kenyan company: tenant, eTIMS integration and first device (operator token)",
    )
    def onboard(body: OnboardRequest, operator: Operator, svc: Service) -> dict[str, Any]:
        from connectors.catalogue import endpoint_policy
        from connectors.etims import CONNECTOR

        schema = CONNECTOR.settings
        base_url = body.base_url or (
            schema.production_urls[0] if body.environment == "production" else schema.sandbox_url
        )
        # Refused before anything is stored: a failed onboarding leaves no tenant behind to retry over.
        integrations.check_base_url(str(base_url), body.environment, endpoint_policy(PROVIDER), settings.mode)
        registered = svc.register_tenant(
            name=body.trade_name or body.legal_name,
            legal_name=body.legal_name,
            country="KE",
            gstin=None,
            state=None,
            kra_pin=body.kra_pin,
            changed_by=operator,
        )
        tenant_id = registered.tenant_id
        kra_pin = svc.get_tenant(tenant_id).kra_pin or body.kra_pin.upper()
        svc.save_integration(
            key_ring(),
            tenant_id,
            PROVIDER,
            changed_by=operator,
            enabled=True,
            environment=body.environment,
            base_url=base_url,
            # In eTIMS the taxpayer's TIN is its KRA PIN.
            credentials={
                "tin": kra_pin,
                "bhf_id": body.bhf_id,
                "device_serial": body.device_serial,
                "device_type": body.device_type,
            },
            endpoints=endpoint_policy(PROVIDER),
            mode=settings.mode,
        )
        # The device shows as pending at once; the saved integration's event queues its initialisation.
        with db.transaction(svc.pool) as conn:
            row, _ = etims_devices.register_device(
                conn,
                tenant_id,
                environment=body.environment,
                bhf_id=body.bhf_id,
                device_serial=body.device_serial,
                device_type=body.device_type,
            )
        return {
            "tenant_id": str(tenant_id),
            "api_key": registered.api_key,
            "environment": body.environment,
            "device": etims_devices.device_view(row),
        }

    return router
