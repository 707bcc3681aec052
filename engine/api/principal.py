"""Who a tenant request acts as: the principal ``current_tenant`` (engine/api/app.py) accepted.

Handlers that record an actor (an approval's approver, an audit entry) read it with ``principal_of``
rather than trusting anything in the body. Keys issued before users and roles existed act as the
tenant's administrator."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from fastapi import Request

from engine.security import api_keys

ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: UUID
    # "api_key:<public id>" or "user:<uuid>": never the secret part of a key.
    actor: str
    role: str = ADMIN
    user_id: UUID | None = None
    key_id: str | None = None


def from_api_key(tenant_id: UUID, presented: str) -> Principal:
    """The principal of an accepted bearer key (its public id only)."""
    parsed = api_keys.parse(presented)
    key_id = parsed[0] if parsed else None
    return Principal(tenant_id=tenant_id, actor=f"api_key:{key_id or 'unknown'}", key_id=key_id)


def principal_of(request: Request) -> Principal:
    """The principal of a request that went through ``current_tenant``; a clear error otherwise."""
    found = getattr(request.state, "principal", None)
    if not isinstance(found, Principal):
        raise RuntimeError("principal_of called on a route without the current_tenant dependency")
    return found
