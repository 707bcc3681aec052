"""The consolidating accountant's endpoints (issue 14, seed "College Accounts" 1.3 and 4.1;
docs/super-accountant.md). The integration itself is configured with
``PUT /v1/integrations/super-accountant`` like any other.

- ``GET|PUT /v1/integrations/super-accountant/schedule``: the daily expense sync's time and zone;
- ``POST /v1/integrations/super-accountant/sync-runs``: plan and queue the batches now;
- ``GET /v1/integrations/super-accountant/batches``: every batch and what became of it;
- ``POST /v1/financial-reports/submit {period}``: build the month's P&L from the read models and queue
  its submission (202); ``GET /v1/financial-reports/{id}``: the report and the accountant's answer.

Every route is the caller's tenant's; another college's batches and reports are a 404.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures.
import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, time
from typing import Annotated, Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from fastapi import APIRouter, Depends, Query, Request
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from starlette.concurrency import run_in_threadpool

from connectors.errors import ConnectorError
from connectors.super_accountant import sync
from connectors.super_accountant.client import PROVIDER
from connectors.super_accountant.mapping import report_payload
from connectors.super_accountant.settings import COLLEGE_ID
from engine import db, financial_reports, integrations
from engine.api.contract import ErrorBody
from engine.api.errors import ApiError
from engine.api.principal import principal_of
from engine.application import LedgerService
from engine.config import Settings
from engine.security.secrets import KeyRing

BASE = f"/v1/integrations/{PROVIDER}"
NOT_CONFIGURED: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "super-accountant is not configured (or not enabled) for this college",
    }
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No such report"}}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "model": ErrorBody,
        "description": "Stored, not yet queued: Kafka is unavailable; it is queued later",
    }
}
_RUN_AT = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])", re.ASCII)


@functools.cache
def _zones() -> frozenset[str]:
    # available_timezones() scans the tz database on every call; the set does not change while we run.
    return frozenset(available_timezones())


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool = True
    run_at: str = Field(default="02:00", description="Local time of day, HH:MM (the seed: 2:00 AM)")
    timezone: str = Field(
        default=sync.DEFAULT_TIMEZONE, max_length=64, description="IANA zone, e.g. Asia/Kolkata"
    )

    @field_validator("run_at")
    @classmethod
    def _time(cls, value: str) -> str:
        if not _RUN_AT.fullmatch(value):
            raise ValueError("run_at is HH:MM, 00:00 to 23:59")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value not in _zones():
            raise ValueError("timezone is an IANA time zone name such as Asia/Kolkata")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("timezone is an IANA time zone name such as Asia/Kolkata") from exc
        return value


class ReportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period: str = Field(max_length=7, description="The month, YYYY-MM")


def _not_configured() -> ApiError:
    return ApiError(
        409, "integration_not_configured", f"{PROVIDER} is not configured and enabled for this college"
    )


def _schedule_view(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"enabled": False, "run_at": "02:00", "timezone": sync.DEFAULT_TIMEZONE, "last_run_on": None}
    return {
        "enabled": row["enabled"],
        "run_at": row["run_at"].strftime("%H:%M"),
        "timezone": row["timezone"],
        "last_run_on": row["last_run_on"].isoformat() if row["last_run_on"] else None,
    }


def report_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["report_id"]),
        "period": row["period"],
        "status": row["status"],
        "report": row["report"],
        "submission_id": row["submission_id"],
        "next_action": row["next_action"],
        "duplicate": row["duplicate"],
        "error": row["error"],
        "requested_by": row["requested_by"],
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Any],
    service: Callable[..., Any],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    router = APIRouter(tags=["super-accountant"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806

    def college_of(svc: LedgerService, tenant_id: UUID) -> str:
        with db.transaction(svc.pool) as conn:
            loaded = integrations.load(conn, key_ring(), tenant_id, PROVIDER)
        if loaded is None or not loaded.enabled:
            raise _not_configured()
        return loaded.credentials.get(COLLEGE_ID, "")

    async def queue_or_503(svc: LedgerService, jobs: list[Any]) -> None:
        try:
            await sync.queue(settings, jobs)
        except Exception as exc:  # Kafka's client raises many kinds; the row waits for the scheduler
            raise ApiError(
                503, "queue_unavailable", "stored, but Kafka is unavailable: it is queued again shortly"
            ) from exc
        with db.transaction(svc.pool) as conn:
            sync.mark_published(conn, jobs)

    @router.get(f"{BASE}/schedule", summary="The daily expense sync's schedule")
    def get_schedule(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT * FROM super_accountant_schedules WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
        return _schedule_view(row)

    @router.put(f"{BASE}/schedule", summary="Set the daily expense sync's time and zone")
    def put_schedule(body: Schedule, request: Request, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        hour, minute = (int(p) for p in body.run_at.split(":"))
        with db.transaction(svc.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "INSERT INTO super_accountant_schedules (tenant_id, enabled, run_at, timezone, updated_by)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE SET"
                " enabled = excluded.enabled, run_at = excluded.run_at, timezone = excluded.timezone,"
                " updated_by = excluded.updated_by,"
                " updated_at = now() RETURNING *",
                (tenant_id, body.enabled, time(hour, minute), body.timezone, principal_of(request).actor),
            ).fetchone()
        return _schedule_view(row)

    @router.post(
        f"{BASE}/sync-runs",
        status_code=202,
        summary="Plan and queue the expense batches now",
        responses={**NOT_CONFIGURED, **UNAVAILABLE},
    )
    async def run_now(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        college_id = await run_in_threadpool(college_of, svc, tenant_id)

        def planned() -> sync.PlannedRun:
            with db.transaction(svc.pool) as conn:
                return sync.plan(conn, tenant_id, college_id, "manual")

        run = await run_in_threadpool(planned)
        await queue_or_503(svc, [sync.batch_job(tenant_id, b["batch_id"]) for b in run.batches])
        return run.document()

    @router.get(f"{BASE}/batches", summary="The expense batches, newest first")
    def batches(
        tenant_id: Tenant, svc: Service, limit: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT * FROM super_accountant_batches WHERE tenant_id = %s"
                " ORDER BY created_at DESC, seq LIMIT %s",
                (tenant_id, limit),
            ).fetchall()
            refused = cur.execute(
                "SELECT expense_number, reason FROM super_accountant_expenses WHERE tenant_id = %s"
                " AND status = 'refused' ORDER BY expense_number LIMIT 1000",
                (tenant_id,),
            ).fetchall()
        return {"batches": [sync.batch_view(r) for r in rows], "refused": [dict(r) for r in refused]}

    @router.post(
        "/v1/financial-reports/submit",
        status_code=202,
        summary="Build the month's P&L and submit it to the consolidating accountant",
        responses={**NOT_CONFIGURED, **UNAVAILABLE},
    )
    async def submit(
        body: ReportRequest, request: Request, tenant_id: Tenant, svc: Service
    ) -> dict[str, Any]:
        bounds = financial_reports.month_bounds(body.period)
        if bounds is None:
            raise ApiError(422, "invalid_period", "period is a month, YYYY-MM", {"period": body.period[:20]})
        if bounds[0] > datetime.now(UTC).date():
            raise ApiError(
                422, "period_in_future", "a month that has not begun has no P&L", {"period": body.period}
            )
        college_id = await run_in_threadpool(college_of, svc, tenant_id)
        actor = principal_of(request).actor

        def stored() -> dict[str, Any]:
            with db.transaction(svc.pool) as conn:
                report = financial_reports.build(conn, tenant_id, body.period)
                now = datetime.now(UTC)
                try:
                    payload = report_payload(
                        college_id, body.period, report, generated_at=now, generated_by=actor
                    )
                except ConnectorError as exc:
                    raise ApiError(422, exc.code, exc.message, exc.details) from exc
                with conn.cursor(row_factory=dict_row) as cur:
                    row = cur.execute(
                        "INSERT INTO super_accountant_reports (report_id, tenant_id, period, report, payload,"
                        " status, requested_by, created_at) VALUES (%s, %s, %s, %s, %s, 'queued', %s, %s)"
                        " RETURNING *",
                        (uuid4(), tenant_id, body.period, Jsonb(report), Jsonb(payload), actor, now),
                    ).fetchone()
            assert row is not None
            return dict(row)

        row = await run_in_threadpool(stored)
        await queue_or_503(svc, [sync.report_job(tenant_id, row["report_id"])])
        return report_view(row)

    @router.get(
        "/v1/financial-reports/{report_id}",
        summary="A submitted report and the accountant's answer",
        responses=NOT_FOUND,
    )
    def report(report_id: UUID, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT * FROM super_accountant_reports WHERE report_id = %s AND tenant_id = %s",
                (report_id, tenant_id),
            ).fetchone()
        if row is None:
            raise ApiError(404, "not_found", "no such financial report", {"report_id": str(report_id)})
        return report_view(row)

    return router
