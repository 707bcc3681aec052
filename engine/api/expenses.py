"""College expenses, approvals and budgets (issue 14, seed "College Accounts" file 002;
docs/college-accounts.md).

- ``POST /v1/expenses`` (Idempotency-Key), ``GET /v1/expenses``, ``GET /v1/expenses/{id}``,
  ``GET /v1/expenses/export``; ``POST /v1/expenses/{id}/approve``, ``/reject``, ``/pay``;
- ``POST /v1/approvals/expenses/{id}/request``: the principal's approval, due after the SLA;
- ``POST /v1/webhooks/expense-approval``: the principal portal's decision, signed (Standard Webhooks);
- ``POST /v1/budgets``, ``GET /v1/budgets/summary``;
- ``GET``/``PUT /v1/config/gl-codes``, ``/v1/config/expense-categories``, ``/v1/config/expenses`` and
  ``POST /v1/config/expenses/callback-secret``.

Approvers and submitters are the authenticated principal (``principal_of``), never a body field; who may
call what is the roles' business (engine/api/principal.py). Every route is the caller's tenant's.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from standardwebhooks.webhooks import Webhook

from engine import db
from engine.api.errors import ApiError
from engine.api.principal import ADMIN, Principal, principal_of
from engine.application import LedgerService
from engine.commands import Money
from engine.domain.expense import Expense, ExpenseStateConflict
from engine.domain.expense_rules import parse_financial_year
from engine.expenses import (
    Actor,
    ExpenseBook,
    SubmitInput,
    decode_cursor,
    encode_cursor,
)
from engine.fields import IsoDate, SafeStr, text
from engine.security.secrets import KeyRing
from engine.tax.tds import check_pan
from engine.webhook_signing import new_secret

# A decision is a few hundred bytes; anything far larger is not one.
CALLBACK_MAX_BYTES = 16 * 1024

Status = Literal["submitted", "pending_approval", "approved", "rejected", "paid"]
CategoryValue = Annotated[SafeStr, text(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]
GlCode = Annotated[SafeStr, text(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9.\-]+$")]
Positive = Annotated[Money, Field(gt=0)]
Percent = Annotated[Decimal, Field(gt=0, le=1000, max_digits=6, decimal_places=2, allow_inf_nan=False)]


class SubmitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Positive = Field(description="Rupees, a decimal string (two places at most).")
    category: CategoryValue
    date: IsoDate
    description: Annotated[SafeStr, text(min_length=1, max_length=500)]
    vendor_name: Annotated[SafeStr, text(min_length=1, max_length=200)]
    vendor_pan: Annotated[SafeStr, text(max_length=20)] | None = None
    gl_code: GlCode | None = None
    receipt_url: Annotated[SafeStr, text(max_length=2000, pattern=r"^https?://[^\s]+$")] | None = None


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comments: Annotated[SafeStr, text(max_length=1000)] | None = None


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[SafeStr, text(min_length=1, max_length=1000)]


class PayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_reference: Annotated[SafeStr, text(min_length=1, max_length=60)]
    paid_on: IsoDate
    tds_deducted: Money | None = None


class RequestBody(BaseModel):
    """The seed's request; the requester is the caller and the amounts are the expense's, so the
    seed's copies of them are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    justification: Annotated[SafeStr, text(max_length=1000)] | None = None


class CallbackBody(BaseModel):
    """Seed 002 section 1.2, the principal portal's decision."""

    model_config = ConfigDict(extra="ignore")

    approval_id: Annotated[SafeStr, text(max_length=60)] | StrictInt | None = None
    expense_id: UUID
    status: Literal["approved", "rejected"]
    approver_id: Annotated[SafeStr, text(min_length=1, max_length=60)] | StrictInt
    approver_name: Annotated[SafeStr, text(max_length=200)] | None = None
    approved_at: Annotated[SafeStr, text(max_length=40)] | None = None
    comments: Annotated[SafeStr, text(max_length=1000)] | None = None


class BudgetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: CategoryValue
    financial_year: Annotated[SafeStr, text(min_length=7, max_length=7)]
    allocated_amount: Annotated[Money, Field(ge=0)]


class Alerts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warning_percentage: Percent
    critical_percentage: Percent


class SettingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approval_threshold: Annotated[Money, Field(ge=0)]
    sla_hours: Annotated[
        Decimal, Field(gt=0, le=8760, max_digits=8, decimal_places=4, allow_inf_nan=False)
    ] = Field(description="Hours the principal has to decide; fractions allowed (0.5 = 30 minutes).")
    budget_alerts: Alerts


class CategoryItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: CategoryValue
    label: Annotated[SafeStr, text(min_length=1, max_length=100)]
    requires_approval: StrictBool
    receipt_threshold: Annotated[Money, Field(ge=0)]
    gl_code: GlCode


class CategoriesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categories: Annotated[list[CategoryItem], Field(min_length=1, max_length=200)]


class GlCodeItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: GlCode
    name: Annotated[SafeStr, text(min_length=1, max_length=100)]
    category: CategoryValue | None = None
    is_active: StrictBool = True


class GlCodesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Annotated[list[GlCodeItem], Field(min_length=1, max_length=500)]


def actor_of(principal: Principal) -> Actor:
    return Actor(
        actor=principal.actor,
        role=principal.role,
        user_id=str(principal.user_id) if principal.user_id else None,
    )


def _field_error(path: str, code: str, message: str, status: int = 422) -> ApiError:
    return ApiError(status, code, message, {"fields": [{"path": path, "code": code, "message": message}]})


def _expense_id(text_value: str) -> UUID:
    try:
        return UUID(text_value)
    except ValueError as exc:
        raise ApiError(404, "not_found", f"no expense {text_value[:60]!r}") from exc


@contextmanager
def _decisions() -> Iterator[None]:
    """The aggregate's status refusals as the API's 409."""
    try:
        yield
    except ExpenseStateConflict as exc:
        raise ApiError(409, "invalid_state", exc.message, exc.details) from exc


def _admin(request: Request) -> None:
    if principal_of(request).role != ADMIN:
        raise ApiError(403, "forbidden", "only an administrator changes the expense configuration")


def _callback_associated_data(tenant_id: UUID) -> bytes:
    return f"{tenant_id}/expense-approval-callback".encode()


def build_router(
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    router = APIRouter(tags=["expenses"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806

    # -- expenses ---------------------------------------------------------------------------------

    @router.post(
        "/v1/expenses",
        status_code=201,
        summary="Submit an expense: approved at once at or below the threshold, else pending approval",
        responses={
            200: {"description": "The same Idempotency-Key and body again: the expense recorded before"},
            422: {"description": "Invalid, a receipt missing, or insufficient_budget"},
        },
    )
    def submit(
        body: SubmitBody,
        request: Request,
        response: Response,
        tenant_id: Tenant,
        svc: Service,
        idempotency_key: Annotated[SafeStr | None, Header(max_length=200)] = None,
    ) -> dict[str, Any]:
        pan = None
        if body.vendor_pan:
            pan = check_pan(body.vendor_pan).pan
            if pan is None:
                raise _field_error(
                    "vendor_pan", "invalid_pan", "vendor_pan: not a valid PAN (format AAAAA9999A)"
                )
        given = SubmitInput(
            amount=body.amount,
            category=body.category,
            expense_date=body.date,
            description=body.description,
            vendor_name=body.vendor_name,
            vendor_pan=pan,
            gl_code=body.gl_code,
            receipt_url=body.receipt_url,
        )
        view, created = ExpenseBook(svc).submit(
            tenant_id, given, actor_of(principal_of(request)), idempotency_key or None
        )
        if not created:
            response.status_code = 200
        return {**view}

    @router.get("/v1/expenses/export", summary="Expenses dated in a period, with the seed's summary")
    def export(
        tenant_id: Tenant,
        svc: Service,
        from_date: Annotated[date, Query()],
        to_date: Annotated[date, Query()],
        status: Annotated[Status | None, Query()] = None,
    ) -> dict[str, Any]:
        if from_date > to_date:
            raise _field_error("from_date", "invalid_period", "from_date is after to_date")
        return ExpenseBook(svc).export(tenant_id, from_date, to_date, status)

    @router.get("/v1/expenses/{expense_id}", summary="One expense")
    def get_expense(expense_id: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        return ExpenseBook(svc).get(tenant_id, _expense_id(expense_id))

    @router.get("/v1/expenses", summary="The tenant's expenses, oldest first, filtered and paginated")
    def list_expenses(
        tenant_id: Tenant,
        svc: Service,
        status: Annotated[Status | None, Query()] = None,
        category: Annotated[str | None, Query(max_length=40)] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        after = None
        if cursor:
            after = decode_cursor(cursor)
            if after is None:
                raise _field_error("cursor", "invalid_cursor", "cursor: not one this API gave")
        items, more = ExpenseBook(svc).list(
            tenant_id, status=status, category=category, after=after, limit=limit
        )
        return {"data": items, "next_cursor": encode_cursor(more) if more else None}

    @router.post(
        "/v1/expenses/{expense_id}/approve", summary="Approve a pending expense (the caller approves)"
    )
    def approve(
        expense_id: str, body: ApproveBody, request: Request, tenant_id: Tenant, svc: Service
    ) -> dict[str, Any]:
        with _decisions():
            return ExpenseBook(svc).approve(
                tenant_id, _expense_id(expense_id), actor_of(principal_of(request)), body.comments, "api"
            )

    @router.post("/v1/expenses/{expense_id}/reject", summary="Reject a pending expense (the caller rejects)")
    def reject(
        expense_id: str, body: RejectBody, request: Request, tenant_id: Tenant, svc: Service
    ) -> dict[str, Any]:
        with _decisions():
            return ExpenseBook(svc).reject(
                tenant_id, _expense_id(expense_id), actor_of(principal_of(request)), body.reason, "api"
            )

    @router.post("/v1/expenses/{expense_id}/pay", summary="Record the payment of an approved expense")
    def pay(
        expense_id: str, body: PayBody, request: Request, tenant_id: Tenant, svc: Service
    ) -> dict[str, Any]:
        with _decisions():
            return ExpenseBook(svc).pay(
                tenant_id,
                _expense_id(expense_id),
                actor_of(principal_of(request)),
                payment_reference=body.payment_reference,
                paid_on=body.paid_on,
                tds_deducted=body.tds_deducted,
            )

    # -- approvals --------------------------------------------------------------------------------

    @router.post(
        "/v1/approvals/expenses/{expense_id}/request",
        status_code=201,
        tags=["approvals"],
        summary="Ask the principal to approve a pending expense; escalated when the SLA lapses",
        responses={200: {"description": "Requested before: that request"}},
    )
    def request_approval(
        expense_id: str,
        body: RequestBody,
        request: Request,
        response: Response,
        tenant_id: Tenant,
        svc: Service,
    ) -> dict[str, Any]:
        with _decisions():
            view, created = ExpenseBook(svc).request_approval(
                tenant_id, _expense_id(expense_id), actor_of(principal_of(request)), body.justification
            )
        if not created:
            response.status_code = 200
        return view

    def apply_callback(svc: LedgerService, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        book = ExpenseBook(svc)
        message_id = headers.get("webhook-id", "")
        if not message_id or not headers.get("webhook-signature") or not headers.get("webhook-timestamp"):
            raise ApiError(
                401, "invalid_signature", "webhook-id, webhook-timestamp and webhook-signature are required"
            )
        try:
            parsed = orjson.loads(body)
            expense_id = UUID(str(parsed["expense_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ApiError(
                400, "malformed_delivery", "the body is not a decision with an expense_id"
            ) from exc
        found = book._load(expense_id)
        if not isinstance(found, Expense):
            raise ApiError(404, "not_found", f"no expense {expense_id}")
        tenant_id = found.tenant_id
        sealed = book.callback_secret(tenant_id)
        if sealed is None:
            raise ApiError(401, "invalid_signature", "the signature does not verify")
        secret = key_ring().open(sealed, _callback_associated_data(tenant_id)).decode()
        try:
            # Standard Webhooks: HMAC-SHA256 over "id.timestamp.body" (the raw bytes), compared in
            # constant time, the timestamp within 5 minutes of now (the library's tolerance).
            Webhook(secret).verify(body, headers, json_parse=False)
        except Exception as exc:  # the library raises ValueError/binascii.Error on malformed headers too
            raise ApiError(401, "invalid_signature", "the signature does not verify or is expired") from exc
        try:
            decision = CallbackBody.model_validate(parsed)
        except ValidationError as exc:
            fields = [{"path": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()[:5]]
            raise ApiError(422, "validation_failed", "the decision is not valid", {"fields": fields}) from exc
        body_hash = hashlib.sha256(body).hexdigest()
        actor = Actor(
            actor=f"callback:{decision.approver_id}",
            role="principal",
            name=decision.approver_name,
        )
        # The delivery's id is claimed in a transaction held open while the decision is applied: an
        # identical redelivery racing this one waits on the unique key, then answers as a duplicate.
        with db.transaction(svc.pool) as conn:
            claimed = conn.execute(
                "INSERT INTO expense_callbacks (tenant_id, message_id, body_hash, expense_id)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id, message_id) DO NOTHING RETURNING 1",
                (tenant_id, message_id, body_hash, expense_id),
            ).fetchone()
            if claimed is None:
                row = conn.execute(
                    "SELECT body_hash FROM expense_callbacks WHERE tenant_id = %s AND message_id = %s",
                    (tenant_id, message_id),
                ).fetchone()
                if row is None or row["body_hash"] != body_hash:  # type: ignore[call-overload]
                    raise ApiError(401, "replayed_delivery", "this webhook-id was used for another delivery")
                return {"received": True, "duplicate": True, "expense": book.get(tenant_id, expense_id)}
            with _decisions():
                if decision.status == "approved":
                    view = book.approve(tenant_id, expense_id, actor, decision.comments, "callback")
                else:
                    reason = decision.comments or "rejected by the principal"
                    view = book.reject(tenant_id, expense_id, actor, reason, "callback")
        return {"received": True, "duplicate": False, "expense": view}

    @router.post(
        "/v1/webhooks/expense-approval",
        tags=["approvals"],
        summary="The principal portal's signed decision (Standard Webhooks signature)",
        responses={
            401: {"description": "Signature missing, wrong, expired, or the delivery id reused"},
            404: {"description": "No such expense"},
            409: {"description": "The expense is already decided"},
        },
    )
    async def callback(request: Request, svc: Service) -> dict[str, Any]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > CALLBACK_MAX_BYTES:
            raise ApiError(413, "payload_too_large", f"a decision is at most {CALLBACK_MAX_BYTES} bytes")
        body = await request.body()
        if len(body) > CALLBACK_MAX_BYTES:
            raise ApiError(413, "payload_too_large", f"a decision is at most {CALLBACK_MAX_BYTES} bytes")
        headers = {k.lower(): v for k, v in request.headers.items()}
        result: dict[str, Any] = await run_in_threadpool(apply_callback, svc, body, headers)
        return result

    # -- budgets ----------------------------------------------------------------------------------

    @router.post(
        "/v1/budgets",
        status_code=201,
        tags=["budgets"],
        summary="Allocate a category's budget for a financial year (again: a revision)",
        responses={200: {"description": "A revision of the budget allocated before"}},
    )
    def allocate(
        body: BudgetBody, request: Request, response: Response, tenant_id: Tenant, svc: Service
    ) -> dict[str, Any]:
        if parse_financial_year(body.financial_year) is None:
            raise _field_error("financial_year", "invalid_financial_year", "financial_year: not like 2025-26")
        view, created = ExpenseBook(svc).allocate(
            tenant_id,
            body.category,
            body.financial_year,
            body.allocated_amount,
            actor_of(principal_of(request)),
        )
        if not created:
            response.status_code = 200
        return view

    @router.get("/v1/budgets/summary", tags=["budgets"], summary="Budgets of a financial year and their use")
    def budget_summary(
        tenant_id: Tenant,
        svc: Service,
        financial_year: Annotated[str, Query(max_length=7)],
        college_id: Annotated[str | None, Query(max_length=60)] = None,
    ) -> dict[str, Any]:
        if parse_financial_year(financial_year) is None:
            raise _field_error("financial_year", "invalid_financial_year", "financial_year: not like 2025-26")
        if college_id is not None and college_id != str(tenant_id):
            raise ApiError(403, "forbidden", "college_id names another college than the caller's")
        return ExpenseBook(svc).summary(tenant_id, financial_year)

    # -- configuration ----------------------------------------------------------------------------

    @router.get("/v1/config/gl-codes", tags=["config"], summary="The college's GL codes")
    def gl_codes(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        items = ExpenseBook(svc).config(tenant_id).gl_codes
        return {
            "data": [{"id": i + 1, **{k: v for k, v in g.items() if k != "id"}} for i, g in enumerate(items)]
        }

    @router.put("/v1/config/gl-codes", tags=["config"], summary="Replace the college's GL codes (admin)")
    def put_gl_codes(body: GlCodesBody, request: Request, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        _admin(request)
        codes = [g.code for g in body.data]
        if len(set(codes)) != len(codes):
            raise _field_error("data", "duplicate_code", "each GL code once")
        book = ExpenseBook(svc)
        active = {g.code for g in body.data if g.is_active}
        used = [c["value"] for c in book.config(tenant_id).categories if c.get("gl_code") not in active]
        if used:
            raise _field_error(
                "data",
                "gl_code_in_use",
                f"categories {', '.join(used)} book to a GL code this list leaves out or inactive",
            )
        book.set_list(tenant_id, "gl_codes", [g.model_dump() for g in body.data])
        return gl_codes(tenant_id, svc)

    @router.get("/v1/config/expense-categories", tags=["config"], summary="The college's expense categories")
    def categories(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        items = ExpenseBook(svc).config(tenant_id).categories
        return {
            "categories": [
                {**c, "receipt_threshold": str(Decimal(str(c["receipt_threshold"])))} for c in items
            ]
        }

    @router.put(
        "/v1/config/expense-categories", tags=["config"], summary="Replace the expense categories (admin)"
    )
    def put_categories(
        body: CategoriesBody, request: Request, tenant_id: Tenant, svc: Service
    ) -> dict[str, Any]:
        _admin(request)
        values = [c.value for c in body.categories]
        if len(set(values)) != len(values):
            raise _field_error("categories", "duplicate_category", "each category value once")
        book = ExpenseBook(svc)
        config = book.config(tenant_id)
        for i, c in enumerate(body.categories):
            if config.active_gl_code(c.gl_code) is None:
                raise _field_error(
                    f"categories.{i}.gl_code",
                    "unknown_gl_code",
                    f"gl_code {c.gl_code!r} is not an active GL code",
                )
        book.set_list(
            tenant_id,
            "categories",
            [{**c.model_dump(), "receipt_threshold": str(c.receipt_threshold)} for c in body.categories],
        )
        return categories(tenant_id, svc)

    @router.get(
        "/v1/config/expenses", tags=["config"], summary="Approval threshold, SLA and budget alert levels"
    )
    def get_settings(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        return ExpenseBook(svc).config(tenant_id).settings_view()

    @router.put(
        "/v1/config/expenses", tags=["config"], summary="Change the threshold, SLA or alert levels (admin)"
    )
    def put_settings(body: SettingsBody, request: Request, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        _admin(request)
        if body.budget_alerts.warning_percentage >= body.budget_alerts.critical_percentage:
            raise _field_error(
                "budget_alerts.warning_percentage",
                "invalid_levels",
                "the warning level must be below the critical one",
            )
        return (
            ExpenseBook(svc)
            .set_settings(
                tenant_id,
                approval_threshold=body.approval_threshold,
                sla_hours=body.sla_hours,
                warning_percent=body.budget_alerts.warning_percentage,
                critical_percent=body.budget_alerts.critical_percentage,
            )
            .settings_view()
        )

    @router.post(
        "/v1/config/expenses/callback-secret",
        status_code=201,
        tags=["config"],
        summary="A new secret for the approval callback's signature (shown only here; replaces the old one)",
    )
    def rotate_callback_secret(request: Request, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        _admin(request)
        secret = new_secret()
        ExpenseBook(svc).set_callback_secret(
            tenant_id, key_ring().seal(secret.encode(), _callback_associated_data(tenant_id))
        )
        return {"secret": secret, "scheme": "standard-webhooks", "header": "webhook-signature"}

    return router
