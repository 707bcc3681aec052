"""gstin-lookup: the standard connector suite, then the taxpayer search's own contract, over HTTP."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from starlette.types import ASGIApp

from connectors import gstin_lookup
from connectors.catalogue import endpoint_policy
from connectors.errors import NeedsAttentionError, PermanentError, RetryableError
from connectors.gstin_lookup import store
from connectors.gstin_lookup.client import SEARCH_PATH, LookupClient, LookupCredentials
from connectors.gstin_lookup.routes import ISSUED
from connectors.gstin_lookup.sandbox import (
    ACTIVE,
    BUYER,
    CANCELLED,
    COMPOSITION,
    SUSPENDED,
    SandboxAccount,
    create_app,
)
from engine import integrations
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.publishing import invoice_document
from engine.security.secrets import load_key_ring
from engine.tax.gstin import check_character
from streams.connectors.jobs import Job
from tests.connectors.contract import (
    ConnectorContract,
    ConnectorJobContract,
    ConnectorSettingsContract,
    LiveServer,
    Operator,
    SandboxFixtures,
)
from tests.integration.helpers import invoice_body

ACCOUNT = SandboxAccount()
CREDENTIALS = LookupCredentials(ACCOUNT.client_id, ACCOUNT.client_secret)
UNREGISTERED = "29AAACZ9999Q1Z" + check_character("29AAACZ9999Q1Z")
SELLER = "27AAGCB7383J1Z8"


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

    async def test_a_suspended_registration_and_the_address_and_constitution_come_through(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with LookupClient(server.url, CREDENTIALS) as client:
            suspended = await client.search(SUSPENDED)
            buyer = await client.search(BUYER)

        assert suspended is not None and not suspended.active
        assert (suspended.status, suspended.business_type) == ("Suspended", "Limited Liability Partnership")
        assert suspended.address is None  # the record carries no address parts
        assert buyer is not None and buyer.business_type == "Private Limited Company"
        assert buyer.address == "221, Linking Road, Bandra West, Mumbai Suburban, Maharashtra, 400050"

    async def test_an_operator_can_cancel_a_taxpayer_and_reset_restores_the_records(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        changed = httpx.put(
            f"{server.url}/_sandbox/taxpayers/{BUYER.lower()}",
            json={"lgnm": "Reliable Traders Private Limited", "sts": "Cancelled", "cxdt": "01/10/2026"},
        )
        assert changed.status_code == 200, changed.text
        assert httpx.put(f"{server.url}/_sandbox/taxpayers/{BUYER}", json={"sts": "x"}).status_code == 400
        assert httpx.put(f"{server.url}/_sandbox/taxpayers/NOT-A-GSTIN", json={}).status_code == 400
        assert httpx.delete(f"{server.url}/_sandbox/taxpayers/{ACTIVE}").json() == {"removed": True}
        async with LookupClient(server.url, CREDENTIALS) as client:
            cancelled = await client.search(BUYER)
            assert await client.search(ACTIVE) is None
            assert cancelled is not None
            assert (cancelled.status, cancelled.cancelled_on) == ("Cancelled", date(2026, 10, 1))

            sandbox.reset()
            restored = await client.search(BUYER)
            assert restored is not None and restored.active
            assert await client.search(ACTIVE) is not None

    async def test_an_outage_on_the_search_is_retryable_with_its_retry_after(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.faults(outage=True, retry_after_s=9, paths=[SEARCH_PATH])
        async with LookupClient(server.url, CREDENTIALS) as client:
            with pytest.raises(RetryableError) as caught:
                await client.search(ACTIVE)

        assert caught.value.retry_after == 9
        assert sandbox.stats()["effects"]["taxpayer_searched"] == 0


class GstinLookupJobHarness:
    """gstin-lookup as the engine runs it: a seller with the search configured, an issued B2B
    invoice, its buyer-verification job."""

    connector = gstin_lookup.CONNECTOR
    effect = "taxpayer_searched"

    def create_app(self) -> ASGIApp:
        return create_app(account=ACCOUNT)

    def credentials(self) -> dict[str, str]:
        return ACCOUNT.credentials()

    def wrong_credentials(self) -> dict[str, str]:
        return {**ACCOUNT.credentials(), "client_secret": "not-the-secret"}

    def prepare(self, service: LedgerService, settings: Settings, base_url: str) -> tuple[UUID, Job]:
        tenant = service.register_tenant(
            name="Seller", legal_name="Seller Private Limited", country="IN", gstin=SELLER, state="27"
        ).tenant_id
        with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
            integrations.save(
                conn,
                load_key_ring(settings.var_dir),
                tenant,
                "gstin-lookup",
                enabled=True,
                environment="sandbox",
                base_url=base_url,
                credentials=ACCOUNT.credentials(),
                endpoints=endpoint_policy("gstin-lookup"),
                mode=settings.mode,
            )
        invoice = service.issue_invoice(tenant, IssueInvoice.model_validate(invoice_body())).invoice
        record = {**invoice_document(invoice, invoice.id), "tenant_id": str(tenant)}
        [job] = gstin_lookup.CONNECTOR.routes(ISSUED, f"contract-{invoice.id}", record)
        return tenant, job

    def _check(self, settings: Settings, job: Job) -> dict[str, Any] | None:
        with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
            return store.invoice_check(conn, UUID(job.tenant_id), UUID(job.subject))

    def results(self, service: LedgerService, job: Job) -> list[str]:
        check = self._check(service.settings, job)
        if check is None:
            return []
        return ["failed" if check["outcome"] == "unverified" else "result"]

    def failure(self, service: LedgerService, job: Job) -> dict[str, Any] | None:
        check = self._check(service.settings, job)
        return check["failure"] if check is not None else None

    def unclassified_answer(self) -> tuple[int, dict[str, Any]]:
        # 200 without a token: an answer nobody classified, so a person looks.
        return 200, {"status_cd": "9", "error": {"error_cd": "XYZ999", "message": "nobody knows"}}


class TestGstinLookupJobs(ConnectorJobContract):
    harness = GstinLookupJobHarness()
