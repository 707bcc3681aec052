"""Pure: our documents -> the consolidating accountant's payloads (seed "College Accounts" 1.3 and 4.1).

The accountant's API counts money in paise, as integers (the seed: "amounts in paisa"); Ledgerflow
keeps exact decimal rupees. The conversion happens here and only here, and it is exact: an amount
with a fraction of a paisa cannot be sent and is refused with :class:`FractionalPaise` rather than
rounded (rounding would make the accountant's books disagree with the college's).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.errors import PermanentError

BATCH_SIZE = 1000
"""Expenses per sync batch (the seed's expense sync: ``batch_size: 1000``)."""
REPORT_TYPE = "monthly_pl"
# Far beyond any college's books, and inside a signed 64-bit integer, which the accountant's JSON
# parser may use for paise.
MAX_PAISE = 10**17


class FractionalPaise(PermanentError):
    """An amount that is not a whole number of paise (or not a finite amount at all)."""

    def __init__(self, what: str, amount: object) -> None:
        super().__init__(
            "fractional_paise",
            f"{what}: {amount} rupees is not a whole number of paise; it is not sent (nothing is rounded)",
            details={"what": what, "amount": str(amount)},
        )


def to_paise(amount: Decimal, what: str = "amount") -> int:
    """Exact rupees -> whole paise; :class:`FractionalPaise` for 10.005, NaN, infinity or absurd sizes."""
    try:
        if not isinstance(amount, Decimal) or not amount.is_finite():
            raise FractionalPaise(what, amount)
        paise = amount.scaleb(2)
        whole = paise.to_integral_value()
    except InvalidOperation as exc:
        raise FractionalPaise(what, amount) from exc
    if paise != whole or abs(whole) > MAX_PAISE:
        raise FractionalPaise(what, amount)
    return int(whole)


def from_paise(paise: int) -> Decimal:
    return (Decimal(paise) / 100).quantize(Decimal("0.01"))


@dataclass(frozen=True)
class ExpenseRecord:
    """An approved (or paid) expense as the sync sends it; read from the expenses read model."""

    expense_number: str
    amount: Decimal
    category: str
    status: str
    expense_date: date
    gl_code: str | None = None
    vendor_name: str | None = None
    approved_at: datetime | None = None
    approved_by_name: str | None = None


def expense_payload(e: ExpenseRecord, college_id: str) -> dict[str, Any]:
    """One expense in the seed's sync payload (plus the export's gl_code, vendor and approval)."""
    return {
        "expense_number": e.expense_number,
        "college_id": college_id,
        "amount": to_paise(e.amount, f"expense {e.expense_number}"),
        "category": e.category,
        "status": e.status,
        "expense_date": e.expense_date.isoformat(),
        "gl_code": e.gl_code,
        "vendor_name": e.vendor_name,
        "approved_at": e.approved_at.isoformat() if e.approved_at else None,
        "approved_by_name": e.approved_by_name,
    }


def batch_payload(batch_id: str, college_id: str, expenses: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A sync batch: at most :data:`BATCH_SIZE` expense payloads, their count and paise total."""
    if len(expenses) > BATCH_SIZE:
        raise PermanentError("batch_too_large", f"a batch holds at most {BATCH_SIZE} expenses")
    return {
        "batch_id": batch_id,
        "college_id": college_id,
        "expense_count": len(expenses),
        "total_amount": sum(int(e["amount"]) for e in expenses),
        "expenses": list(expenses),
    }


def chunks(items: Sequence[Any], size: int = BATCH_SIZE) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def report_payload(
    college_id: str,
    period: str,
    pl: Mapping[str, Any],
    *,
    generated_at: datetime,
    generated_by: str,
) -> dict[str, Any]:
    """The seed's ``POST /api/v1/financial-reports/submit`` body from a P&L in decimal rupees
    (engine/financial_reports.py's document): every amount in paise."""

    def paise_map(values: Mapping[str, Any], what: str) -> dict[str, int]:
        return {k: to_paise(Decimal(v), f"{what} {k}") for k, v in values.items()}

    income = pl["income"]
    expenditure = pl["expenditure"]
    return {
        "college_id": college_id,
        "report_type": REPORT_TYPE,
        "period": period,
        "data": {
            "revenue": to_paise(Decimal(income["total"]), "revenue"),
            "revenue_by_source": paise_map(
                {"fees_collected": income["fees_collected"], "invoices_issued": income["invoices_issued"]},
                "revenue",
            ),
            "expenses": paise_map(expenditure["by_category"], "expenses"),
            "expenses_by_gl_code": paise_map(expenditure["by_gl_code"], "expenses by GL code"),
            "total_expenses": to_paise(Decimal(expenditure["total"]), "total expenses"),
            "net_income": to_paise(Decimal(pl["net_income"]), "net income"),
        },
        "generated_at": generated_at.isoformat(),
        "generated_by": generated_by,
    }
