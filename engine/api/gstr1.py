"""``/v1/gst/gstr1``: generate a GSTR-1 from the event stream, submit it to the GST network, file it.

* ``POST /v1/gst/gstr1/generate {gstin, period}`` freezes the next version of the period's return
  from the ``gst_outward_supplies`` projection (engine/tax/gstr1.py builds it) and answers its
  summary: 201 for a new version, 200 when nothing changed since the latest one.
* ``GET /v1/gst/gstr1/{id}``: the summary, status, reference ids, refused documents, ARN.
* ``GET /v1/gst/gstr1/{id}/json?part=N``: the file to upload, exactly as frozen.
* ``POST /v1/gst/gstr1/{id}/submit``: a ``gstn-returns`` job saves it at the network and polls until
  processed; the return ends "ready_to_file" (saved and validated) or "rejected_records".
* ``POST /v1/gst/gstr1/{id}/file {otp}``: files with the taxpayer's EVC OTP and records the ARN.

Every return is its tenant's: another tenant's id answers 404 like a missing one.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Any
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from connectors.catalogue import checked_transport
from connectors.errors import ConnectorError, ErrorClass
from connectors.gstn_returns import errors as gstn_errors
from connectors.gstn_returns.client import PROVIDER, ReturnsClient
from connectors.gstn_returns.routes import queue, submit_job
from connectors.gstn_returns.settings import credentials_of
from engine import db, integrations
from engine.api.errors import ApiError
from engine.api.tenant import caller_of
from engine.application import LedgerService
from engine.config import Settings
from engine.domain.tax_return import (
    FORM_GSTR1,
    PERIOD,
    ReturnStateConflict,
    ReturnStatus,
    TaxReturn,
    period_key,
)
from engine.security.secrets import KeyRing
from engine.tax import gstr1
from engine.tax.errors import TaxRuleError
from engine.tax.gstin import validate_gstin
from engine.tax_return_snapshots import Baseline, document_digest
from engine.tax_returns import PeriodFiled, TaxReturns
from projections.gst_outward_supplies import iter_supplies
from projections.gstr1_build import build_return

IST = timezone(timedelta(hours=5, minutes=30), "IST")
# GST began on 1 July 2017 (CGST Act, 2017): no GSTR-1 period before it.
FIRST_PERIOD = (2017, 7)
STATUS_TEXT = {
    ReturnStatus.GENERATED: "generated, not submitted",
    ReturnStatus.SUBMITTED: "submitted, being saved at the GST network",
    ReturnStatus.SAVED: "saved at the GST network, being processed",
    ReturnStatus.READY_TO_FILE: "saved and validated, ready to file",
    ReturnStatus.REJECTED_RECORDS: "processed with errors: fix the documents listed and generate again",
    ReturnStatus.FILED: "filed",
    ReturnStatus.FAILED: "submission failed: see failure, fix the cause and submit again",
}


# Documented on each command (engine/api/contract.py adds the other error statuses to every route).
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "The return's state forbids it (filed period, superseded, not ready, not configured)"
    }
}


class GenerateReturn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gstin: str = Field(min_length=15, max_length=15, description="The tenant's own GSTIN")
    period: str = Field(min_length=6, max_length=6, description="Return period MMYYYY, e.g. 012026")


class FileReturn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    otp: str = Field(pattern=r"^[0-9]{6}$", description="The EVC OTP the GST portal sent the taxpayer")


def check_period(period: str, today: date) -> None:
    """A real month, not before GST began and not after the current one (IST)."""
    if not PERIOD.match(period):
        raise ApiError(422, "invalid_period", "period must be MMYYYY (month 01-12), e.g. 012026")
    key = period_key(period)
    if key < FIRST_PERIOD:
        raise ApiError(422, "invalid_period", "GST began in July 2017: no return period before 072017")
    if key > (today.year, today.month):
        raise ApiError(422, "invalid_period", f"{period} has not begun yet")


def view(tax_return: TaxReturn, base: str) -> dict[str, Any]:
    """The summary the API shows for one version."""
    submission = tax_return.submission
    return {
        "id": str(tax_return.id),
        "form": tax_return.form,
        "gstin": tax_return.gstin,
        "period": tax_return.period,
        "version": tax_return.version,
        "status": tax_return.status,
        "status_text": STATUS_TEXT.get(tax_return.status, tax_return.status),
        "content_hash": tax_return.content_hash,
        "parts": [
            {"part": n, "content_hash": h, "url": f"{base}/{tax_return.id}/json?part={n}"}
            for n, h in enumerate(tax_return.parts, start=1)
        ],
        "summary": tax_return.summary,
        "diff": tax_return.diff,
        "previous_id": tax_return.previous_id,
        "generated_at": tax_return.generated_at.isoformat(),
        "generated_by": tax_return.generated_by,
        "submission": None
        if submission is None
        else {
            "job_id": submission["job_id"],
            "submitted_by": submission["submitted_by"],
            "submitted_at": submission["submitted_at"].isoformat(),
        },
        "reference_ids": {str(k): v for k, v in sorted(tax_return.reference_ids.items())},
        "errors": tax_return.errors,
        "arn": tax_return.arn,
        "filed_at": None if tax_return.filed_at is None else tax_return.filed_at.isoformat(),
        "failure": tax_return.failure,
    }


def changes_since_filing(
    conn: psycopg.Connection, returns: TaxReturns, tenant_id: UUID, gstin: str, period: str
) -> tuple[list[gstr1.Amendment], list[gstr1.SupplyDocument], dict[str, list[dict[str, Any]]]]:
    """What changed in the periods filed before ``period`` since they were reported.

    Per filed period, its documents now (the projection) against the same documents as last
    reported (the snapshot of the filed version, or of a later filed return's amendment): a changed
    one is an Amendment (``original`` as reported, ``amended`` as now; a cancellation amends to zero),
    a document the filed return never saw (issued late, dated in the filed month) is reported in
    ``period`` as a document of its own date. Also the filed b2cs rows of each period with changes,
    which B2CSA rows revise (engine/tax/gstr1.py ``build_gstr1``)."""
    snapshots = returns.filed_snapshots(tenant_id, gstin, period)
    amendments: list[gstr1.Amendment] = []
    late: list[gstr1.SupplyDocument] = []
    filed_b2cs: dict[str, list[dict[str, Any]]] = {}
    for origin in sorted(snapshots, key=period_key):
        baselines = returns.baselines(conn, tenant_id, snapshots, origin)
        changed: list[tuple[gstr1.SupplyDocument, Baseline]] = []
        for doc in iter_supplies(conn, tenant_id, gstin, origin):
            baseline = baselines.get(doc.document_id)
            if baseline is None:
                late.append(doc)
            elif document_digest(doc) != baseline.digest:
                changed.append((doc, baseline))
        for doc, baseline in changed:
            original = returns.snapshot_document(conn, tenant_id, doc.document_id, baseline)
            amendments.append(gstr1.Amendment(original_period=origin, original=original, amended=doc))
        if changed:
            filed_b2cs[origin] = returns.b2cs_as_filed(tenant_id, gstin, origin, period)
    return amendments, late, filed_b2cs


def build_router(
    settings: Settings,
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
    key_ring: Callable[[], KeyRing],
) -> APIRouter:
    base = "/v1/gst/gstr1"
    router = APIRouter(prefix=base, tags=["gst"])

    @router.post(
        "/generate",
        summary="Freeze the next version of a period's GSTR-1",
        status_code=201,
        responses={200: {"description": "Nothing changed: the latest version"}, **CONFLICT},
    )
    def generate(
        body: GenerateReturn,
        request: Request,
        response: Response,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        try:
            gstin = validate_gstin(body.gstin, "gstin")
        except TaxRuleError as exc:
            raise ApiError(422, "invalid_gstin", exc.violations[0].message) from exc
        tenant = svc.get_tenant(tenant_id)
        if (tenant.gstin or "").upper() != gstin:
            raise ApiError(
                422, "gstin_not_yours", "a return can be generated only for the tenant's own GSTIN"
            )
        check_period(body.period, datetime.now(UTC).astimezone(IST).date())
        returns = TaxReturns(svc)
        if any(f.period == body.period for f in returns.filed_periods(tenant_id, gstin)):
            # Before building: a filed period takes no new version (TaxReturns.generate says so too).
            latest = returns.latest(tenant_id, gstin, body.period)
            raise PeriodFiled(
                f"GSTR-1 for {body.period} was filed: later changes go to the amendment sections of the"
                " next open period",
                {"return_id": None if latest is None else str(latest.id), "arn": latest and latest.arn},
            )
        with db.transaction(svc.pool) as conn:
            changes = changes_since_filing(conn, returns, tenant_id, gstin, body.period)
        built = build_return(svc.pool, tenant_id, gstin, body.period, changes)
        generation = returns.generate(
            tenant_id,
            gstin,
            body.period,
            parts=built,
            summary=built.summary,
            diff=gstr1.diff_summaries,
            generated_by=caller_of(request),
        )
        if not generation.created:
            response.status_code = 200
        return {**view(generation.tax_return, base), "created": generation.created}

    def _get(svc: LedgerService, tenant_id: UUID, return_id: UUID) -> TaxReturn:
        return TaxReturns(svc).get(tenant_id, return_id)

    @router.get("/{return_id}", summary="A return version: summary, status, errors, ARN")
    def get_return(
        return_id: UUID,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        return view(_get(svc, tenant_id, return_id), base)

    @router.get("/{return_id}/json", summary="The GSTN offline-tool JSON of one part, as frozen")
    def get_json(
        return_id: UUID,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
        part: Annotated[int, Query(ge=1, le=10_000)] = 1,
    ) -> Response:
        text = TaxReturns(svc).part(tenant_id, return_id, part)
        tax_return = _get(svc, tenant_id, return_id)
        filename = f"GSTR1_{tax_return.gstin}_{tax_return.period}_v{tax_return.version}_part{part}.json"
        return Response(
            text,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def _integration(svc: LedgerService, tenant_id: UUID) -> integrations.IntegrationSettings:
        with db.transaction(svc.pool) as conn:
            loaded = integrations.load(conn, key_ring(), tenant_id, PROVIDER)
        if loaded is None or not loaded.enabled:
            raise ApiError(
                409,
                "integration_not_configured",
                f"configure and enable the {PROVIDER} integration (PUT /v1/integrations/{PROVIDER}) first",
            )
        return loaded

    @router.post(
        "/{return_id}/submit",
        summary="Save the return at the GST network (a connector job)",
        status_code=202,
        responses=CONFLICT,
    )
    async def submit(
        return_id: UUID,
        request: Request,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        who = caller_of(request)

        def mark_submitted() -> tuple[TaxReturn, str]:
            _get(svc, tenant_id, return_id)  # 404 before anything else
            _integration(svc, tenant_id)
            try:
                return TaxReturns(svc).submit(tenant_id, return_id, who)
            except ReturnStateConflict as exc:
                raise ApiError(409, "return_state_conflict", str(exc), {"status": exc.status}) from exc

        # The event store and the pool are synchronous: off the event loop.
        tax_return, job_id = await run_in_threadpool(mark_submitted)
        try:
            await queue(settings, [submit_job(tax_return, job_id)])
        except Exception as exc:  # Kafka away: the return is marked submitted; asking again queues it
            raise ApiError(
                503, "unavailable", "the return is submitted but its job could not be queued: call again"
            ) from exc
        return view(tax_return, base)

    @router.post(
        "/{return_id}/file", summary="File the return with the taxpayer's EVC OTP", responses=CONFLICT
    )
    async def file(
        return_id: UUID,
        body: FileReturn,
        request: Request,
        tenant_id: Annotated[UUID, Depends(current_tenant)],
        svc: Annotated[LedgerService, Depends(service)],
    ) -> dict[str, Any]:
        returns = TaxReturns(svc)
        who = caller_of(request)

        def ready() -> tuple[TaxReturn, integrations.IntegrationSettings | None]:
            tax_return = _get(svc, tenant_id, return_id)
            if tax_return.status == ReturnStatus.FILED:
                return tax_return, None
            if tax_return.status != ReturnStatus.READY_TO_FILE:
                raise ApiError(
                    409,
                    "return_not_ready",
                    "only a return saved and validated by the GST network can be filed;"
                    f" this one is {tax_return.status}",
                    {"status": tax_return.status},
                )
            if not returns.is_latest(tax_return):
                raise ApiError(
                    409, "return_superseded", "a newer version of this period was generated: file that one"
                )
            return tax_return, _integration(svc, tenant_id)

        tax_return, loaded = await run_in_threadpool(ready)
        if loaded is None:  # filed already: its ARN again
            return view(tax_return, base)
        credentials, _ = _credentials(loaded.credentials)
        try:
            async with ReturnsClient(
                loaded.base_url,
                credentials,
                tax_return.gstin,
                transport=checked_transport(loaded, settings.mode),
            ) as client:
                arn = await client.file(tax_return.period, body.otp)
        except ConnectorError as exc:
            raise _filing_error(exc) from exc
        try:
            filed = await run_in_threadpool(
                lambda: returns.record_filed(tenant_id, return_id, arn=arn, filed_by=who)
            )
        except ReturnStateConflict as exc:
            raise ApiError(409, "return_state_conflict", str(exc), {"status": exc.status}) from exc
        return view(filed, base)

    return router


def _credentials(stored: Mapping[str, str]) -> Any:
    try:
        return credentials_of(dict(stored))
    except ConnectorError as exc:
        raise ApiError(409, "integration_not_configured", exc.message) from exc


def _filing_error(exc: ConnectorError) -> ApiError:
    """What the caller of ``file`` is told: the network's code, and whether calling again may help."""
    if exc.code == gstn_errors.INVALID_OTP:
        return ApiError(
            422, "invalid_otp", "the GST network refused the OTP: request a new one and try again"
        )
    if exc.error_class is ErrorClass.RETRYABLE:
        return ApiError(
            503,
            "gst_network_unavailable",
            "the GST network did not answer: try again shortly",
            {"code": exc.code},
            headers={"Retry-After": str(int(exc.retry_after or 30))},
        )
    if exc.error_class is ErrorClass.PERMANENT:
        return ApiError(422, "filing_refused", exc.message, {"code": exc.code})
    return ApiError(409, "integration_needs_attention", exc.message, {"code": exc.code})


__all__ = ["FORM_GSTR1", "build_router", "changes_since_filing", "check_period", "view"]
