"""Budgets as Tally Budget masters (connectors/tally/budgets.py) and the monthly reconciliation's lines
(reconcile.py): pure, table-driven."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from lxml import etree

from connectors.tally import budgets, reconcile
from connectors.tally.mapping import LedgerMap, LedgerNotMapped
from connectors.tally.vouchers import VoucherRefused

MAP = LedgerMap({"expenses": "General Expenses", "expense:utilities": "Electricity"})


@pytest.mark.parametrize(
    ("year", "bounds"),
    [
        ("2024-25", (date(2024, 4, 1), date(2025, 3, 31))),
        ("2099-00", (date(2099, 4, 1), date(2100, 3, 31))),
        ("2027-28", (date(2027, 4, 1), date(2028, 3, 31))),
    ],
)
def test_a_financial_year_runs_april_to_march(year: str, bounds: tuple[date, date]) -> None:
    assert budgets.year_bounds(year) == bounds


@pytest.mark.parametrize("year", ["2024-26", "2024", "24-25", "2024-2025", "２０２４-25", "2024-25\n", ""])
def test_what_is_not_a_financial_year_is_refused(year: str) -> None:
    with pytest.raises(VoucherRefused):
        budgets.year_bounds(year)


def test_budgets_become_one_master_a_year_summed_per_expense_ledger() -> None:
    rows = [
        {"category": "utilities", "financial_year": "2024-25", "allocated_amount": Decimal("500.25")},
        {"category": "supplies", "financial_year": "2024-25", "allocated_amount": Decimal("100")},
        {"category": "salaries", "financial_year": "2024-25", "allocated_amount": Decimal("0.75")},
        {"category": "supplies", "financial_year": "2025-26", "allocated_amount": Decimal("7")},
    ]
    found = budgets.masters(rows, MAP)
    assert [(m.name, m.lines) for m in found] == [
        (
            "Ledgerflow FY 2024-25",
            (("Electricity", Decimal("500.25")), ("General Expenses", Decimal("100.75"))),
        ),
        ("Ledgerflow FY 2025-26", (("General Expenses", Decimal("7.00")),)),
    ]
    xml = etree.fromstring(budgets.build_budget_import("St. Xavier's", found[:1]))
    assert xml.findtext(".//REPORTNAME") == "All Masters"
    node = xml.find(".//BUDGET")
    assert (node.get("NAME"), node.findtext("PARENT")) == ("Ledgerflow FY 2024-25", "Primary")
    assert (node.findtext("STARTINGFROM"), node.findtext("ENDINGAT")) == ("20240401", "20250331")
    lines = [(d.findtext("NAME"), d.findtext("BUDGETTYPE"), d.findtext("AMOUNT")) for d in node]
    assert [line for line in lines if line[0] in ("Electricity", "General Expenses")] == [
        ("Electricity", "On Nett Transactions", "-500.25"),
        ("General Expenses", "On Nett Transactions", "-100.75"),
    ]


def test_a_category_without_a_ledger_or_an_absurd_amount_stops_the_push() -> None:
    row = {"category": "salaries", "financial_year": "2024-25", "allocated_amount": Decimal("1")}
    with pytest.raises(LedgerNotMapped):
        budgets.masters([row], LedgerMap({}))
    with pytest.raises(VoucherRefused):
        budgets.masters([{**row, "allocated_amount": Decimal("1e20")}], MAP)
    with pytest.raises(VoucherRefused):
        budgets.masters([{**row, "financial_year": "2024-26"}], MAP)


@pytest.mark.parametrize(
    ("day", "period"),
    [(date(2026, 6, 3), "2026-05"), (date(2026, 1, 1), "2025-12"), (date(2026, 12, 31), "2026-11")],
)
def test_a_months_first_sync_reconciles_the_month_before(day: date, period: str) -> None:
    assert reconcile.previous_month(day) == period


def test_reconciliation_lines_compare_tallys_spend_with_ours_per_ledger() -> None:
    spent = [
        {"category": "utilities", "amount": Decimal("300")},
        {"category": "supplies", "amount": Decimal("100.25")},
        {"category": "salaries", "amount": Decimal("0.75")},
        {"category": "utilities", "amount": Decimal("0.01")},
    ]
    balances = {
        "Electricity": (Decimal("-10.00"), Decimal("-310.01")),  # Tally: a debit balance is negative
        "General Expenses": (None, Decimal("-50.00")),
    }
    assert reconcile.lines(spent, balances, MAP) == [
        {
            "ledger": "Electricity",
            "categories": ["utilities"],
            "ours": "300.01",
            "tally": "300.01",
            "difference": "0.00",
        },
        {
            "ledger": "General Expenses",
            "categories": ["salaries", "supplies"],
            "ours": "101.00",
            "tally": "50.00",
            "difference": "51.00",
        },
    ]
    [unmapped] = reconcile.lines(spent[:1], {}, LedgerMap({}))
    assert (unmapped["ledger"], unmapped["tally"], unmapped["difference"]) == ("(not mapped)", None, "300.00")
