"""``/v1/users`` (a tenant's users, their roles and their API keys) and ``/v1/operator/grants`` (the
operator's cross-tenant read grants for consolidators).

User management is the tenant administrator's (engine/api/permissions.py, ``ADMIN_AREAS``). Another
tenant's user id answers exactly like a missing one (404). Grants need the operator token, never a
tenant key: a college must not be able to open another college's books to itself.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from engine.api.principal import principal_of
from engine.api.tenant import ApiKeyRequest, CreatedApiKey, operator_check
from engine.application import LedgerService
from engine.commands import Text
from engine.config import Settings
from engine.tenant_profile import Email
from engine.users import Grant, UserDirectory

Role = Literal["accountant", "principal", "auditor", "admin", "consolidator"]


def _error(description: str) -> dict[str, Any]:
    # The one error shape (ErrorBody, declared by engine/api/contract.py, which adds the statuses
    # every route shares); these are the ones particular to a route.
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ERROR_BODY}}}}


ERROR_BODY = "#/components/schemas/ErrorBody"
USER_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _error("duplicate_email, or the tenant was changed by another request at once: retry")
}
KEY_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _error("user_disabled: enable the user before issuing it a key")
}
# The operator's routes are behind LEDGERFLOW_OPERATOR_TOKEN, like onboarding (engine/api/tenant.py).
OPERATOR_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("No or a wrong operator token"),
    403: _error("Operator routes are off (no LEDGERFLOW_OPERATOR_TOKEN), or a tenant API key was sent"),
    503: _error("PostgreSQL is unreachable for now; retry after Retry-After seconds"),
}
GRANT_ERRORS: dict[int | str, dict[str, Any]] = {
    **OPERATOR_ERRORS,
    404: _error("No such user or tenant"),
    409: _error("not_a_consolidator or user_disabled, or the tenant was changed by another request at once"),
}


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text
    email: Email
    role: Role


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = Field(
        default=None, description="true disables the user (its keys stop working); false enables it again."
    )

    @model_validator(mode="after")
    def _something(self) -> "UserChange":
        if self.role is None and self.disabled is None:
            raise ValueError("give role, disabled or both")
        return self


class UserView(BaseModel):
    user_id: UUID
    name: str
    email: str
    role: Role
    status: Literal["active", "disabled"]
    created_at: datetime
    updated_at: datetime


class UserList(BaseModel):
    items: list[UserView]


class UserApiKey(CreatedApiKey):
    user_id: UUID = Field(description="The user whose role this key acts with.")


class NewGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UUID = Field(description="A user with role consolidator, of any tenant.")
    tenant_id: UUID = Field(description="The college (tenant) the user may read with ?college_id=.")


class GrantView(BaseModel):
    user_id: UUID
    home_tenant_id: UUID
    tenant_id: UUID
    granted_by: str
    granted_at: datetime


class GrantList(BaseModel):
    items: list[GrantView]


def _grant(g: Grant) -> GrantView:
    return GrantView(
        user_id=g.user_id,
        home_tenant_id=g.home_tenant_id,
        tenant_id=g.tenant_id,
        granted_by=g.granted_by,
        granted_at=g.granted_at,
    )


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
) -> APIRouter:
    router = APIRouter()
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806 - a type alias
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806 - a type alias
    Operator = Annotated[str, Depends(operator_check(settings))]  # noqa: N806 - a type alias

    @router.post(
        "/v1/users",
        status_code=201,
        tags=["users"],
        summary="Add a user with a role",
        responses=USER_CONFLICT,
    )
    async def add_user(body: NewUser, request: Request, tenant_id: Tenant, svc: Service) -> UserView:
        actor = principal_of(request).actor
        added = await run_in_threadpool(
            UserDirectory(svc).add,
            tenant_id,
            name=body.name,
            email=body.email,
            role=body.role,
            changed_by=actor,
        )
        return UserView.model_validate(added)

    @router.get("/v1/users", tags=["users"], summary="The tenant's users and their roles")
    async def list_users(tenant_id: Tenant, svc: Service) -> UserList:
        found = await run_in_threadpool(UserDirectory(svc).list_users, tenant_id)
        return UserList(items=[UserView.model_validate(u) for u in found])

    @router.get("/v1/users/{user_id}", tags=["users"], summary="One user")
    async def get_user(user_id: UUID, tenant_id: Tenant, svc: Service) -> UserView:
        return UserView.model_validate(await run_in_threadpool(UserDirectory(svc).get, tenant_id, user_id))

    @router.patch(
        "/v1/users/{user_id}",
        tags=["users"],
        responses=USER_CONFLICT,
        summary="Change a user's role or disable it (recorded with who, old and new; effective within"
        " the authentication cache window)",
    )
    async def change_user(
        user_id: UUID, body: UserChange, request: Request, tenant_id: Tenant, svc: Service
    ) -> UserView:
        actor = principal_of(request).actor
        changed = await run_in_threadpool(
            UserDirectory(svc).change,
            tenant_id,
            user_id,
            role=body.role,
            disabled=body.disabled,
            changed_by=actor,
        )
        return UserView.model_validate(changed)

    @router.post(
        "/v1/users/{user_id}/api-keys",
        status_code=201,
        tags=["users"],
        responses=KEY_CONFLICT,
        summary="Issue an API key bound to the user (shown only in this answer), acting with the user's role",
    )
    async def add_user_key(
        user_id: UUID, body: ApiKeyRequest, request: Request, tenant_id: Tenant, svc: Service
    ) -> UserApiKey:
        actor = principal_of(request).actor
        issued = await run_in_threadpool(
            UserDirectory(svc).issue_key, tenant_id, user_id, name=body.name, changed_by=actor
        )
        return UserApiKey(
            key_id=issued.key_id,
            name=issued.name,
            api_key=issued.api_key,
            created_at=issued.created_at,
            user_id=user_id,
        )

    @router.post(
        "/v1/operator/grants",
        status_code=201,
        tags=["operator"],
        responses=GRANT_ERRORS,
        summary="Let a consolidator user read another tenant with ?college_id= (operator token only)",
    )
    async def grant(body: NewGrant, operator: Operator, svc: Service) -> GrantView:
        given = await run_in_threadpool(
            UserDirectory(svc).grant, user_id=body.user_id, tenant_id=body.tenant_id, changed_by=operator
        )
        return _grant(given)

    @router.get(
        "/v1/operator/grants",
        tags=["operator"],
        summary="Consolidator read grants (operator token only)",
        responses=OPERATOR_ERRORS,
    )
    async def list_grants(
        operator: Operator, svc: Service, user_id: Annotated[UUID | None, Query()] = None
    ) -> GrantList:
        found = await run_in_threadpool(UserDirectory(svc).grants, user_id)
        return GrantList(items=[_grant(g) for g in found])

    @router.delete(
        "/v1/operator/grants/{user_id}/{tenant_id}",
        status_code=204,
        tags=["operator"],
        responses=OPERATOR_ERRORS,
        summary="Withdraw a consolidator's read grant at once (operator token only)",
    )
    async def withdraw(user_id: UUID, tenant_id: UUID, operator: Operator, svc: Service) -> Response:
        await run_in_threadpool(
            UserDirectory(svc).withdraw, user_id=user_id, tenant_id=tenant_id, changed_by=operator
        )
        return Response(status_code=204)

    return router
