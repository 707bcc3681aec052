"""Inbound provider webhooks and what they feed: payments, invoices' payment state, receivables.

``POST /v1/hooks/{provider}/{tenant_id}`` is the one receiver for every provider whose connector
declares ``hooks`` (connectors/hooks.py). It is not authenticated by API key: the provider's signature
over the raw body, made with the tenant's webhook secret for that provider, is the authentication.
A delivery that does not verify is a 401 and nothing is recorded. Unknown tenant, a provider the tenant
has not configured, a disabled integration and a wrong signature all answer the same 401, so the
endpoint tells nobody which tenants exist or what they use. An accepted delivery is stored in the
inbox (engine/payments.py) before the 200; the hook processor (streams/hooks.py) acts on it later.
"""

import base64
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from connectors import registry as connector_registry
from connectors.errors import ConnectorError, ErrorClass
from connectors.hooks import DeliveryMalformed, DeliveryRejected, DeliveryStale, InboundHooks
from connectors.razorpay import subscriptions
from engine import db, integrations
from engine.api.contract import ErrorBody
from engine.api.errors import ApiError
from engine.application import LedgerService
from engine.config import Settings
from engine.domain.payment import STATUSES
from engine.fields import SafeStr
from engine.payments import (
    PaymentBook,
    get_payment_row,
    invoice_payment,
    open_inbox,
    payment_view,
    receivables,
    search_payments,
)
from engine.security.secrets import KeyRing
from engine.tax.india_gst import today_in_india


class SubscriptionRequest(BaseModel):
    """``POST /v1/subscriptions``: a Razorpay plan for a customer (Razorpay's ids)."""

    model_config = ConfigDict(extra="forbid")

    plan_id: Annotated[SafeStr, StringConstraints(min_length=1, max_length=100)]
    customer: Annotated[SafeStr, StringConstraints(min_length=1, max_length=100)] | None = None
    total_count: Annotated[int, Field(ge=1, le=1000)] = 12


UNVERIFIED = "the delivery's signature does not verify for this tenant and provider"


class PaymentBookHolder:
    """The payment book, built on first use beside the API's service (the inbox opens its own pool)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._book: PaymentBook | None = None
        self._lock = threading.Lock()

    def get(self, service: LedgerService) -> PaymentBook:
        if self._book is None:
            with self._lock:
                if self._book is None:
                    self._book = PaymentBook(service, open_inbox(self.settings))
        return self._book

    def close(self) -> None:
        if self._book is not None:
            self._book.close()
            self._book = None


def hooks_of(provider: str) -> InboundHooks:
    connector = connector_registry.BY_NAME.get(provider)
    if connector is None or connector.hooks is None:
        raise ApiError(404, "not_found", f"no webhook receiver for provider {provider[:40]!r}")
    return connector.hooks


def _unverified(code: str = "invalid_signature", message: str = UNVERIFIED) -> ApiError:
    return ApiError(401, code, message)


def _encode_cursor(after: tuple[datetime, UUID]) -> str:
    raw = orjson.dumps([after[0].isoformat(), str(after[1])])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        moment, payment_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(moment), UUID(payment_id)
    except Exception as exc:
        raise ApiError(
            422,
            "validation_failed",
            "cursor: not a cursor returned by this API",
            {"fields": [{"path": "cursor", "code": "invalid_cursor", "message": "not a cursor we issued"}]},
        ) from exc


def with_payment_fields(svc: LedgerService, tenant_id: UUID, invoice: dict[str, Any]) -> dict[str, Any]:
    """The invoice view with ``payment_status``, ``amount_paid`` and ``outstanding`` added (the one
    hook GET /v1/invoices/{id} calls)."""
    total = Decimal(str((invoice.get("totals") or {}).get("total") or "0"))
    with db.transaction(svc.pool) as conn:
        fields = invoice_payment(conn, tenant_id, UUID(str(invoice["id"])), total)
    return {**invoice, **fields}


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Any],
    service: Callable[..., Any],
    key_ring: Callable[[], KeyRing],
    books: PaymentBookHolder,
) -> APIRouter:
    router = APIRouter()
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806

    def accept(
        svc: LedgerService,
        provider: str,
        hooks: InboundHooks,
        tenant_text: str,
        body: bytes,
        headers: dict[str, str],
    ) -> bool:
        try:
            tenant_id = UUID(tenant_text)
        except ValueError as exc:
            raise _unverified() from exc
        now = datetime.now(UTC)
        with db.transaction(svc.pool) as conn:
            loaded = integrations.load(conn, key_ring(), tenant_id, provider)
        if loaded is None or not loaded.enabled:
            raise _unverified()
        try:
            verified = hooks.verify(body, headers, hooks.secrets(loaded.credentials, now), now)
        except DeliveryStale as exc:
            raise _unverified("stale_delivery", str(exc)) from exc
        except DeliveryMalformed as exc:
            raise ApiError(
                400, "malformed_delivery", str(exc), {"fields": exc.fields} if exc.fields else None
            ) from exc
        except DeliveryRejected as exc:
            raise _unverified() from exc
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, "malformed_delivery", "the body is not UTF-8") from exc
        return books.get(svc).record_delivery(
            tenant_id, provider, verified.provider_event_id, verified.event_type, text, now
        )

    @router.post(
        "/v1/hooks/{provider}/{tenant_id}",
        tags=["hooks"],
        summary="Receive a provider's signed webhook delivery (Razorpay, Stripe, a bank)",
        responses={
            200: {"description": "Stored (or a duplicate, acknowledged): {received, duplicate}"},
            400: {"model": ErrorBody, "description": "Signed, but not a delivery of this provider"},
            401: {"model": ErrorBody, "description": "Signature missing, wrong or stale; or no such tenant"},
            404: {"model": ErrorBody, "description": "No webhook receiver for this provider"},
            413: {"model": ErrorBody, "description": "Larger than a delivery can be"},
            503: {"model": ErrorBody, "description": "PostgreSQL is unavailable; the provider retries"},
        },
    )
    async def receive(provider: str, tenant_id: str, request: Request, svc: Service) -> Response:
        hooks = hooks_of(provider)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > hooks.max_body_bytes:
            raise ApiError(413, "payload_too_large", f"a delivery is at most {hooks.max_body_bytes} bytes")
        body = await request.body()
        if len(body) > hooks.max_body_bytes:
            raise ApiError(413, "payload_too_large", f"a delivery is at most {hooks.max_body_bytes} bytes")
        headers = {k.lower(): v for k, v in request.headers.items()}
        stored = await run_in_threadpool(accept, svc, provider, hooks, tenant_id, body, headers)
        return Response(
            orjson.dumps({"received": True, "duplicate": not stored}), 200, media_type="application/json"
        )

    @router.get("/v1/payments/{payment_id}", tags=["payments"], summary="A payment (money in)")
    def get_payment(payment_id: str, response: Response, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        try:
            parsed = UUID(payment_id)
        except ValueError as exc:
            raise ApiError(404, "not_found", "no such payment") from exc
        with db.transaction(svc.pool) as conn:
            found = get_payment_row(conn, tenant_id, parsed)
        if found is not None:
            return found
        payment = books.get(svc).get_payment(tenant_id, parsed)
        if payment is None:
            raise ApiError(404, "not_found", "no such payment")
        response.headers["X-Ledgerflow-Read-Source"] = "event-store"
        return payment_view(payment, None)

    @router.get("/v1/payments", tags=["payments"], summary="List payments (filtered, paginated)")
    def list_payments(
        tenant_id: Tenant,
        svc: Service,
        status: Literal[STATUSES] | None = None,  # type: ignore[valid-type]
        provider: Annotated[str | None, Query(max_length=40)] = None,
        invoice_id: UUID | None = None,
        date_from: Annotated[date | None, Query(alias="from")] = None,
        date_to: Annotated[date | None, Query(alias="to")] = None,
        cursor: Annotated[str | None, Query(max_length=400)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        after = _decode_cursor(cursor) if cursor else None
        with db.transaction(svc.pool) as conn:
            items, more = search_payments(
                conn,
                tenant_id,
                status=status,
                provider=provider,
                invoice_id=invoice_id,
                date_from=date_from,
                date_to=date_to,
                after=after,
                limit=limit,
            )
        return {"items": items, "next": _encode_cursor(more) if more else None}

    @router.get(
        "/v1/receivables",
        tags=["payments"],
        summary="Open invoice amounts by customer, aged 0-30, 31-60, 61-90 and over 90 days",
    )
    def get_receivables(tenant_id: Tenant, svc: Service, as_of: date | None = None) -> dict[str, Any]:
        day = as_of or today_in_india(datetime.now(UTC))
        with db.transaction(svc.pool) as conn:
            return receivables(conn, tenant_id, day)

    @router.post(
        "/v1/subscriptions",
        status_code=201,
        tags=["subscriptions"],
        summary="Open a Razorpay subscription (at most once per Idempotency-Key)",
        responses={
            409: {"model": ErrorBody, "description": "razorpay is not configured for this tenant"},
            502: {"model": ErrorBody, "description": "Razorpay refused; retry with the same key"},
            503: {
                "model": ErrorBody,
                "description": "Razorpay or PostgreSQL unavailable; retry with the key",
            },
        },
    )
    async def open_subscription(
        body: SubscriptionRequest,
        tenant_id: Tenant,
        svc: Service,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Response:
        from connectors.catalogue import checked_transport

        def load_settings() -> integrations.IntegrationSettings | None:
            with db.transaction(svc.pool) as conn:
                return integrations.load(conn, key_ring(), tenant_id, subscriptions.PROVIDER)

        loaded = await run_in_threadpool(load_settings)
        if loaded is None or not loaded.enabled:
            raise ApiError(409, "integration_not_configured", "razorpay is not configured for this tenant")
        key = idempotency_key or f"auto:{uuid4()}"
        requested = await run_in_threadpool(
            lambda: subscriptions.request(
                svc,
                tenant_id,
                plan_id=body.plan_id,
                customer_id=body.customer,
                total_count=body.total_count,
                key=key,
            )
        )
        if (requested.plan_id, requested.customer_id) != (body.plan_id, body.customer):
            raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used for another request")
        try:
            opened = await subscriptions.open_at_provider(
                svc, requested, loaded, checked_transport(loaded, settings.mode)
            )
        except ConnectorError as exc:
            status = 503 if exc.error_class is ErrorClass.RETRYABLE else 502
            raise ApiError(
                status,
                "provider_error",
                f"Razorpay did not create the subscription ({exc.code}); retry with the same Idempotency-Key",
                {"subscription_id": str(requested.id), "provider_code": exc.code},
            ) from exc
        return Response(
            orjson.dumps(subscriptions.view(opened)),
            201,
            {"Location": f"/v1/subscriptions/{opened.id}"},
            media_type="application/json",
        )

    @router.get("/v1/subscriptions/{subscription_id}", tags=["subscriptions"], summary="A subscription")
    def get_subscription(subscription_id: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        try:
            parsed = UUID(subscription_id)
        except ValueError as exc:
            raise ApiError(404, "not_found", "no such subscription") from exc
        found = subscriptions.load(svc, parsed)
        if found is None or found.tenant_id != tenant_id:
            raise ApiError(404, "not_found", "no such subscription")
        return subscriptions.view(found)

    return router
