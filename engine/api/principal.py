"""Who a tenant request acts as: the principal ``current_tenant`` (engine/api/app.py) accepted.

Handlers that record an actor (an approval's approver, an audit entry) read it with ``principal_of``
rather than trusting anything in the body. Keys issued before users and roles existed, and keys
without a user, act as the tenant's administrator; a key issued to a user acts as ``user:<uuid>``
with that user's role (docs/users-and-roles.md). ``admit`` applies the permission policy
(engine/api/permissions.py) and a consolidator's choice of college (``?college_id=``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from uuid import UUID

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from engine.api import permissions
from engine.api.errors import ApiError
from engine.application import LedgerService
from engine.security import api_keys
from engine.users import ADMIN, CONSOLIDATOR, UserDirectory


@dataclass(frozen=True, slots=True)
class Principal:
    # The tenant the request reads or changes: the key's own, or the college a consolidator selected.
    tenant_id: UUID
    # "api_key:<public id>" or "user:<uuid>": never the secret part of a key.
    actor: str
    role: str = ADMIN
    user_id: UUID | None = None
    key_id: str | None = None
    # The key's own tenant when a consolidator reads another college (``tenant_id``); else None.
    home_tenant_id: UUID | None = None


def from_api_key(tenant_id: UUID, presented: str) -> Principal:
    """The principal of an accepted bearer key without a user (its public id only)."""
    parsed = api_keys.parse(presented)
    key_id = parsed[0] if parsed else None
    return Principal(tenant_id=tenant_id, actor=f"api_key:{key_id or 'unknown'}", key_id=key_id)


def from_identity(identity: api_keys.KeyIdentity) -> Principal:
    """The principal of an accepted key: its user and role when it has one, else the admin."""
    if identity.user_id is None:
        return Principal(
            tenant_id=identity.tenant_id, actor=f"api_key:{identity.key_id}", key_id=identity.key_id
        )
    return Principal(
        tenant_id=identity.tenant_id,
        actor=f"user:{identity.user_id}",
        role=identity.role or ADMIN,
        user_id=identity.user_id,
        key_id=identity.key_id,
    )


def _forbidden(message: str, details: dict[str, object]) -> ApiError:
    return ApiError(403, "forbidden", message, details)


async def admit(request: Request, svc: LedgerService, identity: api_keys.KeyIdentity) -> Principal:
    """The principal of an authenticated request after the permission policy allowed it: 403
    ``forbidden`` naming the roles that may, or for a ``college_id`` the caller may not read."""
    found = from_identity(identity)
    route = request.scope.get("route")
    path = str(getattr(route, "path", None) or request.url.path)
    method = request.method
    if not permissions.permits(found.role, method, path):
        roles = sorted(permissions.allowed_roles(method, path))
        raise _forbidden(
            permissions.refusal_message(found.role, method, path),
            {"allowed_roles": roles, "role": found.role},
        )
    colleges = set(request.query_params.getlist("college_id"))
    if not colleges:
        return found
    if len(colleges) > 1:
        raise ApiError(422, "validation_failed", "college_id: give one college", {"fields": []})
    try:
        college = UUID(colleges.pop())
    except ValueError:
        message = "college_id: a college is a tenant, named by its tenant id (a UUID)"
        field = {"path": "query.college_id", "code": "uuid_parsing", "message": message}
        raise ApiError(422, "validation_failed", message, {"fields": [field]}) from None
    if college == identity.tenant_id:
        return found
    # One answer for every refusal (not a consolidator, not a readable route, not granted, no such
    # tenant): which tenants exist is nobody's business but the operator's.
    refusal = _forbidden(
        "college_id names another tenant: only a consolidator the operator granted that college may"
        " read it, and only on the consolidator's read routes (docs/users-and-roles.md)",
        {"college_id": str(college)},
    )
    if found.role != CONSOLIDATOR or found.user_id is None:
        raise refusal
    if not permissions.readable_across_tenants(method, path):
        raise refusal
    granted = await run_in_threadpool(
        UserDirectory(svc).may_read,
        user_id=found.user_id,
        home_tenant_id=identity.tenant_id,
        tenant_id=college,
    )
    if not granted:
        raise refusal
    return replace(found, tenant_id=college, home_tenant_id=identity.tenant_id)


def principal_of(request: Request) -> Principal:
    """The principal of a request that went through ``current_tenant``; a clear error otherwise."""
    found = getattr(request.state, "principal", None)
    if not isinstance(found, Principal):
        raise RuntimeError("principal_of called on a route without the current_tenant dependency")
    return found
