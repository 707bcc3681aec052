"""gstin-lookup: the standard connector suite, then the taxpayer search's own contract, over HTTP."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from starlette.types import ASGIApp

from connectors import gstin_lookup
from connectors.errors import NeedsAttentionError, PermanentError
from connectors.gstin_lookup.client import SEARCH_PATH, LookupClient, LookupCredentials
from connectors.gstin_lookup.sandbox import ACTIVE, CANCELLED, COMPOSITION, SandboxAccount, create_app
from engine.tax.gstin import check_character
from tests.connectors.contract import (
    ConnectorContract,
    ConnectorSettingsContract,
    LiveServer,
    Operator,
    SandboxFixtures,
)

ACCOUNT = SandboxAccount()
CREDENTIALS = LookupCredentials(ACCOUNT.client_id, ACCOUNT.client_secret)
UNREGISTERED = "29AAACZ9999Q1Z" + check_character("29AAACZ9999Q1Z")


class GstinLookupHarness:
    effect = "taxpayer_searched"
    effect_path = SEARCH_PATH

    def create_app(self) -> ASGIApp:
        return create_app(account=ACCOUNT)

    def client(self, base_url: str, timeout: httpx.Timeout) -> LookupClient:
        return LookupClient(base_url, CREDENTIALS, timeout=timeout)

    async def probe(self, client: LookupClient) -> None:
        await client.authenticate(force=True)

    async def perform_effect(self, client: LookupClient, n: int) -> None:
        await client.search(ACTIVE)

    def secrets(self) -> list[str]:
        return [ACCOUNT.client_secret]


class TestGstinLookupContract(ConnectorContract):
    harness = GstinLookupHarness()


class GstinLookupSettingsHarness:
    connector = gstin_lookup.CONNECTOR

    def create_app(self) -> ASGIApp:
        return create_app(account=ACCOUNT)

    def credentials(self) -> dict[str, str]:
        return ACCOUNT.credentials()

    def wrong_credentials(self) -> dict[str, str]:
        return {**ACCOUNT.credentials(), "client_secret": "not-the-secret"}


class TestGstinLookupSettings(ConnectorSettingsContract):
    harness = GstinLookupSettingsHarness()


class TestGstinLookupSearch(SandboxFixtures):
    harness = GstinLookupHarness()

    async def test_an_active_taxpayer_is_found_with_its_registration(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with LookupClient(server.url, CREDENTIALS) as client:
            found = await client.search(ACTIVE.lower())

        assert found is not None and found.active
        assert (found.gstin, found.legal_name, found.taxpayer_type) == (
            ACTIVE,
            "Demo Electricals Private Limited",
            "Regular",
        )
        assert found.registered_on == date(2017, 7, 1) and found.cancelled_on is None

    async def test_a_cancelled_registration_says_so_and_when(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with LookupClient(server.url, CREDENTIALS) as client:
            cancelled = await client.search(CANCELLED)
            composition = await client.search(COMPOSITION)

        assert cancelled is not None and not cancelled.active
        assert (cancelled.status, cancelled.cancelled_on) == ("Cancelled", date(2024, 3, 31))
        assert composition is not None and composition.taxpayer_type == "Composition"

    async def test_a_valid_gstin_nobody_holds_is_not_found(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with LookupClient(server.url, CREDENTIALS) as client:
            assert await client.search(UNREGISTERED) is None

        assert sandbox.stats()["effects"]["taxpayer_searched"] == 1

    async def test_a_malformed_gstin_is_refused_without_a_billed_search(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        wrong_check = ACTIVE[:14] + ("0" if ACTIVE[14] != "0" else "1")
        async with LookupClient(server.url, CREDENTIALS) as client:
            for bad in (wrong_check, "29AAGCB7383J1Z", "not a gstin"):
                with pytest.raises(PermanentError) as caught:
                    await client.search(bad)
                assert caught.value.code == "invalid_gstin", bad

        assert sandbox.stats()["requests"] == 0

    async def test_wrong_credentials_are_refused_and_need_a_person(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        wrong = LookupCredentials(ACCOUNT.client_id, "not-the-secret")
        async with LookupClient(server.url, wrong) as client:
            with pytest.raises(NeedsAttentionError) as caught:
                await client.search(ACTIVE)

        assert caught.value.code == "http_401"
        assert "not-the-secret" not in f"{caught.value} {caught.value.details}"
        assert sandbox.stats()["effects"]["taxpayer_searched"] == 0

    async def test_an_expired_token_is_renewed_once_without_failing_the_search(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with LookupClient(server.url, CREDENTIALS) as client:
            await client.search(ACTIVE)
            sandbox.clock(advance_s=2 * 3600)  # past the sandbox token's hour; the client still trusts it
            found = await client.search(ACTIVE)

        assert found is not None
        assert sandbox.stats()["paths"] == {"/commonapi/v1.0/authenticate": 2, SEARCH_PATH: 3}
