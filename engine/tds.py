"""TDS for a tenant: recording deductions (TdsDeduction events), the payments to a vendor so far in a
year (for thresholds), the quarterly summary per vendor, the data of the quarterly statement (Form 26Q)
and a certificate statement per vendor and quarter (docs/tds.md).

The read model is ``tds_register`` (engine/tds.sql), written right after each deduction is stored;
every query here is scoped to one tenant.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, OperationalError
from psycopg.rows import dict_row

from engine import db
from engine.application import LedgerService, ServiceError
from engine.domain.tds_deduction import TdsDeduction, deduction_id_for
from engine.errors import Conflict
from engine.tax.tds import (
    NATURES,
    PAN_NOT_AVAILABLE,
    PriorPayments,
    TdsRequest,
    TdsResult,
    calculate_tds,
    check_pan,
    financial_year_of,
    quarter_bounds,
    quarter_of,
    threshold_group,
)

ZERO = Decimal("0")


class ReferenceReused(ServiceError, Conflict):
    """The reference names a deduction already recorded with different content."""

    code = "reference_reused"


@dataclass(frozen=True)
class DeductionInput:
    """``POST /v1/tds/deductions`` after validation."""

    reference: str
    vendor_pan: str | None
    vendor_name: str
    pan_inoperative: bool
    payment_nature: str
    payment_date: date
    amount: Decimal
    tds_amount: Decimal | None
    """What was actually deducted; None: what Ledgerflow computes."""
    buyer_turnover_above_10_crore: bool
    rent_months: int


def money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def rate_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def prior_payments(
    conn: psycopg.Connection,
    tenant_id: UUID,
    pan: str | None,
    financial_year: str,
    group: str,
    *,
    before: date | None = None,
) -> PriorPayments:
    """What the tenant recorded as paid to ``pan`` in the year and threshold group (before a date when
    given): everything, and the part on which nothing was deducted. Without a valid PAN payments
    cannot be tied to one payee: nothing."""
    if pan is None:
        return PriorPayments()
    params: list[Any] = [tenant_id, pan, financial_year, group]
    where = ""
    if before is not None:
        where = " AND payment_date <= %s"
        params.append(before)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT coalesce(sum(amount), 0) AS paid,"
            " coalesce(sum(amount) FILTER (WHERE tds_amount = 0), 0) AS untaxed"
            " FROM tds_register WHERE tenant_id = %s AND vendor_pan = %s AND financial_year = %s"
            " AND threshold_group = %s" + where,
            params,
        ).fetchone()
    assert row is not None
    return PriorPayments(Decimal(row["paid"]), Decimal(row["untaxed"]))


def deduction_view(d: TdsDeduction) -> dict[str, Any]:
    return {
        "id": str(d.id),
        "reference": d.reference,
        "vendor_pan": d.vendor_pan,
        "vendor_name": d.vendor_name,
        "pan_status": d.pan_status,
        "payment_nature": d.payment_nature,
        "payment_date": d.payment_date.isoformat(),
        "financial_year": d.financial_year,
        "quarter": d.quarter,
        "payment_amount": money(d.amount),
        "act": d.act,
        "section": d.section,
        "section_code": d.section_code,
        "tds_rate": rate_text(d.tds_rate),
        "tds_amount": money(d.tds_amount),
        "computed_tds": money(d.computed_tds),
        "difference": money(d.tds_amount - d.computed_tds),
        "higher_rate": d.higher_rate,
        "recorded_by": d.recorded_by,
    }


class TdsBook:
    """Command handling and queries for TDS, beside the ledger's ``LedgerService``."""

    def __init__(self, service: LedgerService) -> None:
        self.service = service

    def calculate(
        self, tenant_id: UUID, request: TdsRequest, financial_year: str, paid_so_far: Decimal
    ) -> TdsResult:
        """The TDS on a payment, the year's thresholds judged on what the tenant recorded as paid to
        the PAN in ``financial_year`` plus ``paid_so_far`` (declared, not recorded here)."""
        pan = check_pan(request.pan, inoperative=request.pan_inoperative)
        group = threshold_group(request.nature) if request.nature in NATURES else ""
        with db.transaction(self.service.pool) as conn:
            recorded = prior_payments(conn, tenant_id, pan.pan, financial_year, group)
        prior = PriorPayments(recorded.amount + paid_so_far, recorded.untaxed)
        return calculate_tds(_with_prior(request, prior))

    def record(self, tenant_id: UUID, given: DeductionInput, recorded_by: str) -> tuple[dict[str, Any], bool]:
        """Record one deduction; (its view, True when new). The same reference with the same content
        again is the same deduction (False); with other content, :class:`ReferenceReused`."""
        deduction_id = deduction_id_for(tenant_id, given.reference)
        existing = self._load(tenant_id, deduction_id)
        if existing is not None:
            return self._same_or_refuse(existing, given), False
        year = financial_year_of(given.payment_date)
        request = TdsRequest(
            nature=given.payment_nature,
            amount=given.amount,
            day=given.payment_date,
            pan=given.vendor_pan,
            pan_inoperative=given.pan_inoperative,
            buyer_turnover_above_10_crore=given.buyer_turnover_above_10_crore,
            rent_months=given.rent_months,
        )
        pan = check_pan(given.vendor_pan, inoperative=given.pan_inoperative)
        group = threshold_group(given.payment_nature) if given.payment_nature in NATURES else ""
        with db.transaction(self.service.pool) as conn:
            prior = prior_payments(conn, tenant_id, pan.pan, year, group, before=given.payment_date)
        result = calculate_tds(_with_prior(request, prior))
        deduction = TdsDeduction(
            tenant_id=tenant_id,
            reference=given.reference,
            vendor_pan=result.pan.pan,
            vendor_name=given.vendor_name,
            pan_status=result.pan.status,
            payment_nature=given.payment_nature,
            payment_date=given.payment_date,
            financial_year=year,
            quarter=quarter_of(given.payment_date),
            amount=given.amount,
            act=result.act,
            section=result.section,
            section_code=result.code_26q,
            tds_rate=result.rate,
            tds_amount=result.total_tds if given.tds_amount is None else given.tds_amount,
            computed_tds=result.total_tds,
            higher_rate=result.higher_rate,
            recorded_by=recorded_by,
        )
        try:
            self.service._save(deduction)
        except IntegrityError:
            # Recorded concurrently under the same reference: that one is the deduction.
            raced = self._load(tenant_id, deduction_id)
            if raced is None:
                raise
            return self._same_or_refuse(raced, given), False
        self.project(deduction)
        return deduction_view(deduction), True

    def _same_or_refuse(self, existing: TdsDeduction, given: DeductionInput) -> dict[str, Any]:
        same = (
            existing.amount == given.amount
            and existing.payment_date == given.payment_date
            and existing.payment_nature == given.payment_nature
            and existing.vendor_name == given.vendor_name
            and (given.tds_amount is None or existing.tds_amount == given.tds_amount)
        )
        if not same:
            raise ReferenceReused(
                f"reference {existing.reference!r} is already a recorded deduction with other details",
                {"reference": existing.reference, "deduction_id": str(existing.id)},
            )
        self.project(existing)  # the read model may lag after a crash between the two writes
        return deduction_view(existing)

    def _load(self, tenant_id: UUID, deduction_id: UUID) -> TdsDeduction | None:
        try:
            found: Any = self.service.ledger.repository.get(deduction_id)
        except AggregateNotFoundError:
            return None
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        if not isinstance(found, TdsDeduction) or found.tenant_id != tenant_id:
            return None
        return found

    def project(self, d: TdsDeduction) -> None:
        with db.transaction(self.service.pool) as conn:
            conn.execute(
                "INSERT INTO tds_register (deduction_id, tenant_id, reference, vendor_pan, vendor_name,"
                " pan_status, payment_nature, threshold_group, payment_date, financial_year, quarter, amount,"
                " act, section, section_code, tds_rate, tds_amount, computed_tds, higher_rate, recorded_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (deduction_id) DO NOTHING",
                (
                    d.id,
                    d.tenant_id,
                    d.reference,
                    d.vendor_pan,
                    d.vendor_name,
                    d.pan_status,
                    d.payment_nature,
                    threshold_group(d.payment_nature),
                    d.payment_date,
                    d.financial_year,
                    d.quarter,
                    d.amount,
                    d.act,
                    d.section,
                    d.section_code,
                    d.tds_rate,
                    d.tds_amount,
                    d.computed_tds,
                    d.higher_rate,
                    d.recorded_by,
                ),
            )

    # -- queries -------------------------------------------------------------------------------------

    def rows(
        self, tenant_id: UUID, financial_year: str, quarter: int, pan: str | None = None
    ) -> list[dict[str, Any]]:
        params: list[Any] = [tenant_id, financial_year, quarter]
        where = ""
        if pan is not None:
            where = " AND vendor_pan = %s"
            params.append(pan)
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT * FROM tds_register WHERE tenant_id = %s AND financial_year = %s AND quarter = %s"
                + where
                + " ORDER BY payment_date, reference",
                params,
            ).fetchall()

    def summary(self, tenant_id: UUID, financial_year: str, quarter: int) -> dict[str, Any]:
        """Per vendor (PAN, or name when there is none) and section: paid and deducted in the quarter."""
        vendors: dict[tuple[str, str], dict[str, Any]] = {}
        for row in self.rows(tenant_id, financial_year, quarter):
            key = (row["vendor_pan"] or "", row["vendor_name"] if row["vendor_pan"] is None else "")
            vendor = vendors.setdefault(
                key,
                {
                    "vendor_pan": row["vendor_pan"],
                    "vendor_name": row["vendor_name"],
                    "pan_status": row["pan_status"],
                    "sections": {},
                    "payments": 0,
                    "amount_paid": ZERO,
                    "tds_deducted": ZERO,
                },
            )
            section = vendor["sections"].setdefault(
                row["section"],
                {"section": row["section"], "amount_paid": ZERO, "tds_deducted": ZERO, "payments": 0},
            )
            for bucket in (vendor, section):
                bucket["payments"] += 1
                bucket["amount_paid"] += row["amount"]
                bucket["tds_deducted"] += row["tds_amount"]
        items = []
        totals = {"amount_paid": ZERO, "tds_deducted": ZERO}
        for vendor in sorted(vendors.values(), key=lambda v: (v["vendor_name"], v["vendor_pan"] or "")):
            totals["amount_paid"] += vendor["amount_paid"]
            totals["tds_deducted"] += vendor["tds_deducted"]
            items.append(
                {
                    **vendor,
                    "amount_paid": money(vendor["amount_paid"]),
                    "tds_deducted": money(vendor["tds_deducted"]),
                    "sections": [
                        {
                            **s,
                            "amount_paid": money(s["amount_paid"]),
                            "tds_deducted": money(s["tds_deducted"]),
                        }
                        for s in vendor["sections"].values()
                    ],
                }
            )
        start, end = quarter_bounds(int(financial_year[:4]), quarter)
        return {
            "financial_year": financial_year,
            "quarter": quarter,
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "vendors": items,
            "totals": {k: money(v) for k, v in totals.items()},
        }

    def form26q(self, tenant_id: UUID, financial_year: str, quarter: int) -> dict[str, Any]:
        """The deductee rows and per-section totals of the quarterly statement of TDS on payments other
        than salary. Challan details are placeholders: deposits are not recorded in Ledgerflow."""
        tenant = self.service.get_tenant(tenant_id)
        rows = self.rows(tenant_id, financial_year, quarter)
        deductees = []
        by_section: dict[str, dict[str, Any]] = {}
        for serial, row in enumerate(rows, start=1):
            deductees.append(
                {
                    "serial": serial,
                    "deduction_id": str(row["deduction_id"]),
                    "reference": row["reference"],
                    "deductee_pan": row["vendor_pan"] or PAN_NOT_AVAILABLE,
                    "deductee_name": row["vendor_name"],
                    "section": row["section"],
                    "section_code": row["section_code"],
                    "act": row["act"],
                    "date_of_payment": row["payment_date"].isoformat(),
                    "date_of_deduction": row["payment_date"].isoformat(),
                    "amount_paid": money(row["amount"]),
                    "tds_rate": rate_text(row["tds_rate"]),
                    "tds": money(row["tds_amount"]),
                    "surcharge": "0.00",
                    "cess": "0.00",
                    "total_tax_deducted": money(row["tds_amount"]),
                    # Form 26Q's remark codes: C higher rate for want of PAN, Y below the threshold.
                    "remark": "C" if row["higher_rate"] else ("Y" if row["tds_amount"] == 0 else None),
                    "challan_serial": None,
                }
            )
            key = row["section_code"] or row["section"]
            section = by_section.setdefault(
                key,
                {
                    "section": row["section"],
                    "section_code": row["section_code"],
                    "rows": 0,
                    "amount_paid": ZERO,
                    "tds": ZERO,
                },
            )
            section["rows"] += 1
            section["amount_paid"] += row["amount"]
            section["tds"] += row["tds_amount"]
        start, end = quarter_bounds(int(financial_year[:4]), quarter)
        gstin = tenant.gstin
        return {
            "form": "26Q"
            if end < date(2026, 4, 1)
            else "quarterly statement of TDS other than salary (2025 Act)",
            "financial_year": financial_year,
            "quarter": quarter,
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "deductor": {
                "name": tenant.legal_name,
                # A GSTIN carries its holder's PAN in characters 3 to 12.
                "pan": gstin[2:12] if gstin else None,
                "tan": None,
            },
            "deductees": deductees,
            "sections": [
                {**s, "amount_paid": money(s["amount_paid"]), "tds": money(s["tds"])}
                for s in by_section.values()
            ],
            "totals": {
                "rows": len(deductees),
                "amount_paid": money(sum((r["amount"] for r in rows), ZERO)),
                "tds": money(sum((r["tds_amount"] for r in rows), ZERO)),
            },
            "challans": [],
            "not_included": [
                "TAN of the deductor (not held by Ledgerflow)",
                "challans (BSR code, date of deposit, challan serial): deposits are not recorded here",
                "the responsible person's particulars and verification",
                "the file validation utility's (FVU) text format: feed these rows to the RPU",
            ],
            "generated_at": datetime.now(UTC).isoformat(),
        }

    def certificate(
        self, tenant_id: UUID, financial_year: str, quarter: int, pan: str
    ) -> dict[str, Any] | None:
        """A statement of the tax deducted from one vendor in one quarter (the data of Form 16A); None
        when nothing was recorded for the PAN in that quarter."""
        rows = self.rows(tenant_id, financial_year, quarter, pan)
        if not rows:
            return None
        tenant = self.service.get_tenant(tenant_id)
        start, end = quarter_bounds(int(financial_year[:4]), quarter)
        total = sum((r["tds_amount"] for r in rows), ZERO)
        return {
            "kind": "tds_certificate_statement",
            "official_certificate": (
                "Form 16A is issued only from the TRACES portal (tdscpc.gov.in) after the quarterly statement"
                " is processed; this statement is not a substitute for it."
            ),
            "financial_year": financial_year,
            "quarter": quarter,
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "deductor": {
                "name": tenant.legal_name,
                "pan": tenant.gstin[2:12] if tenant.gstin else None,
                "tan": None,
            },
            "deductee": {"pan": pan, "name": rows[-1]["vendor_name"]},
            "payments": [
                {
                    "reference": r["reference"],
                    "date": r["payment_date"].isoformat(),
                    "section": r["section"],
                    "act": r["act"],
                    "amount_paid": money(r["amount"]),
                    "tds_rate": rate_text(r["tds_rate"]),
                    "tds": money(r["tds_amount"]),
                }
                for r in rows
            ],
            "amount_paid": money(sum((r["amount"] for r in rows), ZERO)),
            "total_tds": money(total),
            "generated_at": datetime.now(UTC).isoformat(),
        }


def _with_prior(request: TdsRequest, prior: PriorPayments) -> TdsRequest:
    return replace(request, prior=prior)
