"""The HTTP API (FastAPI), versioned under ``/v1``. Entry points only translate HTTP into commands."""

import asyncio
import contextvars
import logging
import re
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
import psycopg
from fastapi import Body, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors import registry as connector_registry
from engine import db, drafts, integrations, logs, telemetry
from engine.api import contract, principal
from engine.api.accountant import build_router as accountant_router
from engine.api.alerts import build_router as alerts_router
from engine.api.audit_logs import RecordAttribution
from engine.api.audit_logs import build_router as audit_logs_router
from engine.api.bank import build_router as bank_router
from engine.api.drafts import build_router as drafts_router
from engine.api.drafts import draft_view
from engine.api.errors import ApiError, error_body, install
from engine.api.etims import build_router as etims_router
from engine.api.etims import refuse_suspended, suspension_cached
from engine.api.etims_compliance import build_router as etims_compliance_router
from engine.api.etims_sales import build_router as etims_sales_router
from engine.api.expenses import build_router as expenses_router
from engine.api.fees import build_router as fees_router
from engine.api.gst_parties import build_router as gst_parties_router
from engine.api.gst_tax import build_router as gst_tax_router
from engine.api.gstr1 import build_router as gstr1_router
from engine.api.health import consumer_health_router
from engine.api.hooks import PaymentBookHolder, with_payment_fields
from engine.api.hooks import build_router as hooks_router
from engine.api.ingest_keys import build_router as ingest_keys_router
from engine.api.integration_health import build_router as integration_health_router
from engine.api.integration_health import with_health
from engine.api.metrics import metrics_router
from engine.api.oauth import build_router as oauth_router
from engine.api.payouts import build_router as payouts_router
from engine.api.products import build_router as products_router
from engine.api.reconciliation import build_router as reconciliation_router
from engine.api.reports import build_router as reports_router
from engine.api.tally import build_router as tally_router
from engine.api.tds import build_router as tds_router
from engine.api.tenant import build_router as tenant_router
from engine.api.tenant import caller_of
from engine.api.users import build_router as users_router
from engine.api.veekaart import build_router as veekaart_router
from engine.api.webhooks import build_router as webhooks_router
from engine.application import InvoiceNotFound, LedgerService
from engine.audit_log import AuditLogBook
from engine.bootstrap import build_service
from engine.commands import CancelInvoice, IssueGstNote
from engine.config import Settings, load_settings
from engine.domain.invoice import Invoice
from engine.errors import InvalidInput
from engine.fields import SafeStr
from engine.publishing import invoice_document, new_traceparent
from engine.security.secrets import KeyRing, load_key_ring
from engine.tax import rates
from ops import schema as outer_schema
from projections import invoice_register
from schemas import registry

log = logging.getLogger("ledgerflow.api")


class ServiceHolder:
    """Builds the service on first use, so the API starts (and answers 503) while PostgreSQL is down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._service: LedgerService | None = None
        self._lock = threading.Lock()
        self._ring: KeyRing | None = None

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
            self._service = None

    def key_ring(self) -> KeyRing:
        if self._ring is None:
            self._ring = load_key_ring(self.settings.var_dir)
        return self._ring

    def ready(self) -> LedgerService | None:
        """The service if it is built (never blocks)."""
        return self._service

    def get(self) -> LedgerService:
        if self._service is None:
            with self._lock:
                if self._service is None:
                    self._service = build_service(self.settings)
        return self._service


# A client's X-Request-ID is echoed in a response header and written to every log line of the
# request: only short ids of these characters are kept, anything else (CR/LF, quotes, control or
# non-ASCII characters, kilobytes of text) is replaced by a generated id so it cannot forge log
# lines or headers. 128 covers UUIDs, ULIDs and W3C trace ids with a prefix.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_from(header: str | None) -> str:
    if header is not None and REQUEST_ID.fullmatch(header):
        return header
    return f"req_{uuid.uuid4().hex[:20]}"


# The threads of a worker that run POST /v1/invoices, in place of anyio's pool (up to 40, one idle
# thread woken per request: the wake-up was ~10 % of a worker's GIL samples under wrk). Four keep
# each other busy, so a thread finishing a request takes the next queued one without sleeping:
# -13 % CPU per invoice against anyio's pool, 8 threads no clear gain (docs/performance.md,
# "api-lean"). More would only wait: saves are serialised by the events table's lock and the
# event store keeps 4 pooled connections (POSTGRES_POOL_SIZE).
INGEST_THREADS = 4


class PayloadTooLarge(InvalidInput):
    """The request body passed ``Settings.max_body_bytes``."""


class RequestContext:
    """Gives every request an id (``X-Request-ID``, echoed back), a W3C trace context and log
    context, and refuses a body larger than ``max_body_bytes`` with 413.

    The trace context is what the request's events store (``request.state.traceparent``), so that
    the relay, the router and the connectors continue the same trace: the server span's context
    when telemetry is on, else the client's ``traceparent`` if it sent a valid one, else a new one.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` wraps every response in extra
    tasks and streams, which cost a measurable share of a request here.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int = 1024 * 1024) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = request_id_from(headers.get("x-request-id"))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        # FastAPI's own server span (its native telemetry, on when an exporter is configured) is
        # current here; it continued the client's traceparent if there was one.
        span = state["server_span"] = trace.get_current_span()
        span.set_attribute("ledgerflow.request_id", request_id)
        traceparent = (
            telemetry.current_traceparent()
            or telemetry.valid_traceparent(headers.get("traceparent"))
            or new_traceparent()
        )
        state["traceparent"] = traceparent

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        with logs.log_context(request_id=request_id, traceparent=traceparent):
            if "content-length" in headers or "transfer-encoding" in headers:
                try:
                    receive = await self._read_body(headers.get("content-length"), receive)
                except PayloadTooLarge:
                    await self._too_large(scope, receive, send_with_id, request_id)
                    return
            await self.app(scope, receive, send_with_id)

    async def _read_body(self, content_length: str | None, receive: Receive) -> Receive:
        """Read the body before the app runs, counting as it streams in: a declared length above
        the limit is refused unread, a chunked body as soon as it passes the limit. The app then
        receives the body read (FastAPI buffers whole bodies anyway)."""
        if (
            content_length is not None
            and content_length.isdigit()
            and int(content_length) > self.max_body_bytes
        ):
            raise PayloadTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away: let the app see the disconnect as it would have.
                pending: list[Message] = [message]
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
                break

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        return replay

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        body = error_body(
            "payload_too_large",
            f"the request body is larger than {self.max_body_bytes} bytes",
            {"max_body_bytes": self.max_body_bytes},
            request_id,
        )
        # The rest of the body is never read, so the connection cannot carry another request.
        response = Response(orjson.dumps(body), 413, {"Connection": "close"}, media_type="application/json")
        await response(scope, receive, send)


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson straight to bytes: FastAPI's generic encoder walked each invoice's nested dicts."""
    return Response(
        orjson.dumps(body), status_code=status_code, media_type="application/json", headers=headers
    )


class IntegrationRequest(BaseModel):
    """A tenant's settings for one provider.

    Omitted ``environment``/``base_url`` keep their stored values (a new integration needs a
    ``base_url``; its environment defaults to ``sandbox``). Omitted credentials keep their stored
    values only while the destination stays the same: a new ``base_url`` or ``environment`` needs
    every credential again (``credentials_required``), see docs/integrations.md. Text is SafeStr:
    no control characters or line breaks (docs/validation.md).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    environment: Literal["sandbox", "production"] | None = None
    base_url: Annotated[SafeStr, StringConstraints(min_length=1, max_length=500)] | None = None
    credentials: (
        dict[
            SafeStr,
            Annotated[SafeStr, StringConstraints(min_length=1, max_length=2000)],
        ]
        | None
    ) = None


def invoice_view(invoice: Invoice) -> dict[str, Any]:
    document = invoice_register.api_document(invoice_document(invoice, invoice.id))
    document.pop("idempotency_key", None)
    document["id"] = document.pop("invoice_id")
    cancellation = None
    if invoice.cancellation:
        cancellation = {
            **invoice.cancellation,
            "cancelled_at": invoice.cancellation["cancelled_at"].isoformat(),
        }
    # A Kenyan invoice's eTIMS state; an Indian one has no ``etims`` key at all (docs/api.md).
    etims = {"etims": invoice_register.etims_view(invoice.etims)} if invoice.country == "KE" else {}
    return {
        "id": document.pop("id"),
        **document,
        **etims,
        "status": invoice.status,
        "cancellation": cancellation,
        "einvoice": invoice_register.einvoice_view(
            invoice.einvoice, invoice.einvoice_failure, invoice.einvoice_cancellation
        ),
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    # The API is a composition root: it hands the connectors (connectors/registry.py) and the outer
    # packages' tables (ops/schema.py) to the core.
    connector_registry.register()
    outer_schema.register()
    settings = settings or load_settings()
    holder = ServiceHolder(settings)
    books = PaymentBookHolder(settings)

    metrics_routes, metrics_collector = metrics_router(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Each worker reads the tax tables before its first request rather than during it, where
        # they cost that request (and every request queued behind it) about half a second.
        await asyncio.to_thread(rates.load_rate_table)
        yield
        books.close()
        holder.close()
        metrics_collector.close()
        audit_log.close()
        ingest_threads.shutdown(wait=False)

    app = FastAPI(
        lifespan=lifespan,
        title="Ledgerflow",
        version="0.1.0",
        description="Event-sourced integration engine for finance and tax events. "
        'Every error answers {"error": {code, message, details, timestamp, request_id}}.',
    )
    app.state.services = holder
    install(app)

    app.add_middleware(RecordAttribution)
    audit_log = AuditLogBook(settings)  # opened on first use, closed with the app
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)

    bearer = HTTPBearer(auto_error=False)
    ingest_threads = ThreadPoolExecutor(INGEST_THREADS, thread_name_prefix="ingest")

    # Both dependencies are async with a worker thread only for what may block (building the
    # service, a key not in the 5 s cache): FastAPI runs a plain `def` dependency in a thread of
    # its pool, and those hops were a visible share of POST /v1/invoices (docs/performance.md).
    async def service() -> LedgerService:
        built = holder.ready()
        return built if built is not None else await run_in_threadpool(holder.get)

    async def current_tenant(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        svc: Annotated[LedgerService, Depends(service)],
        request: Request,
    ) -> UUID:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(
                401,
                "unauthorized",
                "send your API key as 'Authorization: Bearer <api key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        identity = svc.cached_identity(credentials.credentials)
        if identity is None:
            identity = await run_in_threadpool(svc.identify, credentials.credentials)
        if identity is None:
            raise ApiError(
                401,
                "unauthorized",
                "the API key is unknown, revoked or expired, or its user is disabled",
                headers={"WWW-Authenticate": "Bearer"},
            )
        tenant_id = identity.tenant_id
        # A suspended eTIMS company (engine/api/etims.py); a cache miss reads PostgreSQL off the loop.
        if suspension_cached(tenant_id):
            refuse_suspended(svc, tenant_id)
        else:
            await run_in_threadpool(refuse_suspended, svc, tenant_id)
        logs.bind_tenant(str(tenant_id))
        request.state.server_span.set_attribute("ledgerflow.tenant_id", str(tenant_id))
        # The permission policy (engine/api/permissions.py) and a consolidator's college_id.
        admitted = await principal.admit(request, svc, identity)
        request.state.principal = admitted
        return admitted.tenant_id

    Tenant = Annotated[UUID, Depends(current_tenant)]
    Service = Annotated[LedgerService, Depends(service)]
    app.include_router(reports_router(current_tenant, service))
    app.include_router(etims_compliance_router(current_tenant, service))
    app.include_router(ingest_keys_router(current_tenant, service, holder.key_ring))
    app.include_router(tenant_router(settings, current_tenant, service))
    app.include_router(etims_router(settings, current_tenant, service, holder.key_ring))
    app.include_router(etims_sales_router(settings, current_tenant, service))
    app.include_router(gst_parties_router(settings, current_tenant, service, holder.key_ring))
    app.include_router(gstr1_router(settings, current_tenant, service, holder.key_ring))
    app.include_router(webhooks_router(settings, current_tenant, service, holder.key_ring))
    app.include_router(gst_tax_router(current_tenant))
    app.include_router(hooks_router(settings, current_tenant, service, holder.key_ring, books))
    app.include_router(payouts_router(current_tenant, service))
    app.include_router(bank_router(current_tenant, service))
    app.include_router(tds_router(current_tenant, service))
    app.include_router(reconciliation_router(current_tenant, service))
    app.include_router(integration_health_router(settings, current_tenant, service, holder.key_ring))
    app.include_router(alerts_router(current_tenant, service))
    app.include_router(drafts_router(current_tenant, service, invoice_view))
    app.include_router(oauth_router(settings, current_tenant, service, holder.key_ring))
    app.include_router(products_router(current_tenant, service))
    app.include_router(veekaart_router(settings, current_tenant, service, holder.key_ring))
    app.include_router(tally_router(settings, current_tenant, service, holder.key_ring))
    app.include_router(expenses_router(current_tenant, service, holder.key_ring))
    app.include_router(fees_router(current_tenant, service))
    app.include_router(accountant_router(settings, current_tenant, service, holder.key_ring))
    app.include_router(users_router(settings, current_tenant, service))
    app.include_router(audit_logs_router(audit_log, current_tenant, service))

    def parse_invoice_id(invoice_id: str) -> UUID:
        try:
            return UUID(invoice_id)
        except ValueError as exc:
            raise InvoiceNotFound(f"no invoice {invoice_id}") from exc

    @app.post(
        "/v1/invoices",
        status_code=201,
        tags=["invoices"],
        summary="Issue an invoice: a GST invoice, or a Kenyan sale for a KE tenant",
        response_class=Response,
        responses={201: {"description": "The invoice with its computed taxes"}},
        # The body's schema depends on the tenant's country (docs/api.md): declared here, checked
        # by LedgerService.parse_issue_command, the one validation the ingest topic uses too.
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": contract.ISSUE_BODY}}}},
    )
    async def issue_invoice(
        body: Annotated[dict[str, Any], Body()],
        request: Request,
        tenant_id: Tenant,
        svc: Service,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Response:
        def issue() -> Response:
            try:
                command = svc.parse_issue_command(tenant_id, body)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors()) from exc
            issued = svc.issue_invoice(
                tenant_id, command, idempotency_key=idempotency_key, traceparent=request.state.traceparent
            )
            headers = {"Location": f"/v1/invoices/{issued.invoice.id}"}
            if not issued.created:
                headers["Idempotent-Replayed"] = "true"
            return json_response(invoice_view(issued.invoice), 201, headers)

        # In a thread of the ingest pool (INGEST_THREADS), with the request's context (log context,
        # attribution, trace) copied as FastAPI does for a plain `def` endpoint in anyio's pool.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(ingest_threads, context.run, issue)

    # The ingest hot path is matched first: Starlette tries routes in order, and the included
    # routers before it cost ~9 % of a worker's CPU per invoice (docs/performance.md, "API ingest").
    # No other route has this path, so no request is answered differently.
    hot = next(r for r in app.router.routes if getattr(r, "endpoint", None) is issue_invoice)
    app.router.routes.remove(hot)
    app.router.routes.insert(0, hot)

    @app.post(
        "/v1/invoices/{invoice_id}/credit-notes",
        status_code=201,
        tags=["invoices"],
        summary="Issue a credit note against an invoice (GST, or Kenyan eTIMS for a KE tenant)",
        response_class=Response,
        responses={201: {"description": "The credit note with its computed tax"}},
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": contract.NOTE_BODY}}}},
    )
    def issue_credit_note(
        invoice_id: str,
        body: Annotated[dict[str, Any], Body()],
        request: Request,
        tenant_id: Tenant,
        svc: Service,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Response:
        original_id = parse_invoice_id(invoice_id)
        try:
            command = svc.parse_credit_note_command(tenant_id, body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from exc
        if isinstance(command, IssueGstNote):
            issued = svc.issue_gst_note(
                tenant_id,
                original_id,
                command,
                kind="credit_note",
                idempotency_key=idempotency_key,
                traceparent=request.state.traceparent,
            )
        else:
            issued = svc.issue_credit_note(
                tenant_id, original_id, command, traceparent=request.state.traceparent
            )
        headers = {"Location": f"/v1/invoices/{issued.invoice.id}"}
        if not issued.created:
            headers["Idempotent-Replayed"] = "true"
        return json_response(invoice_view(issued.invoice), 201, headers)

    @app.post(
        "/v1/invoices/{invoice_id}/debit-notes",
        status_code=201,
        tags=["invoices"],
        summary="Issue a debit note against an Indian invoice (increases what the buyer owes)",
        response_class=Response,
        responses={201: {"description": "The debit note with its computed GST"}},
    )
    def issue_debit_note(
        invoice_id: str,
        command: IssueGstNote,
        request: Request,
        tenant_id: Tenant,
        svc: Service,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Response:
        issued = svc.issue_gst_note(
            tenant_id,
            parse_invoice_id(invoice_id),
            command,
            kind="debit_note",
            idempotency_key=idempotency_key,
            traceparent=request.state.traceparent,
        )
        headers = {"Location": f"/v1/invoices/{issued.invoice.id}"}
        if not issued.created:
            headers["Idempotent-Replayed"] = "true"
        return json_response(invoice_view(issued.invoice), 201, headers)

    @app.post("/v1/invoices/{invoice_id}/cancel", tags=["invoices"], summary="Cancel an invoice")
    def cancel_invoice(
        invoice_id: str, command: CancelInvoice, request: Request, tenant_id: Tenant, svc: Service
    ) -> dict[str, Any]:
        invoice = svc.cancel_invoice(
            tenant_id, parse_invoice_id(invoice_id), command, request.state.traceparent
        )
        return invoice_view(invoice)

    @app.get("/v1/invoices/{invoice_id}", tags=["invoices"], summary="An invoice, from the invoice register")
    def get_invoice(invoice_id: str, response: Response, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        parsed = parse_invoice_id(invoice_id)
        with db.transaction(svc.pool) as conn:
            found = invoice_register.get(conn, tenant_id, parsed)
        if found is not None:
            return with_payment_fields(svc, tenant_id, found)
        # Not projected yet (the projection trails the event store by moments): answer from the
        # event store rather than a false 404, and say so.
        response.headers["X-Ledgerflow-Read-Source"] = "event-store"
        draft = drafts.find_draft(svc, tenant_id, parsed)  # a draft lives only there (issue 13)
        if draft is not None:
            return draft_view(draft)
        view = invoice_view(svc.get_invoice(tenant_id, parsed))
        if view.get("document_type") == "invoice" and "etims" not in view:
            # An Indian invoice's notes (issue 11), as far as the register has them.
            with db.transaction(svc.pool) as conn:
                view["notes"] = invoice_register.notes_of(conn, tenant_id, parsed)
        return with_payment_fields(svc, tenant_id, view)

    @app.get("/v1/invoices", tags=["invoices"], summary="List invoices (paginated)")
    def list_invoices(
        tenant_id: Tenant,
        svc: Service,
        date_from: Annotated[date | None, Query(alias="from")] = None,
        date_to: Annotated[date | None, Query(alias="to")] = None,
        status: Literal["issued", "cancelled", "draft"] | None = None,
        cursor: Annotated[str | None, Query(max_length=400)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        if status == "draft":  # drafts have their own look-up (engine/drafts.py), one page
            with db.transaction(svc.pool) as conn:
                ids = drafts.draft_ids(conn, tenant_id, "draft", limit)
            return {"items": [draft_view(svc.get_draft_invoice(tenant_id, i)) for i in ids], "next": None}
        try:
            with db.transaction(svc.pool) as conn:
                page = invoice_register.search(
                    conn,
                    tenant_id,
                    date_from=date_from,
                    date_to=date_to,
                    status=status,
                    after=cursor,
                    limit=limit,
                )
        except ValueError as exc:
            raise ApiError(
                422,
                "validation_failed",
                f"cursor: {exc}",
                {"fields": [{"path": "cursor", "code": "invalid_cursor", "message": str(exc)}]},
            ) from exc
        return {"items": page.items, "next": page.next}

    @app.get("/v1/schemas/{fingerprint}", tags=["schemas"], summary="The Avro schema with this fingerprint")
    def get_schema(fingerprint: str) -> dict[str, Any]:
        if len(fingerprint) != 16 or any(c not in "0123456789abcdef" for c in fingerprint.lower()):
            raise ApiError(
                422,
                "validation_failed",
                "a fingerprint is 16 hexadecimal digits",
                {
                    "fields": [
                        {
                            "path": "fingerprint",
                            "code": "invalid_fingerprint",
                            "message": "expected 16 hex digits",
                        }
                    ]
                },
            )
        found = registry.by_fingerprint(fingerprint.lower())
        if found is None:
            raise ApiError(404, "not_found", f"no schema with fingerprint {fingerprint}")
        return found.schema

    @app.get("/v1/integrations", tags=["integrations"], summary="The tenant's provider settings")
    def list_integrations(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            items = with_health(conn, tenant_id, integrations.list_views(conn, tenant_id))
        return {"items": items, "providers": sorted(integrations.PROVIDERS)}

    @app.get("/v1/integrations/{provider}", tags=["integrations"], summary="One provider's settings")
    def get_integration(provider: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            found = integrations.get_view(conn, tenant_id, provider)
        if found is None:
            raise ApiError(404, "not_found", f"{provider} is not configured for this tenant")
        return found

    @app.put(
        "/v1/integrations/{provider}",
        tags=["integrations"],
        summary="Turn a provider on or off, set its credentials",
    )
    def put_integration(
        provider: str, body: IntegrationRequest, request: Request, tenant_id: Tenant, svc: Service
    ) -> dict[str, Any]:
        from connectors.catalogue import endpoint_policy

        integrations.check_provider(provider)
        # Recorded as IntegrationSettingsChanged on the tenant (who, destination, the names of the
        # credential fields that changed; never a value).
        return svc.save_integration(
            holder.key_ring(),
            tenant_id,
            provider,
            changed_by=caller_of(request),
            enabled=body.enabled,
            environment=body.environment,
            base_url=body.base_url,
            credentials=body.credentials,
            endpoints=endpoint_policy(provider),
            mode=settings.mode,
        )

    @app.post("/v1/integrations/{provider}/test", tags=["integrations"], summary="Test the connection")
    async def test_integration(provider: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        from connectors.catalogue import test_connection

        integrations.check_provider(provider)
        with db.transaction(svc.pool) as conn:
            loaded = integrations.load(conn, holder.key_ring(), tenant_id, provider)
        if loaded is None:
            raise ApiError(404, "not_found", f"{provider} is not configured for this tenant")
        return await test_connection(loaded, settings.mode)

    app.include_router(metrics_routes)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: PostgreSQL answers")
    def readyz() -> dict[str, Any]:
        try:
            with psycopg.connect(settings.database_url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        return {"status": "ready", "checks": {"postgresql": "ok"}}

    app.include_router(consumer_health_router(settings))
    contract.install(app)

    return app
