"""``/v1/tds``: TDS on payments to resident vendors (issue 14, seed "College Accounts"; docs/tds.md).

- ``POST /v1/tds/calculate``: section, rate, threshold and tax for a payment under the Act in force,
  yearly thresholds judged on the tenant's recorded deductions to the PAN plus ``paid_so_far``;
- ``POST /v1/tds/deductions``: record a payment and the tax deducted (a TdsDeduction event);
- ``GET /v1/tds/summary`` and ``GET /v1/tds/form26q``: a quarter per vendor, and the statement's data;
- ``POST /v1/tds/form16/generate``: a certificate statement per vendor and quarter (the official
  Form 16A comes only from TRACES).

Every route is the caller's tenant's: another tenant's deductions are never counted nor shown.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from engine.api.errors import ApiError
from engine.api.tenant import caller_of
from engine.application import LedgerService, ValidationFailed
from engine.commands import Money
from engine.fields import IsoDate, SafeStr, text
from engine.tax.errors import TaxRuleError, Violation
from engine.tax.tds import (
    TdsRequest,
    TdsResult,
    check_pan,
    parse_financial_year,
    quarter_bounds,
)
from engine.tds import DeductionInput, TdsBook, money, rate_text

Nature = Literal[
    "professional_services",
    "technical_services",
    "contractor",
    "commission",
    "rent_building",
    "rent_plant",
    "purchase_of_goods",
]
# A PAN is 10 characters; a little room so that a PAN with spaces around it is judged, not refused.
PanText = Annotated[SafeStr, text(max_length=20)]
FinancialYear = Annotated[SafeStr, text(min_length=7, max_length=7)]
Quarter = Annotated[StrictInt, Field(ge=1, le=4)]


class CalculateBody(BaseModel):
    """The seed's request, plus what the law needs to know."""

    model_config = ConfigDict(extra="forbid")

    vendor_pan: PanText | None = None
    payment_amount: Money = Field(description="Excluding GST shown separately on the vendor's invoice.")
    payment_nature: Nature
    financial_year: FinancialYear
    quarter: Quarter
    resident: StrictBool = True
    payment_date: IsoDate | None = Field(
        default=None, description="Within the year and quarter; default the quarter's first day."
    )
    paid_so_far: Money | None = Field(
        default=None, description="Paid to the vendor earlier this year and not recorded in Ledgerflow."
    )
    pan_inoperative: StrictBool = Field(
        default=False, description="The PAN is not linked with Aadhaar (e-filing portal's status check)."
    )
    buyer_turnover_above_10_crore: StrictBool = Field(
        default=False,
        description="Section 194Q: the tenant's turnover exceeded 10 crore in the preceding year.",
    )
    rent_months: Annotated[StrictInt, Field(ge=1, le=12)] = Field(
        default=1, description="Months (or parts of a month) the rent paid covers."
    )


class DeductionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: Annotated[SafeStr, text(min_length=1, max_length=60)] = Field(
        description="Your voucher or payment reference; the same reference again is the same deduction."
    )
    vendor_pan: PanText | None = None
    vendor_name: Annotated[SafeStr, text(min_length=1, max_length=200)]
    pan_inoperative: StrictBool = False
    payment_amount: Money
    payment_nature: Nature
    payment_date: IsoDate
    tds_amount: Money | None = Field(
        default=None, description="Tax actually deducted; default what we compute."
    )
    buyer_turnover_above_10_crore: StrictBool = False
    rent_months: Annotated[StrictInt, Field(ge=1, le=12)] = 1


class CertificateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    financial_year: FinancialYear
    quarter: Quarter
    vendor_pan: PanText


def _invalid(path: str, code: str, message: str, **details: object) -> ValidationFailed:
    return ValidationFailed((Violation(path, code, message, dict(details)),))


def _year(text_value: str) -> int:
    start = parse_financial_year(text_value)
    if start is None:
        raise _invalid(
            "financial_year", "invalid_financial_year", f"financial_year: {text_value!r} is not like 2025-26."
        )
    return start


def _payment_day(start: int, quarter: int, chosen: date | None) -> date:
    first, last = quarter_bounds(start, quarter)
    if chosen is None:
        return first
    if not first <= chosen <= last:
        raise _invalid(
            "payment_date",
            "outside_quarter",
            f"payment_date: {chosen.isoformat()} is not in quarter {quarter}"
            f" ({first.isoformat()} to {last.isoformat()}).",
        )
    return chosen


def result_document(result: TdsResult, amount: Decimal) -> dict[str, Any]:
    """The seed's fields (money and rates as decimal strings) and what they rest on."""
    threshold = result.threshold
    return {
        "tds_rate": rate_text(result.rate),
        "tds_amount": money(result.tds_amount),
        "net_payment": money(result.net_payment),
        "section": result.section,
        "surcharge": money(result.surcharge),
        "cess": money(result.cess),
        "total_tds": money(result.total_tds),
        "payment_amount": money(amount),
        "act": result.act,
        "section_code": result.code_26q,
        "section_rate": rate_text(result.section_rate),
        "higher_rate": result.higher_rate,
        "higher_rate_provision": result.higher_rate_provision,
        "pan_status": result.pan.status,
        "taxable_amount": money(result.taxable_amount),
        "catch_up_amount": money(result.catch_up_amount),
        "threshold": {
            "kind": threshold.kind,
            "single_payment_limit": money(threshold.single_limit)
            if threshold.single_limit is not None
            else None,
            "annual_limit": money(threshold.annual_limit) if threshold.annual_limit is not None else None,
            "monthly_limit": money(threshold.monthly_limit) if threshold.monthly_limit is not None else None,
            "paid_before": money(threshold.paid_before),
            "aggregate": money(threshold.aggregate),
            "exceeded": threshold.exceeded,
        },
        "notes": list(result.notes),
    }


def _pan_or_refuse(pan: str) -> str:
    checked = check_pan(pan)
    if checked.pan is None:
        raise _invalid("vendor_pan", "invalid_pan", "vendor_pan: not a valid PAN (format AAAAA9999A).")
    return checked.pan


def build_router(
    current_tenant: Callable[..., Awaitable[UUID]], service: Callable[[], Awaitable[LedgerService]]
) -> APIRouter:
    router = APIRouter(prefix="/v1/tds", tags=["tds"])

    @router.post("/calculate", summary="TDS on a payment to a resident vendor under the Act in force")
    def calculate(
        body: CalculateBody,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        start = _year(body.financial_year)
        day = _payment_day(start, body.quarter, body.payment_date)
        request = TdsRequest(
            nature=body.payment_nature,
            amount=body.payment_amount,
            day=day,
            pan=body.vendor_pan,
            pan_inoperative=body.pan_inoperative,
            resident=body.resident,
            buyer_turnover_above_10_crore=body.buyer_turnover_above_10_crore,
            rent_months=body.rent_months,
        )
        try:
            result = TdsBook(svc).calculate(
                tenant_id, request, body.financial_year, body.paid_so_far or Decimal(0)
            )
        except TaxRuleError as exc:
            raise ValidationFailed(exc.violations) from exc
        return {
            **result_document(result, body.payment_amount),
            "financial_year": body.financial_year,
            "quarter": body.quarter,
            "payment_date": day.isoformat(),
        }

    @router.post(
        "/deductions",
        status_code=201,
        summary="Record a payment and the tax deducted from it",
        responses={
            200: {"description": "The same reference and details again: the deduction recorded before"},
            409: {"description": "The reference names a deduction recorded with other details"},
        },
    )
    def record(
        body: DeductionBody,
        request: Request,
        response: Response,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        given = DeductionInput(
            reference=body.reference,
            vendor_pan=body.vendor_pan,
            vendor_name=body.vendor_name,
            pan_inoperative=body.pan_inoperative,
            payment_nature=body.payment_nature,
            payment_date=body.payment_date,
            amount=body.payment_amount,
            tds_amount=body.tds_amount,
            buyer_turnover_above_10_crore=body.buyer_turnover_above_10_crore,
            rent_months=body.rent_months,
        )
        try:
            view, created = TdsBook(svc).record(tenant_id, given, caller_of(request))
        except TaxRuleError as exc:
            raise ValidationFailed(exc.violations) from exc
        if not created:
            response.status_code = 200
        return view

    @router.get("/summary", summary="A quarter's payments and TDS per vendor and section")
    def summary(
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
        financial_year: Annotated[FinancialYear, Query()],
        quarter: Annotated[int, Query(ge=1, le=4)],
    ) -> dict[str, Any]:
        _year(financial_year)
        return TdsBook(svc).summary(tenant_id, financial_year, quarter)

    @router.get("/form26q", summary="The data of the quarterly TDS statement (Form 26Q): deductee rows")
    def form26q(
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
        financial_year: Annotated[FinancialYear, Query()],
        quarter: Annotated[int, Query(ge=1, le=4)],
    ) -> dict[str, Any]:
        _year(financial_year)
        return TdsBook(svc).form26q(tenant_id, financial_year, quarter)

    @router.post(
        "/form16/generate",
        summary="A TDS certificate statement for one vendor and quarter",
        responses={404: {"description": "Nothing recorded for the PAN in that quarter"}},
    )
    def certificate(
        body: CertificateBody,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        _year(body.financial_year)
        pan = _pan_or_refuse(body.vendor_pan)
        found = TdsBook(svc).certificate(tenant_id, body.financial_year, body.quarter, pan)
        if found is None:
            raise ApiError(
                404,
                "not_found",
                f"no deduction recorded for {pan} in {body.financial_year} quarter {body.quarter}",
                {"vendor_pan": pan, "financial_year": body.financial_year, "quarter": body.quarter},
            )
        return found

    return router
