"""The monthly P&L a college submits to its consolidating accountant (issue 14; seed 1.3
``POST /api/v1/financial-reports/submit``; docs/fees.md), built from the read models:

- income: fees collected in the month (``fee_collections`` by payment date) and invoices issued in
  the month (``invoice_register`` by invoice date, not cancelled): their taxable value, because the
  GST on an invoice is collected for the government and is not the college's income; a credit note
  reduces it, a debit note adds to it;
- expenditure: expenses approved or paid (``expense_register``), dated in the month, by category and
  by GL code; submitted, pending and rejected expenses are not spent.

Amounts are exact decimal rupees; the connector converts to paise at its edge. ``profit_and_loss`` is
the pure rule, ``build`` reads the tables for one tenant.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row

ZERO = Decimal("0")
SPENT = ("approved", "paid")
_PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])", re.ASCII)


def money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def month_bounds(period: str) -> tuple[date, date] | None:
    """First and last day of a ``YYYY-MM`` period; None when it is not one."""
    m = _PERIOD.fullmatch(period)
    if m is None or int(m.group(1)) < 1900:
        return None
    year, month = int(m.group(1)), int(m.group(2))
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


@dataclass(frozen=True)
class ExpenseLine:
    category: str
    gl_code: str | None
    amount: Decimal


UNCODED = "uncoded"


def profit_and_loss(
    period: str, fees_collected: Decimal, invoices_issued: Decimal, expenses: Sequence[ExpenseLine]
) -> dict[str, Any]:
    """The month's income, expenditure by category and GL code, and net income (decimal strings)."""
    by_category: dict[str, Decimal] = {}
    by_gl: dict[str, Decimal] = {}
    for e in expenses:
        by_category[e.category] = by_category.get(e.category, ZERO) + e.amount
        code = e.gl_code or UNCODED
        by_gl[code] = by_gl.get(code, ZERO) + e.amount
    income = fees_collected + invoices_issued
    spent = sum((e.amount for e in expenses), ZERO)
    return {
        "period": period,
        "income": {
            "fees_collected": money(fees_collected),
            "invoices_issued": money(invoices_issued),
            "total": money(income),
        },
        "expenditure": {
            "by_category": {k: money(v) for k, v in sorted(by_category.items())},
            "by_gl_code": {k: money(v) for k, v in sorted(by_gl.items())},
            "total": money(spent),
            "count": len(expenses),
        },
        "net_income": money(income - spent),
    }


def build(conn: psycopg.Connection[Any], tenant_id: UUID, period: str) -> dict[str, Any]:
    """The tenant's P&L for ``period`` (``YYYY-MM``, already validated) from the read models."""
    bounds = month_bounds(period)
    if bounds is None:
        raise ValueError(f"not a period: {period!r}")
    start, end = bounds
    with conn.cursor(row_factory=tuple_row) as cur:
        return _build(cur, tenant_id, period, start, end)


def _build(cur: psycopg.Cursor[Any], tenant_id: UUID, period: str, start: date, end: date) -> dict[str, Any]:
    fees = cur.execute(
        "SELECT coalesce(sum(amount), 0) FROM fee_collections"
        " WHERE tenant_id = %s AND payment_date BETWEEN %s AND %s",
        (tenant_id, start, end),
    ).fetchone()
    invoices = cur.execute(
        "SELECT coalesce(sum(CASE WHEN document_type = 'credit_note' THEN -taxable ELSE taxable END), 0)"
        " FROM invoice_register WHERE tenant_id = %s AND invoice_date BETWEEN %s AND %s"
        " AND status <> 'cancelled'",
        (tenant_id, start, end),
    ).fetchone()
    rows = cur.execute(
        "SELECT category, gl_code, amount FROM expense_register"
        " WHERE tenant_id = %s AND expense_date BETWEEN %s AND %s AND status = ANY(%s)"
        " ORDER BY expense_number",
        (tenant_id, start, end, list(SPENT)),
    ).fetchall()
    assert fees is not None and invoices is not None
    lines = [ExpenseLine(r[0], r[1], Decimal(r[2])) for r in rows]
    return profit_and_loss(period, Decimal(fees[0]), Decimal(invoices[0]), lines)
