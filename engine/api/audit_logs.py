"""``/v1/audit-logs``: the tenant's audit log (issue 14, "Audit log"; docs/audit-log.md).

- ``POST /v1/audit-logs {action, entity_type, entity_id, details?}``: an entry written by the tenant's
  own system, stored as an AuditEntry event (chained like every event). Who wrote it is the
  authenticated principal; a body naming an actor, user, IP or user agent is refused (422
  ``set_by_credentials``), never believed.
- ``GET /v1/audit-logs?entity_type=&entity_id=&from=&to=&cursor=&limit=``: the entries and every
  domain event of the tenant (projections/audit_trail.py), oldest first, with who did it, their IP
  and user agent (which stay here: never on a topic).
- ``GET /v1/audit-logs/{id}``: one of them; another tenant's answers 404.

``RecordAttribution`` binds each request's attribution (engine/attribution.py) so that whatever
events the request stores are recorded with its principal, IP, user agent and request id.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
import json
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError
from starlette.types import ASGIApp, Receive, Scope, Send

from engine import attribution, db
from engine.api.errors import ApiError
from engine.api.principal import Principal, principal_of
from engine.application import LedgerService
from engine.audit_log import AuditLogBook
from engine.fields import SafeStr, text
from projections import audit_trail

# The client's own free-form document: bounded so that one entry cannot fill the store.
MAX_DETAILS_BYTES = 32 * 1024
MAX_DETAILS_DEPTH = 16
# JSON numbers that every reader (JavaScript included) and PostgreSQL jsonb keep exactly.
MAX_SAFE_INTEGER = 2**53 - 1


def _attribution_of(scope: Scope) -> attribution.Attribution:
    state = scope.get("state") or {}
    found = state.get("principal")
    agent = next((v for k, v in scope.get("headers", []) if k.lower() == b"user-agent"), None)
    client = scope.get("client")
    route = f"{scope.get('method', '')} {scope.get('path', '')}"
    # A request without a tenant principal: an operator's call (ops token) or a provider's webhook.
    who = found if isinstance(found, Principal) else None
    return attribution.Attribution(
        actor=who.actor if who else "unauthenticated",
        role=who.role if who else None,
        user_id=who.user_id if who else None,
        client_ip=client[0] if client else None,
        user_agent=_header_text(agent),
        request_id=state.get("request_id"),
        route=attribution.clean(route, 300),
    )


def _header_text(value: bytes | None) -> str | None:
    """A header as text: UTF-8 when it is (browsers send non-ASCII product names so), else Latin-1
    as HTTP/1.1 defines it (RFC 9110, section 5.5): kept as sent, never refused."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class RecordAttribution:
    """Binds the request's attribution for whatever it stores (a plain ASGI middleware, like
    ``RequestContext``). The principal is read when events are stored, after ``current_tenant``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with attribution.attributed(lambda: _attribution_of(scope)):
            await self.app(scope, receive, send)


def _refuse(value: Any) -> Any:
    raise PydanticCustomError(
        "set_by_credentials",
        "who acted, and from where, is taken from your API key or user and the request itself;"
        " do not send it in the body",
    )


SetByCredentials = Annotated[Any, BeforeValidator(_refuse)]


def _check_json(value: Any, depth: int = 0) -> None:
    """Refuse what PostgreSQL's jsonb or a JSON reader cannot keep exactly: NUL and lone surrogates
    in text, numbers beyond 2**53 or not finite, nesting deeper than MAX_DETAILS_DEPTH."""
    if depth > MAX_DETAILS_DEPTH:
        raise PydanticCustomError("too_deep", f"details nest deeper than {MAX_DETAILS_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
            raise PydanticCustomError("invalid_character", "details hold a NUL or a lone surrogate")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise PydanticCustomError(
                "number_too_large", "integers in details must be within 2**53; send larger ones as strings"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError("number_not_finite", "numbers in details must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, depth + 1)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _details(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PydanticCustomError("object_expected", "details must be a JSON object")
    _check_json(value)
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_DETAILS_BYTES:
        raise PydanticCustomError(
            "too_large", f"details are {size} bytes as JSON; at most {MAX_DETAILS_BYTES} are kept per entry"
        )
    return value


Details = Annotated[dict[str, Any] | None, BeforeValidator(_details)]
Name = Annotated[SafeStr, text(min_length=1, max_length=100)]


def _entity_id(value: Any) -> Any:
    # The seed sends numeric ids (entity_id: 12345); ours are UUIDs. Both are kept as text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


EntityId = Annotated[SafeStr, BeforeValidator(_entity_id), text(min_length=1, max_length=200)]


class EntryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Name
    entity_type: Name
    entity_id: EntityId
    details: Details = Field(default=None, description="Your own JSON object (at most 32 KB).")
    changes: Details = Field(default=None, description="The seed's field name; kept as details.changes.")
    actor: SetByCredentials = None
    user_id: SetByCredentials = None
    user_name: SetByCredentials = None
    ip_address: SetByCredentials = None
    user_agent: SetByCredentials = None


def _moment(value: str | None, name: str) -> datetime | None:
    """``from``/``to``: an ISO 8601 date (midnight UTC) or date-time (UTC when it names no offset)."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(
            422,
            "validation_failed",
            f"{name}: not an ISO 8601 date or date-time",
            {"fields": [{"path": name, "code": "invalid_datetime"}]},
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def entry_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "source": row["source"],
        "occurred_at": row["occurred_at"].isoformat(),
        "action": row["action"],
        "event_type": row["event_type"],
        "entity_type": row["entity_type"],
        "entity_id": row["entity_id"],
        "changes": row["changes"],
        "details": row["details"],
        "actor": row["actor"],
        "role": row["role"],
        "user_id": str(row["user_id"]) if row["user_id"] is not None else None,
        "ip_address": row["client_ip"],
        "user_agent": row["user_agent"],
        "request_id": row["request_id"],
    }


def build_router(
    book: AuditLogBook,
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
) -> APIRouter:
    router = APIRouter(prefix="/v1/audit-logs", tags=["audit"])

    @router.post("", status_code=201, summary="Write an entry to the tenant's audit log")
    def record(
        body: EntryBody,
        request: Request,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        who = principal_of(request)
        details = dict(body.details or {})
        if body.changes is not None:
            details["changes"] = body.changes
        entry_id = book.record(
            tenant_id,
            attribution.Attribution(actor=who.actor, role=who.role, user_id=who.user_id),
            action=body.action,
            entity_type=body.entity_type,
            entity_id=body.entity_id,
            details=details or None,
        )
        with db.transaction(svc.pool) as conn:
            row = audit_trail.find(conn, tenant_id, entry_id)
        created = row["occurred_at"].isoformat() if row else None
        return {
            "id": str(entry_id),
            "created_at": created,
            "action": body.action,
            "entity_type": body.entity_type,
            "entity_id": body.entity_id,
            "actor": who.actor,
            "role": who.role,
        }

    @router.get("", summary="The tenant's audit log: its entries and every event, oldest first")
    def search(
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
        entity_type: Annotated[Name | None, Query()] = None,
        entity_id: Annotated[EntityId | None, Query()] = None,
        since: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        until: Annotated[str | None, Query(alias="to", max_length=40)] = None,
        cursor: Annotated[str | None, Query(max_length=400)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        filters = audit_trail.Filters(entity_type, entity_id, _moment(since, "from"), _moment(until, "to"))
        try:
            with db.transaction(svc.pool) as conn:
                rows, next_cursor = audit_trail.search(conn, tenant_id, filters, cursor, limit)
        except audit_trail.BadCursor as exc:
            raise ApiError(
                422, "validation_failed", str(exc), {"fields": [{"path": "cursor", "code": "invalid_cursor"}]}
            ) from exc
        return {"items": [entry_view(r) for r in rows], "next_cursor": next_cursor}

    @router.get("/{entry_id}", summary="One entry or event of the tenant's audit log")
    def get(
        entry_id: UUID,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            row = audit_trail.find(conn, tenant_id, entry_id)
        if row is None:
            raise ApiError(404, "not_found", f"no audit log entry {entry_id}", {"id": str(entry_id)})
        return entry_view(row)

    return router
