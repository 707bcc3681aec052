"""The VeeKaart shop sandbox: the partner API's bulk product, inventory and pricing endpoints (with
the shop's validation, per item; 429s from the shared fault kit), and an order sender that signs
(or presents the partner API key), retries, and duplicates deliveries, sequentially or all at once.

Run: ``python -m connectors.veekaart.sandbox --port 9108``. Operator endpoints besides the kit's:
``GET /_sandbox/shop`` (what the shop holds, and how often each SKU was written) and
``POST /_sandbox/orders`` (send an order webhook).
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

import httpx
import orjson
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from connectors.sandbox_kit import SandboxKit
from connectors.veekaart.client import BATCH
from connectors.veekaart.signature import SIGNATURE_HEADER, signature

# The rates the sandbox shop accepts: the GST slabs and the special rates for stones and metals (the
# rate master's rates); anything else is refused per item, as a shop would.
SHOP_TAX_RATES = {Decimal(r) for r in ("0", "0.25", "1.5", "3", "5", "12", "18", "28", "40")}


@dataclass(frozen=True)
class SandboxAccount:
    api_key: str = "vk_test_api_key"


class OrderDelivery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    order: dict[str, Any]
    auth: Literal["signature", "api_key"] = "signature"
    secret: str = ""
    partner_api_key: str = ""
    copies: Annotated[int, Field(ge=1, le=50)] = 1
    """The same delivery, byte for byte, this many times (the shop's at-least-once retries)."""
    concurrent: bool = False
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Per copy: resend after a 5xx or no answer, at most this often."""


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return Decimal(repr(value))


def _problems(feed: str, item: Any) -> list[tuple[str, str]]:
    """The shop's per-item validation: (field, message) of each problem."""
    if not isinstance(item, dict):
        return [("item", "not an object")]
    problems: list[tuple[str, str]] = []
    sku = item.get("sku")
    if not isinstance(sku, str) or not sku or len(sku) > 64:
        problems.append(("sku", "required, 1-64 characters"))
    numbers: dict[str, tuple[str, ...]] = {
        "products": ("price", "tax_rate"),
        "inventory": ("quantity", "reserved_quantity", "available_quantity"),
        "pricing": ("selling_price", "tax_rate", "discount_percentage"),
    }
    for name in numbers[feed]:
        amount = _number(item.get(name))
        if amount is None or amount < 0:
            problems.append((name, "required, a non-negative number"))
    if feed == "products":
        if not isinstance(item.get("name"), str) or not item["name"].strip():
            problems.append(("name", "required"))
        hsn = item.get("hsn_sac_code")
        if not isinstance(hsn, str) or not hsn.isdigit() or not 4 <= len(hsn) <= 8:
            problems.append(("hsn_sac_code", "4 to 8 digits"))
        if item.get("status") not in ("active", "inactive"):
            problems.append(("status", "active or inactive"))
    if feed in ("products", "pricing"):
        rate = _number(item.get("tax_rate"))
        if rate is not None and rate not in SHOP_TAX_RATES:
            problems.append(("tax_rate", "not a GST rate"))
        mrp = item.get("mrp")
        price = _number(item.get("price" if feed == "products" else "selling_price"))
        if mrp is not None and (_number(mrp) is None or (price is not None and price > (_number(mrp) or 0))):
            problems.append(("mrp", "a number not below the price"))
    return problems


def create_app(account: SandboxAccount | None = None) -> FastAPI:
    account = account or SandboxAccount()
    kit = SandboxKit(effects=("products_written", "inventory_written", "pricing_written", "order_sent"))
    app = FastAPI(title="VeeKaart sandbox")
    shop: dict[str, dict[str, dict[str, Any]]] = {"products": {}, "inventory": {}, "pricing": {}}
    writes: Counter[str] = Counter()

    def reset() -> None:
        for feed in shop.values():
            feed.clear()
        writes.clear()

    kit.on_reset(reset)

    def authorised(authorization: str | None) -> None:
        if authorization != f"Bearer {account.api_key}":
            raise HTTPException(401, "invalid API key")

    @app.exception_handler(HTTPException)
    async def shop_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"success": False, "error": exc.detail}, exc.status_code)

    @app.get("/api/v1/store")
    async def store(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        authorised(authorization)
        return {"success": True, "store": {"name": "VeeKaart sandbox store"}}

    @app.post("/api/v1/{feed}/bulk")
    async def bulk(
        feed: str, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        authorised(authorization)
        if feed not in shop:
            raise HTTPException(404, "no such feed")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, "the body is not JSON") from exc
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or len(items) > BATCH:
            raise HTTPException(400, f"items: 1 to {BATCH} objects")
        accepted: list[str] = []
        rejected: list[dict[str, str]] = []
        for item in items:
            problems = _problems(feed, item)
            sku = str(item.get("sku")) if isinstance(item, dict) else "None"
            if problems:
                rejected += [{"sku": sku, "field": f, "message": m} for f, m in problems]
                continue
            shop[feed][sku] = item
            writes[f"{feed}:{sku}"] += 1
            kit.record_effect(f"{feed}_written")
            accepted.append(sku)
        return {"success": True, "accepted": accepted, "rejected": rejected}

    @app.get("/_sandbox/shop")
    async def shop_state() -> dict[str, Any]:
        return {**shop, "writes": dict(writes)}

    @app.post("/_sandbox/orders")
    async def send_order(request: OrderDelivery) -> dict[str, Any]:
        body = orjson.dumps(request.order)
        headers = {"Content-Type": "application/json"}
        if request.auth == "signature":
            headers[SIGNATURE_HEADER] = signature(request.secret, body)
        else:
            headers["Authorization"] = f"Bearer {request.partner_api_key}"
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=30.0)) as client:

            async def one_copy() -> list[int | None]:
                statuses: list[int | None] = []
                for _ in range(request.max_attempts):
                    try:
                        response = await client.post(request.url, content=body, headers=headers)
                        status: int | None = response.status_code
                    except httpx.HTTPError:
                        status = None
                    kit.record_effect("order_sent")
                    statuses.append(status)
                    if status is not None and status < 500:
                        break
                return statuses

            if request.concurrent:
                attempts = list(await asyncio.gather(*(one_copy() for _ in range(request.copies))))
            else:
                attempts = [await one_copy() for _ in range(request.copies)]
        last = attempts[-1][-1]
        return {"attempts": attempts, "last_status": last}

    kit.install(app)
    return app


def main() -> None:  # pragma: no cover - the process entry point
    parser = argparse.ArgumentParser(description="VeeKaart shop sandbox")
    parser.add_argument("--port", type=int, default=9108)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
