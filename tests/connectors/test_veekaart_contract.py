"""veekaart: the standard connector suite (client half and settings half), then the shop API's own
contract over HTTP: per-item validation, batch limits, and 429s waited out as Retry-After says."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from connectors import veekaart
from connectors.errors import NeedsAttentionError, PermanentError, RetryableError
from connectors.veekaart import mapping
from connectors.veekaart.client import MAX_THROTTLED, VeeKaartClient
from connectors.veekaart.sandbox import SandboxAccount, create_app
from tests.connectors.contract import (
    ConnectorContract,
    ConnectorSettingsContract,
    LiveServer,
    Operator,
    SandboxFixtures,
)

ACCOUNT = SandboxAccount()


def item(n: int, **changes: Any) -> dict[str, Any]:
    doc = {
        "sku": f"SKU-{n}",
        "name": f"Item {n}",
        "description": None,
        "hsn": "6109",
        "gst_rate": "5",
        "price": "499.00",
        "mrp": "599.00",
        "stock": "7",
        "unit": "NOS",
        "status": "active",
        **changes,
    }
    return mapping.product_payload(doc)


class VeeKaartHarness:
    effect = "products_written"
    effect_path = "/api/v1/products"

    def create_app(self) -> ASGIApp:
        return create_app(ACCOUNT)

    def client(self, base_url: str, timeout: httpx.Timeout) -> VeeKaartClient:
        return VeeKaartClient(base_url, ACCOUNT.api_key, timeout=timeout)

    async def probe(self, client: VeeKaartClient) -> None:
        await client.store()

    async def perform_effect(self, client: VeeKaartClient, n: int) -> None:
        await client.push("products", [item(n)])

    def secrets(self) -> list[str]:
        return [ACCOUNT.api_key]


class TestVeeKaartContract(ConnectorContract):
    harness = VeeKaartHarness()


class VeeKaartSettingsHarness:
    connector = veekaart.CONNECTOR

    def create_app(self) -> ASGIApp:
        return create_app(ACCOUNT)

    def credentials(self) -> dict[str, str]:
        return {"api_key": ACCOUNT.api_key, "partner_api_key": "partner-key-1", "webhook_secret": "whsec-1"}

    def wrong_credentials(self) -> dict[str, str]:
        return {**self.credentials(), "api_key": "not-the-key"}


class TestVeeKaartSettingsContract(ConnectorSettingsContract):
    harness = VeeKaartSettingsHarness()


class TestVeeKaartShopApi(SandboxFixtures):
    harness = VeeKaartHarness()

    async def test_the_shop_rejects_bad_items_one_by_one_and_keeps_the_good_ones(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.client(server) as client:
            result = await client.push("products", [item(1), item(2, hsn="61"), {**item(3), "tax_rate": 7.0}])

        assert result.accepted == ["SKU-1"]
        assert {(r["sku"], r["field"]) for r in result.rejected} == {
            ("SKU-2", "hsn_sac_code"),
            ("SKU-3", "tax_rate"),
        }
        shop = sandbox.http.get("/_sandbox/shop").json()
        assert list(shop["products"]) == ["SKU-1"]

    async def test_a_batch_over_the_limit_is_refused_whole(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.client(server) as client:
            with pytest.raises(PermanentError) as caught:
                await client.push("products", [item(n) for n in range(101)])

        assert caught.value.code == "http_400"
        assert sandbox.stats()["effects"]["products_written"] == 0

    async def test_a_wrong_key_needs_attention(self, sandbox: Operator, server: LiveServer) -> None:
        async with VeeKaartClient(server.url, "wrong") as client:
            with pytest.raises(NeedsAttentionError):
                await client.push("products", [item(1)])

    async def test_429_is_waited_out_for_as_long_as_retry_after_says(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        sandbox.faults(rate_limit_rate=1.0, retry_after_s=2, max_faults=2)
        async with VeeKaartClient(server.url, ACCOUNT.api_key, sleep=sleep) as client:
            result = await client.push("products", [item(1)])

        assert waits == [2.0, 2.0]
        assert result.throttled == 2 and result.accepted == ["SKU-1"]
        assert sandbox.stats()["faults_injected"] == {"rate_limit": 2}

    async def test_a_shop_that_keeps_throttling_fails_the_push_as_retryable(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        sandbox.faults(rate_limit_rate=1.0, retry_after_s=1)
        async with VeeKaartClient(server.url, ACCOUNT.api_key, sleep=sleep) as client:
            with pytest.raises(RetryableError) as caught:
                await client.push("products", [item(1)])

        assert caught.value.code == "http_429" and len(waits) == MAX_THROTTLED
