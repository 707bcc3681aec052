"""``/v1/etims/sales``: the eTIMS sales queue for operators (connectors/etims/sales.py).

* ``GET /v1/etims/sales?bhf_id=&state=&limit=`` lists the caller's sales with their invcNo and state
  (queued, sent, signed, blocked, voided) and, for a blocked one, KRA's reason.
* ``POST /v1/etims/sales/{invoice_id}/resend``: a blocked sale goes back to the head of its branch
  under the same invcNo, after the cause was fixed, and a drain job sends the branch's queue.
* ``POST /v1/etims/sales/{invoice_id}/void {"reason"}``: a blocked sale gives up its invcNo, the
  only way a number stays unused (KRA: "never reused"); the branch's queue moves on, and the invoice
  records ``ledgerflow.invoice.etims_voided``.

Void applies to a blocked sale only (a queued or sent one may be at KRA at that moment); resend
of a sale already queued or sent changes nothing and queues the drain again (to mend a resend
whose drain job could not be queued).
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from connectors.etims import sales
from connectors.etims.devices import queue_jobs
from connectors.etims.routes import drain_job
from engine import db
from engine.api.errors import ApiError
from engine.api.tenant import caller_of
from engine.application import LedgerService
from engine.config import Settings

MAX_LIMIT = 1000
State = Literal["queued", "sent", "signed", "blocked", "voided"]


class VoidSale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=200, description="Why the number stays unused (kept)")


def _not_configured() -> ApiError:
    return ApiError(
        409, "etims_not_configured", "this deployment has no eTIMS sales tables: run `ledgerflow db migrate`"
    )


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
) -> APIRouter:
    router = APIRouter(prefix="/v1/etims/sales", tags=["etims"])

    async def send_branch(sale: sales.QueuedSale, reason: str) -> None:
        job = drain_job(str(sale.tenant_id), sale.environment, sale.bhf_id, reason=reason)
        try:
            await queue_jobs(settings, [job])
        except Exception as exc:  # Kafka away: the row changed; calling again queues the drain
            raise ApiError(
                503,
                "unavailable",
                "the sale's state changed but its branch could not be queued for sending: call again",
            ) from exc

    @router.get("", summary="Your eTIMS sales queue: invcNo and state per branch")
    def list_sales(
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
        bhf_id: Annotated[str | None, Query(max_length=10, pattern=r"^[0-9A-Za-z]{1,10}$")] = None,
        state: Annotated[State | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> dict[str, Any]:
        try:
            with db.transaction(svc.pool) as conn:
                found = sales.list_sales(conn, tenant_id, bhf_id=bhf_id, state=state, limit=limit)
        except psycopg.errors.UndefinedTable as exc:
            raise _not_configured() from exc
        return {"items": [s.summary() for s in found]}

    def _act(svc: LedgerService, work: Callable[[Any], sales.QueuedSale]) -> sales.QueuedSale:
        try:
            with db.transaction(svc.pool) as conn:
                return work(conn)
        except sales.SaleNotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        except sales.SaleNotBlocked as exc:
            raise ApiError(
                409, "sale_not_blocked", str(exc), {"state": exc.sale.state, "invc_no": exc.sale.invc_no}
            ) from exc
        except psycopg.errors.UndefinedTable as exc:
            raise _not_configured() from exc

    @router.post("/{invoice_id}/resend", summary="Send a blocked sale again under the same invcNo")
    async def resend(
        invoice_id: UUID,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        resent = _act(svc, lambda conn: sales.resend(conn, tenant_id, invoice_id))
        await send_branch(resent, "resend")
        return resent.summary()

    @router.post("/{invoice_id}/void", summary="Give up a blocked sale's invcNo, with a reason")
    async def void(
        invoice_id: UUID,
        body: VoidSale,
        request: Request,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        who = caller_of(request)
        voided = _act(
            svc, lambda conn: sales.void(conn, tenant_id, invoice_id, reason=body.reason, voided_by=who)
        )
        # After the row, from the row: voiding a voided sale again changes nothing there and
        # records the same event again (the port is idempotent), so a failure here is mended by
        # calling again.
        svc.record_etims_voided(
            tenant_id,
            invoice_id,
            environment=voided.environment,
            branch_id=voided.bhf_id,
            invc_no=voided.invc_no,
            reason=voided.void_reason or body.reason,
            voided_by=voided.voided_by or who,
        )
        await send_branch(voided, "void")
        return voided.summary()

    return router
