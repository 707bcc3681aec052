"""Pure rules of college expenses (issue 14, seed "College Accounts" file 002): which expenses need the
principal's approval, whether a budget can take an expense, and the alert level of a budget.

No I/O: the tenant's configuration and the budget's figures are passed in, so the rules are tested as
tables (tests/unit/test_expense_rules.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

# Seed 002, section 1.2: "requires principal approval if > 50K" (rupees): at 50,000.00 no approval.
DEFAULT_APPROVAL_THRESHOLD = Decimal("50000.00")
# Seed 002, section 1.2: the approval request's "estimated_response" is 48 hours after it is made.
DEFAULT_SLA_HOURS = Decimal("48")
# The seed's example summary calls 81.25 % used "warning"; critical is our default at 95 %.
DEFAULT_WARNING_PERCENT = Decimal("80")
DEFAULT_CRITICAL_PERCENT = Decimal("95")

ALERT_LEVELS = ("normal", "warning", "critical")


class Route:
    """What a submitted expense becomes."""

    APPROVED = "approved"
    PENDING_APPROVAL = "pending_approval"
    INSUFFICIENT_BUDGET = "insufficient_budget"


@dataclass(frozen=True)
class BudgetPosition:
    """A category's budget for one financial year, as far as approvals have used it."""

    allocated: Decimal
    utilized: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.allocated - self.utilized


def budget_allows(budget: BudgetPosition | None, amount: Decimal) -> bool:
    """A category without a budget for the year is not budget-controlled; one with a budget takes an
    expense only when what remains covers all of it (the seed's ``insufficient_budget``: available
    less than the expense)."""
    return budget is None or amount <= budget.remaining


def route_expense(
    amount: Decimal,
    *,
    threshold: Decimal,
    category_requires_approval: bool,
    budget: BudgetPosition | None,
) -> str:
    """Seed 002: an expense above the threshold (or in a category that always needs approval) waits
    for the principal; one at or below it is approved at once when the budget has room, and refused
    (``insufficient_budget``) when it has not. The budget of a pending expense is checked when it is
    approved, since other expenses may be approved or the budget revised meanwhile."""
    if category_requires_approval or amount > threshold:
        return Route.PENDING_APPROVAL
    if not budget_allows(budget, amount):
        return Route.INSUFFICIENT_BUDGET
    return Route.APPROVED


def utilization_percentage(allocated: Decimal, utilized: Decimal) -> Decimal:
    """Percent of the allocation used, two places (the seed shows 81.25); a zero allocation that is
    used at all counts as 100 % used, an unused one as 0 %."""
    if allocated <= 0:
        return Decimal("100.00") if utilized > 0 else Decimal("0.00")
    return (utilized * 100 / allocated).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def alert_level(percentage: Decimal, *, warning: Decimal, critical: Decimal) -> str:
    """normal below ``warning`` percent, warning from it, critical from ``critical`` percent."""
    if percentage >= critical:
        return "critical"
    if percentage >= warning:
        return "warning"
    return "normal"


def level_rose(before: str, after: str) -> bool:
    return ALERT_LEVELS.index(after) > ALERT_LEVELS.index(before)


def receipt_required(amount: Decimal, receipt_threshold: Decimal) -> bool:
    """Seed 002 (expense categories): a receipt is needed for an amount above the category's
    ``receipt_threshold`` (0 means every amount)."""
    return amount > receipt_threshold


def financial_year_of(day: date) -> str:
    """The Indian financial year (April to March) of a day, written like the seed's ``2024-25``."""
    start = day.year if day.month >= 4 else day.year - 1
    return f"{start}-{(start + 1) % 100:02d}"


def parse_financial_year(text: str) -> int | None:
    """The first calendar year of ``2024-25`` (None when malformed or out of range)."""
    if (
        len(text) != 7
        or not text.isascii()
        or text[4] != "-"
        or not (text[:4].isdigit() and text[5:].isdigit())
    ):
        return None
    start = int(text[:4])
    if (start + 1) % 100 != int(text[5:]) or not 2000 <= start <= 2098:
        return None
    return start


def expense_number(year: int, sequence: int) -> str:
    """The seed's ``EXP-2024-000123``: the calendar year of the expense and its running number."""
    return f"EXP-{year}-{sequence:06d}"
