"""Fee collections (issue 14, seed "College Accounts" section 1.4; docs/fees.md).

- ``POST /v1/fee-collections``: the fee portal records a receipted fee (a FeeCollection event on
  ``ledger.fee_collection.v1``); the same receipt number again is the same collection;
- ``GET /v1/fee-collections?from_date=&to_date=&cursor=``: the period's collections in the seed's
  shape with its summary, a page at a time;
- ``POST /v1/reconciliation/fees {from_date, to_date}``: collections against bank deposits, with
  matched, unmatched and discrepancies and their totals; ``GET /v1/reconciliation/fees/{id}`` shows
  a stored run again.

Every route is the caller's tenant's (the seed's ``college_id`` is the tenant): another college's
collections, deposits or reconciliations are never read.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.concurrency import run_in_threadpool

from engine.api.errors import ApiError
from engine.api.principal import principal_of
from engine.application import LedgerService
from engine.fees import MAX_TOLERANCE_DAYS, CollectionBody, FeeBook, check_period
from engine.fields import IsoDate, SafeStr, text

MAX_LIMIT = 1000
_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


class ReconcileBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_date: IsoDate
    to_date: IsoDate
    bank_account: (
        Annotated[SafeStr, text(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9/-]+$")] | None
    ) = Field(
        default=None, description="Only deposits to this account; default every account of the college."
    )
    tolerance_days: Annotated[StrictInt, Field(ge=0, le=MAX_TOLERANCE_DAYS)] = Field(
        default=3, description="How many days after the payment date a deposit may be banked."
    )


def build_router(
    current_tenant: Callable[..., Awaitable[UUID]], service: Callable[[], Awaitable[LedgerService]]
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["fees"])
    tenant_dep = Annotated[UUID, Depends(current_tenant)]
    service_dep = Annotated[LedgerService, Depends(service)]

    @router.post(
        "/fee-collections",
        status_code=201,
        summary="Record a fee collection receipted by the fee portal",
        responses={
            200: {"description": "The same receipt and details again: the collection recorded before"},
            409: {
                "description": "The receipt number names a collection recorded with other details",
                "content": _ERROR_BODY,
            },
        },
    )
    async def record(
        body: CollectionBody, request: Request, response: Response, tenant_id: tenant_dep, svc: service_dep
    ) -> dict[str, Any]:
        given = body.as_input()
        actor = principal_of(request).actor
        view, created = await run_in_threadpool(FeeBook(svc).record, tenant_id, given, actor)
        if not created:
            response.status_code = 200
        return view

    @router.get("/fee-collections", summary="The period's fee collections and their summary")
    def collections(
        tenant_id: tenant_dep,
        svc: service_dep,
        from_date: Annotated[date, Query()],
        to_date: Annotated[date, Query()],
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> dict[str, Any]:
        return FeeBook(svc).page(tenant_id, from_date, to_date, cursor, limit)

    @router.post(
        "/reconciliation/fees",
        status_code=201,
        summary="Reconcile the period's fee collections against bank deposits",
    )
    async def reconcile(
        body: ReconcileBody, request: Request, tenant_id: tenant_dep, svc: service_dep
    ) -> dict[str, Any]:
        check_period(body.from_date, body.to_date)
        return await run_in_threadpool(
            lambda: FeeBook(svc).reconcile(
                tenant_id,
                body.from_date,
                body.to_date,
                account=body.bank_account,
                tolerance_days=body.tolerance_days,
                requested_by=principal_of(request).actor,
            )
        )

    @router.get(
        "/reconciliation/fees/{reconciliation_id}",
        summary="A fee reconciliation as it was answered",
        responses={404: {"description": "No such reconciliation for this college", "content": _ERROR_BODY}},
    )
    def stored(reconciliation_id: UUID, tenant_id: tenant_dep, svc: service_dep) -> dict[str, Any]:
        found = FeeBook(svc).stored(tenant_id, reconciliation_id)
        if found is None:
            raise ApiError(
                404, "not_found", "no such fee reconciliation", {"reconciliation_id": str(reconciliation_id)}
            )
        return found

    return router
