"""``/v1/tenant/ingest-keys``: the keys a tenant signs its ingest-topic commands with.

A key's secret is returned once, by the request that creates it; listing shows only ids and dates.
At most two keys are active at once, which is what a rotation needs: create the successor, move
the producers to it, revoke the old one (docs/topics.md, "Signing").
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from engine import db
from engine.api.errors import ApiError
from engine.application import LedgerService
from engine.security import ingest_keys
from engine.security.secrets import KeyRing


class CreatedIngestKey(BaseModel):
    key_id: str
    secret: str = Field(
        description="Shown only in this answer. The HMAC-SHA256 key is its ASCII bytes, exactly as shown."
    )
    created_at: datetime


class IngestKeyView(BaseModel):
    key_id: str
    active: bool
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(
        description="When a message signed with it was last accepted (recorded at most once a minute)."
    )


class IngestKeyList(BaseModel):
    items: list[IngestKeyView]
    max_active: int


def build_router(
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    """The routes, authenticated by the app's own API-key dependency."""
    router = APIRouter(prefix="/v1/tenant/ingest-keys", tags=["ingest keys"])

    @router.post(
        "",
        status_code=201,
        summary="Create an ingest signing key (its secret is shown only in this answer)",
        responses={409: {"description": "Two keys are active already: revoke one first"}},
    )
    def create_ingest_key(
        tenant_id: Annotated[UUID, Depends(current_tenant)], svc: Annotated[LedgerService, Depends(service)]
    ) -> CreatedIngestKey:
        try:
            with db.transaction(svc.pool) as conn:
                issued = ingest_keys.create(conn, key_ring(), tenant_id)
        except ingest_keys.TooManyActiveKeys as exc:
            raise ApiError(
                409,
                "too_many_ingest_keys",
                str(exc),
                {"active": exc.active, "max_active": ingest_keys.MAX_ACTIVE_KEYS},
            ) from exc
        return CreatedIngestKey(key_id=issued.key_id, secret=issued.secret, created_at=issued.created_at)

    @router.get("", summary="The tenant's ingest keys, active and revoked (never a secret)")
    def list_ingest_keys(
        tenant_id: Annotated[UUID, Depends(current_tenant)], svc: Annotated[LedgerService, Depends(service)]
    ) -> IngestKeyList:
        with db.transaction(svc.pool) as conn:
            found = ingest_keys.views(conn, tenant_id)
        return IngestKeyList(
            items=[IngestKeyView.model_validate(v) for v in found], max_active=ingest_keys.MAX_ACTIVE_KEYS
        )

    @router.delete(
        "/{key_id}",
        summary="Revoke an ingest key: messages signed with it are dead-lettered from then on",
        responses={404: {"description": "The tenant has no such key"}},
    )
    def revoke_ingest_key(
        key_id: Annotated[str, Path(max_length=ingest_keys.MAX_KEY_ID_LENGTH)],
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> IngestKeyView:
        with db.transaction(svc.pool) as conn:
            revoked = ingest_keys.revoke(conn, tenant_id, key_id)
        if revoked is None:
            # Another tenant's key is answered exactly like a missing one: key ids must not leak.
            raise ApiError(404, "not_found", f"no ingest key {key_id}")
        return IngestKeyView.model_validate(revoked)

    return router
