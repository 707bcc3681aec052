"""``/v1/products``: the tenant's catalogue (issue 13). Create, update (PATCH: only the fields
given), list (SKU order, cursor = the last SKU seen) and get. Every change is a Product event on
``ledger.product.v1``; the shop sync (connectors/veekaart) pushes from the same catalogue."""

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from engine import catalogue, db
from engine.api.contract import ErrorBody
from engine.api.errors import ApiError
from engine.application import LedgerService
from engine.commands import Money, Quantity, Rate, Text
from engine.fields import SafeStr
from engine.tax.india_gst import today_in_india

# SKUs travel in URLs and shop feeds: printable ASCII without spaces, as most shop platforms accept.
Sku = Annotated[SafeStr, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._/-]+$")]
Hsn = Annotated[SafeStr, StringConstraints(min_length=2, max_length=8, pattern=r"^[0-9]+$")]
Description = Annotated[SafeStr, StringConstraints(max_length=2000)]
Unit = Annotated[SafeStr, StringConstraints(min_length=1, max_length=8)]
Status = Literal["active", "inactive"]


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: Text
    description: Description | None = None
    hsn: Hsn
    gst_rate: Rate | None = Field(None, description="percent; the rate master's when omitted and unique")
    price: Money
    mrp: Money | None = None
    stock: Quantity = Decimal("0")
    unit: Unit = "NOS"
    status: Status = "active"


class ProductUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text | None = None
    description: Description | None = None
    hsn: Hsn | None = None
    gst_rate: Rate | None = None
    price: Money | None = None
    mrp: Money | None = None
    stock: Quantity | None = None
    unit: Unit | None = None
    status: Status | None = None


def _product_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError as exc:
        raise ApiError(404, "not_found", "no such product") from exc


def build_router(current_tenant: Callable[..., Any], service: Callable[..., Any]) -> APIRouter:
    router = APIRouter(tags=["products"])
    Tenant = Annotated[UUID, Depends(current_tenant)]  # noqa: N806
    Service = Annotated[LedgerService, Depends(service)]  # noqa: N806
    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "No such product for this tenant"},
        409: {"model": ErrorBody, "description": "SKU taken, or a concurrent change"},
        422: {"model": ErrorBody, "description": "Invalid field, HSN not in the master, rate not of the HSN"},
    }

    @router.post("/v1/products", status_code=201, summary="Add a catalogue item", responses=errors)
    async def create(
        body: ProductCreate, tenant_id: Tenant, svc: Service, response: Response
    ) -> dict[str, Any]:
        day = today_in_india(datetime.now(UTC))
        product = await run_in_threadpool(catalogue.create_product, svc, tenant_id, body.model_dump(), day)
        response.headers["Location"] = f"/v1/products/{product.id}"
        return catalogue.product_view(product)

    @router.patch("/v1/products/{product_id}", summary="Change a catalogue item", responses=errors)
    async def update(product_id: str, body: ProductUpdate, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        parsed = _product_id(product_id)
        changes = body.model_dump(exclude_unset=True)
        # description and mrp may be cleared with null; the other fields are required on an item.
        for name in [n for n, v in changes.items() if v is None and n not in ("description", "mrp")]:
            raise ApiError(
                422,
                "validation_failed",
                f"{name}: cannot be null",
                {"fields": [{"path": name, "code": "null", "message": "cannot be null"}]},
            )
        day = today_in_india(datetime.now(UTC))
        product = await run_in_threadpool(catalogue.update_product, svc, tenant_id, parsed, changes, day)
        return catalogue.product_view(product)

    @router.get("/v1/products/{product_id}", summary="A catalogue item", responses=errors)
    def get(product_id: str, tenant_id: Tenant, svc: Service) -> dict[str, Any]:
        return catalogue.product_view(catalogue.load_product(svc, tenant_id, _product_id(product_id)))

    @router.get("/v1/products", summary="The catalogue, in SKU order")
    def list_(
        tenant_id: Tenant,
        svc: Service,
        status: Status | None = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        with db.transaction(svc.pool) as conn:
            items, more = catalogue.list_products(
                conn, tenant_id, status=status, after_sku=cursor, limit=limit
            )
        return {"items": items, "next": more}

    return router
