"""The tenant's ledger map and the ledgers last read from Tally (tally.sql): plain reads and writes,
every one scoped by tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg.rows import dict_row

from connectors.tally.mapping import LedgerMap
from connectors.tally.vouchers import LedgerInfo

# Tally's predefined groups (a new company's chart) -> the seed's ledger "type".
GROUP_TYPES = {
    "Sundry Debtors": "debtor",
    "Sundry Creditors": "creditor",
    "Bank Accounts": "bank",
    "Bank OD A/c": "bank",
    "Cash-in-Hand": "cash",
    "Duties & Taxes": "tax",
    "Sales Accounts": "income",
    "Direct Incomes": "income",
    "Indirect Incomes": "income",
    "Purchase Accounts": "expense",
    "Direct Expenses": "expense",
    "Indirect Expenses": "expense",
}


def _rows(conn: psycopg.Connection, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    # Named columns whatever row factory the connection was opened with (the API's pool uses dicts).
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def ledger_map(conn: psycopg.Connection, tenant_id: UUID) -> LedgerMap:
    rows = _rows(conn, "SELECT ledgers FROM tally_ledger_maps WHERE tenant_id = %s", (tenant_id,))
    return LedgerMap(dict(rows[0]["ledgers"]) if rows else {})


def map_view(conn: psycopg.Connection, tenant_id: UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT ledgers, updated_by, updated_at FROM tally_ledger_maps WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()
    ledgers: dict[str, str] = dict(row["ledgers"]) if row else {}
    known = {
        r["name"] for r in _rows(conn, "SELECT name FROM tally_ledgers WHERE tenant_id = %s", (tenant_id,))
    }
    synced = last_synced(conn, tenant_id)
    return {
        "ledgers": ledgers,
        "updated_by": row["updated_by"] if row else None,
        "updated_at": row["updated_at"].isoformat() if row else None,
        # Only meaningful once ledgers were synced: before, every name is unknown to us, not to Tally.
        "unknown_ledgers": sorted({v for v in ledgers.values() if v not in known}) if synced else [],
    }


def put_map(conn: psycopg.Connection, tenant_id: UUID, ledgers: dict[str, str], actor: str) -> None:
    conn.execute(
        "INSERT INTO tally_ledger_maps (tenant_id, ledgers, updated_by) VALUES (%s, %s, %s) "
        "ON CONFLICT (tenant_id) DO UPDATE SET ledgers = EXCLUDED.ledgers, "
        "updated_by = EXCLUDED.updated_by, updated_at = now()",
        (tenant_id, orjson.dumps(ledgers).decode(), actor),
    )


def replace_ledgers(
    conn: psycopg.Connection, tenant_id: UUID, ledgers: Sequence[LedgerInfo], at: datetime
) -> None:
    conn.execute("DELETE FROM tally_ledgers WHERE tenant_id = %s", (tenant_id,))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO tally_ledgers (tenant_id, name, parent, opening_balance, closing_balance) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(tenant_id, le.name, le.parent, le.opening_balance, le.closing_balance) for le in ledgers],
        )
    conn.execute(
        "INSERT INTO tally_ledger_syncs (tenant_id, synced_at, ledgers) VALUES (%s, %s, %s) "
        "ON CONFLICT (tenant_id) DO UPDATE SET synced_at = EXCLUDED.synced_at, ledgers = EXCLUDED.ledgers",
        (tenant_id, at, len(ledgers)),
    )


def last_synced(conn: psycopg.Connection, tenant_id: UUID) -> datetime | None:
    rows = _rows(conn, "SELECT synced_at FROM tally_ledger_syncs WHERE tenant_id = %s", (tenant_id,))
    return rows[0]["synced_at"] if rows else None


def known_names(conn: psycopg.Connection, tenant_id: UUID) -> set[str]:
    """The names of the ledgers last read from Tally."""
    return {
        r["name"] for r in _rows(conn, "SELECT name FROM tally_ledgers WHERE tenant_id = %s", (tenant_id,))
    }


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value.quantize(Decimal("0.01")))


def ledgers_view(conn: psycopg.Connection, tenant_id: UUID) -> dict[str, Any]:
    """The seed's ``{"ledgers": [{name, type, opening_balance, current_balance}]}`` plus the group and
    when they were read. Balances are Tally's: negative is a debit balance."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT name, parent, opening_balance, closing_balance FROM tally_ledgers "
            "WHERE tenant_id = %s ORDER BY name",
            (tenant_id,),
        ).fetchall()
    synced = last_synced(conn, tenant_id)
    return {
        "ledgers": [
            {
                "name": r["name"],
                "type": GROUP_TYPES.get(r["parent"] or "", "other"),
                "group": r["parent"],
                "opening_balance": _money(r["opening_balance"]),
                "current_balance": _money(r["closing_balance"]),
            }
            for r in rows
        ],
        "synced_at": synced.isoformat() if synced else None,
    }
