"""The ``reconciliation`` projection: bank statement lines matched to payments, payouts and invoices.

It reads the facts (bank lines from ``ledger.bank_transaction.v1``, payments, payouts, invoices, and
the accountants' manual matches from ``ledger.reconciliation_match.v1``) into one table, one row per
fact, and after each batch judges the lines the batch may have changed with the pure rules of
``engine.reconciliation_rules``:

- the batch's new lines, and lines whose manual matches changed;
- open (unmatched) lines that a target of the batch could settle (a shared reference or amount);
- lines that held a target the batch withdrew (an invoice cancelled, a payout failed or bounced).

A line once matched keeps its match until one of these happens: a later target never steals it.
Every statement is idempotent (insert-if-absent, set-to-fixed-values, set union of references), and
the judging reads only the table, so a replayed batch leaves the table as it was; a rebuild replays
the manual matches with everything else, so they survive it.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from engine.reconciliation_rules import (
    STATUSES,
    BankLine,
    Match,
    Target,
    TargetRef,
    normalise_reference,
    reconcile,
    tokens,
)
from projections.batch import RowChange, write
from projections.events import ProjectedEvent, prepare, prepared

NAME = "reconciliation"
TOPICS = [
    "ledger.bank_transaction.v1",
    "ledger.payment.v1",
    "ledger.payout.v1",
    "ledger.invoice.v1",
    "ledger.reconciliation_match.v1",
]
# Invoices a customer pays; a credit note is money the seller owes, not a receivable.
PAYABLE_DOCUMENTS = ("invoice", "debit_note")


def _text_array(values: Sequence[str]) -> str:
    """``values`` as a text[] literal, for COPY: psycopg's list dumper doubled the cost of writing a
    target row (measured 9.5 against 4.9 us, perf-rows). Every element quoted, so that none reads as
    NULL or needs to be examined."""
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in quoted) + "}"


# References are a set (union), the rest fixed values: applying it twice changes nothing.
_TARGET_CHANGE = """
UPDATE {t} SET
    refs = ARRAY(SELECT DISTINCT r FROM unnest(refs || %(refs)s::text[]) AS r ORDER BY r),
    eligible = coalesce(%(eligible)s, eligible),
    charges = coalesce(%(charges)s, charges),
    day = coalesce(%(day)s, day),
    last_event_id = %(event_id)s, updated_at = now()
WHERE row_id = %(row_id)s AND tenant_id = %(tenant_id)s
"""
_UNDO = """
UPDATE {t} SET active = false, last_event_id = %(event_id)s, updated_at = now()
WHERE row_id = %(row_id)s AND tenant_id = %(tenant_id)s
"""


_ORDER = (_TARGET_CHANGE, _UNDO)


def _day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date()
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, UTC).date()
    return date.fromisoformat(str(value)[:10])


def _refs(*values: Any) -> list[str]:
    return sorted({normalise_reference(str(v)) for v in values if v} - {""})


class _Reading:
    """What one event does, in order (``_read``): rows inserted, statements run, rows put in play.
    Taken as its record is decoded (``Reconciliation.at_decode``), so that the record is freed then,
    and added to its batch's ``_Batch`` by ``apply``."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[tuple[Any, ...]] = []

    def add(self, statement: str, **params: Any) -> None:
        self.ops.append((_STATEMENT, statement, params))

    def insert(self, **values: Any) -> None:
        """The row ``values`` if no row has its row_id yet (a replay changes nothing)."""
        self.ops.append((_INSERT, values))

    def line(self, tenant: UUID, row_id: str) -> None:
        self.ops.append((_LINE, tenant, row_id))

    def target(self, tenant: UUID, row_id: str) -> None:
        self.ops.append((_TARGET, tenant, row_id))

    def withdrawn(self, tenant: UUID, row_id: str) -> None:
        self.ops.append((_WITHDRAWN, tenant, row_id))


_STATEMENT, _INSERT, _LINE, _TARGET, _WITHDRAWN = range(5)


@dataclass
class _Batch:
    """What one batch did, per tenant: the rows it inserts, the statements that change rows, in
    order, and what to judge afterwards."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    statements: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lines: dict[UUID, set[str]] = field(default_factory=lambda: defaultdict(set))
    targets: dict[UUID, set[str]] = field(default_factory=lambda: defaultdict(set))
    withdrawn: dict[UUID, set[str]] = field(default_factory=lambda: defaultdict(set))

    def take(self, reading: Sequence[tuple[Any, ...]]) -> None:
        """What one event does (``_Reading.ops``), after the batch's earlier events."""
        for op in reading:
            kind = op[0]
            if kind == _INSERT:
                self.inserts.append(op[1])
            elif kind == _STATEMENT:
                self.statements.append((op[1], op[2]))
            else:
                in_play = self.lines if kind == _LINE else self.targets if kind == _TARGET else self.withdrawn
                in_play[op[1]].add(op[2])


def _target_change(
    batch: _Reading,
    r: dict[str, Any],
    row_id: str,
    ce_id: str,
    *,
    refs: Sequence[str] = (),
    eligible: bool | None = None,
    charges: str | None = None,
    day: date | None = None,
) -> None:
    tenant = UUID(r["tenant_id"])
    batch.add(
        _TARGET_CHANGE,
        row_id=row_id,
        tenant_id=tenant,
        refs=list(refs),
        eligible=eligible,
        charges=charges,
        day=day,
        event_id=ce_id,
    )
    batch.target(tenant, row_id)
    if eligible is False:
        batch.withdrawn(tenant, row_id)


def reading(event: ProjectedEvent) -> list[tuple[Any, ...]] | None:
    """What ``event`` does (None: nothing, an event type this projection does not use). Raises for
    an event it cannot read (set aside as a dead letter)."""
    done = _Reading()
    _read(done, event)
    return done.ops or None


def _read(batch: _Reading, event: ProjectedEvent) -> None:
    """The statements of one event (none for an event type this projection does not use)."""
    r, ce = event.record, event.ce_id
    kind, _, what = event.ce_type.removeprefix("ledgerflow.").partition(".")
    tenant = UUID(r["tenant_id"])
    if kind == "bank_transaction" and what == "recorded":
        row_id = f"line:{r['transaction_id']}"
        amount = Decimal(r["amount"])
        batch.insert(
            row_id=row_id,
            tenant_id=tenant,
            kind="line",
            entity_id=r["transaction_id"],
            account=r["account"],
            day=_day(r["value_date"]),
            amount=amount,
            magnitude=abs(amount),
            currency=r["currency"],
            reference=r.get("reference"),
            description=r.get("description") or "",
            refs=_text_array(sorted(tokens(r.get("reference"), r.get("description")))),
            eligible=True,
            status="unmatched",
            last_event_id=ce,
        )
        batch.line(tenant, row_id)
    elif kind == "payment":
        row_id = f"payment:{r['payment_id']}"
        if what == "recorded":
            customer = r.get("customer") or {}
            _insert_target(
                batch, r, ce, "payment", r["payment_id"], r["paid_at"], r["amount"], r["currency"],
                r["provider_payment_id"], customer.get("name"), eligible=False,
            )  # fmt: skip
        elif (what == "status_changed" and r["status"] == "captured") or what == "refunded":
            # A payment's status only moves forward (docs/payments.md): once captured, money moved;
            # a refund implies a capture, even when its delivery came first.
            _target_change(batch, r, row_id, ce, eligible=True)
    elif kind == "payout":
        row_id = f"payout:{r['payout_id']}"
        if what == "requested":
            _insert_target(
                batch, r, ce, "payout", r["payout_id"], r["occurred_at"], r["amount"], r["currency"],
                r.get("reference"), r.get("beneficiary_name"), eligible=False,
            )  # fmt: skip
        elif what == "submitted":
            _target_change(batch, r, row_id, ce, refs=_refs(r.get("provider_payment_id")))
        elif what == "completed":
            refs = _refs(r.get("utr"), r.get("transaction_id"))
            day = _day(r["completed_at"])
            _target_change(batch, r, row_id, ce, refs=refs, eligible=True, charges=r.get("charges"), day=day)
        elif what in ("failed", "bounced"):
            _target_change(batch, r, row_id, ce, eligible=False)
    elif kind == "invoice":
        row_id = f"invoice:{r['invoice_id']}"
        if what == "issued" and (r.get("document_type") or "invoice") in PAYABLE_DOCUMENTS:
            _insert_target(
                batch, r, ce, "invoice", r["invoice_id"], r["date"], r["totals"]["total"],
                r.get("currency") or "INR", r["number"], (r.get("buyer") or {}).get("name"), eligible=True,
            )  # fmt: skip
        elif what == "cancelled":
            _target_change(batch, r, row_id, ce, eligible=False)
    elif kind == "reconciliation_match":
        row_id = f"manual:{r['match_id']}"
        if what == "made":
            batch.insert(
                row_id=row_id,
                tenant_id=tenant,
                kind="manual",
                entity_id=r["match_id"],
                line_id=r["bank_line_id"],
                target_type=r["target_type"],
                target_id=r["target_id"],
                active=True,
                made_by=r["made_by"],
                last_event_id=ce,
            )
            batch.line(tenant, f"line:{r['bank_line_id']}")
            batch.target(tenant, f"{r['target_type']}:{r['target_id']}")
        elif what == "undone":
            batch.add(_UNDO, row_id=row_id, tenant_id=tenant, event_id=ce)
            batch.line(tenant, f"manual-of:{r['match_id']}")


def _insert_target(
    batch: _Reading,
    r: dict[str, Any],
    ce_id: str,
    kind: str,
    entity_id: str,
    day: Any,
    amount: str,
    currency: str,
    reference: str | None,
    counterparty: str | None,
    *,
    eligible: bool,
) -> None:
    tenant = UUID(r["tenant_id"])
    row_id = f"{kind}:{entity_id}"
    value = Decimal(amount)
    batch.insert(
        row_id=row_id,
        tenant_id=tenant,
        kind=kind,
        entity_id=entity_id,
        day=_day(day),
        amount=value,
        magnitude=abs(value),
        currency=currency,
        reference=reference,
        counterparty=counterparty,
        refs=_text_array(_refs(reference)),
        eligible=eligible,
        last_event_id=ce_id,
    )
    batch.target(tenant, row_id)


class Reconciliation:
    """Projection writer, driven by ``projections.runner`` (live table) and ``projections.rebuild``
    (a shadow table, swapped in when complete)."""

    name = NAME
    topics = TOPICS

    def __init__(self, table: str = NAME) -> None:
        self.table = table
        self._t = sql.Identifier(table).as_string(None)

    def on_table(self, table: str) -> Reconciliation:
        return Reconciliation(table)

    def at_decode(self, event: ProjectedEvent) -> ProjectedEvent:
        """``event`` with what it does (``reading``) and without its record
        (``events.PreparesAtDecode``): kept until its batch was written, the records cost the five
        projections of the invoice topic ~20 us an event more together than apart
        (docs/performance.md, "Projection catch-up")."""
        return prepare(event, self.name, reading)

    def apply(self, conn: psycopg.Connection, events: Sequence[ProjectedEvent]) -> None:
        batch = _Batch()
        for event in events:
            # Full events (a replay, a redrive) are read now; the runner's were read as decoded.
            done = prepared(event, self.name, reading)
            if done is not None:
                batch.take(done)
        # Inserts first, then one executemany per kind of change: a row's events are in order within
        # the batch (Kafka keeps an aggregate's order), so each row's insert already came before its
        # changes, and changes of one kind keep their order among themselves.
        if batch.inserts:
            # The columns a row kind leaves out (charges, refs, eligible, updated_at) take the table's
            # DEFAULTs (projections.batch names only the columns given). One set-based statement per
            # row kind instead of one per event: python CPU 58-62 -> 42-48 us and PostgreSQL
            # 30-33 -> 15-17 us per invoice on the bench topic (perf-rows in docs/performance.md).
            changes = [RowChange(v["row_id"], insert=v) for v in batch.inserts]
            write(conn, self.table, "row_id", changes)
        by_statement: dict[str, list[dict[str, Any]]] = {s: [] for s in _ORDER}
        for statement, params in batch.statements:
            by_statement[statement].append(params)
        with conn.cursor(row_factory=tuple_row) as cur:
            for statement, rows in by_statement.items():
                if rows:
                    cur.executemany(statement.format(t=self._t), rows)
        for tenant in sorted(set(batch.lines) | set(batch.targets)):
            self._judge(conn, tenant, batch.lines[tenant], batch.targets[tenant], batch.withdrawn[tenant])

    # -- judging ------------------------------------------------------------------------------------

    def _judge(
        self, conn: psycopg.Connection, tenant: UUID, lines: set[str], targets: set[str], withdrawn: set[str]
    ) -> None:
        t = self._t
        in_play = {x for x in lines if x.startswith("line:")}
        undone = [x.removeprefix("manual-of:") for x in lines if x.startswith("manual-of:")]
        with conn.cursor(row_factory=tuple_row) as cur:
            if undone:
                cur.execute(
                    f"SELECT 'line:' || line_id FROM {t} WHERE tenant_id = %s AND kind = 'manual'"
                    " AND entity_id = ANY(%s)",
                    (tenant, undone),
                )
                in_play.update(row[0] for row in cur.fetchall())
            if targets:
                # Open lines a new or changed target could settle, and lines whose manual match names it.
                cur.execute(
                    f"""
                    WITH changed AS (
                        SELECT refs, magnitude FROM {t}
                        WHERE tenant_id = %(tenant)s AND row_id = ANY(%(targets)s) AND eligible
                    )
                    SELECT l.row_id FROM {t} l
                    WHERE l.tenant_id = %(tenant)s AND l.kind = 'line' AND l.status = 'unmatched'
                      AND (l.refs && (SELECT coalesce(array_agg(DISTINCT r), '{{}}')
                                      FROM changed, unnest(refs) r)
                           OR l.magnitude IN (SELECT magnitude FROM changed))
                    UNION
                    SELECT 'line:' || m.line_id FROM {t} m
                    WHERE m.tenant_id = %(tenant)s AND m.kind = 'manual' AND m.active
                      AND m.target_type || ':' || m.target_id = ANY(%(targets)s)
                    """,
                    {"tenant": tenant, "targets": sorted(targets)},
                )
                in_play.update(row[0] for row in cur.fetchall())
            if withdrawn:
                cur.execute(
                    f"""SELECT row_id FROM {t} WHERE tenant_id = %s AND kind = 'line' AND targets IS NOT NULL
                        AND EXISTS (SELECT 1 FROM jsonb_array_elements(targets) e
                                    WHERE (e->>'type') || ':' || (e->>'id') = ANY(%s))""",
                    (tenant, sorted(withdrawn)),
                )
                in_play.update(row[0] for row in cur.fetchall())
            if not in_play:
                return
            manual, left_alone = self._manual(cur, tenant, in_play)
            # A manual match takes its target from whichever line the rules had given it to.
            chosen = sorted({f"{r.target_type}:{r.target_id}" for refs in manual.values() for r in refs})
            if chosen:
                cur.execute(
                    f"SELECT taken_by FROM {t} WHERE tenant_id = %s AND row_id = ANY(%s)"
                    " AND taken_by IS NOT NULL",
                    (tenant, chosen),
                )
                extra = {row[0] for row in cur.fetchall()} - in_play
                if extra:
                    in_play |= extra
                    more_manual, more_alone = self._manual(cur, tenant, extra)
                    manual.update(more_manual)
                    left_alone |= more_alone
            bank_lines = self._lines(cur, tenant, sorted(in_play))
            candidates = self._candidates(cur, tenant, bank_lines, sorted(in_play), chosen)
            results = reconcile(bank_lines, candidates, manual=manual, left_alone=left_alone)
            self._write(cur, tenant, sorted(in_play), results, candidates)

    def _manual(
        self, cur: psycopg.Cursor[Any], tenant: UUID, lines: set[str]
    ) -> tuple[dict[str, list[TargetRef]], set[str]]:
        """The standing manual matches of ``lines`` (by line row id), and the lines an accountant
        unmatched (manual matches, none standing)."""
        cur.execute(
            f"SELECT line_id, target_type, target_id, active FROM {self._t} WHERE tenant_id = %s"
            " AND kind = 'manual' AND 'line:' || line_id = ANY(%s) ORDER BY row_id",
            (tenant, sorted(lines)),
        )
        manual: dict[str, list[TargetRef]] = {}
        seen: set[str] = set()
        for line_id, target_type, target_id, active in cur.fetchall():
            key = f"line:{line_id}"
            seen.add(key)
            if active:
                manual.setdefault(key, []).append(TargetRef(target_type, target_id))
        return manual, seen - set(manual)

    def _lines(self, cur: psycopg.Cursor[Any], tenant: UUID, row_ids: list[str]) -> list[BankLine]:
        cur.execute(
            f"SELECT row_id, account, day, amount, currency, reference, description FROM {self._t}"
            " WHERE tenant_id = %s AND kind = 'line' AND row_id = ANY(%s)",
            (tenant, row_ids),
        )
        return [
            BankLine(row_id, account, day, amount, currency, reference, description or "")
            for row_id, account, day, amount, currency, reference, description in cur.fetchall()
        ]

    def _candidates(
        self,
        cur: psycopg.Cursor[Any],
        tenant: UUID,
        lines: list[BankLine],
        in_play: list[str],
        chosen: list[str],
    ) -> list[Target]:
        words = sorted(set().union(*(tokens(x.reference, x.description) for x in lines))) if lines else []
        magnitudes = sorted({abs(x.amount) for x in lines})
        cur.execute(
            f"""
            SELECT kind, entity_id, amount, currency, day, refs, counterparty, charges FROM {self._t}
            WHERE tenant_id = %(tenant)s AND kind IN ('payment', 'payout', 'invoice')
              AND ((eligible AND (taken_by IS NULL OR taken_by = ANY(%(in_play)s))
                    AND (refs && %(words)s::text[] OR magnitude = ANY(%(magnitudes)s)))
                   OR row_id = ANY(%(chosen)s))
            """,
            {
                "tenant": tenant,
                "in_play": in_play,
                "words": words,
                "magnitudes": magnitudes,
                "chosen": chosen,
            },
        )
        return [
            Target(kind, entity_id, amount, currency, day, frozenset(refs), counterparty, charges)
            for kind, entity_id, amount, currency, day, refs, counterparty, charges in cur.fetchall()
        ]

    def _write(
        self,
        cur: psycopg.Cursor[Any],
        tenant: UUID,
        in_play: list[str],
        results: list[Match],
        candidates: list[Target],
    ) -> None:
        t = self._t
        cur.execute(
            f"UPDATE {t} SET taken_by = NULL WHERE tenant_id = %s AND taken_by = ANY(%s)", (tenant, in_play)
        )
        cur.executemany(
            f"""UPDATE {t} SET status = %(status)s, method = %(method)s, targets = %(targets)s,
                matched_amount = %(matched)s, difference = %(difference)s, updated_at = now()
                WHERE tenant_id = %(tenant)s AND row_id = %(row_id)s""",
            [
                {
                    "tenant": tenant,
                    "row_id": m.line_id,
                    "status": m.status,
                    "method": m.method,
                    "targets": Jsonb([{"type": r.target_type, "id": r.target_id} for r in m.targets])
                    if m.targets
                    else None,
                    "matched": m.matched_amount if m.targets else None,
                    "difference": m.difference if m.targets else None,
                }
                for m in results
            ],
        )
        taken = [
            (m.line_id, f"{r.target_type}:{r.target_id}")
            for m in results
            for r in m.targets
            if r.target_type != "invoice"
        ]
        if taken:
            cur.executemany(
                f"UPDATE {t} SET taken_by = %s WHERE tenant_id = %s AND row_id = %s",
                [(line, tenant, target) for line, target in taken],
            )


# ---------------------------------------------------------------------------------------------
# Queries (used by the HTTP API)


@dataclass(frozen=True)
class Filter:
    account: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    status: str | None = None


def _where(tenant_id: UUID, f: Filter) -> tuple[str, list[Any]]:
    clauses = ["tenant_id = %s", "kind = 'line'"]
    params: list[Any] = [tenant_id]
    if f.account is not None:
        clauses.append("account = %s")
        params.append(f.account)
    if f.date_from is not None:
        clauses.append("day >= %s")
        params.append(f.date_from)
    if f.date_to is not None:
        clauses.append("day <= %s")
        params.append(f.date_to)
    return " AND ".join(clauses), params


def summary(conn: psycopg.Connection, tenant_id: UUID, f: Filter) -> dict[str, Any]:
    """Per status: how many lines and the sum of their (signed) amounts, over the whole filter."""
    where, params = _where(tenant_id, f)
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            f"SELECT status, count(*), coalesce(sum(amount), 0) FROM reconciliation WHERE {where}"
            " GROUP BY status",
            params,
        )
        found = {status: (count, amount) for status, count, amount in cur.fetchall()}
    by_status = {
        s: {"count": found.get(s, (0, 0))[0], "amount": f"{Decimal(found.get(s, (0, 0))[1]):.2f}"}
        for s in STATUSES
    }
    total = sum((Decimal(v[1]) for v in found.values()), Decimal("0"))
    return {
        "lines": sum(v[0] for v in found.values()),
        "amount": f"{total:.2f}",
        "by_status": by_status,
    }


def line_view(row: dict[str, Any], manual: list[dict[str, Any]]) -> dict[str, Any]:
    def money(value: Decimal | None) -> str | None:
        return None if value is None else f"{value:.2f}"

    return {
        "id": row["entity_id"],
        "account": row["account"],
        "value_date": row["day"].isoformat(),
        "amount": money(row["amount"]),
        "currency": row["currency"],
        "reference": row["reference"],
        "description": row["description"],
        "status": row["status"],
        "method": row["method"],
        "targets": row["targets"] or [],
        "matched_amount": money(row["matched_amount"]),
        "difference": money(row["difference"]),
        "manual_matches": manual,
    }


def encode_cursor(day: date, row_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([day.isoformat(), row_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[date, str]:
    """Raises ValueError for a cursor we did not issue."""
    try:
        day, row_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(row_id, str) or "\x00" in row_id:
            raise ValueError("not a line")
        return date.fromisoformat(day), row_id
    except Exception as exc:
        raise ValueError("not a cursor returned by this API") from exc


def lines(
    conn: psycopg.Connection,
    tenant_id: UUID,
    f: Filter,
    *,
    after: str | None = None,
    limit: int | None = 100,
) -> tuple[list[dict[str, Any]], str | None]:
    """The lines, ordered by (value date, id), keyset-paginated; ``limit=None`` reads them all."""
    where, params = _where(tenant_id, f)
    if f.status is not None:
        where += " AND status = %s"
        params.append(f.status)
    if after is not None:
        day, row_id = decode_cursor(after)
        where += " AND (day, row_id) > (%s, %s)"
        params += [day, row_id]
    query = f"SELECT * FROM reconciliation WHERE {where} ORDER BY day, row_id"
    if limit is not None:
        query += " LIMIT %s"
        params.append(limit + 1)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        manual = _manual_of(cur, tenant_id, [r["entity_id"] for r in rows])
    items = [line_view(r, manual.get(r["entity_id"], [])) for r in rows]
    next_cursor = encode_cursor(rows[-1]["day"], rows[-1]["row_id"]) if more and rows else None
    return items, next_cursor


def iter_lines(conn: psycopg.Connection, tenant_id: UUID, f: Filter) -> Iterator[dict[str, Any]]:
    """Every line of the filter, page by page (the CSV export)."""
    after: str | None = None
    while True:
        items, after = lines(conn, tenant_id, f, after=after, limit=1000)
        yield from items
        if after is None:
            return


def _manual_of(
    cur: psycopg.Cursor[Any], tenant_id: UUID, line_ids: list[str]
) -> dict[str, list[dict[str, Any]]]:
    if not line_ids:
        return {}
    cur.execute(
        "SELECT entity_id, line_id, target_type, target_id FROM reconciliation WHERE tenant_id = %s"
        " AND kind = 'manual' AND active AND line_id = ANY(%s) ORDER BY row_id",
        (tenant_id, line_ids),
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for row in cur.fetchall():
        found.setdefault(row["line_id"], []).append(
            {"id": row["entity_id"], "target_type": row["target_type"], "target_id": row["target_id"]}
        )
    return found


def line_exists(conn: psycopg.Connection, tenant_id: UUID, line_id: str) -> bool:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT 1 FROM reconciliation WHERE tenant_id = %s AND row_id = %s AND kind = 'line'",
            (tenant_id, f"line:{line_id}"),
        ).fetchone()
    return row is not None


def target_exists(conn: psycopg.Connection, tenant_id: UUID, target_type: str, target_id: str) -> bool:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT 1 FROM reconciliation WHERE tenant_id = %s AND row_id = %s AND kind = %s",
            (tenant_id, f"{target_type}:{target_id}", target_type),
        ).fetchone()
    return row is not None


def manual_match(conn: psycopg.Connection, tenant_id: UUID, match_id: str) -> dict[str, Any] | None:
    """A manual match of the tenant, as the read model has it (None: unknown to this tenant)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT entity_id, line_id, target_type, target_id, active FROM reconciliation"
            " WHERE tenant_id = %s AND row_id = %s",
            (tenant_id, f"manual:{match_id}"),
        ).fetchone()
    return row
