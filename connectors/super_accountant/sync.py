"""The daily expense sync to the consolidating accountant, and the monthly report queue.

Planning (:func:`plan`) takes the college's approved or paid expenses that no batch has taken yet
(``expense_register``, the expenses read model), converts each to paise (one that is not a whole
number of paise is refused and recorded, never rounded), cuts them into batches of 1000 and stores
each batch with its exact payload, all in one transaction under a per-tenant lock: an expense lands
in one batch only, however many planners run. Each batch is then queued as one connector job
(:func:`queue`) whose id is the batch id, and the accountant's API is called with the batch id as the
``Idempotency-Key``: a retried batch, after a lost answer or a redelivered job, is the same batch and
is never counted twice. A batch stored but never queued (a crash between the two) is queued again by
the scheduler (:func:`unpublished`).

The schedule (:func:`due_on`) is per tenant: a local time of day and a time zone (default 02:00
Asia/Kolkata, the seed's "daily, 2:00 AM"), run once per local day.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID, uuid4, uuid5
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from connectors.errors import ConnectorError
from connectors.super_accountant.client import PROVIDER
from connectors.super_accountant.mapping import (
    BATCH_SIZE,
    ExpenseRecord,
    batch_payload,
    chunks,
    expense_payload,
)
from connectors.super_accountant.settings import COLLEGE_ID
from engine import db, integrations
from engine.config import Settings
from engine.security.secrets import KeyRing
from streams.connectors.jobs import Job

log = logging.getLogger("ledgerflow.connectors.super_accountant")

EXPENSE_BATCH = "expenses.batch"
REPORT_SUBMIT = "report.submit"
SPENT = ("approved", "paid")
DEFAULT_RUN_AT = time(2, 0)
DEFAULT_TIMEZONE = "Asia/Kolkata"
# A batch stored but not acknowledged by Kafka for this long is queued again.
UNPUBLISHED_AFTER = timedelta(minutes=2)
_LOCK_NAMESPACE = 0x5A5A  # pg_advisory_xact_lock(namespace, hash): the planner's per-tenant lock


def due_on(now: datetime, run_at: time, timezone: str, last_run_on: date | None) -> date | None:
    """The local date to run for, when the tenant's daily run is due at ``now``; else None."""
    local = now.astimezone(ZoneInfo(timezone))
    if local.time() < run_at or last_run_on == local.date():
        return None
    return local.date()


def batch_job(tenant_id: UUID, batch_id: UUID) -> Job:
    return Job(f"expense-batch:{batch_id}", PROVIDER, EXPENSE_BATCH, str(tenant_id), str(batch_id), {})


def report_job(tenant_id: UUID, report_id: UUID) -> Job:
    return Job(f"financial-report:{report_id}", PROVIDER, REPORT_SUBMIT, str(tenant_id), str(report_id), {})


def unsynced(conn: psycopg.Connection[Any], tenant_id: UUID) -> list[ExpenseRecord]:
    """The tenant's approved or paid expenses that no batch took and that were not refused."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT e.expense_number, e.amount, e.category, e.status, e.expense_date, e.gl_code,"
            " e.vendor_name, e.approved_at, e.approved_by_name FROM expense_register e"
            " WHERE e.tenant_id = %s AND e.status = ANY(%s) AND NOT EXISTS ("
            "  SELECT 1 FROM super_accountant_expenses s"
            "  WHERE s.tenant_id = e.tenant_id AND s.expense_number = e.expense_number)"
            " ORDER BY e.approved_at NULLS LAST, e.expense_number",
            (tenant_id, list(SPENT)),
        ).fetchall()
    return [ExpenseRecord(**r) for r in rows]


@dataclass(frozen=True)
class PlannedRun:
    run_id: UUID
    batches: list[dict[str, Any]]
    refused: list[dict[str, str]]

    def document(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "batches": [batch_view(b) for b in self.batches],
            "refused": self.refused,
            "expenses": sum(b["expense_count"] for b in self.batches),
        }


def plan(conn: psycopg.Connection[Any], tenant_id: UUID, college_id: str, trigger: str) -> PlannedRun:
    """Store the batches of every unsynced expense (call inside a transaction; see module docstring)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, str(tenant_id)))
    run_id = uuid4()
    payloads: list[dict[str, Any]] = []
    refused: list[dict[str, str]] = []
    for e in unsynced(conn, tenant_id):
        try:
            payloads.append(expense_payload(e, college_id))
        except ConnectorError as exc:
            refused.append({"expense_number": e.expense_number, "code": exc.code, "reason": exc.message})
    for r in refused:
        conn.execute(
            "INSERT INTO super_accountant_expenses (tenant_id, expense_number, status, reason)"
            " VALUES (%s, %s, 'refused', %s) ON CONFLICT DO NOTHING",
            (tenant_id, r["expense_number"], r["reason"]),
        )
    batches: list[dict[str, Any]] = []
    for seq, part in enumerate(chunks(payloads, BATCH_SIZE), start=1):
        # Derived from the run and position, so the stored id and the payload's batch_id agree.
        batch_id = uuid5(run_id, str(seq))
        body = batch_payload(str(batch_id), college_id, part)
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "INSERT INTO super_accountant_batches (batch_id, tenant_id, run_id, seq, trigger,"
                " expense_count, total_paise, payload, status)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'queued') RETURNING *",
                (batch_id, tenant_id, run_id, seq, trigger, len(part), body["total_amount"], Jsonb(body)),
            ).fetchone()
            cur.executemany(
                "INSERT INTO super_accountant_expenses (tenant_id, expense_number, batch_id, status)"
                " VALUES (%s, %s, %s, 'batched')",
                [(tenant_id, e["expense_number"], batch_id) for e in part],
            )
        assert row is not None
        batches.append(dict(row))
    return PlannedRun(run_id, batches, refused)


def batch_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "batch_id": str(row["batch_id"]),
        "run_id": str(row["run_id"]),
        "seq": row["seq"],
        "trigger": row["trigger"],
        "status": row["status"],
        "expense_count": row["expense_count"],
        "total_amount": _rupees(row["total_paise"]),
        "accepted": row["accepted"],
        "duplicate": row["duplicate"],
        "error": row["error"],
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


def _rupees(paise: int) -> str:
    sign = "-" if paise < 0 else ""
    whole, part = divmod(abs(int(paise)), 100)
    return f"{sign}{whole}.{part:02d}"


async def queue(settings: Settings, jobs: Sequence[Job]) -> None:
    """Put jobs on ``connector.super-accountant.jobs.v1`` and wait for Kafka's acknowledgement."""
    from engine import kafka
    from streams.connectors.jobs import publish_job

    if not jobs:
        return
    producer = await kafka.start_producer(settings, "reliable")
    try:
        for job in jobs:
            await publish_job(producer, settings, job)
    finally:
        await producer.stop()


def mark_published(conn: psycopg.Connection[Any], jobs: Sequence[Job]) -> None:
    """Kafka acknowledged these jobs: their batches or reports need no second queueing."""
    for kind, table, key in ((EXPENSE_BATCH, "super_accountant_batches", "batch_id"),
                             (REPORT_SUBMIT, "super_accountant_reports", "report_id")):  # fmt: skip
        ids = [UUID(j.subject) for j in jobs if j.kind == kind]
        if ids:
            conn.execute(
                f"UPDATE {table} SET published_at = now() WHERE {key} = ANY(%s) AND published_at IS NULL",
                (ids,),
            )


def unpublished(conn: psycopg.Connection[Any], now: datetime) -> list[Job]:
    """The jobs of batches and reports Kafka never acknowledged, older than UNPUBLISHED_AFTER."""
    before = now - UNPUBLISHED_AFTER
    with conn.cursor(row_factory=dict_row) as cur:
        batches = cur.execute(
            "SELECT tenant_id, batch_id FROM super_accountant_batches"
            " WHERE status = 'queued' AND published_at IS NULL AND created_at < %s"
            " ORDER BY created_at LIMIT 1000",
            (before,),
        ).fetchall()
        reports = cur.execute(
            "SELECT tenant_id, report_id FROM super_accountant_reports"
            " WHERE status = 'queued' AND published_at IS NULL AND created_at < %s"
            " ORDER BY created_at LIMIT 1000",
            (before,),
        ).fetchall()
    return [batch_job(r["tenant_id"], r["batch_id"]) for r in batches] + [
        report_job(r["tenant_id"], r["report_id"]) for r in reports
    ]


async def run_due(settings: Settings, ring: KeyRing, now: datetime) -> list[PlannedRun]:
    """Plan the runs due at ``now`` (each tenant once a local day, claimed with SKIP LOCKED so two
    schedulers never plan one tenant twice), queue their batches, and queue again what a crash left
    unqueued. A tenant whose integration is missing or disabled is skipped for the day."""
    runs: list[PlannedRun] = []
    jobs: list[Job] = []
    with db.connect(settings) as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM super_accountant_schedules WHERE enabled FOR UPDATE SKIP LOCKED"
        ).fetchall()
        for row in rows:
            day = due_on(now, row["run_at"], row["timezone"], row["last_run_on"])
            if day is None:
                continue
            conn.execute(
                "UPDATE super_accountant_schedules SET last_run_on = %s WHERE tenant_id = %s",
                (day, row["tenant_id"]),
            )
            loaded = integrations.load(conn, ring, row["tenant_id"], PROVIDER)
            if loaded is None or not loaded.enabled:
                log.warning("accountant sync of %s skipped: no enabled integration", row["tenant_id"])
                continue
            run = plan(conn, row["tenant_id"], loaded.credentials.get(COLLEGE_ID, ""), "schedule")
            runs.append(run)
            jobs += [batch_job(row["tenant_id"], b["batch_id"]) for b in run.batches]
        jobs += unpublished(conn, now)
    await queue(settings, jobs)
    with db.connect(settings) as conn, conn.transaction():
        mark_published(conn, jobs)
    return runs
