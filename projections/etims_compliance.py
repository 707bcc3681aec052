"""The ``etims_compliance`` projection: where each Kenyan sale stands at KRA eTIMS, and the daily
compliance report built from it (``GET /v1/etims/compliance``, ``ledgerflow etims report``).

One row per sale (an invoice or credit note of a Kenyan tenant), from the invoice events of
``ledger.invoice.v1``::

    issued (country KE)   -> pending      the sale's tenant, environment, branch and date
    etims_numbered        -> pending      its invcNo
    etims_signed          -> signed       unless voided
    etims_failed          -> failed       unless signed or voided; every refusal is kept by event id
    etims_voided          -> voided       final: the only way an invcNo is left unused

The day report counts rows, not events, grouped by environment and branch for one tenant and one
sale date: a replayed or duplicated event rewrites the same row to the same values, so a replay, a
rebuild or a redriven dead letter never counts anything twice. The order of precedence above
(voided > signed > failed > pending) is applied in SQL, so an older event applied again after a
newer one (``ledgerflow replay --projection``) cannot move a sale backwards.

Events of Indian invoices are skipped. An event this projection cannot store goes to the
projection dead letters like any other projection's (``projections/dead_letters.py``); the report
then says ``incomplete: true`` for the tenant until it is redriven or discarded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson
import psycopg
import psycopg.sql
from psycopg.rows import tuple_row

from projections.events import ProjectedEvent, prepare, prepared

NAME = "etims_compliance"
TOPICS = ["ledger.invoice.v1"]
# KRA dates sales (salesDt, cfmDt) in Kenyan time (reference notes, "saveTrnsSalesOsdc").
NAIROBI = ZoneInfo("Africa/Nairobi")
STATUSES = ("pending", "signed", "failed", "voided")

_ISSUED = """
INSERT INTO {table} AS s (
    invoice_id, tenant_id, environment, branch_id, sale_date, number, document_type, status,
    updated_at, last_event_id
) VALUES (%s, %s, %s, %s, %s, %s, %s, 'pending', %s, %s)
ON CONFLICT (invoice_id) DO UPDATE SET
    -- The issued event is the authority on where and when the sale was made; it may arrive after
    -- the sale's eTIMS events when it was set aside as a dead letter and redriven later.
    tenant_id = EXCLUDED.tenant_id, environment = EXCLUDED.environment, branch_id = EXCLUDED.branch_id,
    sale_date = EXCLUDED.sale_date, number = EXCLUDED.number, document_type = EXCLUDED.document_type
"""

_NUMBERED = """
INSERT INTO {table} AS s (
    invoice_id, tenant_id, environment, branch_id, status, invc_no, updated_at, last_event_id
) VALUES (%s, %s, %s, %s, 'pending', %s, %s, %s)
ON CONFLICT (invoice_id) DO UPDATE SET
    invc_no = EXCLUDED.invc_no,
    updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at), last_event_id = EXCLUDED.last_event_id
"""

_SIGNED = """
INSERT INTO {table} AS s (
    invoice_id, tenant_id, environment, branch_id, status, invc_no, receipt_no, signed_at,
    updated_at, last_event_id
) VALUES (%s, %s, %s, %s, 'signed', %s, %s, %s, %s, %s)
ON CONFLICT (invoice_id) DO UPDATE SET
    status = CASE WHEN s.status = 'voided' THEN 'voided' ELSE 'signed' END,
    invc_no = EXCLUDED.invc_no, receipt_no = EXCLUDED.receipt_no, signed_at = EXCLUDED.signed_at,
    failure_code = CASE WHEN s.status = 'voided' THEN s.failure_code END,
    failure_message = CASE WHEN s.status = 'voided' THEN s.failure_message END,
    updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at), last_event_id = EXCLUDED.last_event_id
"""

# ``failures`` is keyed by event id: the same refusal applied again is the same key. The sale's
# current failure follows the latest refusal, whatever order refusals are applied in.
_FAILED = """
INSERT INTO {table} AS s (
    invoice_id, tenant_id, environment, branch_id, status, invc_no, failure_code, failure_message,
    failures, updated_at, last_event_id
) VALUES (
    %(invoice_id)s, %(tenant_id)s, %(environment)s, %(branch_id)s, 'failed', %(invc_no)s, %(code)s,
    %(message)s,
    jsonb_build_object(%(event_id)s::text, jsonb_build_object(
        'code', %(code)s::text, 'error_class', %(error_class)s::text, 'message', %(message)s::text,
        'at', %(at)s::timestamptz)),
    %(at)s, %(event_id)s
)
ON CONFLICT (invoice_id) DO UPDATE SET
    status = CASE WHEN s.status IN ('signed', 'voided') THEN s.status ELSE 'failed' END,
    invc_no = COALESCE(s.invc_no, EXCLUDED.invc_no),
    failure_code = CASE WHEN s.status IN ('signed', 'voided') OR s.updated_at > EXCLUDED.updated_at
                        THEN s.failure_code ELSE EXCLUDED.failure_code END,
    failure_message = CASE WHEN s.status IN ('signed', 'voided') OR s.updated_at > EXCLUDED.updated_at
                           THEN s.failure_message ELSE EXCLUDED.failure_message END,
    failures = s.failures || EXCLUDED.failures,
    updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at), last_event_id = EXCLUDED.last_event_id
"""

_VOIDED = """
INSERT INTO {table} AS s (
    invoice_id, tenant_id, environment, branch_id, status, invc_no, voided_at, updated_at, last_event_id
) VALUES (%s, %s, %s, %s, 'voided', %s, %s, %s, %s)
ON CONFLICT (invoice_id) DO UPDATE SET
    status = 'voided', invc_no = COALESCE(s.invc_no, EXCLUDED.invc_no), voided_at = EXCLUDED.voided_at,
    updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at), last_event_id = EXCLUDED.last_event_id
"""

Params = tuple[Any, ...] | dict[str, Any]


def _ts(value: datetime | int) -> datetime:
    """The codec reads timestamp-millis as aware datetimes; tolerate raw millis too."""
    return value if isinstance(value, datetime) else datetime.fromtimestamp(value / 1000, UTC)


def sale_date(record: dict[str, Any]) -> date:
    """The sale's date as KRA dates it (salesDt): the invoice date, a Kenyan calendar date; the
    Nairobi date of the moment it was issued if a record should lack one."""
    day = record.get("date")
    if day:
        return date.fromisoformat(str(day))
    return _ts(record["occurred_at"]).astimezone(NAIROBI).date()


def _where(r: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    return (r["invoice_id"], r["tenant_id"], r["environment"], r["branch_id"])


def _issued(r: dict[str, Any], ce_id: str) -> Params | None:
    if r.get("country", "IN") != "KE":
        return None  # an Indian invoice: no eTIMS
    return (
        *_where(r),
        sale_date(r),
        r["number"],
        r.get("document_type") or "invoice",
        _ts(r["occurred_at"]),
        ce_id,
    )


def _numbered(r: dict[str, Any], ce_id: str) -> Params:
    return (*_where(r), int(r["invc_no"]), _ts(r["occurred_at"]), ce_id)


def _signed(r: dict[str, Any], ce_id: str) -> Params:
    at = _ts(r["occurred_at"])
    # A receipt adopted after a 994 may lack what KRA did not say again: the sale is signed all the same.
    receipt_no = r.get("receipt_no")
    return (*_where(r), int(r["invc_no"]), None if receipt_no is None else int(receipt_no), at, at, ce_id)


def _failed(r: dict[str, Any], ce_id: str) -> Params:
    return {
        "invoice_id": r["invoice_id"],
        "tenant_id": r["tenant_id"],
        "environment": r["environment"],
        "branch_id": r["branch_id"],
        "invc_no": r.get("invc_no"),
        "code": r["result_code"],
        "error_class": r["error_class"],
        "message": r["message"],
        "at": _ts(r["occurred_at"]),
        "event_id": ce_id,
    }


def _voided(r: dict[str, Any], ce_id: str) -> Params:
    at = _ts(r["occurred_at"])
    return (*_where(r), r.get("invc_no"), at, at, ce_id)


# Per event type: the statement (its table left as ``{table}``: a rebuild writes a shadow table) and
# its parameters, or None for an event of no concern (an Indian invoice).
STATEMENTS: dict[str, tuple[str, Callable[[dict[str, Any], str], Params | None]]] = {
    "ledgerflow.invoice.issued": (_ISSUED, _issued),
    "ledgerflow.invoice.etims_numbered": (_NUMBERED, _numbered),
    "ledgerflow.invoice.etims_signed": (_SIGNED, _signed),
    "ledgerflow.invoice.etims_failed": (_FAILED, _failed),
    "ledgerflow.invoice.etims_voided": (_VOIDED, _voided),
}


def parameters(event: ProjectedEvent) -> Params | None:
    """The parameters of ``event``'s statement (None: an event of no concern). Raises for an event
    it cannot read (set aside as a dead letter)."""
    known = STATEMENTS.get(event.ce_type)
    return None if known is None else known[1](event.record, event.ce_id)


class EtimsCompliance:
    """Projection writer, driven by ``projections.runner`` (live table) and ``projections.rebuild``
    (a shadow table, swapped in when complete)."""

    name = NAME
    topics = TOPICS
    event_types = frozenset(STATEMENTS)  # the runner leaves other types undecoded

    def __init__(self, table: str = NAME) -> None:
        self.table = table
        quoted = psycopg.sql.Identifier(table).as_string(None)
        self._statements = {
            ce_type: (statement.format(table=quoted), params)
            for ce_type, (statement, params) in STATEMENTS.items()
        }

    def on_table(self, table: str) -> EtimsCompliance:
        return EtimsCompliance(table)

    def at_decode(self, event: ProjectedEvent) -> ProjectedEvent:
        """``event`` with its statement's parameters and without its record
        (``events.PreparesAtDecode``): the record is freed as it is decoded."""
        return prepare(event, self.name, parameters)

    def apply(self, conn: psycopg.Connection, events: Sequence[ProjectedEvent]) -> None:
        # Consecutive events of one type go in one executemany; order across types is kept, so a
        # sale's later events are applied after its earlier ones.
        run_statement: str | None = None
        run: list[Params] = []
        for event in events:
            known = self._statements.get(event.ce_type)
            if known is None:
                continue
            statement = known[0]
            # Full events (a replay, a redrive) now; the runner's were taken as they were decoded.
            values = prepared(event, self.name, parameters)
            if values is None:
                continue
            if statement is not run_statement and run:
                _executemany(conn, run_statement, run)  # type: ignore[arg-type]
                run = []
            run_statement = statement
            run.append(values)
        if run and run_statement:
            _executemany(conn, run_statement, run)


def _executemany(conn: psycopg.Connection, statement: str, rows: list[Params]) -> None:
    with conn.cursor() as cur:
        cur.executemany(statement, rows)


# ---------------------------------------------------------------------------------------------
# The daily report (used by the HTTP API and the CLI)


@dataclass(frozen=True)
class FailureReason:
    """One KRA result code the day's sales were refused with."""

    result_code: str
    refusals: int
    """How many times (one sale refused twice counts twice)."""
    sales: int
    """How many sales."""
    last_message: str
    last_at: datetime


@dataclass(frozen=True)
class BranchDay:
    """One branch's sales of one day in one environment."""

    environment: str
    branch_id: str
    submitted: int
    signed: int
    pending: int
    failed: int
    voided: int
    credit_notes: int
    failure_reasons: list[FailureReason] = field(default_factory=list)


@dataclass(frozen=True)
class DailyReport:
    tenant_id: UUID
    day: date
    branches: list[BranchDay]
    incomplete: bool
    """A pending projection dead letter names one of the tenant's invoices: a count may be short."""

    def totals(self) -> dict[str, int]:
        keys = ("submitted", "signed", "pending", "failed", "voided", "credit_notes")
        return {k: sum(getattr(b, k) for b in self.branches) for k in keys}


# One statement, so one snapshot: the counts and the failure reasons of a report are of the same
# moment. As two statements (READ COMMITTED takes a snapshot per statement) a report read while the
# projector wrote could count a sale as failed and still lack its refusal (CI saw it on 2026-12-04).
_REPORT = """
WITH day_sales AS (
    SELECT * FROM etims_compliance AS s
    WHERE s.tenant_id = %(tenant)s AND s.sale_date = %(day)s {extra}
), reasons AS (
    SELECT s.environment, s.branch_id, f.value->>'code' AS code, count(*) AS refusals,
           count(DISTINCT s.invoice_id) AS sales,
           (array_agg(f.value->>'message' ORDER BY (f.value->>'at')::timestamptz DESC, f.key DESC))[1]
               AS message,
           max((f.value->>'at')::timestamptz) AS at
    FROM day_sales AS s, jsonb_each(s.failures) AS f
    GROUP BY s.environment, s.branch_id, code
)
SELECT c.*, r.codes, r.refusals, r.sales, r.messages, r.ats
FROM (
    SELECT environment, branch_id, count(*),
           count(*) FILTER (WHERE status = 'signed'), count(*) FILTER (WHERE status = 'pending'),
           count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'voided'),
           count(*) FILTER (WHERE document_type = 'credit_note')
    FROM day_sales GROUP BY environment, branch_id
) AS c (environment, branch_id, submitted, signed, pending, failed, voided, credit_notes)
LEFT JOIN LATERAL (
    SELECT array_agg(code ORDER BY code) AS codes, array_agg(refusals ORDER BY code) AS refusals,
           array_agg(sales ORDER BY code) AS sales, array_agg(message ORDER BY code) AS messages,
           array_agg(at ORDER BY code) AS ats
    FROM reasons WHERE reasons.environment = c.environment AND reasons.branch_id = c.branch_id
) AS r ON true
ORDER BY c.environment, c.branch_id
"""

_INCOMPLETE = """
SELECT EXISTS (SELECT 1 FROM projection_dead_letters
               WHERE projection = %s AND state = 'pending' AND tenant_id = %s)
"""


def daily(
    conn: psycopg.Connection,
    tenant_id: UUID,
    day: date,
    *,
    branch_id: str | None = None,
    environment: str | None = None,
) -> DailyReport:
    """The tenant's sales of ``day`` (the sale date, Nairobi), per environment and branch."""
    extra = ""
    params: dict[str, Any] = {"tenant": tenant_id, "day": day}
    if branch_id is not None:
        extra += " AND {p}branch_id = %(branch)s"
        params["branch"] = branch_id
    if environment is not None:
        extra += " AND {p}environment = %(environment)s"
        params["environment"] = environment
    cur = conn.cursor(row_factory=tuple_row)  # whatever the connection's own row factory
    branches = [
        BranchDay(
            env,
            branch,
            submitted,
            signed,
            pending,
            failed,
            voided,
            credit_notes,
            [
                FailureReason(*reason)
                for reason in zip(
                    codes or [], refusals or [], sales or [], messages or [], ats or [], strict=True
                )
            ],
        )
        for (
            env,
            branch,
            submitted,
            signed,
            pending,
            failed,
            voided,
            credit_notes,
            codes,
            refusals,
            sales,
            messages,
            ats,
        ) in cur.execute(_REPORT.format(extra=extra.format(p="s.")), params).fetchall()
    ]
    row = cur.execute(_INCOMPLETE, (NAME, str(tenant_id))).fetchone()
    return DailyReport(tenant_id, day, branches, bool(row and row[0]))


def as_json(report: DailyReport) -> dict[str, Any]:
    """The report as the API and ``ledgerflow etims report --json`` show it."""
    return {
        "date": report.day.isoformat(),
        "timezone": "Africa/Nairobi",
        "branches": [
            {
                "environment": b.environment,
                "branch_id": b.branch_id,
                "submitted": b.submitted,
                "signed": b.signed,
                "pending": b.pending,
                "failed": b.failed,
                "voided": b.voided,
                "credit_notes": b.credit_notes,
                "failure_reasons": [
                    {
                        "result_code": r.result_code,
                        "refusals": r.refusals,
                        "sales": r.sales,
                        "last_message": r.last_message,
                        "last_at": r.last_at.isoformat(),
                    }
                    for r in b.failure_reasons
                ],
            }
            for b in report.branches
        ],
        "totals": report.totals(),
        "incomplete": report.incomplete,
    }


CSV_COLUMNS = (
    ("date", "date"),
    ("environment", "text"),
    ("branch_id", "text"),
    ("submitted", "integer"),
    ("signed", "integer"),
    ("pending", "integer"),
    ("failed", "integer"),
    ("voided", "integer"),
    ("credit_notes", "integer"),
    ("failure_reasons", "text"),
)


def csv_rows(report: DailyReport) -> list[tuple[Any, ...]]:
    """One row per environment and branch; the failure reasons in one cell, e.g.
    ``910 x2 (2 sales): Parameter error; 994 x1 (1 sale): Duplicate``. Values as stored: the caller
    neutralises text cells (``projections.reporting.csv_value``)."""
    return [
        (
            report.day,
            b.environment,
            b.branch_id,
            b.submitted,
            b.signed,
            b.pending,
            b.failed,
            b.voided,
            b.credit_notes,
            "; ".join(_reason_text(r) for r in b.failure_reasons),
        )
        for b in report.branches
    ]


def _reason_text(r: FailureReason) -> str:
    sales = f"{r.sales} sale" + ("" if r.sales == 1 else "s")
    return f"{r.result_code} x{r.refusals} ({sales}): {r.last_message}"


def dumps(report: DailyReport) -> bytes:
    return orjson.dumps(as_json(report))
