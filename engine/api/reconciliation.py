"""``/v1/reconciliation``: bank lines and what they settle (docs/reconciliation.md), for the caller's
tenant only, and the manual match commands.

Reads come from the ``reconciliation`` read model (projections/reconciliation.py), which trails the
ledger by moments; a manual match is an event (engine/reconciliation.py) that the read model applies
when it arrives there: a ``POST`` answers ``201`` with the recorded match, and the line shows it
moments later.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
import csv
import io
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from engine import db, reconciliation
from engine.api.errors import ApiError
from engine.api.tenant import caller_of
from engine.application import LedgerService
from engine.reconciliation_rules import STATUSES
from projections import reconciliation as read_model
from projections.reporting import csv_value

MAX_LIMIT = 1000
CSV_COLUMNS = (
    ("id", "uuid"),
    ("account", "text"),
    ("value_date", "date"),
    ("amount", "numeric"),
    ("currency", "text"),
    ("reference", "text"),
    ("description", "text"),
    ("status", "text"),
    ("method", "text"),
    ("targets", "text"),
    ("matched_amount", "numeric"),
    ("difference", "numeric"),
    ("manual_match_ids", "text"),
)


# The one error shape (engine/api/contract.py declares it as ErrorBody).
_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


class MatchRequest(BaseModel):
    """``POST /v1/reconciliation/matches``: this bank line settles this payment, payout or invoice."""

    model_config = ConfigDict(extra="forbid")

    bank_line_id: UUID
    target_type: Literal["payment", "payout", "invoice"]
    target_id: UUID


def _invalid(path: str, code: str, message: str) -> ApiError:
    return ApiError(
        422,
        "validation_failed",
        f"{path}: {message}",
        {"fields": [{"path": path, "code": code, "message": message}]},
    )


def _csv_cells(line: dict[str, Any]) -> list[str]:
    values = {
        **line,
        "targets": " ".join(f"{t['type']}:{t['id']}" for t in line["targets"]),
        "manual_match_ids": " ".join(m["id"] for m in line["manual_matches"]),
    }
    # Text cells through the reports' rule: formula-like text (= + - @, tab, CR) is neutralised, as
    # every CSV export of Ledgerflow does (tests/unit/test_csv_cells.py).
    return [
        csv_value(kind, values[name]) if kind == "text" else (values[name] or "")
        for name, kind in CSV_COLUMNS
    ]


def match_view(match: Any) -> dict[str, Any]:
    return {
        "id": str(match.id),
        "bank_line_id": match.bank_line_id,
        "target_type": match.target_type,
        "target_id": match.target_id,
        "made_by": match.made_by,
        "made_at": match.made_at.isoformat(),
        "status": "undone" if match.undone else "active",
    }


def build_router(
    current_tenant: Callable[..., Awaitable[UUID]], service: Callable[[], Awaitable[LedgerService]]
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["reconciliation"])

    def _filter(
        account: str | None, date_from: date | None, date_to: date | None, status: str | None
    ) -> read_model.Filter:
        if date_from is not None and date_to is not None and date_from > date_to:
            raise _invalid("from", "invalid_range", f"from ({date_from}) is after to ({date_to})")
        if account is not None and ("\x00" in account or not account.strip()):
            raise _invalid("account", "invalid", "not an account number")
        if status is not None and status not in STATUSES:
            raise _invalid("status", "invalid", f"one of {', '.join(STATUSES)}")
        return read_model.Filter(account, date_from, date_to, status)

    @router.get("/reconciliation", summary="Bank lines of the period with their match status, and a summary")
    def get_reconciliation(
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
        account: Annotated[str | None, Query(max_length=64)] = None,
        date_from: Annotated[date | None, Query(alias="from")] = None,
        date_to: Annotated[date | None, Query(alias="to")] = None,
        status: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> dict[str, Any]:
        chosen = _filter(account, date_from, date_to, status)
        try:
            with db.transaction(svc.pool) as conn:
                totals = read_model.summary(conn, tenant_id, chosen)
                items, following = read_model.lines(conn, tenant_id, chosen, after=cursor, limit=limit)
        except ValueError as exc:
            raise _invalid("cursor", "invalid_cursor", str(exc)) from exc
        return {"summary": totals, "items": items, "next": following}

    @router.get(
        "/reconciliation.csv",
        summary="The same lines as CSV (every line of the filter, no pagination)",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}}},
    )
    def get_reconciliation_csv(
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
        account: Annotated[str | None, Query(max_length=64)] = None,
        date_from: Annotated[date | None, Query(alias="from")] = None,
        date_to: Annotated[date | None, Query(alias="to")] = None,
        status: Annotated[str | None, Query(max_length=32)] = None,
    ) -> Response:
        chosen = _filter(account, date_from, date_to, status)
        with db.transaction(svc.pool) as conn:
            rows = [_csv_cells(line) for line in read_model.iter_lines(conn, tenant_id, chosen)]

        def body() -> Iterator[str]:
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow([name for name, _ in CSV_COLUMNS])
            for row in rows:
                writer.writerow(row)
                if out.tell() > 64_000:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
            yield out.getvalue()

        return StreamingResponse(
            body(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="reconciliation.csv"'},
        )

    @router.post(
        "/reconciliation/matches",
        status_code=201,
        summary="Match a bank line by hand",
        responses={
            200: {"description": "The same Idempotency-Key again: the match it made before"},
            404: {"description": "No such bank line or target (for this tenant)", "content": _ERROR_BODY},
        },
    )
    async def post_match(
        body: MatchRequest,
        request: Request,
        response: Response,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, Any]:
        line_id, target_id = str(body.bank_line_id), str(body.target_id)

        def known() -> tuple[bool, bool]:
            with db.transaction(svc.pool) as conn:
                return (
                    read_model.line_exists(conn, tenant_id, line_id),
                    read_model.target_exists(conn, tenant_id, body.target_type, target_id),
                )

        line_known, target_known = await run_in_threadpool(known)
        # Another tenant's line or target is as unknown as one that never existed.
        if not line_known:
            raise ApiError(404, "not_found", "no such bank line", {"bank_line_id": line_id})
        if not target_known:
            raise ApiError(
                404,
                "not_found",
                f"no such {body.target_type}",
                {"target_type": body.target_type, "target_id": target_id},
            )
        match, new = await run_in_threadpool(
            reconciliation.make,
            svc,
            tenant_id,
            bank_line_id=line_id,
            target_type=body.target_type,
            target_id=target_id,
            made_by=caller_of(request),
            idempotency_key=idempotency_key,
        )
        if not new:
            response.status_code = 200
        return match_view(match)

    @router.delete("/reconciliation/matches/{match_id}", status_code=204, summary="Take a manual match back")
    async def delete_match(
        match_id: str,
        request: Request,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> Response:
        try:
            parsed = UUID(match_id)
        except ValueError:
            raise ApiError(404, "not_found", "no such match", {}) from None
        match = await run_in_threadpool(reconciliation.find, svc, tenant_id, parsed)
        if match is None:
            raise ApiError(404, "not_found", "no such match", {"match_id": str(parsed)})
        await run_in_threadpool(reconciliation.undo, svc, match, caller_of(request))
        return Response(status_code=204)

    return router
