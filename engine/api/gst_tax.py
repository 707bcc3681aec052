"""``/v1/gst/hsn`` and ``/v1/gst/calculate``: the HSN/SAC rate master and GST on an amount (issue 11).

The master is the same one invoices are taxed with (engine.tax.rates), so a rate read here is the rate an
invoice line of that code and date gets. Both are reference data, the same for every tenant, but like every
/v1 route they need a tenant's API key.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, StrictBool

from engine.api.errors import ApiError
from engine.application import ValidationFailed
from engine.commands import Money, Rate
from engine.fields import IsoDate, SafeStr, text
from engine.tax.errors import TaxRuleError, Violation
from engine.tax.gst_calc import calculate_gst
from engine.tax.india_gst import today_in_india
from engine.tax.rates import GST_START, HsnRate, hsn_lookup, hsn_search

MAX_LIMIT = 100
MAX_QUERY = 100
"""Longer than any description word list a person types; the search scans every description per query."""


def _number(value: Decimal) -> str:
    """A rate as it is written ("18", "0.25", "7.5"), not "18.000"."""
    return format(value.normalize(), "f")


def hsn_document(found: HsnRate, day: date) -> dict[str, Any]:
    """One code on one date, for the API (decimal strings; ``rate`` null when the caller must choose)."""
    return {
        "code": found.code,
        "description": found.description,
        "kind": found.kind,
        "date": day.isoformat(),
        "rate": _number(found.rate) if found.rate is not None else None,
        "candidates": [_number(r) for r in found.candidates],
        "rate_required": len(found.candidates) > 1,
        "outside_gst": found.outside_gst,
        "cess_rate": _number(found.cess) if isinstance(found.cess, Decimal) else None,
        "cess_text": found.cess_note or None,
        "effective_from": found.effective_from.isoformat(),
        "basis": found.basis,
        "notes": found.notes,
    }


def _on(day: date | None) -> date:
    """The date asked for, or today in India; no GST rate exists before 1 July 2017."""
    chosen = day if day is not None else today_in_india(datetime.now(UTC))
    if chosen < GST_START:
        raise ValidationFailed(
            (
                Violation(
                    "date",
                    "before_gst",
                    f"date: {chosen.isoformat()} is before GST began on {GST_START.isoformat()}.",
                    {"earliest": GST_START.isoformat()},
                ),
            )
        )
    return chosen


class CalculateBody(BaseModel):
    """``POST /v1/gst/calculate`` (seed "College Accounts"): amounts and rates as numbers or strings."""

    model_config = ConfigDict(extra="forbid")

    amount: Money
    gst_rate: Rate
    include_tax: StrictBool = False
    supplier_state: Annotated[SafeStr, text(max_length=40)] | None = None
    place_of_supply: Annotated[SafeStr, text(max_length=40)] | None = None
    date: IsoDate | None = None


def build_router(current_tenant: Callable[..., Awaitable[UUID]]) -> APIRouter:
    router = APIRouter(prefix="/v1/gst", tags=["gst"], dependencies=[Depends(current_tenant)])

    @router.get("/hsn", summary="Search HSN/SAC codes and descriptions; each with its rate on the date")
    def search(
        q: Annotated[SafeStr, Query(min_length=1, max_length=MAX_QUERY)],
        date: Annotated[IsoDate | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    ) -> dict[str, Any]:
        day = _on(date)
        found = hsn_search(q, day, limit)
        return {"date": day.isoformat(), "items": [hsn_document(h, day) for h in found]}

    @router.get("/hsn/{code}", summary="One HSN/SAC code: its rate, or candidate rates, on the date")
    def one(
        code: Annotated[SafeStr, Path(max_length=20)],
        date: Annotated[IsoDate | None, Query()] = None,
    ) -> dict[str, Any]:
        if not (code.isascii() and code.isdigit() and len(code) in (2, 4, 6, 8)):
            raise ValidationFailed(
                (
                    Violation(
                        "code",
                        "invalid_hsn",
                        f"code: {code!r} is not an HSN/SAC code of 2, 4, 6 or 8 digits.",
                    ),
                )
            )
        day = _on(date)
        found = hsn_lookup(code, day, exact=True)
        if found is None:
            raise ApiError(
                404,
                "hsn_not_found",
                f"{code} is not in the HSN/SAC list (the GST portal's code list, mid-2025); an invoice "
                "line with it must send gst_rate.",
                {"code": code},
            )
        return hsn_document(found, day)

    @router.post("/calculate", summary="GST on an amount at a rate: CGST + SGST or IGST, to the paisa")
    def calculate(body: CalculateBody) -> dict[str, Any]:
        day = _on(body.date)
        try:
            result = calculate_gst(
                amount=body.amount,
                gst_rate=body.gst_rate,
                include_tax=body.include_tax,
                day=day,
                supplier_state=body.supplier_state,
                place_of_supply=body.place_of_supply,
            )
        except TaxRuleError as exc:
            raise ValidationFailed(exc.violations) from exc
        return {
            "taxable_amount": str(result.taxable_amount),
            "cgst": str(result.cgst),
            "sgst": str(result.sgst),
            "igst": str(result.igst),
            "total_gst": str(result.total_gst),
            "total_amount": str(result.total_amount),
            "gst_rate": _number(result.gst_rate),
            "include_tax": body.include_tax,
            "intra_state": result.intra_state,
            "supplier_state": result.supplier_state,
            "place_of_supply": result.place_of_supply,
            "date": day.isoformat(),
        }

    return router
