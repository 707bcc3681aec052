"""``/v1/alerts``: the tenant's alerts and who gets them by email (docs/integrations.md "Alerts").

``GET /v1/alerts`` lists what ``ledger.alert.v1`` carried for the caller's tenant (kept by the alert
worker, streams/alerts.py), newest first. ``GET|PUT /v1/alerts/policy`` reads and replaces the
tenant's email policy (engine/alert_policy.py). Everything is scoped to the caller's tenant.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures, whose
# dependencies are local to build_router.
from collections.abc import Callable
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from engine import alert_policy, db
from engine.api.errors import ApiError
from engine.application import LedgerService

Severity = Literal["info", "warning", "critical"]


class EmailRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_severity: Severity = Field(description="Alerts of this severity or higher are emailed.")
    recipients: list[Annotated[str, Field(max_length=254)]] = Field(
        min_length=1, max_length=alert_policy.MAX_RECIPIENTS
    )


class PolicyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: list[EmailRule] = Field(default_factory=list, max_length=alert_policy.MAX_RULES)


def build_router(current_tenant: Callable[..., Any], service: Callable[..., Any]) -> APIRouter:
    router = APIRouter(tags=["alerts"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806

    @router.get("/v1/alerts/policy", summary="Who gets which alerts by email")
    def get_policy(tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            return alert_policy.load(conn, tenant_id)

    @router.put("/v1/alerts/policy", summary="Replace who gets which alerts by email")
    def put_policy(body: PolicyRequest, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        try:
            with db.transaction(svc.pool) as conn:
                return alert_policy.save(conn, tenant_id, [r.model_dump() for r in body.email])
        except alert_policy.InvalidPolicy as exc:
            fields = [{"path": v.path, "code": v.code, "message": v.message} for v in exc.violations]
            raise ApiError(422, "invalid_policy", str(exc), {"fields": fields}) from exc

    @router.get("/v1/alerts", summary="The tenant's alerts, newest first")
    def list_alerts(
        tenant_id: Tenant,
        svc: Service,
        limit: Annotated[int, Query(ge=1, le=alert_policy.MAX_PAGE)] = 50,
        cursor: Annotated[UUID | None, Query()] = None,
        min_severity: Annotated[Severity | None, Query()] = None,
    ) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            return alert_policy.list_alerts(
                conn, tenant_id, limit=limit, cursor=cursor, min_severity=min_severity
            )

    return router
