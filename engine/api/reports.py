"""``/v1/reports``: the reporting views (docs/reporting.md) over HTTP, for the caller's tenant only.

The API connects as the engine's own role, which row-level security does not restrict, so every
query here filters by the authenticated tenant explicitly.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
import csv
import io
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from engine import db
from engine.api.errors import ApiError
from engine.application import LedgerService
from projections import reporting

MAX_LIMIT = 1000


def render_csv(chosen: reporting.Report, rows: list[tuple[Any, ...]]) -> str:
    """RFC 4180: a header row, CRLF line ends, fields quoted only where needed; formula-like text
    neutralised (``reporting.csv_value``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(chosen.column_names)
    writer.writerows(reporting.csv_row(chosen, row) for row in rows)
    return out.getvalue()


def _invalid(path: str, code: str, message: str) -> ApiError:
    return ApiError(
        422,
        "validation_failed",
        f"{path}: {message}",
        {"fields": [{"path": path, "code": code, "message": message}]},
    )


def build_router(
    current_tenant: Callable[..., Awaitable[UUID]], service: Callable[[], Awaitable[LedgerService]]
) -> APIRouter:
    """The routes, authenticated by the app's own API-key dependency."""
    router = APIRouter(prefix="/v1/reports", tags=["reports"])

    @router.get(
        "",
        summary="The reports: names, columns with types, and row keys",
        dependencies=[Depends(current_tenant)],
    )
    def list_reports() -> dict[str, Any]:
        return {
            "items": [
                {
                    "name": r.name,
                    "description": r.description,
                    "key": list(r.key),
                    "date_column": r.date_column,
                    "columns": [
                        {"name": c.name, "type": c.type, "description": c.description} for c in r.columns
                    ],
                }
                for r in reporting.REPORTS.values()
            ]
        }

    @router.get(
        "/{name}",
        summary="A report's rows for your tenant (JSON or CSV, paginated)",
        response_class=Response,
        responses={
            200: {
                "description": 'JSON: {"items": [...], "next": cursor or null}. CSV: a header row and the '
                "rows; the next page's cursor in the X-Next-Cursor and Link headers.",
                "content": {"application/json": {}, "text/csv": {}},
            }
        },
    )
    def get_report(
        name: str,
        request: Request,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
        output: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
        date_from: Annotated[date | None, Query(alias="from")] = None,
        date_to: Annotated[date | None, Query(alias="to")] = None,
    ) -> Response:
        try:
            chosen = reporting.report(name)
        except reporting.UnknownReport as exc:
            raise ApiError(404, "not_found", str(exc), {"reports": list(reporting.REPORTS)}) from exc
        if date_from is not None and date_to is not None and date_from > date_to:
            raise _invalid("from", "invalid_range", f"from ({date_from}) is after to ({date_to})")
        try:
            with db.transaction(svc.pool) as conn:
                found = reporting.page(
                    conn,
                    svc.settings,
                    chosen,
                    tenant_id,
                    date_from=date_from,
                    date_to=date_to,
                    after=cursor,
                    limit=limit,
                )
        except reporting.InvalidCursor as exc:
            raise _invalid("cursor", "invalid_cursor", str(exc)) from exc
        if output == "json":
            items = [
                {c: reporting.json_value(v) for c, v in zip(found.columns, row, strict=True)}
                for row in found.rows
            ]
            return Response(orjson.dumps({"items": items, "next": found.next}), media_type="application/json")
        headers = {"Content-Disposition": f'inline; filename="{chosen.name}.csv"'}
        if found.next is not None:
            headers["X-Next-Cursor"] = found.next
            following = request.url.include_query_params(cursor=found.next)
            headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
        return Response(render_csv(chosen, found.rows), media_type="text/csv; charset=utf-8", headers=headers)

    return router
