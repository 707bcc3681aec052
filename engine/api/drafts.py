"""Draft invoices and the invoice number series (issue 13; docs/api.md "Drafts and number series").

``POST /v1/invoices/drafts`` makes a draft (no number, taxes computed); ``PATCH`` and ``DELETE
/v1/invoices/{id}`` replace or discard one; ``POST /v1/invoices/{id}/issue`` gives it the next number
of the tenant's series and issues it as an ordinary invoice; ``GET``/``PUT /v1/invoice-series``. Every
route is scoped to the caller's tenant: another tenant's draft is a 404, as if it did not exist.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError

from engine import db, drafts
from engine.application import IdempotencyKeyReused, InvoiceNotFound, InvoiceStateConflict, LedgerService
from engine.commands import DraftInvoice
from engine.domain.invoice import Invoice
from engine.domain.invoice_draft import InvoiceDraft
from engine.fields import SafeStr, text
from engine.invoice_series import DEFAULT_DIGITS, DEFAULT_PREFIX, Series
from engine.publishing import invoice_document
from projections import invoice_register

DRAFT_SOURCE = "api"
MAX_LIST = 500


class SeriesBody(BaseModel):
    """``PUT /v1/invoice-series``: ``{fy}`` in the prefix becomes the financial year (``2026-27``)."""

    model_config = ConfigDict(extra="forbid")

    prefix: Annotated[SafeStr, text(max_length=40, strip=False)] = DEFAULT_PREFIX
    digits: int = DEFAULT_DIGITS


def draft_view(draft: InvoiceDraft) -> dict[str, Any]:
    """A draft as the API shows it: the invoice fields (number null), its status and where it came from."""
    document = invoice_register.api_document(invoice_document(draft, draft.id))
    document.pop("idempotency_key", None)
    document.pop("invoice_id", None)
    issued = draft.issued_invoice or {}
    return {
        "id": str(draft.id),
        **document,
        "status": draft.status,
        "external_ref": draft.external_ref,
        "issued_invoice_id": issued.get("invoice_id"),
        "issued_number": issued.get("number"),
        "discard_reason": draft.discard_reason,
        "version": draft.version,
        # What an invoice view always has; a draft has neither.
        "cancellation": None,
        "einvoice": None,
    }


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _parse_draft(body: Any) -> DraftInvoice:
    try:
        return DraftInvoice.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def _parse_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError as exc:
        raise InvoiceNotFound(f"no invoice {value}") from exc


def build_router(
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
    invoice_view: Callable[[Invoice], dict[str, Any]],
) -> APIRouter:
    """The routes, authenticated by the app's own API-key dependency; ``invoice_view`` is the app's
    view of an issued invoice (the answer of ``/issue``)."""
    router = APIRouter(tags=["invoices"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806 (a type alias, as in app.py)
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806

    def draft_or_refusal(svc: LedgerService, tenant_id: UUID, draft_id: UUID) -> InvoiceDraft:
        """The draft; an issued invoice's id is a 409 (it cannot be changed this way), anything else 404."""
        found = drafts.find_draft(svc, tenant_id, draft_id)
        if found is not None:
            return found
        svc.get_invoice(tenant_id, draft_id)  # 404 when it is no invoice of this tenant either
        raise InvoiceStateConflict(
            "only a draft can be changed, discarded or issued: this invoice is issued already "
            "(cancel it, or issue a credit or debit note)",
            {"invoice_id": str(draft_id)},
        )

    @router.post(
        "/v1/invoices/drafts",
        status_code=201,
        summary="Create a draft invoice: no number, no tax authority side effect, taxes computed",
        response_class=Response,
        responses={201: {"description": "The draft with its computed taxes"}},
    )
    def create_draft(
        body: Annotated[dict[str, Any], Body()],
        request: Request,
        tenant_id: Tenant,
        svc: Service,
        idempotency_key: Annotated[SafeStr | None, Header(max_length=200)] = None,
    ) -> Response:
        command = _parse_draft(body)
        outcome = svc.create_draft(
            tenant_id,
            command,
            source=DRAFT_SOURCE,
            external_ref=idempotency_key or None,
            traceparent=request.state.traceparent,
        )
        headers = {"Location": f"/v1/invoices/{outcome.draft.id}"}
        if not outcome.created:
            if outcome.draft.created_request_hash != command.fingerprint():
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {idempotency_key!r} was already used with a different request body",
                    {"idempotency_key": idempotency_key},
                )
            headers["Idempotent-Replayed"] = "true"
        return _json(draft_view(outcome.draft), 201, headers)

    @router.get("/v1/invoices/drafts", summary="List the tenant's drafts (oldest first)")
    def list_drafts(
        tenant_id: Tenant,
        svc: Service,
        status: Literal["draft", "issued", "discarded"] | None = "draft",
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
    ) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            return {"items": drafts.list_drafts(conn, tenant_id, status, limit)}

    @router.get("/v1/invoices/drafts/{draft_id}", summary="A draft invoice")
    def get_draft(draft_id: str, tenant_id: Tenant, svc: Service) -> Response:
        return _json(draft_view(svc.get_draft_invoice(tenant_id, _parse_id(draft_id))))

    @router.patch(
        "/v1/invoices/{invoice_id}",
        summary="Replace a draft's fields (drafts only)",
        response_class=Response,
        responses={200: {"description": "The draft with its recomputed taxes"}},
    )
    def update_draft(
        invoice_id: str,
        body: Annotated[dict[str, Any], Body()],
        request: Request,
        tenant_id: Tenant,
        svc: Service,
    ) -> Response:
        draft = draft_or_refusal(svc, tenant_id, _parse_id(invoice_id))
        command = _parse_draft(body)
        updated = svc.update_draft_invoice(tenant_id, draft.id, command, request.state.traceparent)
        return _json(draft_view(updated))

    @router.delete("/v1/invoices/{invoice_id}", summary="Discard a draft (drafts only; recorded as an event)")
    def discard_draft(
        invoice_id: str,
        request: Request,
        tenant_id: Tenant,
        svc: Service,
        reason: Annotated[SafeStr | None, Query(max_length=200)] = None,
    ) -> Response:
        draft = draft_or_refusal(svc, tenant_id, _parse_id(invoice_id))
        discarded = svc.discard_draft_invoice(tenant_id, draft.id, reason, request.state.traceparent)
        return _json(draft_view(discarded))

    @router.post(
        "/v1/invoices/{invoice_id}/issue",
        summary="Issue a draft: the next number of the tenant's series, an ordinary invoice",
        response_class=Response,
        responses={
            201: {"description": "The issued invoice"},
            200: {"description": "The draft was issued before: that invoice"},
        },
    )
    def issue_draft(invoice_id: str, request: Request, tenant_id: Tenant, svc: Service) -> Response:
        draft = draft_or_refusal(svc, tenant_id, _parse_id(invoice_id))
        issued = svc.issue_draft_invoice(tenant_id, draft.id, request.state.traceparent)
        view = {**invoice_view(issued.invoice), "draft_id": str(draft.id)}
        headers = {"Location": f"/v1/invoices/{issued.invoice.id}"}
        if not issued.created:
            headers["Idempotent-Replayed"] = "true"
        return _json(view, 201 if issued.created else 200, headers)

    @router.get("/v1/invoice-series", summary="The tenant's invoice number series and its next number")
    def get_series(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            return drafts.series_view(conn, tenant_id, drafts.series_of(conn, tenant_id))

    @router.put(
        "/v1/invoice-series", summary="Set the prefix ({fy} = financial year) and digits of the series"
    )
    def put_series(body: SeriesBody, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        series = Series(prefix=body.prefix, digits=body.digits)
        with db.transaction(svc.pool) as conn:
            drafts.save_series(conn, tenant_id, series)
            return drafts.series_view(conn, tenant_id, series)

    return router
