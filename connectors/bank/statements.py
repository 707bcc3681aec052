"""Importing bank statements: each line once, each statement's balances checked.

:func:`import_statements` takes parsed statements (an upload, or the bank API's statement through
:func:`poll_account`) and, per statement:

1. records every line as a ``BankTransaction`` event whose id derives from the line's dedupe key
   (statement_formats.dedupe_key), so the event store refuses a line it has seen: overlapping
   statements, a second upload or a poll after an upload import nothing twice;
2. adds the lines to ``bank_transactions`` (the read model of ``GET /v1/bank/transactions``);
3. checks opening + lines = closing. A mismatch is reported in the answer and raised as an alert
   (``bank.statement_mismatch``); the lines are still imported (they are what the bank says), and
   the statement is kept with ``balanced = false`` for a person to look at.
4. keeps the closing balance as the account's balance when it is the newest known.

Events first, rows second: a crash between them leaves rows missing, which the next import of an
overlapping statement (or the same upload again) adds, since the row insert ignores only existing keys.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.persistence import IntegrityError

from connectors.bank import client as bank_client
from connectors.bank.statement_formats import Statement, StatementLine, dedupe_key, with_positions
from engine import db
from engine.application import LedgerService
from engine.domain.bank_transaction import BankTransaction, bank_transaction_id_for

STATEMENT_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/bank-statement")
MISMATCH_CAUSE = "bank.statement_mismatch"


@dataclass(frozen=True)
class ImportResult:
    statement_id: UUID
    statement: Statement
    imported: int
    """Lines new to this tenant."""

    def document(self) -> dict[str, Any]:
        s = self.statement
        return {
            "statement_id": str(self.statement_id),
            "source": s.source,
            "account": s.account,
            "statement_ref": s.statement_ref,
            "currency": s.currency,
            "from": s.from_date.isoformat() if s.from_date else None,
            "to": s.to_date.isoformat() if s.to_date else None,
            "opening_balance": f"{s.opening:.2f}",
            "closing_balance": f"{s.closing:.2f}",
            "computed_closing": f"{s.computed_closing:.2f}",
            "balanced": s.balanced,
            "difference": f"{s.closing - s.computed_closing:.2f}",
            "lines": len(s.lines),
            "imported": self.imported,
            "duplicates": len(s.lines) - self.imported,
        }


def statement_id_for(tenant_id: UUID, s: Statement) -> UUID:
    parts = (
        str(tenant_id),
        s.source,
        s.account,
        s.statement_ref,
        str(s.from_date),
        str(s.to_date),
        f"{s.opening:.2f}",
        f"{s.closing:.2f}",
        str(len(s.lines)),
    )
    return uuid5(STATEMENT_NAMESPACE, "\x1f".join(parts))


def import_statements(
    service: LedgerService, tenant_id: UUID, statements: list[Statement]
) -> list[ImportResult]:
    return [_import(service, tenant_id, s) for s in statements]


def _import(service: LedgerService, tenant_id: UUID, s: Statement) -> ImportResult:
    statement_id = statement_id_for(tenant_id, s)
    keyed = [(dedupe_key(s.account, line), line) for line in s.lines]
    with db.transaction(service.pool) as conn:
        rows = conn.execute(
            "SELECT dedupe_key FROM bank_transactions WHERE tenant_id = %s AND dedupe_key = ANY(%s)",
            (tenant_id, [k for k, _ in keyed]),
        ).fetchall()
    known = {dict(r)["dedupe_key"] for r in rows}
    fresh = [_event(tenant_id, statement_id, s, key, line) for key, line in keyed if key not in known]
    _record(service, fresh)
    imported = 0
    with db.transaction(service.pool) as conn:
        for key, line in keyed:
            cur = conn.execute(
                """INSERT INTO bank_transactions (tenant_id, transaction_id, account, value_date,
                       booking_date, amount, currency, reference, description, position, dedupe_key,
                       statement_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (tenant_id, dedupe_key) DO NOTHING""",
                (
                    tenant_id,
                    bank_transaction_id_for(tenant_id, key),
                    s.account,
                    line.value_date,
                    line.booking_date,
                    line.amount,
                    line.currency,
                    line.reference,
                    line.description,
                    line.position,
                    key,
                    statement_id,
                ),
            )
            imported += cur.rowcount
        conn.execute(
            """INSERT INTO bank_statements (tenant_id, statement_id, account, source, statement_ref, currency,
                   from_date, to_date, opening_balance, closing_balance, computed_closing, balanced, lines,
                   imported)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (tenant_id, statement_id) DO NOTHING""",
            (
                tenant_id,
                statement_id,
                s.account,
                s.source,
                s.statement_ref,
                s.currency,
                s.from_date,
                s.to_date,
                s.opening,
                s.closing,
                s.computed_closing,
                s.balanced,
                len(s.lines),
                imported,
            ),
        )
        if s.to_date is not None:
            as_of = datetime.combine(s.to_date + timedelta(days=1), time(), UTC) - timedelta(microseconds=1)
            record_balance(conn, tenant_id, s.account, s.closing, s.currency, as_of, f"statement:{s.source}")
    if not s.balanced:
        service.raise_alert(
            tenant_id,
            severity="warning",
            cause=MISMATCH_CAUSE,
            subject=f"bank_statement:{statement_id}",
            message=(
                f"Statement {s.statement_ref} of account {s.account} does not add up: opening {s.opening:.2f}"
                f" + lines = {s.computed_closing:.2f}, but the closing balance is {s.closing:.2f}."
                " Ask the bank for the missing or corrected lines."
            ),
            details={
                "account": s.account,
                "statement_id": str(statement_id),
                "difference": f"{s.closing - s.computed_closing:.2f}",
            },
        )
    return ImportResult(statement_id, s, imported)


def _event(
    tenant_id: UUID, statement_id: UUID, s: Statement, key: str, line: StatementLine
) -> BankTransaction:
    return BankTransaction(
        tenant_id=tenant_id,
        account=s.account,
        value_date=line.value_date,
        booking_date=line.booking_date,
        amount=line.amount,
        currency=line.currency,
        reference=line.reference,
        description=line.description,
        position=line.position,
        dedupe_key=key,
        statement_id=statement_id,
        source=s.source,
    )


def _record(service: LedgerService, fresh: list[BankTransaction]) -> None:
    """Store the new lines' events, in one write when nobody raced us, else one by one."""
    if not fresh:
        return
    try:
        service._save(*fresh)
        return
    except IntegrityError:
        pass  # another import recorded some of them meanwhile
    for txn in fresh:
        try:
            service._save(txn)
        except IntegrityError:
            continue


def record_balance(
    conn: Any, tenant_id: UUID, account: str, balance: Decimal, currency: str, as_of: datetime, source: str
) -> None:
    """Keep ``balance`` as the account's unless a newer one is known."""
    conn.execute(
        """INSERT INTO bank_balances (tenant_id, account, balance, currency, as_of, source)
           VALUES (%s, %s, %s, %s, %s, %s)
           ON CONFLICT (tenant_id, account) DO UPDATE SET balance = EXCLUDED.balance,
               currency = EXCLUDED.currency, as_of = EXCLUDED.as_of, source = EXCLUDED.source
           WHERE bank_balances.as_of <= EXCLUDED.as_of""",
        (tenant_id, account, balance, currency, as_of, source),
    )


def from_api(statement: bank_client.Statement) -> Statement:
    """The bank API's statement (paise) as a parsed statement (rupees)."""
    lines = [
        StatementLine(
            value_date=line.value_date,
            booking_date=line.value_date,
            amount=bank_client.rupees(line.amount_paise),
            currency="INR",
            reference=line.reference,
            description=line.description,
        )
        for line in statement.lines
    ]
    return Statement(
        source="api",
        account=statement.account_number,
        statement_ref=f"API:{statement.from_date}:{statement.to_date}",
        currency="INR",
        from_date=statement.from_date,
        to_date=statement.to_date,
        opening=bank_client.rupees(statement.opening_paise),
        closing=bank_client.rupees(statement.closing_paise),
        lines=with_positions(lines),
    )


async def poll_account(
    service: LedgerService,
    tenant_id: UUID,
    bank: bank_client.BankClient,
    account: str,
    *,
    today: date,
    days: int = 7,
) -> ImportResult:
    """Read the last ``days`` days' statement and the balance from the bank API and import them.
    Overlap with earlier polls is deliberate (late-booked lines); dedupe makes it free."""
    statement = await bank.statement(account, today - timedelta(days=days), today)
    balance = await bank.balance(account)
    parsed = from_api(statement)
    result = await _in_thread(lambda: _import(service, tenant_id, parsed))

    def keep_balance() -> None:
        with db.transaction(service.pool) as conn:
            record_balance(
                conn,
                tenant_id,
                account,
                bank_client.rupees(balance.available_paise),
                "INR",
                balance.as_of,
                "api",
            )

    await _in_thread(keep_balance)
    return result


async def _in_thread(work: Any) -> Any:
    return await asyncio.to_thread(work)
