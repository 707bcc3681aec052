"""The monthly reconciliation of Tally's books against ours (seed 002, 2.5 "Monthly: financial
reports"): for each expense ledger, what Tally shows was spent on it against the approved and paid
expenses we hold for it, and the differences.

Both sides are totals as of one ledger sync, not one month's flows: the List of Accounts gives each
ledger's opening and closing balance, not its monthly movement. Tally's side is the ledger's movement
since the opening balance, made a positive spend (Tally's sign: a debit is negative, so
``opening - closing``); ours is the sum of the expenses in ``expense_register`` approved or paid,
placed on ledgers by the tenant's ledger map (``expense:<category>``, else ``expenses``). A difference
is a voucher that did not reach Tally (dead-lettered, not yet posted) or an entry made in Tally by hand.
The first daily sync of a month stores the reconciliation of the month before (sync.py); one per
tenant and month.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from connectors.tally import ledgers
from connectors.tally.mapping import LedgerMap, LedgerNotMapped

SPENT = ("approved", "paid")
UNMAPPED = "(not mapped)"


def previous_month(day: date) -> str:
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def lines(
    spent: Iterable[Mapping[str, Any]],
    balances: Mapping[str, tuple[Decimal | None, Decimal | None]],
    ledger_map: LedgerMap,
) -> list[dict[str, Any]]:
    """Per ledger: ``categories``, ``ours`` (our approved and paid expenses), ``tally`` (its movement as a
    spend; None when Tally has no such ledger) and ``difference`` (ours - Tally's), by ledger name."""
    ours: dict[str, Decimal] = {}
    categories: dict[str, set[str]] = {}
    for row in spent:
        try:
            ledger = ledger_map.expense(str(row["category"]))
        except LedgerNotMapped:
            ledger = UNMAPPED
        ours[ledger] = ours.get(ledger, Decimal(0)) + Decimal(str(row["amount"]))
        categories.setdefault(ledger, set()).add(str(row["category"]))
    found = []
    for ledger in sorted(ours):
        opening, closing = balances.get(ledger, (None, None))
        tally = None if closing is None else (opening or Decimal(0)) - closing
        amount = ours[ledger].quantize(Decimal("0.01"))
        found.append(
            {
                "ledger": ledger,
                "categories": sorted(categories[ledger]),
                "ours": str(amount),
                "tally": None if tally is None else str(tally.quantize(Decimal("0.01"))),
                "difference": str(amount if tally is None else (amount - tally).quantize(Decimal("0.01"))),
            }
        )
    return found


def store(conn: psycopg.Connection[Any], tenant_id: UUID, period: str, ledger_map: LedgerMap) -> bool:
    """Reconcile the tenant's books as of its last ledger sync under ``period``; False if one exists."""
    as_of = ledgers.last_synced(conn, tenant_id)
    if as_of is None:
        return False
    with conn.cursor(row_factory=dict_row) as cur:
        spent = cur.execute(
            "SELECT category, amount FROM expense_register WHERE tenant_id = %s AND status = ANY(%s)",
            (tenant_id, list(SPENT)),
        ).fetchall()
        rows = cur.execute(
            "SELECT name, opening_balance, closing_balance FROM tally_ledgers WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchall()
    balances = {r["name"]: (r["opening_balance"], r["closing_balance"]) for r in rows}
    found = lines(spent, balances, ledger_map)
    differences = sum(1 for line in found if Decimal(line["difference"]) != 0)
    stored = conn.execute(
        "INSERT INTO tally_reconciliations (tenant_id, period, as_of, lines, differences)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING period",
        (tenant_id, period, as_of, Jsonb(found), differences),
    ).fetchone()
    return stored is not None


def listed(conn: psycopg.Connection[Any], tenant_id: UUID, limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM tally_reconciliations WHERE tenant_id = %s ORDER BY period DESC LIMIT %s",
            (tenant_id, limit),
        ).fetchall()
    return [
        {
            "period": r["period"],
            "as_of": r["as_of"].isoformat(),
            "differences": r["differences"],
            "lines": r["lines"],
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]
