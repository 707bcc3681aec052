"""quickbooks: the standard connector suite, then QuickBooks Online's own contract, over HTTP."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from starlette.types import ASGIApp

from connectors.errors import NeedsAttentionError, RetryableError
from connectors.quickbooks.client import QuickBooksClient
from connectors.quickbooks.sandbox import SandboxAccount, create_app
from tests.connectors.contract import ConnectorContract, LiveServer, Operator, SandboxFixtures

ACCOUNT = SandboxAccount()


async def static_token(force: bool) -> str:
    return ACCOUNT.static_access_token


class QuickBooksHarness:
    effect = "customer_created"
    effect_path = f"/v3/company/{ACCOUNT.realm_id}/customer"

    def create_app(self) -> ASGIApp:
        return create_app(ACCOUNT)

    def client(self, base_url: str, timeout: httpx.Timeout) -> QuickBooksClient:
        return QuickBooksClient(base_url, ACCOUNT.realm_id, static_token, timeout=timeout)

    async def probe(self, client: QuickBooksClient) -> None:
        await client.company_info()

    async def perform_effect(self, client: QuickBooksClient, n: int) -> None:
        await client.create("Customer", {"DisplayName": f"Customer {n}"}, f"contract-{n}")

    def secrets(self) -> list[str]:
        return [ACCOUNT.static_access_token]


class TestQuickBooksContract(ConnectorContract):
    harness = QuickBooksHarness()


class TestQuickBooksApi(SandboxFixtures):
    harness = QuickBooksHarness()

    async def test_a_repeated_request_id_gets_the_first_answer_and_does_nothing_twice(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.client(server) as client:
            first = await client.create("Customer", {"DisplayName": "Kaveri Foods LLP"}, "req-1")
            again = await client.create("Customer", {"DisplayName": "Kaveri Foods LLP"}, "req-1")
            with pytest.raises(RetryableError) as duplicate:
                await client.create("Customer", {"DisplayName": "Kaveri Foods LLP"}, "req-2")
        assert first == again
        assert sandbox.stats()["effects"]["customer_created"] == 1
        assert duplicate.value.code == "6240"

    async def test_an_update_with_a_stale_sync_token_is_refused_and_retryable(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.client(server) as client:
            customer = await client.create("Customer", {"DisplayName": "O'Brien & Sons"}, "c-1")
            updated = await client.sparse_update(
                "Customer", {"Id": customer["Id"], "SyncToken": "0", "CompanyName": "OB"}, "u-1"
            )
            with pytest.raises(RetryableError) as stale:
                await client.sparse_update(
                    "Customer", {"Id": customer["Id"], "SyncToken": "0", "CompanyName": "X"}, "u-2"
                )
            [found] = await client.query(
                "Customer", "select * from Customer where DisplayName = 'O\\'Brien & Sons'"
            )
        assert (updated["SyncToken"], updated["CompanyName"]) == ("1", "OB")
        assert stale.value.code == "5010"
        assert found["Id"] == customer["Id"]

    async def test_amounts_round_trip_exactly(self, sandbox: Operator, server: LiveServer) -> None:
        async with self.client(server) as client:
            customer = await client.create("Customer", {"DisplayName": "Exact"}, "c-1")
            item = await client.create(
                "Item", {"Name": "HSN 8504", "Type": "Service", "IncomeAccountRef": {"value": "79"}}, "i-1"
            )
            line = {
                "Amount": Decimal("999999999999.99"),
                "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
            }
            invoice = await client.create(
                "Invoice",
                {"DocNumber": "X-1", "CustomerRef": {"value": customer["Id"]}, "Line": [line]},
                "v-1",
            )
        assert Decimal(str(invoice["TotalAmt"])) == Decimal("999999999999.99")

    async def test_an_expired_access_token_is_refreshed_once_then_needs_a_person(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        asked: list[bool] = []

        async def expired(force: bool) -> str:
            asked.append(force)
            return "not-a-token"

        async with QuickBooksClient(server.url, ACCOUNT.realm_id, expired) as client:
            with pytest.raises(NeedsAttentionError) as refused:
                await client.company_info()
        assert asked == [False, True]
        assert refused.value.code == "3200"
        assert "not-a-token" not in str(refused.value)

    async def test_a_throttled_request_says_when_to_come_back(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.faults(rate_limit_rate=1.0, retry_after_s=60)

        async with self.client(server) as client:
            with pytest.raises(RetryableError) as throttled:
                await client.query("Customer", "select * from Customer")
        assert (throttled.value.code, throttled.value.retry_after) == ("http_429", 60.0)

    async def test_an_unparsable_query_is_a_fault_not_a_crash(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.client(server) as client:
            with pytest.raises(NeedsAttentionError) as refused:
                await client.query("Customer", "select * from Customer where DisplayName = 'x' or 1=1")
        assert refused.value.code == "4000"
