"""The daily Tally sync, per tenant (seed 002, 2.5): the ledgers read (``GET /v1/tally/ledgers`` shows
each ledger's opening and current balance, which only Tally knows), then our budgets pushed as Tally
Budget masters (the seed's "Daily: budget utilization updates"; budgets.py). The first sync of a month
also stores the reconciliation of the month before (the seed's "Monthly: financial reports";
reconcile.py).

Every tenant whose ``tally`` integration is enabled is synced once a local day, at its schedule's time
of day (``tally_schedules``, ``GET|PUT /v1/tally/schedule``; default 03:00 Asia/Kolkata, after the
college's day is over and before it starts; a tenant may turn it off). The scheduler process started
by ``ledgerflow run`` (ops/accountant_scheduler.py) calls :func:`run_due` every pass; a day is claimed
with one conditional UPDATE before Tally is called, so two schedulers never sync one tenant twice a day.
A Tally that is not running (it is a desktop program) fails that day's sync: the error is kept on the
schedule row and the next day tries again; ``POST /v1/tally/ledgers/sync`` syncs at once.

Each pass also queues again the vouchers of ``POST /v1/tally/vouchers`` that were stored but never
acknowledged by Kafka (posting.unpublished).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from connectors.catalogue import checked_transport
from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError
from connectors.tally import budgets, ledgers, posting, reconcile
from connectors.tally.client import PROVIDER, TallyClient
from connectors.tally.mapping import LedgerNotMapped
from connectors.tally.vouchers import VoucherRefused
from engine import db, integrations
from engine.config import Settings
from engine.security.secrets import KeyRing

log = logging.getLogger("ledgerflow.connectors.tally")

DEFAULT_RUN_AT = time(3, 0)
DEFAULT_TIMEZONE = "Asia/Kolkata"


def due_on(now: datetime, run_at: time, timezone: str, last_run_on: date | None) -> date | None:
    """The local date to sync for, when the tenant's daily sync is due at ``now``; else None."""
    local = now.astimezone(ZoneInfo(timezone))
    if local.time() < run_at or last_run_on == local.date():
        return None
    return local.date()


def schedule_view(conn: psycopg.Connection[Any], tenant_id: UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM tally_schedules WHERE tenant_id = %s", (tenant_id,)).fetchone()
    row = row or {}
    run_at: time = row.get("run_at") or DEFAULT_RUN_AT
    last = row.get("last_run_on")
    return {
        "enabled": row.get("enabled", True),
        "run_at": run_at.strftime("%H:%M"),
        "timezone": row.get("timezone") or DEFAULT_TIMEZONE,
        "last_run_on": last.isoformat() if last else None,
        "last_error": row.get("last_error"),
    }


def put_schedule(
    conn: psycopg.Connection[Any], tenant_id: UUID, enabled: bool, run_at: time, timezone: str
) -> None:
    conn.execute(
        "INSERT INTO tally_schedules (tenant_id, enabled, run_at, timezone) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (tenant_id) DO UPDATE SET enabled = EXCLUDED.enabled, run_at = EXCLUDED.run_at,"
        " timezone = EXCLUDED.timezone",
        (tenant_id, enabled, run_at, timezone),
    )


def claim_due(conn: psycopg.Connection[Any], now: datetime) -> list[tuple[UUID, date]]:
    """The tenants whose sync is due at ``now`` and their local day, each marked done (claimed)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT i.tenant_id, s.enabled, s.run_at, s.timezone, s.last_run_on FROM integrations i"
            " LEFT JOIN tally_schedules s ON s.tenant_id = i.tenant_id"
            " WHERE i.provider = %s AND i.enabled",
            (PROVIDER,),
        ).fetchall()
    claimed: list[tuple[UUID, date]] = []
    for row in rows:
        if row["enabled"] is False:
            continue
        day = due_on(
            now, row["run_at"] or DEFAULT_RUN_AT, row["timezone"] or DEFAULT_TIMEZONE, row["last_run_on"]
        )
        if day is None:
            continue
        won = conn.execute(
            "INSERT INTO tally_schedules (tenant_id, last_run_on) VALUES (%s, %s)"
            " ON CONFLICT (tenant_id) DO UPDATE SET last_run_on = EXCLUDED.last_run_on"
            " WHERE tally_schedules.last_run_on IS DISTINCT FROM EXCLUDED.last_run_on RETURNING tenant_id",
            (row["tenant_id"], day),
        ).fetchone()
        if won is not None:
            claimed.append((row["tenant_id"], day))
    return claimed


async def sync_ledgers(settings: Settings, ring: KeyRing, tenant_id: UUID) -> int:
    """Read the tenant's ledgers (with balances) from Tally and replace our copy; how many were read.
    Raises ``ConnectorError`` when Tally does not answer or refuses."""
    with db.connect(settings) as conn:
        loaded = integrations.load(conn, ring, tenant_id, PROVIDER)
    if loaded is None or not loaded.enabled:
        return 0
    company = str(loaded.credentials.get("company") or "")
    async with TallyClient(
        loaded.base_url, company, transport=checked_transport(loaded, settings.mode)
    ) as client:
        found = await client.ledgers()
    with db.connect(settings) as conn, conn.transaction():
        ledgers.replace_ledgers(conn, tenant_id, found, datetime.now(UTC))
    return len(found)


async def push_budgets(settings: Settings, ring: KeyRing, tenant_id: UUID) -> int:
    """Send the tenant's budgets (``budget_register``) to Tally as Budget masters, one per financial
    year (budgets.py); how many masters. Re-sending replaces them: the push is idempotent. Raises
    ``ConnectorError`` (a category the ledger map cannot place: ``ledger_not_mapped``)."""
    with db.connect(settings) as conn:
        loaded = integrations.load(conn, ring, tenant_id, PROVIDER)
        ledger_map = ledgers.ledger_map(conn, tenant_id)
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT category, financial_year, allocated_amount FROM budget_register"
                " WHERE tenant_id = %s ORDER BY financial_year, category",
                (tenant_id,),
            ).fetchall()
    if loaded is None or not loaded.enabled or not rows:
        return 0
    try:
        masters = budgets.masters(rows, ledger_map)
    except LedgerNotMapped as exc:
        raise NeedsAttentionError("ledger_not_mapped", str(exc)) from exc
    except VoucherRefused as exc:
        raise PermanentError(exc.code, exc.message) from exc
    company = str(loaded.credentials.get("company") or "")
    async with TallyClient(
        loaded.base_url, company, transport=checked_transport(loaded, settings.mode)
    ) as client:
        await client.import_budgets(masters)
    return len(masters)


def _record(settings: Settings, tenant_id: UUID, error: str | None) -> None:
    with db.connect(settings) as conn, conn.transaction():
        conn.execute("UPDATE tally_schedules SET last_error = %s WHERE tenant_id = %s", (error, tenant_id))


async def run_due(settings: Settings, ring: KeyRing, now: datetime) -> dict[UUID, dict[str, Any]]:
    """Sync every tenant due at ``now`` (``{"ledgers": n, "budgets": m}`` or ``{"error": ...}``), and
    queue stranded vouchers."""
    with db.connect(settings) as conn, conn.transaction():
        due = claim_due(conn, now)
        stranded = posting.unpublished(conn, now)
    if stranded:
        await posting.queue(settings, stranded)
        with db.connect(settings) as conn, conn.transaction():
            posting.mark_published(conn, [UUID(job.subject) for job in stranded])
    results: dict[UUID, dict[str, Any]] = {}
    for tenant_id, day in due:
        try:
            read = await sync_ledgers(settings, ring, tenant_id)
            with db.connect(settings) as conn, conn.transaction():
                # The first sync of a month reconciles the month before (reconcile.py).
                reconcile.store(
                    conn, tenant_id, reconcile.previous_month(day), ledgers.ledger_map(conn, tenant_id)
                )
            results[tenant_id] = {"ledgers": read, "budgets": await push_budgets(settings, ring, tenant_id)}
            _record(settings, tenant_id, None)
        except ConnectorError as exc:
            message = f"{exc.code}: {exc.message}"[:500]
            log.warning("tally daily sync of %s failed: %s", tenant_id, message)
            _record(settings, tenant_id, message)
            results[tenant_id] = {"error": message}
    return results
