"""The ``super-accountant`` handler: send one stored expense batch, or submit one monthly report.

Jobs are queued by the planner and the API (sync.py); their payload is only the id, the body is the
row stored when the batch or report was made, so every attempt sends the same bytes under the same
``Idempotency-Key``. A batch or report already sent is done without a call (a redelivered job); a
lost answer followed by a retry meets the accountant's 409 duplicate, which the client turns into a
receipt. Failures: retryable ones wait in the retry tiers (an outage is waited out), a refused
payload (4xx) dead-letters and :meth:`record_failure` writes why on the batch or report.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError
from connectors.super_accountant.client import PROVIDER
from connectors.super_accountant.mapping import report_payload
from connectors.super_accountant.settings import COLLEGE_ID, client_for
from connectors.super_accountant.sync import EXPENSE_BATCH, REPORT_SUBMIT
from engine import db
from streams.connectors.jobs import Job, JobResult

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

log = logging.getLogger("ledgerflow.connectors.super_accountant")

_TABLES = {
    EXPENSE_BATCH: ("super_accountant_batches", "batch_id"),
    REPORT_SUBMIT: ("super_accountant_reports", "report_id"),
}


class AccountantSync:
    """Handler and failure sink of the ``super-accountant`` connector."""

    def __init__(self, context: HandlerContext) -> None:
        self.context = context

    async def close(self) -> None:
        await self.context.close()

    def _row(self, kind: str, tenant_id: UUID, subject: UUID) -> dict[str, Any] | None:
        table, key = _TABLES[kind]
        with db.connect(self.context.settings) as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                f"SELECT * FROM {table} WHERE {key} = %s AND tenant_id = %s",
                (subject, tenant_id),
            ).fetchone()

    def _finish(self, kind: str, subject: UUID, **values: Any) -> None:
        table, key = _TABLES[kind]
        names = ", ".join(f"{k} = %s" for k in values)
        with db.connect(self.context.settings) as conn, conn.transaction():
            conn.execute(
                f"UPDATE {table} SET {names}, finished_at = now() WHERE {key} = %s",
                [*(Jsonb(v) if isinstance(v, dict) else v for v in values.values()), subject],
            )

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        if job.kind not in _TABLES:
            raise PermanentError("unknown_job_kind", f"{PROVIDER} has no job kind {job.kind!r}")
        try:
            tenant_id, subject = UUID(job.tenant_id), UUID(job.subject)
        except ValueError as exc:
            raise PermanentError("malformed_job", "the job's tenant or subject is not a UUID") from exc
        row = await self.context.blocking(lambda: self._row(job.kind, tenant_id, subject))
        if row is None:
            # Another tenant's batch or report, or one that does not exist: never sent.
            raise PermanentError("malformed_job", "no such batch or report for the job's tenant")
        if row["status"] in ("sent", "submitted"):
            return JobResult({"id": str(subject), "already_done": True})
        loaded = await self.context.integration(tenant_id)
        try:
            client = client_for(loaded, await self.context.transport(loaded))
        except KeyError as exc:
            raise NeedsAttentionError("invalid_credentials", f"{PROVIDER} needs {exc.args[0]}") from exc
        async with client:
            if job.kind == EXPENSE_BATCH:
                receipt = await client.sync_expenses(dict(row["payload"]))
                await self.context.blocking(
                    lambda: self._finish(
                        job.kind,
                        subject,
                        status="sent",
                        accepted=receipt.accepted,
                        duplicate=receipt.duplicate,
                    )
                )
                return JobResult(
                    {"batch_id": str(subject), "accepted": receipt.accepted, "duplicate": receipt.duplicate}
                )
            payload = row["payload"] or report_payload(
                loaded.credentials.get(COLLEGE_ID, ""),
                row["period"],
                row["report"],
                generated_at=row["created_at"],
                generated_by=row["requested_by"],
            )
            if row["payload"] is None:
                await self.context.blocking(lambda: self._store_payload(subject, payload))
            submitted = await client.submit_report(dict(payload), str(subject))
        await self.context.blocking(
            lambda: self._finish(
                job.kind,
                subject,
                status="submitted",
                submission_id=submitted.submission_id,
                next_action=submitted.next_action,
                duplicate=submitted.duplicate,
            )
        )
        return JobResult({"report_id": str(subject), "submission_id": submitted.submission_id})

    def _store_payload(self, report_id: UUID, payload: dict[str, Any]) -> None:
        with db.connect(self.context.settings) as conn, conn.transaction():
            conn.execute(
                "UPDATE super_accountant_reports SET payload = %s WHERE report_id = %s AND payload IS NULL",
                (Jsonb(payload), report_id),
            )

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        if job.kind not in _TABLES:
            return
        try:
            subject = UUID(job.subject)
        except ValueError:
            return
        self._finish(
            job.kind,
            subject,
            status="failed",
            error={
                "error_class": str(error.error_class),
                "code": error.code,
                "message": error.message,
                "attempts": attempts,
                "failed_at": datetime.now(UTC).isoformat(),
            },
        )
        log.warning("%s %s given up after %d attempts: %s", job.kind, job.subject, attempts, error.code)


def build(context: HandlerContext) -> AccountantSync:
    return AccountantSync(context)
