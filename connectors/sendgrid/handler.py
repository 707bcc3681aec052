"""The ``sendgrid`` handler: email one alert to the recipients its tenant's policy named.

One ``alert.email`` job per alert (queued by the alert worker, streams/alerts.py; job id
``alert-email:<alert id>``). The mail is sent at most once per alert as far as we can tell: a job
whose alert already has a row in ``sendgrid_alert_emails`` is done without a call, and the row is
written as soon as SendGrid accepted the mail. (SendGrid has no idempotency key: a crash between its
202 and our row would send the mail again on redelivery. That window is one INSERT long.)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg.types.json import Jsonb

from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError
from connectors.sendgrid.client import PROVIDER, SendGridClient
from connectors.sendgrid.mapping import alert_mail
from engine import db
from streams.connectors.jobs import Job, JobResult

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

log = logging.getLogger("ledgerflow.connectors.sendgrid")

ALERT_EMAIL = "alert.email"


def alert_email_job(alert: dict[str, Any], recipients: list[str]) -> Job:
    """The job that emails ``alert`` (a decoded ``ledgerflow.alert.raised``) to ``recipients``."""
    payload = {
        "alert": {
            "alert_id": str(alert["alert_id"]),
            "tenant_id": str(alert["tenant_id"]),
            "severity": str(alert["severity"]),
            "cause": str(alert["cause"]),
            "subject": str(alert["subject"]),
            "message": str(alert["message"]),
            "details": {str(k): str(v) for k, v in (alert.get("details") or {}).items()},
            "raised_at": str(alert["raised_at"]),
        },
        "recipients": list(recipients),
    }
    alert_id = str(alert["alert_id"])
    return Job(f"alert-email:{alert_id}", PROVIDER, ALERT_EMAIL, str(alert["tenant_id"]), alert_id, payload)


class AlertMailer:
    """Handler and failure sink of the ``sendgrid`` connector."""

    def __init__(self, context: HandlerContext) -> None:
        self.context = context

    async def close(self) -> None:
        await self.context.close()

    def _sent(self, alert_id: UUID) -> bool:
        with db.connect(self.context.settings) as conn:
            row = conn.execute(
                "SELECT 1 FROM sendgrid_alert_emails WHERE alert_id = %s", (alert_id,)
            ).fetchone()
        return row is not None

    def _record(self, alert_id: UUID, tenant_id: UUID, recipients: list[str], message_id: str) -> None:
        with db.connect(self.context.settings) as conn, conn.transaction():
            conn.execute(
                "INSERT INTO sendgrid_alert_emails (alert_id, tenant_id, recipients, message_id)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (alert_id) DO NOTHING",
                (alert_id, tenant_id, Jsonb(recipients), message_id),
            )

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        if job.kind != ALERT_EMAIL:
            raise PermanentError("unknown_job_kind", f"{PROVIDER} has no job kind {job.kind!r}")
        try:
            alert = dict(job.payload["alert"])
            recipients = [str(r) for r in job.payload["recipients"]]
            alert_id, tenant_id = UUID(job.subject), UUID(job.tenant_id)
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentError("malformed_job", f"not an alert email job: {type(exc).__name__}") from exc
        if str(alert.get("tenant_id")) != job.tenant_id or str(alert.get("alert_id")) != job.subject:
            raise PermanentError("malformed_job", "the job's alert belongs to another tenant or alert")
        if await self.context.blocking(lambda: self._sent(alert_id)):
            return JobResult({"alert_id": str(alert_id), "already_sent": True})
        if not recipients:
            return JobResult({"alert_id": str(alert_id), "recipients": 0})
        loaded = await self.context.integration(tenant_id)
        api_key, from_email = loaded.credentials.get("api_key"), loaded.credentials.get("from_email")
        if not api_key or not from_email:
            raise NeedsAttentionError("invalid_credentials", f"{PROVIDER} needs api_key and from_email")
        transport = await self.context.transport(loaded)
        async with SendGridClient(loaded.base_url, api_key, transport=transport) as client:
            message_id = await client.send(alert_mail(alert, recipients, from_email))
        await self.context.blocking(lambda: self._record(alert_id, tenant_id, recipients, message_id))
        return JobResult({"alert_id": str(alert_id), "recipients": len(recipients), "message_id": message_id})

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        # The dead letter is the record (and the runtime raises its own alert, which is not about
        # sendgrid's own alert mails looping: see streams/alerts.py).
        log.warning("alert email %s not sent after %d attempts: %s", job.job_id, attempts, error.code)


def build(context: HandlerContext) -> AlertMailer:
    return AlertMailer(context)
