"""``GET /v1/etims/compliance``: a Kenyan tenant's daily eTIMS compliance report (docs/etims.md,
"Compliance report"), from the ``etims_compliance`` projection, in JSON or CSV.

The API connects as the engine's own role, which row-level security does not restrict, so the
query filters by the authenticated tenant explicitly.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
import csv
import io
from collections.abc import Callable
from datetime import date
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response

from engine import db
from engine.application import LedgerService
from projections import etims_compliance, reporting

# KRA's bhfId is two digits ("00", "01", ...); a little room for what a future KRA assigns.
BRANCH_ID = r"^[A-Za-z0-9]{1,10}$"


def render_csv(report: etims_compliance.DailyReport) -> str:
    """RFC 4180 like the other exports: a header row, CRLF line ends; formula-like text neutralised
    (``reporting.csv_value``: a KRA message is text we did not write)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([name for name, _ in etims_compliance.CSV_COLUMNS])
    for row in etims_compliance.csv_rows(report):
        writer.writerow(
            [
                reporting.csv_value(pg_type, value)
                for (_, pg_type), value in zip(etims_compliance.CSV_COLUMNS, row, strict=True)
            ]
        )
    return out.getvalue()


def build_router(current_tenant: Callable[..., UUID], service: Callable[[], LedgerService]) -> APIRouter:
    """The route, authenticated by the app's own API-key dependency."""
    router = APIRouter(prefix="/v1/etims", tags=["etims"])

    @router.get(
        "/compliance",
        summary="Your eTIMS sales of one day per environment and branch: signed, pending, failed, voided",
        response_class=Response,
        responses={
            200: {
                "description": 'JSON: {"date", "timezone", "branches": [{"environment", "branch_id",'
                ' "submitted", "signed", "pending", "failed", "voided", "credit_notes", "failure_reasons":'
                ' [{"result_code", "refusals", "sales", "last_message", "last_at"}]}], "totals",'
                ' "incomplete"}. CSV: a header row and one row per environment and branch.',
                "content": {"application/json": {}, "text/csv": {}},
            }
        },
    )
    def compliance(
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
        day: Annotated[date, Query(alias="date", description="The sale date (Africa/Nairobi), YYYY-MM-DD.")],
        bhf_id: Annotated[str | None, Query(pattern=BRANCH_ID, description="Only this branch.")] = None,
        environment: Annotated[Literal["sandbox", "production"] | None, Query()] = None,
        output: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
    ) -> Response:
        with db.transaction(svc.pool) as conn:
            report = etims_compliance.daily(conn, tenant_id, day, branch_id=bhf_id, environment=environment)
        if output == "json":
            return Response(etims_compliance.dumps(report), media_type="application/json")
        headers = {"Content-Disposition": f'inline; filename="etims-compliance-{day.isoformat()}.csv"'}
        return Response(render_csv(report), media_type="text/csv; charset=utf-8", headers=headers)

    return router
