"""``/v1/tenant`` (the caller's own profile and named API keys) and ``/v1/tenants`` (operator
onboarding).

A tenant API key reaches only its own tenant: another tenant's key id is answered exactly like a
missing one (404). Every change is an event on the Tenant aggregate naming who made it
(``api_key:<key id>`` or ``operator:api``), so ``ledger.tenant.v1`` is the audit trail.

Onboarding needs the operator credential ``LEDGERFLOW_OPERATOR_TOKEN`` (docs/api.md, "Operator
onboarding"), never a tenant key: a platform onboarding companies must not be able to do so with a
key that one of those companies could also hold.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from engine.api.errors import ApiError
from engine.application import IssuedApiKey, LedgerService
from engine.commands import Text
from engine.config import Settings
from engine.security import api_keys
from engine.tenant_profile import NewTenant, ProfileChange, address_dict

OPERATOR = "operator:api"
MAX_GRACE_HOURS = 24 * 30
KeyId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class ApiKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text


class ApiKeyView(BaseModel):
    key_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None = Field(
        description="When a request with it was last accepted (recorded at most once a minute)."
    )
    expires_at: datetime | None = Field(description="Set while the key is in a rotation grace period.")
    user_id: UUID | None = Field(
        default=None, description="The user the key acts for (with the user's role); null: acts as admin."
    )


class ApiKeyList(BaseModel):
    items: list[ApiKeyView]


class CreatedApiKey(BaseModel):
    key_id: str
    name: str
    api_key: str = Field(description="Shown only in this answer: 'Authorization: Bearer <api_key>'.")
    created_at: datetime
    replaces: str | None = Field(default=None, description="The key this one rotated out, if any.")
    replaced_key_valid_until: datetime | None = Field(
        default=None, description="Until when the replaced key keeps working."
    )


class OnboardedTenant(BaseModel):
    tenant_id: UUID
    api_key: str = Field(description="The tenant's first API key, shown only in this answer.")
    profile: dict[str, Any]


def caller_of(request: Request) -> str:
    """Who a tenant request acts as, for the audit trail: ``user:<uuid>`` for a user's key, else its
    API key's public id (never the key). Only called after ``current_tenant`` accepted the key."""
    found = getattr(request.state, "principal", None)
    if found is not None:
        return str(found.actor)
    presented = request.headers.get("authorization", "").partition(" ")[2]
    parsed = api_keys.parse(presented)
    return f"api_key:{parsed[0]}" if parsed else "api_key:unknown"


def _created(issued: IssuedApiKey) -> CreatedApiKey:
    return CreatedApiKey(
        key_id=issued.key_id,
        name=issued.name,
        api_key=issued.api_key,
        created_at=issued.created_at,
        replaces=issued.replaces,
        replaced_key_valid_until=issued.replaced_key_valid_until,
    )


def operator_check(settings: Settings) -> Callable[[Request], str]:
    """A dependency admitting only ``Authorization: Bearer <LEDGERFLOW_OPERATOR_TOKEN>``, compared in
    constant time (``hmac.compare_digest``) so the token cannot be guessed from response times."""
    expected = settings.operator_token.encode() if settings.operator_token else None

    def check(request: Request) -> str:
        if expected is None:
            raise ApiError(
                403,
                "onboarding_disabled",
                "operator onboarding is off on this deployment: set LEDGERFLOW_OPERATOR_TOKEN to enable it",
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and api_keys.parse(token) is not None:
            raise ApiError(
                403,
                "forbidden",
                "a tenant API key cannot onboard tenants: use the operator token "
                "('Authorization: Bearer <LEDGERFLOW_OPERATOR_TOKEN>')",
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected):
            raise ApiError(
                401,
                "unauthorized",
                "this endpoint needs the operator token: 'Authorization: Bearer <LEDGERFLOW_OPERATOR_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return OPERATOR

    return check


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
) -> APIRouter:
    """The routes; tenant routes use the app's API-key dependency, onboarding the operator token."""
    router = APIRouter()
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806 - a type alias
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806 - a type alias
    Operator = Annotated[str, Depends(operator_check(settings))]  # noqa: N806 - a type alias

    @router.get("/v1/tenant", tags=["tenant"], summary="The caller's tenant profile")
    def get_profile(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        return svc.get_tenant(tenant_id).profile

    @router.patch(
        "/v1/tenant",
        tags=["tenant"],
        summary="Change the trade name, address, branches or contacts (recorded with who, old and new)",
    )
    def patch_profile(
        change: ProfileChange, request: Request, tenant_id: Tenant, svc: Service
    ) -> dict[str, Any]:
        return svc.update_profile(tenant_id, caller_of(request), change.fields()).profile

    @router.post(
        "/v1/tenant/api-keys",
        status_code=201,
        tags=["tenant"],
        summary="Add a named API key (shown only in this answer)",
    )
    def add_api_key(body: ApiKeyRequest, request: Request, tenant_id: Tenant, svc: Service) -> CreatedApiKey:
        return _created(svc.add_api_key(tenant_id, body.name, caller_of(request)))

    @router.get(
        "/v1/tenant/api-keys", tags=["tenant"], summary="The tenant's working API keys (never a secret)"
    )
    def list_api_keys(tenant_id: Tenant, svc: Service) -> ApiKeyList:
        return ApiKeyList(items=[ApiKeyView.model_validate(v) for v in svc.list_api_keys(tenant_id)])

    @router.post(
        "/v1/tenant/api-keys/{key_id}/rotate",
        status_code=201,
        tags=["tenant"],
        summary="Replace one key; the old one keeps working for the grace period, the others untouched",
    )
    def rotate_api_key(
        key_id: KeyId,
        request: Request,
        tenant_id: Tenant,
        svc: Service,
        grace_hours: Annotated[float, Query(ge=0, le=MAX_GRACE_HOURS)] = 24.0,
    ) -> CreatedApiKey:
        rotated = svc.rotate_named_api_key(
            tenant_id, key_id, caller_of(request), timedelta(hours=grace_hours)
        )
        return _created(rotated)

    @router.delete(
        "/v1/tenant/api-keys/{key_id}",
        status_code=204,
        tags=["tenant"],
        summary="Revoke a key at once",
    )
    def revoke_api_key(key_id: KeyId, request: Request, tenant_id: Tenant, svc: Service) -> Response:
        svc.revoke_api_key(tenant_id, key_id, caller_of(request))
        return Response(status_code=204)

    @router.post(
        "/v1/tenants",
        status_code=201,
        tags=["operator"],
        summary="Onboard a tenant (operator token only); its first API key is shown only in this answer",
    )
    def onboard_tenant(body: NewTenant, operator: Operator, svc: Service) -> OnboardedTenant:
        profile = {k: v for k, v in body.fields().items() if k in ("branches", "contacts")}
        registered = svc.register_tenant(
            name=body.trade_name,
            legal_name=body.legal_name,
            country=body.country,
            gstin=body.gstin,
            state=body.state,
            address=address_dict(body.address),
            profile=profile,
            changed_by=operator,
            kra_pin=body.kra_pin,
        )
        return OnboardedTenant(
            tenant_id=registered.tenant_id,
            api_key=registered.api_key,
            profile=svc.get_tenant(registered.tenant_id).profile,
        )

    @router.get("/v1/tenants", tags=["operator"], summary="Every tenant's profile (operator token only)")
    def list_tenants(operator: Operator, svc: Service) -> dict[str, Any]:
        return {"items": [t.profile for t in svc.list_tenants()]}

    return router
