"""``GET /v1/etims/compliance``: a Kenyan tenant's daily eTIMS compliance report (docs/etims.md,
"Compliance report"), from the ``etims_compliance`` projection, in JSON or CSV.

The API connects as the engine's own role, which row-level security does not restrict, so the
query filters by the authenticated tenant explicitly.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
import csv
import io
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from engine import db
from engine.application import LedgerService
from projections import etims_compliance, reporting

# KRA's bhfId is two digits ("00", "01", ...); a little room for what a future KRA assigns.
BRANCH_ID = r"^[A-Za-z0-9]{1,10}$"


class EtimsFailureReason(BaseModel):
    """Documentation only (the answer is built by ``etims_compliance.as_json``; test_api_fuzz checks
    that it matches)."""

    result_code: str = Field(description="KRA's resultCd (e.g. 910), or ours (duplicate_unverified)")
    refusals: int = Field(description="How many times the day's sales were refused with it")
    sales: int = Field(description="How many of the day's sales were")
    last_message: str = Field(description="KRA's resultMsg of the latest refusal")
    last_at: str = Field(description="When the latest refusal was recorded, ISO 8601")


class EtimsBranchDay(BaseModel):
    environment: Literal["sandbox", "production"]
    branch_id: str = Field(description="KRA's bhfId")
    submitted: int = Field(description="signed + pending + failed + voided")
    signed: int
    pending: int = Field(description="Not signed yet: waiting for its turn, its number or KRA")
    failed: int = Field(description="Refused by KRA, not yet signed or voided (its branch is blocked)")
    voided: int = Field(description="Voided by an operator; the invcNo stays unused")
    credit_notes: int = Field(description="How many of the day's sales are credit notes")
    failure_reasons: list[EtimsFailureReason]


class EtimsComplianceReport(BaseModel):
    date: str = Field(description="The sale date, YYYY-MM-DD")
    timezone: Literal["Africa/Nairobi"]
    branches: list[EtimsBranchDay]
    totals: dict[str, int] = Field(description="The counts summed over the branches")
    incomplete: bool = Field(description="An invoice event of yours awaits redrive: a count may be short")


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


def build_router(
    current_tenant: Callable[..., Awaitable[UUID]], service: Callable[[], Awaitable[LedgerService]]
) -> APIRouter:
    """The route, authenticated by the app's own API-key dependency."""
    router = APIRouter(prefix="/v1/etims", tags=["etims"])

    @router.get(
        "/compliance",
        summary="Your eTIMS sales of one day per environment and branch: signed, pending, failed, voided",
        response_class=Response,
        responses={
            200: {
                "model": EtimsComplianceReport,
                "description": "JSON: the day's counts per environment and branch with the failure reasons."
                " CSV (format=csv): a header row and one row per environment and branch, the reasons in one"
                " cell.",
                "content": {"text/csv": {}},
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
