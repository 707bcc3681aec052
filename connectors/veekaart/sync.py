"""Push the tenant's catalogue to its VeeKaart shop: full (every item) or incremental (items whose
catalogue version the shop does not have yet), in batches, each item through the three feeds the
seed names (products, inventory, pricing). Every run is recorded with its counts and each failed
item's reason; an item counts as synced only when all three feeds accepted it, so a failed item is
pushed again by the next incremental run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID, uuid4

import httpx
import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from connectors.errors import ConnectorError, ErrorClass
from connectors.veekaart import mapping
from connectors.veekaart.client import BATCH, Feed, VeeKaartClient
from connectors.veekaart.settings import API_KEY, PROVIDER
from engine import catalogue, db, integrations
from engine.application import LedgerService
from engine.security.secrets import KeyRing

Kind = Literal["full", "incremental"]
Trigger = Literal["manual", "schedule"]
FEEDS: tuple[tuple[Feed, Any], ...] = (
    ("products", mapping.product_payload),
    ("inventory", mapping.inventory_payload),
    ("pricing", mapping.pricing_payload),
)


class NotConfigured(Exception):
    """The tenant has no enabled veekaart integration."""


class SyncInProgress(Exception):
    """Another sync of the tenant is running (its id is ``run_id``)."""

    def __init__(self, run_id: UUID | None) -> None:
        super().__init__("another sync of this tenant is running")
        self.run_id = run_id


# A run still "running" after this long belongs to a process that stopped: it is marked failed so
# that it does not block the tenant's syncs for ever (a full push takes minutes, per the seed).
ABANDONED_AFTER = timedelta(minutes=30)


@dataclass
class RunTally:
    considered: int = 0
    pushed: int = 0
    throttled: int = 0
    stopped: bool = False

    def __post_init__(self) -> None:
        self.failures: list[dict[str, str]] = []


async def run_sync(
    service: LedgerService,
    ring: KeyRing,
    tenant_id: UUID,
    *,
    kind: Kind,
    trigger: Trigger,
    transport: httpx.AsyncBaseTransport | None = None,
    transport_for: Any = None,
) -> dict[str, Any]:
    """Run one sync now and return its record. ``transport_for(settings)`` builds the egress-checked
    transport (connectors.catalogue.checked_transport) unless a ``transport`` is given."""
    with db.transaction(service.pool) as conn:
        loaded = integrations.load(conn, ring, tenant_id, PROVIDER)
    if loaded is None or not loaded.enabled:
        raise NotConfigured("veekaart is not configured for this tenant")
    run_id = uuid4()
    with db.transaction(service.pool) as conn:
        conn.execute(
            "UPDATE veekaart_sync_runs SET status = 'failed', finished_at = now(), failures = %s"
            " WHERE tenant_id = %s AND status = 'running' AND started_at < now() - %s",
            (
                Jsonb([_failure("", "abandoned", "the process running it stopped")]),
                tenant_id,
                ABANDONED_AFTER,
            ),
        )
    try:
        with db.transaction(service.pool) as conn:
            conn.execute(
                "INSERT INTO veekaart_sync_runs (run_id, tenant_id, kind, trigger, status)"
                " VALUES (%s, %s, %s, %s, 'running')",
                (run_id, tenant_id, kind, trigger),
            )
    except psycopg.errors.UniqueViolation as exc:
        with db.transaction(service.pool) as conn:
            running = (
                conn.cursor(row_factory=tuple_row)
                .execute(
                    "SELECT run_id FROM veekaart_sync_runs WHERE tenant_id = %s AND status = 'running'",
                    (tenant_id,),
                )
                .fetchone()
            )
        raise SyncInProgress(running[0] if running else None) from exc
    tally = RunTally()
    try:
        await _push_pending(service, loaded, tenant_id, kind, tally, transport, transport_for)
    except BaseException as exc:
        # Whatever stopped the run (a bug, a cancelled request), it must not stay "running".
        tally.failures.append(_failure("", "run_aborted", type(exc).__name__))
        _finish(service, tenant_id, run_id, tally)
        raise
    return _finish(service, tenant_id, run_id, tally)


async def _push_pending(
    service: LedgerService,
    loaded: integrations.IntegrationSettings,
    tenant_id: UUID,
    kind: Kind,
    tally: RunTally,
    transport: httpx.AsyncBaseTransport | None,
    transport_for: Any,
) -> None:
    with db.transaction(service.pool) as conn:
        rows = catalogue.catalogue_rows(conn, tenant_id)
        synced: dict[UUID, int] = dict(
            conn.cursor(row_factory=tuple_row)
            .execute("SELECT product_id, version FROM veekaart_synced WHERE tenant_id = %s", (tenant_id,))
            .fetchall()
        )
    pending = rows if kind == "full" else [r for r in rows if synced.get(r[0], 0) < r[1]]
    tally.considered = len(pending)
    chosen = transport if transport is not None else (transport_for(loaded) if transport_for else None)
    async with VeeKaartClient(loaded.base_url, loaded.credentials[API_KEY], chosen) as client:
        for start in range(0, len(pending), BATCH):
            if tally.stopped:
                for _, _, doc in pending[start:]:
                    tally.failures.append(_failure(doc["sku"], "not_attempted", "the run stopped earlier"))
                continue
            done = await _push_batch(client, pending[start : start + BATCH], tally)
            if done:
                with db.transaction(service.pool) as conn:
                    for product_id, version in done:
                        conn.execute(
                            "INSERT INTO veekaart_synced (tenant_id, product_id, version) VALUES (%s, %s, %s)"
                            " ON CONFLICT (tenant_id, product_id) DO UPDATE SET version = EXCLUDED.version,"
                            " synced_at = now() WHERE veekaart_synced.version < EXCLUDED.version",
                            (tenant_id, product_id, version),
                        )


def _finish(service: LedgerService, tenant_id: UUID, run_id: UUID, tally: RunTally) -> dict[str, Any]:
    failed = len(tally.failures)
    status = "succeeded" if failed == 0 else ("failed" if tally.pushed == 0 else "partial")
    with db.transaction(service.pool) as conn:
        conn.execute(
            "UPDATE veekaart_sync_runs SET status = %s, finished_at = now(), considered = %s, pushed = %s,"
            " failed = %s, throttled = %s, failures = %s WHERE run_id = %s",
            (status, tally.considered, tally.pushed, failed, tally.throttled, Jsonb(tally.failures), run_id),
        )
        found = get_run(conn, tenant_id, run_id)
    assert found is not None
    return found


async def _push_batch(
    client: VeeKaartClient, batch: Sequence[tuple[UUID, int, dict[str, Any]]], tally: RunTally
) -> list[tuple[UUID, int]]:
    """Push one batch through every feed; the (id, version) of the items all three accepted."""
    failed: dict[str, dict[str, str]] = {}
    payloads: dict[Feed, list[dict[str, Any]]] = {feed: [] for feed, _ in FEEDS}
    for _, _, doc in batch:
        try:
            built = {feed: build(doc) for feed, build in FEEDS}
        except mapping.NotExactlyRepresentable as exc:
            failed[doc["sku"]] = _failure(doc["sku"], "not_representable", str(exc))
            continue
        for feed, payload in built.items():
            payloads[feed].append(payload)
    for feed, _ in FEEDS:
        items = [p for p in payloads[feed] if p["sku"] not in failed]
        if not items:
            continue
        try:
            result = await client.push(feed, items)
        except ConnectorError as exc:
            for item in items:
                failed[item["sku"]] = _failure(item["sku"], exc.code, f"{feed}: {exc}")
            if exc.error_class is ErrorClass.NEEDS_ATTENTION:
                tally.stopped = True
            continue
        tally.throttled += result.throttled
        for rejected in result.rejected:
            sku = rejected["sku"]
            failed.setdefault(
                sku, _failure(sku, "rejected", f"{feed}.{rejected['field']}: {rejected['message']}")
            )
        accepted = set(result.accepted)
        for item in items:
            if item["sku"] not in accepted and item["sku"] not in failed:
                failed[item["sku"]] = _failure(
                    item["sku"], "not_accepted", f"{feed}: not in the shop's answer"
                )
    done = [(pid, version) for pid, version, doc in batch if doc["sku"] not in failed]
    tally.pushed += len(done)
    tally.failures += list(failed.values())
    return done


def _failure(sku: str, code: str, reason: str) -> dict[str, str]:
    return {"sku": sku, "code": code, "reason": reason[:500]}


_RUN_COLUMNS = (
    "run_id, kind, trigger, status, started_at, finished_at, considered, pushed, failed, throttled, failures"
)


def _run_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["run_id"]),
        "kind": row["kind"],
        "trigger": row["trigger"],
        "status": row["status"],
        "started_at": row["started_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "counts": {
            "considered": row["considered"],
            "pushed": row["pushed"],
            "failed": row["failed"],
            "throttled": row["throttled"],
        },
        "failures": row["failures"],
    }


def get_run(conn: Any, tenant_id: UUID, run_id: UUID) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_RUN_COLUMNS} FROM veekaart_sync_runs WHERE tenant_id = %s AND run_id = %s",
            (tenant_id, run_id),
        ).fetchone()
    return None if row is None else _run_view(row)


def list_runs(conn: Any, tenant_id: UUID, limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_RUN_COLUMNS} FROM veekaart_sync_runs WHERE tenant_id = %s"
            " ORDER BY started_at DESC, run_id LIMIT %s",
            (tenant_id, limit),
        ).fetchall()
    return [_run_view(r) for r in rows]


# The auto-sync schedule.
def set_schedule(conn: Any, tenant_id: UUID, *, enabled: bool, interval_minutes: int) -> dict[str, Any]:
    next_run = datetime.now(UTC) + timedelta(minutes=interval_minutes)
    conn.execute(
        "INSERT INTO veekaart_sync_schedule (tenant_id, enabled, interval_minutes, next_run_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE SET enabled = EXCLUDED.enabled,"
        " interval_minutes = EXCLUDED.interval_minutes, next_run_at = EXCLUDED.next_run_at,"
        " updated_at = now()",
        (tenant_id, enabled, interval_minutes, next_run),
    )
    found = get_schedule(conn, tenant_id)
    assert found is not None
    return found


def get_schedule(conn: Any, tenant_id: UUID) -> dict[str, Any] | None:
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            "SELECT enabled, interval_minutes, next_run_at FROM veekaart_sync_schedule WHERE tenant_id = %s",
            (tenant_id,),
        )
        .fetchone()
    )
    if row is None:
        return None
    return {"enabled": row[0], "interval_minutes": row[1], "next_run_at": row[2].isoformat()}


def claim_due(conn: Any, now: datetime, limit: int = 20) -> list[UUID]:
    """Tenants whose auto-sync is due, their next run moved on in the same statement (a crash after
    the claim skips one run; the next comes an interval later, and it is incremental anyway)."""
    rows = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            """
        UPDATE veekaart_sync_schedule s
           SET next_run_at = %s + make_interval(mins => s.interval_minutes), updated_at = now()
         WHERE s.tenant_id IN (
               SELECT tenant_id FROM veekaart_sync_schedule
                WHERE enabled AND next_run_at <= %s
                ORDER BY next_run_at LIMIT %s FOR UPDATE SKIP LOCKED)
        RETURNING s.tenant_id
        """,
            (now, now, limit),
        )
        .fetchall()
    )
    return [r[0] for r in rows]


async def run_due(
    service: LedgerService, ring: KeyRing, now: datetime, transport_for: Any = None
) -> list[dict[str, Any]]:
    """One scheduler pass: an incremental run for every tenant whose auto-sync is due."""
    with db.transaction(service.pool) as conn:
        due = claim_due(conn, now)
    runs = []
    for tenant_id in due:
        try:
            runs.append(
                await run_sync(
                    service,
                    ring,
                    tenant_id,
                    kind="incremental",
                    trigger="schedule",
                    transport_for=transport_for,
                )
            )
        except (NotConfigured, SyncInProgress):
            continue
    return runs
