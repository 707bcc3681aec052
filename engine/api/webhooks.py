"""``/v1/webhooks/endpoints``: where a tenant's ledger events are POSTed (docs/webhooks.md).

A new endpoint's signing secret is returned once, by the request that creates it (and a new one by
each rotation); nothing else ever shows a secret. Every route is scoped to the caller's tenant:
another tenant's endpoint is a 404, as if it did not exist.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from engine.api.errors import ApiError
from engine.application import LedgerService
from engine.config import Settings
from engine.domain.webhook_endpoint import MAX_DESCRIPTION, MAX_EVENT_TYPES, EndpointDeleted, InvalidEndpoint
from engine.errors import LedgerflowError
from engine.security.secrets import KeyRing
from engine.webhooks import (
    MAX_URL,
    DeliveryNotFound,
    DeliveryView,
    EndpointChangedConcurrently,
    EndpointNotFound,
    EndpointView,
    WebhookService,
    open_store,
)

Format = Literal["cloudevents", "legacy"]
T = TypeVar("T")


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL, description="Where to POST; https in a production deployment.")
    event_types: list[str] = Field(
        max_length=MAX_EVENT_TYPES,
        description="CloudEvents types (ledgerflow.invoice.issued), ledgerflow.<aggregate>.* or *.",
    )
    description: str = Field(default="", max_length=MAX_DESCRIPTION)
    format: Format = "cloudevents"


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=MAX_URL)
    event_types: list[str] | None = Field(default=None, max_length=MAX_EVENT_TYPES)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    format: Format | None = None


class Endpoint(BaseModel):
    id: UUID
    url: str
    event_types: list[str]
    description: str
    format: str
    status: str = Field(description="active, paused or disabled (by a 410 answer or 5 days of failures)")
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None
    failing_since: datetime | None


class CreatedEndpoint(Endpoint):
    secret: str = Field(description="whsec_...: shown only in this answer.")


class EndpointList(BaseModel):
    items: list[Endpoint]


class RotatedSecret(BaseModel):
    secret: str = Field(description="The new whsec_... secret, shown only in this answer.")
    previous_secret_valid_until: datetime = Field(
        description="Until then every delivery carries a second signature made with the previous secret."
    )


class AttemptView(BaseModel):
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None


class Delivery(BaseModel):
    id: UUID
    event_id: str
    event_type: str
    status: str = Field(description="pending, delivered or dead (retries exhausted)")
    attempts: list[AttemptView]
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    last_error: str | None


class DeliveryList(BaseModel):
    items: list[Delivery]


def _endpoint(view: EndpointView) -> Endpoint:
    return Endpoint(
        id=view.id,
        url=view.url,
        event_types=view.event_types,
        description=view.description,
        format=view.format,
        status=view.status,
        disabled_reason=view.disabled_reason,
        created_at=view.created_at,
        updated_at=view.updated_at,
        secret_rotated_at=view.secret_rotated_at,
        failing_since=view.failing_since,
    )


def _delivery(view: DeliveryView) -> Delivery:
    return Delivery(
        id=view.id,
        event_id=view.event_id,
        event_type=view.event_type,
        status=view.status,
        attempts=[AttemptView(**a.__dict__) for a in view.attempts],
        next_attempt_at=view.next_attempt_at,
        created_at=view.created_at,
        finished_at=view.finished_at,
        last_error=view.last_error,
    )


def _refusal(exc: LedgerflowError) -> ApiError:
    if isinstance(exc, InvalidEndpoint):
        field = {"path": f"body.{exc.field}", "code": "invalid", "message": exc.message}
        return ApiError(422, "invalid_webhook_endpoint", exc.message, {"fields": [field]})
    if isinstance(exc, EndpointNotFound | EndpointDeleted):
        return ApiError(404, "webhook_endpoint_not_found", str(exc))
    if isinstance(exc, DeliveryNotFound):
        return ApiError(404, "webhook_delivery_not_found", str(exc))
    if isinstance(exc, EndpointChangedConcurrently):
        return ApiError(409, "webhook_endpoint_changed", str(exc))
    raise exc


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    built: list[WebhookService] = []
    lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        # FastAPI merges an included router's lifespan into the app's: the endpoints' event store
        # connections close with the app, as the ledger's do.
        yield
        with lock:
            while built:
                built.pop().close()

    router = APIRouter(prefix="/v1/webhooks/endpoints", tags=["webhooks"], lifespan=lifespan)

    def webhooks_of(svc: LedgerService) -> WebhookService:
        with lock:
            if not built:
                built.append(WebhookService(open_store(settings), svc.pool, key_ring(), settings.mode))
            return built[0]

    async def webhooks(svc: Annotated[LedgerService, Depends(service)]) -> WebhookService:
        return built[0] if built else await run_in_threadpool(webhooks_of, svc)

    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Webhooks = Annotated[WebhookService, Depends(webhooks)]  # noqa: N806

    async def call(work: Callable[[], T]) -> T:
        try:
            return await run_in_threadpool(work)
        except (
            InvalidEndpoint,
            EndpointNotFound,
            EndpointDeleted,
            DeliveryNotFound,
            EndpointChangedConcurrently,
        ) as exc:
            raise _refusal(exc) from exc

    @router.post("", status_code=201, summary="Register an endpoint (its signing secret is shown only here)")
    async def create_endpoint(body: EndpointCreate, tenant_id: Tenant, hooks: Webhooks) -> CreatedEndpoint:
        view, secret = await call(
            lambda: hooks.create(
                tenant_id,
                url=body.url,
                event_types=body.event_types,
                description=body.description,
                body_format=body.format,
            )
        )
        return CreatedEndpoint(**_endpoint(view).model_dump(), secret=secret)

    @router.get("", summary="The tenant's endpoints (never a secret)")
    async def list_endpoints(tenant_id: Tenant, hooks: Webhooks) -> EndpointList:
        views = await call(lambda: hooks.list_endpoints(tenant_id))
        return EndpointList(items=[_endpoint(v) for v in views])

    @router.get("/{endpoint_id}", summary="One endpoint")
    async def get_endpoint(endpoint_id: UUID, tenant_id: Tenant, hooks: Webhooks) -> Endpoint:
        return _endpoint(await call(lambda: hooks.get(tenant_id, endpoint_id)))

    @router.patch("/{endpoint_id}", summary="Change the URL, event types, description or format")
    async def update_endpoint(
        endpoint_id: UUID, body: EndpointUpdate, tenant_id: Tenant, hooks: Webhooks
    ) -> Endpoint:
        view = await call(
            lambda: hooks.update(
                tenant_id,
                endpoint_id,
                url=body.url,
                event_types=body.event_types,
                description=body.description,
                body_format=body.format,
            )
        )
        return _endpoint(view)

    @router.delete("/{endpoint_id}", status_code=204, summary="Delete an endpoint and its secrets")
    async def delete_endpoint(endpoint_id: UUID, tenant_id: Tenant, hooks: Webhooks) -> Response:
        await call(lambda: hooks.delete(tenant_id, endpoint_id))
        return Response(status_code=204)

    @router.post(
        "/{endpoint_id}/rotate-secret",
        summary="A new signing secret; the old one keeps signing beside it for 24 hours",
    )
    async def rotate_secret(endpoint_id: UUID, tenant_id: Tenant, hooks: Webhooks) -> RotatedSecret:
        secret, until = await call(lambda: hooks.rotate_secret(tenant_id, endpoint_id))
        return RotatedSecret(secret=secret, previous_secret_valid_until=until)

    @router.post("/{endpoint_id}/pause", summary="Hold deliveries (they queue and go out on resume)")
    async def pause_endpoint(endpoint_id: UUID, tenant_id: Tenant, hooks: Webhooks) -> Endpoint:
        return _endpoint(await call(lambda: hooks.pause(tenant_id, endpoint_id)))

    @router.post("/{endpoint_id}/resume", summary="Deliver again (also re-enables a disabled endpoint)")
    async def resume_endpoint(endpoint_id: UUID, tenant_id: Tenant, hooks: Webhooks) -> Endpoint:
        return _endpoint(await call(lambda: hooks.resume(tenant_id, endpoint_id)))

    @router.get("/{endpoint_id}/deliveries", summary="Recent deliveries, newest first, with every attempt")
    async def list_deliveries(
        endpoint_id: UUID,
        tenant_id: Tenant,
        hooks: Webhooks,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        status: Annotated[Literal["pending", "delivered", "dead"] | None, Query()] = None,
    ) -> DeliveryList:
        views = await call(lambda: hooks.deliveries(tenant_id, endpoint_id, limit=limit, status=status))
        return DeliveryList(items=[_delivery(v) for v in views])

    @router.post(
        "/{endpoint_id}/deliveries/{delivery_id}/resend",
        status_code=202,
        summary="Deliver the event again, from the start of the retry schedule",
    )
    async def resend_delivery(
        endpoint_id: UUID, delivery_id: UUID, tenant_id: Tenant, hooks: Webhooks
    ) -> Delivery:
        return _delivery(await call(lambda: hooks.resend(tenant_id, endpoint_id, delivery_id)))

    return router
