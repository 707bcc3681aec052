"""What the runtime tells operators and tenants beyond the DLQ topic: each dead letter recorded per
tenant (``connector_dead_letters``, for the DLQ depth of ``GET /v1/integrations``) and alerts on
``ledger.alert.v1`` when a job is dead-lettered or a circuit opens.

Both are best-effort: the dead letter on Kafka is the durable record, so a failure here is logged
and never makes a job run again. Alerts carry a fixed message per (connector, cause), so a storm of
dead letters or a flapping circuit raises one alert per cause and subject per 15-minute window
(engine/domain/alert.py ``COLLAPSE_WINDOW``); the first one's job and error code are in its details.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from connectors.errors import ConnectorError
from streams.connectors.jobs import AlertSink, Job

log = logging.getLogger("ledgerflow.connectors")

DEAD_LETTERED = "connector.dead_lettered"
CIRCUIT_OPEN = "connector.circuit_open"


async def record_dead_letter(
    pool: AsyncConnectionPool,
    alerts: AlertSink | None,
    connector: str,
    job: Job,
    error: ConnectorError,
    *,
    partition: int,
    offset: int,
) -> None:
    try:
        async with pool.connection() as conn:
            await conn.execute(
                """INSERT INTO connector_dead_letters
                       (connector, partition, "offset", tenant_id, job_id, job_kind, error_class, error_code)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                (
                    connector,
                    partition,
                    offset,
                    job.tenant_id,
                    job.job_id,
                    job.kind,
                    error.error_class.value,
                    error.code,
                ),
            )
    except Exception:
        log.exception("%s: could not record dead letter %d@%d", connector, partition, offset)
    await _raise(
        alerts,
        job.tenant_id,
        severity="critical" if error.error_class.value == "needs_attention" else "warning",
        cause=DEAD_LETTERED,
        subject=f"connector:{connector}",
        message=(
            f"{connector} gave up on a job; see GET /v1/integrations/{connector}/logs, then ask an operator"
            f" to redrive it (ledgerflow dlq list --connector {connector})"
        ),
        details={
            "connector": connector,
            "job_id": job.job_id,
            "job_kind": job.kind,
            "error_class": error.error_class.value,
            "error_code": error.code,
        },
    )


async def circuit_opened(alerts: AlertSink | None, connector: str, job: Job, error_code: str | None) -> None:
    await _raise(
        alerts,
        job.tenant_id,
        severity="warning",
        cause=CIRCUIT_OPEN,
        subject=f"connector:{connector}",
        message=(
            f"calls to {connector} keep failing, so they are paused for a while (circuit open); jobs wait"
            " and resume by themselves when it answers again"
        ),
        details={"connector": connector, "error_code": error_code or ""},
    )


async def _raise(alerts: AlertSink | None, tenant_id: str, **alert: object) -> None:
    if alerts is None:
        return
    try:
        tenant = UUID(tenant_id)
    except ValueError:
        return  # a job of no tenant (a shared sync) has nobody to tell
    try:
        await asyncio.to_thread(lambda: alerts(tenant, **alert))  # type: ignore[arg-type]
    except Exception:
        log.exception("could not raise %s alert for tenant %s", alert.get("cause"), tenant_id)
