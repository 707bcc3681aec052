"""The eTIMS code list sync as an integration sync (``POST /v1/integrations/etims/sync``): the same
job ``POST /v1/etims/codes/sync`` queues, and the time KRA's lists were last stored for the
integration's environment (code lists are shared by every tenant of an environment)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from engine.config import Settings
from engine.integrations import IntegrationSettings


async def start(settings: Settings, loaded: IntegrationSettings) -> str:
    from connectors.etims import codes, devices

    job = codes.sync_job(loaded.tenant_id, loaded.environment, reason="integration-sync")
    await devices.queue_jobs(settings, [job])
    return job.job_id


def last_synced(conn: psycopg.Connection, loaded: IntegrationSettings) -> datetime | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT max(synced_at) AS at FROM etims_sync_state WHERE environment = %s AND kind = 'code_list'",
            (loaded.environment,),
        ).fetchone()
    return row["at"] if row else None


def every() -> timedelta:
    from connectors.etims.devices import CODES_SYNC_EVERY_ENV, DEFAULT_CODES_SYNC_EVERY_H

    return timedelta(hours=float(os.environ.get(CODES_SYNC_EVERY_ENV, DEFAULT_CODES_SYNC_EVERY_H)))
