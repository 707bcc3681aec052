"""Approval routing around the threshold and budget alert levels (seed "College Accounts" 002), as tables."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from engine.domain.expense_rules import (
    DEFAULT_APPROVAL_THRESHOLD,
    BudgetPosition,
    Route,
    alert_level,
    expense_number,
    financial_year_of,
    level_rose,
    parse_financial_year,
    receipt_required,
    route_expense,
    utilization_percentage,
)

D = Decimal
ROOMY = BudgetPosition(allocated=D("500000"), utilized=D("0"))


@pytest.mark.parametrize(
    ("amount", "requires_approval", "budget", "expected"),
    [
        ("50000.00", False, ROOMY, Route.APPROVED),  # at the threshold: no approval (seed: "> 50K")
        ("50000.01", False, ROOMY, Route.PENDING_APPROVAL),  # just above
        ("0.01", False, ROOMY, Route.APPROVED),
        ("49999.99", False, None, Route.APPROVED),  # no budget for the category: not controlled
        ("75000", False, None, Route.PENDING_APPROVAL),
        ("100", True, ROOMY, Route.PENDING_APPROVAL),  # a category that always needs approval
        # Budget exhausted or short: refused at or below the threshold...
        ("100", False, BudgetPosition(D("100000"), D("100000")), Route.INSUFFICIENT_BUDGET),
        ("5000.01", False, BudgetPosition(D("10000"), D("5000")), Route.INSUFFICIENT_BUDGET),
        ("5000.00", False, BudgetPosition(D("10000"), D("5000")), Route.APPROVED),  # exactly what remains
        # ...but above it the budget is checked when the principal approves.
        ("60000", False, BudgetPosition(D("10000"), D("10000")), Route.PENDING_APPROVAL),
        ("100", False, BudgetPosition(D("0"), D("0")), Route.INSUFFICIENT_BUDGET),  # a zero budget
    ],
)
def test_approval_routing(
    amount: str, requires_approval: bool, budget: BudgetPosition | None, expected: str
) -> None:
    assert (
        route_expense(
            D(amount),
            threshold=DEFAULT_APPROVAL_THRESHOLD,
            category_requires_approval=requires_approval,
            budget=budget,
        )
        == expected
    )


def test_a_tenants_own_threshold_moves_the_boundary() -> None:
    assert route_expense(
        D("10000.01"), threshold=D("10000"), category_requires_approval=False, budget=None
    ) == (Route.PENDING_APPROVAL)
    assert route_expense(
        D("75000"), threshold=D("100000"), category_requires_approval=False, budget=None
    ) == (Route.APPROVED)


@pytest.mark.parametrize(
    ("allocated", "utilized", "percentage", "level"),
    [
        ("8000000", "6500000", "81.25", "warning"),  # the seed's example
        ("500000", "250000", "50.00", "normal"),  # the seed's sync example
        ("100", "79.99", "79.99", "normal"),
        ("100", "80", "80.00", "warning"),  # at the warning level
        ("100", "94.99", "94.99", "warning"),
        ("100", "95", "95.00", "critical"),  # at the critical level
        ("100", "120", "120.00", "critical"),  # over-spent after a revision down
        ("3", "1", "33.33", "normal"),
        ("3", "2", "66.67", "normal"),  # half up
        ("0", "0", "0.00", "normal"),
        ("0", "1", "100.00", "critical"),
    ],
)
def test_budget_alert_levels(allocated: str, utilized: str, percentage: str, level: str) -> None:
    used = utilization_percentage(D(allocated), D(utilized))
    assert str(used) == percentage
    assert alert_level(used, warning=D("80"), critical=D("95")) == level


@pytest.mark.parametrize(
    ("percentage", "warning", "critical", "level"),
    [("60", "60", "90", "warning"), ("59.99", "60", "90", "normal"), ("90", "60", "90", "critical")],
)
def test_alert_levels_follow_the_tenants_thresholds(
    percentage: str, warning: str, critical: str, level: str
) -> None:
    assert alert_level(D(percentage), warning=D(warning), critical=D(critical)) == level


@pytest.mark.parametrize(
    ("before", "after", "rose"),
    [
        ("normal", "warning", True),
        ("warning", "critical", True),
        ("normal", "critical", True),
        ("warning", "warning", False),
        ("critical", "warning", False),
    ],
)
def test_an_alert_is_raised_only_when_the_level_rises(before: str, after: str, rose: bool) -> None:
    assert level_rose(before, after) is rose


@pytest.mark.parametrize(
    ("amount", "threshold", "required"),
    [("5000", "5000", False), ("5000.01", "5000", True), ("0.01", "0", True)],
)
def test_receipts_are_required_above_the_category_threshold(
    amount: str, threshold: str, required: bool
) -> None:
    assert receipt_required(D(amount), D(threshold)) is required


def test_financial_years_and_numbers() -> None:
    assert financial_year_of(date(2026, 3, 31)) == "2025-26"
    assert financial_year_of(date(2026, 4, 1)) == "2026-27"
    assert financial_year_of(date(2099, 12, 31)) == "2099-00"
    assert parse_financial_year("2024-25") == 2024
    assert [parse_financial_year(t) for t in ("2024-26", "２０２４-25", "2024/25", "1999-00")] == [None] * 4
    assert expense_number(2024, 123) == "EXP-2024-000123"
