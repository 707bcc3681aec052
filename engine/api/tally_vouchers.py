"""``/v1/tally/vouchers``: vouchers the accountant posts to the college's Tally company (seed 002, 2.5),
e.g. journal vouchers, through the ``tally`` connector's runtime (connectors/tally/posting.py).

- ``POST /v1/tally/vouchers`` ``{voucher_type, voucher_number, date, ledger_entries: [{ledger, amount,
  narration}]}``: amounts signed as the seed signs them (positive debit, negative credit), summing to
  zero. Checked, stored and queued: 202 ``{voucher_id, status: "queued", ...}``. Refused before
  anything is queued: 422 ``unbalanced``, ``unknown_ledger`` (not in the ledgers last synced from Tally,
  once a sync happened), ``bad_amount``, ``bad_name``, ``bad_voucher_type``, ``bad_date``. The same
  request again (same voucher number or Idempotency-Key, same body): 200 with the voucher as it is now;
  another body: 409 ``duplicate_voucher_number`` / 422 ``idempotency_key_reused``.
- ``GET /v1/tally/vouchers/{voucher_id}``: ``queued``, ``posted`` (with Tally's answer) or ``failed``
  (with Tally's LINEERROR); ``GET /v1/tally/vouchers?status=``: the newest first.

Every row is the caller's tenant's: another college's voucher is a 404.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures.
from collections.abc import Callable
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, StringConstraints
from starlette.concurrency import run_in_threadpool

from connectors.tally import journal, ledgers, posting
from connectors.tally.client import PROVIDER
from connectors.tally.vouchers import MAX_NAME, VoucherRefused
from engine import db, integrations
from engine.api.contract import ErrorBody
from engine.api.errors import ApiError
from engine.api.principal import principal_of
from engine.application import LedgerService
from engine.config import Settings
from engine.fields import IsoDate, SafeStr
from engine.security.secrets import KeyRing

BASE = "/v1/tally/vouchers"
Status = Literal["queued", "posted", "failed"]
REFUSED: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "tally is not configured for this tenant, or the voucher number was used with "
        "another body (duplicate_voucher_number)",
    },
    422: {
        "model": ErrorBody,
        "description": "unbalanced, unknown_ledger, bad_amount, bad_name, bad_voucher_type, bad_date, "
        "idempotency_key_reused, or a malformed body",
    },
    503: {"model": ErrorBody, "description": "stored, not yet queued (Kafka away): send it again"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No such voucher"}}

# Names are checked exactly as Tally matches them (journal.parse), so not stripped here.
LedgerName = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_NAME)]
Amount = StrictInt | StrictFloat | Annotated[StrictStr, StringConstraints(max_length=40)]


class LedgerEntryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ledger: LedgerName = Field(description="a ledger of the tenant's Tally company, exactly as named")
    amount: Amount = Field(
        description="decimal (a string is best), positive = debit, negative = credit", examples=["-50000.00"]
    )
    narration: Annotated[StrictStr, StringConstraints(max_length=journal.MAX_ENTRY_NARRATION)] = ""


class VoucherBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voucher_type: Annotated[StrictStr, StringConstraints(max_length=20)] = Field(
        description="payment, receipt, journal, sales, purchase or contra"
    )
    voucher_number: Annotated[StrictStr, StringConstraints(min_length=1, max_length=journal.MAX_NUMBER)]
    date: IsoDate
    ledger_entries: list[LedgerEntryBody] = Field(min_length=2, max_length=journal.MAX_ENTRIES)


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Any],
    service: Callable[..., Any],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    router = APIRouter(tags=["tally"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806

    @router.post(
        BASE,
        status_code=202,
        summary="Post a voucher (e.g. a journal) to the tenant's Tally company",
        responses={200: {"description": "The same request again: the voucher as it is now"}, **REFUSED},
    )
    async def post_voucher(
        body: VoucherBody,
        request: Request,
        response: Response,
        tenant_id: Tenant,
        svc: Service,
        idempotency_key: Annotated[
            SafeStr | None, Header(max_length=200, description="repeats of one request post it once")
        ] = None,
    ) -> dict[str, Any]:
        try:
            parsed = journal.parse(
                body.voucher_type,
                body.voucher_number,
                body.date,
                [entry.model_dump() for entry in body.ledger_entries],
            )
        except VoucherRefused as exc:
            raise ApiError(422, exc.code, exc.message) from exc
        actor = principal_of(request).actor

        def stored() -> tuple[dict[str, Any], bool]:
            with db.transaction(svc.pool) as conn:
                loaded = integrations.load(conn, key_ring(), tenant_id, PROVIDER)
                if loaded is None or not loaded.enabled:
                    raise ApiError(
                        409, "integration_not_configured", "tally is not configured for this tenant"
                    )
                if ledgers.last_synced(conn, tenant_id) is not None:
                    unknown = journal.unknown_ledgers(parsed, ledgers.known_names(conn, tenant_id))
                    if unknown:
                        raise ApiError(
                            422,
                            "unknown_ledger",
                            f"Tally has no ledger {unknown[0]!r} (as last synced)",
                            {"ledgers": [name[:MAX_NAME] for name in unknown[:20]]},
                        )
                try:
                    return posting.store(conn, tenant_id, parsed, idempotency_key, actor)
                except posting.VoucherConflict as exc:
                    status = 422 if exc.code == "idempotency_key_reused" else 409
                    raise ApiError(status, exc.code, exc.message, exc.details) from exc

        row, created = await run_in_threadpool(stored)
        if row["status"] == "queued" and row["published_at"] is None:
            job = posting.job(tenant_id, row["voucher_id"])
            try:
                await posting.queue(settings, [job])
            except (
                Exception
            ) as exc:  # Kafka away: stored; the same request again (or the scheduler) queues it
                raise ApiError(
                    503, "unavailable", "the voucher is stored but could not be queued: send it again"
                ) from exc

            def published() -> None:
                with db.transaction(svc.pool) as conn:
                    posting.mark_published(conn, [row["voucher_id"]])

            await run_in_threadpool(published)
        if not created:
            response.status_code = 200
        return posting.view(row)

    @router.get(BASE, summary="Vouchers posted through the API, newest first")
    def list_vouchers(
        tenant_id: Tenant,
        svc: Service,
        status: Status | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            return {"vouchers": [posting.view(r) for r in posting.listed(conn, tenant_id, status, limit)]}

    @router.get(f"{BASE}/{{voucher_id}}", summary="One voucher and what Tally answered", responses=NOT_FOUND)
    def get_voucher(voucher_id: UUID, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            row = posting.get(conn, tenant_id, voucher_id)
        if row is None:
            raise ApiError(404, "not_found", "no such voucher", {"voucher_id": str(voucher_id)})
        return posting.view(row)

    return router
