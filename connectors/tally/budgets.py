"""Our budgets (``budget_register``: per category and financial year) as Tally Budget masters (pure).

Tally keeps budgets as masters (F11 "Maintain Budgets and Controls"; Create > Budget): a name, the
budget it is under (``Primary`` at the top), a period (from, to), and per ledger (or group) a type of
budget and an amount; "On Nett Transactions" compares the period's transactions with the amount, the
type for expense ledgers ("On Closing Balance" is for balance sheet items). TallyPrime help, "Create a
Budget", and the Tally.ERP 9 help page "Creating a Budget".

We send one master per financial year, named ``Ledgerflow FY <year>`` (e.g. ``Ledgerflow FY 2024-25``,
1 April to 31 March, India's financial year), with one line per expense ledger: the categories' allocated
amounts summed per ledger (``expense:<category>`` in the ledger map, else the ``expenses`` role's
ledger). Re-sending a master of the same name replaces it (Tally answers ALTERED), so the daily push is
idempotent: the same budgets give the same master. The XML element names of a budget import
(``BUDGET``, ``PARENT``, ``STARTINGFROM``, ``ENDINGAT``, ``BUDGETDETAILS.LIST`` with ``NAME``,
``BUDGETTYPE`` and ``AMOUNT``) follow Tally's master field names but are not confirmed against a real
Tally; the sandbox takes exactly these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from connectors.tally.mapping import LedgerMap
from connectors.tally.vouchers import (
    CENT,
    MAX_AMOUNT,
    VoucherRefused,
    _envelope,
    _serialise,
    _sub,
    check_name,
    tally_date,
)

NAME_PREFIX = "Ledgerflow FY "
BUDGET_TYPE = "On Nett Transactions"
_YEAR = re.compile(r"([0-9]{4})-([0-9]{2})")


@dataclass(frozen=True)
class BudgetMaster:
    name: str
    start: date
    end: date
    lines: tuple[tuple[str, Decimal], ...]
    """(ledger, amount), by ledger name."""


def year_bounds(financial_year: str) -> tuple[date, date]:
    """``2024-25`` -> 1 April 2024 to 31 March 2025; ``VoucherRefused`` if it is not such a year."""
    found = _YEAR.fullmatch(financial_year)
    if not found or (int(found.group(1)) + 1) % 100 != int(found.group(2)):
        raise VoucherRefused("bad_year", f"{financial_year[:10]!r} is not a financial year like 2024-25")
    start = int(found.group(1))
    return date(start, 4, 1), date(start + 1, 3, 31)


def masters(rows: Iterable[Mapping[str, Any]], ledgers: LedgerMap) -> list[BudgetMaster]:
    """One master per financial year of ``rows`` (``category``, ``financial_year``, ``allocated_amount``).
    A category the map cannot place raises ``LedgerNotMapped``; an unfit year or amount ``VoucherRefused``."""
    years: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        amount = Decimal(str(row["allocated_amount"])).quantize(CENT)
        if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
            raise VoucherRefused("bad_amount", f"the budget of {row['category']!r} is out of range")
        ledger = check_name(ledgers.expense(str(row["category"])))
        per_ledger = years.setdefault(str(row["financial_year"]), {})
        per_ledger[ledger] = per_ledger.get(ledger, Decimal(0)) + amount
    found = []
    for year, lines in sorted(years.items()):
        start, end = year_bounds(year)
        found.append(BudgetMaster(NAME_PREFIX + year, start, end, tuple(sorted(lines.items()))))
    return found


def build_budget_import(company: str, budgets: Sequence[BudgetMaster]) -> bytes:
    """The import of ``budgets`` as masters into ``company``."""
    check_name(company, "company")
    root, body = _envelope("Import Data")
    importing = _sub(body, "IMPORTDATA")
    desc = _sub(importing, "REQUESTDESC")
    _sub(desc, "REPORTNAME", "All Masters")
    _sub(_sub(desc, "STATICVARIABLES"), "SVCURRENTCOMPANY", company)
    data = _sub(importing, "REQUESTDATA")
    for budget in budgets:
        node = _sub(
            _sub(data, "TALLYMESSAGE"), "BUDGET", NAME=check_name(budget.name, "budget"), ACTION="Create"
        )
        _sub(node, "NAME", budget.name)
        _sub(node, "PARENT", "Primary")
        _sub(node, "STARTINGFROM", tally_date(budget.start))
        _sub(node, "ENDINGAT", tally_date(budget.end))
        for ledger, amount in budget.lines:
            line = _sub(node, "BUDGETDETAILS.LIST")
            _sub(line, "NAME", check_name(ledger))
            _sub(line, "BUDGETTYPE", BUDGET_TYPE)
            # An expense budget is a debit: Tally's sign makes it negative, like a debit leg.
            _sub(line, "AMOUNT", str(-amount))
    return _serialise(root)
