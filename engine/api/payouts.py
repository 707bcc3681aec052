"""``/v1/payouts``: money out of the tenant's bank account over NEFT, RTGS or IMPS (issue 12).

* ``POST /v1/payouts {amount, currency, mode, beneficiary{name, account_number, ifsc}, purpose,
  reference}``: 201 with the payout (status ``requested``); the bank connector submits it. The
  reference is the tenant's own and names one payout: posting the same payout again answers 200 with
  the stored one, another payout under a used reference is a 409. Without an enabled ``bank``
  integration: 409 ``bank_not_configured``.
* ``GET /v1/payouts/{id}``; ``GET /v1/payouts?status=&mode=&reference=&from=&to=&limit=``.
* ``POST /v1/payouts/{id}/retry``: release a payout on hold (insufficient_funds) after the account
  was funded; 409 for a payout in any other status.

Amounts are decimal strings in rupees (two places at most); the bank is sent paise. Another
tenant's payout is a 404 like a missing one.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from connectors.bank.client import PROVIDER
from connectors.bank.payouts import (
    PayoutBook,
    PayoutChangedConcurrently,
    PayoutNotFound,
    ReferenceReused,
    payout_document,
)
from engine import db, integrations
from engine.api.errors import ApiError
from engine.api.tenant import caller_of
from engine.application import LedgerService
from engine.domain.payout import STATUSES, PayoutRuleError, PayoutStateConflict, check_payout
from engine.fields import SafeStr, text

MAX_LIMIT = 1000


class BeneficiaryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[SafeStr, text(min_length=1, max_length=140)]
    account_number: Annotated[SafeStr, text(min_length=1, max_length=34)]
    ifsc: Annotated[SafeStr, text(min_length=1, max_length=11)]


class PayoutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Annotated[str, text(min_length=1, max_length=40, pattern=r"^[0-9]+(\.[0-9]+)?$")]
    currency: Annotated[SafeStr, text(min_length=3, max_length=3)]
    mode: Literal["NEFT", "RTGS", "IMPS"]
    beneficiary: BeneficiaryBody
    purpose: Annotated[SafeStr, text(min_length=1, max_length=140)]
    reference: Annotated[SafeStr, text(min_length=1, max_length=35)]


def _bank_enabled(svc: LedgerService, tenant_id: UUID) -> bool:
    """A payout nobody would send is refused rather than left waiting: the router queues payout jobs
    only for tenants whose bank integration is enabled."""
    with db.transaction(svc.pool) as conn:
        return integrations.enabled_for(conn, tenant_id, PROVIDER)


def _payout_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError as exc:
        raise ApiError(404, "not_found", f"no payout {value[:60]!r}") from exc


def build_router(
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
) -> APIRouter:
    router = APIRouter(prefix="/v1/payouts", tags=["payouts"])
    tenant_dep = Annotated[UUID, Depends(current_tenant)]
    service_dep = Annotated[LedgerService, Depends(service)]

    def refused(exc: Exception) -> ApiError:
        if isinstance(exc, PayoutRuleError):
            return ApiError(
                422,
                "validation_failed",
                str(exc),
                {"fields": [{"path": exc.field, "code": "payout_rule", "message": exc.reason}]},
            )
        if isinstance(exc, PayoutNotFound):
            return ApiError(404, "not_found", str(exc))
        if isinstance(exc, ReferenceReused):
            return ApiError(409, "reference_reused", str(exc))
        if isinstance(exc, PayoutStateConflict):
            return ApiError(409, "payout_state_conflict", str(exc))
        if isinstance(exc, PayoutChangedConcurrently):
            return ApiError(409, "changed_concurrently", str(exc))
        raise exc

    @router.post("", status_code=201, summary="Send money out over NEFT, RTGS or IMPS")
    def create(
        body: PayoutBody, request: Request, response: Response, tenant_id: tenant_dep, svc: service_dep
    ) -> Any:
        try:
            req = check_payout(
                amount=body.amount,
                currency=body.currency,
                mode=body.mode,
                beneficiary=body.beneficiary.model_dump(),
                purpose=body.purpose,
                reference=body.reference,
            )
            book = PayoutBook(svc)
            if not _bank_enabled(svc, tenant_id):
                raise ApiError(
                    409,
                    "bank_not_configured",
                    "payouts need the bank integration: PUT /v1/integrations/bank (docs/bank.md)",
                )
            payout, created = book.request(tenant_id, req, caller_of(request))
        except (PayoutRuleError, ReferenceReused) as exc:
            raise refused(exc) from exc
        if not created:
            response.status_code = 200
        return payout_document(payout)

    @router.get("", summary="Your payouts, newest first, filtered")
    def list_payouts(
        tenant_id: tenant_dep,
        svc: service_dep,
        status: Annotated[Literal[STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
        mode: Annotated[Literal["NEFT", "RTGS", "IMPS"] | None, Query()] = None,
        reference: Annotated[str | None, Query(max_length=35, pattern=r"^[A-Za-z0-9._/-]+$")] = None,
        from_: Annotated[date | None, Query(alias="from")] = None,
        to: Annotated[date | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> dict[str, Any]:
        items = PayoutBook(svc).list(
            tenant_id, status=status, mode=mode, reference=reference, from_date=from_, to_date=to, limit=limit
        )
        return {"items": items}

    @router.get("/{payout_id}", summary="One payout: status, UTR and charges, or the bank's code")
    def get(payout_id: str, tenant_id: tenant_dep, svc: service_dep) -> Any:
        try:
            return payout_document(PayoutBook(svc).get(tenant_id, _payout_id(payout_id)))
        except PayoutNotFound as exc:
            raise refused(exc) from exc

    @router.post("/{payout_id}/retry", summary="Release a payout on hold (insufficient_funds) once funded")
    def retry(payout_id: str, request: Request, tenant_id: tenant_dep, svc: service_dep) -> Any:
        try:
            released = PayoutBook(svc).release(tenant_id, _payout_id(payout_id), caller_of(request))
        except (PayoutNotFound, PayoutStateConflict, PayoutChangedConcurrently) as exc:
            raise refused(exc) from exc
        return payout_document(released)

    return router
