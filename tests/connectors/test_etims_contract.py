"""etims: the standard connector suite, then eTIMS's own contract over HTTP against the sandbox:
one-time CMC keys (902 after), header checks, code lists since lastReqDt, the invcNo sequence (994 on
a repeat, a passed-over number unused for good), credit notes, VSCU, and a sale accepted after the
client gave up that the sales look-up finds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from connectors import etims
from connectors.errors import NeedsAttentionError, PermanentError, RetryableError
from connectors.etims import settings as etims_settings
from connectors.etims.client import PATHS, EtimsClient
from connectors.etims.errors import DeviceAlreadyInstalled, DuplicateSale, SaleLookupUnavailable
from connectors.etims.mapping import build_item_code, item_payload, sale_payload
from connectors.etims.sandbox import PreinstalledDevice, create_app
from connectors.etims.settings import InvalidCredentials
from engine.application import LedgerService
from engine.config import Settings
from engine.integrations import IntegrationSettings
from engine.security import connector_secrets
from engine.security.secrets import load_key_ring
from tests.connectors.contract import (
    FAST,
    ConnectorContract,
    ConnectorSettingsContract,
    LiveServer,
    Operator,
    SandboxFixtures,
)

PIN = "P051234567X"
BRANCH = "01"
SERIAL = "LF-CONTRACT-0001"
CMC_KEY = "5F1E0C9A7B3D2E4F6A8B0C1D2E3F4A5B6C7D8E9F"
OSCU_DEVICE = PreinstalledDevice(PIN, BRANCH, SERIAL, "oscu", CMC_KEY)
VSCU_KEY = "A1B2C3D4E5F60718293A4B5C6D7E8F9011223344"
VSCU_DEVICE = PreinstalledDevice(PIN, "02", "LF-CONTRACT-VSCU", "vscu", VSCU_KEY)
FUTURE = "20991231235959"
PAST = "20200101000000"
ITEM = build_item_code("KE", "2", "NT", "U", 1)
ITEM_CLASS = "5059690800"


def sale_record(number: str, *, credit_note: bool = False) -> dict[str, Any]:
    return {
        "number": number,
        "date": "2026-04-01",
        "document_type": "credit_note" if credit_note else "invoice",
        "refund_reason_code": "06" if credit_note else None,
        "payment_type": "01",
        "seller": {"kra_pin": PIN, "legal_name": "Duka Fresh Limited", "trade_name": "Duka Fresh"},
        "buyer": {"name": "Walk-in customer"},
        "lines": [
            {
                "line_no": 1,
                "item_code": ITEM,
                "description": "Maize flour 2kg",
                "quantity": "2",
                "unit_price": "100.00",
                "discount": "0",
                "tax_type": "B",
                "supply_amount": "200.00",
                "taxable_amount": "200.00",
                "tax_rate": "16",
                "tax_amount": "32.00",
                "total": "232.00",
            }
        ],
        "tax_breakdown": [{"tax_type": "B", "rate": "16", "taxable": "200.00", "tax": "32.00"}],
        "totals": {"taxable": "200.00", "vat": "32.00", "total": "232.00"},
    }


def sale(n: int, *, device_type: str = "oscu", credit_of: int | None = None) -> dict[str, Any]:
    return sale_payload(
        sale_record(f"KE-{n}", credit_note=credit_of is not None),
        invc_no=n,
        org_invc_no=credit_of,
        item_classes={ITEM: ITEM_CLASS},
        now=datetime.now(UTC),
        device_type=device_type,
    )


ITEM_PAYLOAD = item_payload(
    item_code=ITEM,
    item_class_code=ITEM_CLASS,
    name="Maize flour 2kg",
    origin="KE",
    tax_type="B",
    default_price="100",
)


def oscu(url: str, *, key: str | None = CMC_KEY, timeout: httpx.Timeout | float = 10.0) -> EtimsClient:
    return EtimsClient(url, device_type="oscu", tin=PIN, bhf_id=BRANCH, cmc_key=key, timeout=timeout)


def vscu(url: str, *, key: str | None = VSCU_KEY) -> EtimsClient:
    return EtimsClient(url, device_type="vscu", tin=PIN, bhf_id="02", cmc_key=key, timeout=10.0)


class EtimsHarness:
    effect = "sales_signed"
    effect_path = PATHS["oscu"].save_sale

    def create_app(self) -> ASGIApp:
        return create_app(preinstalled=[OSCU_DEVICE, VSCU_DEVICE])

    def client(self, base_url: str, timeout: httpx.Timeout) -> EtimsClient:
        return oscu(base_url, timeout=timeout)

    async def probe(self, client: EtimsClient) -> None:
        assert await client.code_list(FUTURE) == []  # 001: nothing newer, one request, no effect

    async def perform_effect(self, client: EtimsClient, n: int) -> None:
        await client.save_item(ITEM_PAYLOAD)
        await client.save_sale(sale(n))

    def secrets(self) -> list[str]:
        return [CMC_KEY]


class TestEtimsContract(ConnectorContract):
    harness = EtimsHarness()


class EtimsSettingsHarness:
    connector = etims.CONNECTOR

    def create_app(self) -> ASGIApp:
        return create_app()

    def credentials(self) -> dict[str, str]:
        return etims.demo_credentials()

    def wrong_credentials(self) -> dict[str, str]:
        return {**etims.demo_credentials(), "tin": "P05123456"}  # not a KRA PIN


class TestEtimsSettings(ConnectorSettingsContract):
    harness = EtimsSettingsHarness()

    def test_the_settings_never_echo_a_secret(
        self, settings: Settings, service: LedgerService, provider: LiveServer
    ) -> None:
        # eTIMS credentials are identifiers (PIN, branch, serial, device type); the one secret is the
        # CMC key KRA issues at initialisation, kept as a runtime secret. It must never surface here.
        from tests.integration.helpers import client_for, register_tenant

        assert not self.harness.connector.settings.secret_fields
        tenant_id, api_key = register_tenant(service)
        http = client_for(settings)
        http.headers["Authorization"] = f"Bearer {api_key}"
        body = {
            "enabled": True,
            "environment": "sandbox",
            "base_url": provider.url,
            "credentials": self.harness.credentials(),
        }
        assert http.put("/v1/integrations/etims", json=body).status_code == 200
        with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
            connector_secrets.put(
                conn,
                load_key_ring(settings.var_dir),
                UUID(tenant_id),
                "etims",
                f"cmc:sandbox:{BRANCH}",
                CMC_KEY.encode(),
            )
        answers = [
            http.get("/v1/integrations/etims").text,
            http.get("/v1/integrations").text,
            http.post("/v1/integrations/etims/test").text,
            str(self.harness.connector.settings.describe()),
        ]
        shown = http.get("/v1/integrations/etims").json()["credentials"]

        assert set(shown) == {"tin", "bhf_id", "device_serial", "device_type"}
        assert all(field["set"] for field in shown.values()), shown
        for answer in answers:
            assert CMC_KEY not in answer


class TestEtimsSandbox(SandboxFixtures):
    harness = EtimsHarness()

    async def test_a_device_gets_its_cmc_key_once_and_902_after(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with oscu(server.url, key=None) as client:
            device = await client.initialize("LF-NEW-DEVICE-1")
            classes = await client.code_list(PAST)  # the client uses the key it was just given
            with pytest.raises(DeviceAlreadyInstalled) as again:
                await client.initialize("LF-NEW-DEVICE-1")

        assert device.cmc_key and device.sdc_id and device.mrc_no and device.bhf_id == BRANCH
        assert device.cmc_key not in repr(device) and device.cmc_key not in str(again.value)
        assert "reset the device serial" in again.value.message
        assert [c.code_class for c in classes] == ["04", "07", "10", "17", "32"]
        assert sandbox.stats()["effects"]["devices_initialized"] == 1

    async def test_a_device_kra_did_not_approve_is_refused(self) -> None:
        app = create_app(known_devices=[(PIN, BRANCH, "APPROVED-1")])
        with LiveServer(app) as live:
            async with oscu(live.url, key=None) as client:
                with pytest.raises(NeedsAttentionError) as caught:
                    await client.initialize("NOT-APPROVED")
                approved = await client.initialize("APPROVED-1")

        assert caught.value.code == "901" and approved.cmc_key

    async def test_a_call_without_the_key_is_900_and_with_another_key_901(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with oscu(server.url, key=None) as keyless, oscu(server.url, key="0" * 40) as wrong:
            with pytest.raises(NeedsAttentionError) as missing:
                await keyless.code_list(PAST)
            with pytest.raises(NeedsAttentionError) as invalid:
                await wrong.code_list(PAST)

        assert (missing.value.code, invalid.value.code) == ("900", "901")

    async def test_class_04_carries_the_tax_rates_and_nothing_is_newer_than_the_last_request(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with oscu(server.url) as client:
            classes = {c.code_class: c for c in await client.code_list(PAST)}
            item_classes = await client.item_classes(PAST)
            assert await client.code_list(FUTURE) == [] and await client.item_classes(FUTURE) == []

        rates = {code.code: code.user_defined_1 for code in classes["04"].codes}
        assert rates == {"A": "0", "B": "16", "C": "0", "D": "0", "E": "8"}
        assert ITEM_CLASS in {c.code for c in item_classes}

    async def test_a_malformed_item_is_refused_and_a_sale_needs_registered_items(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with oscu(server.url) as client:
            with pytest.raises(PermanentError) as bad_code:
                await client.save_item({**ITEM_PAYLOAD, "itemCd": "KE2NTU1"})
            with pytest.raises(PermanentError) as bad_class:
                await client.save_item({**ITEM_PAYLOAD, "itemClsCd": "0000000000"})
            with pytest.raises(PermanentError) as unregistered:
                await client.save_sale(sale(1))
            await client.save_item(ITEM_PAYLOAD)
            await client.save_item(ITEM_PAYLOAD)  # saving the same item again updates it
            receipt = await client.save_sale(sale(1))

        assert (bad_code.value.code, bad_class.value.code, unregistered.value.code) == ("910", "910", "910")
        assert "not registered" in unregistered.value.message
        assert receipt.invc_no == 1 and sandbox.stats()["effects"]["items_saved"] == 2

    async def test_each_sale_gets_its_own_counters_and_signature_and_a_repeat_is_a_994(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with oscu(server.url) as client:
            await client.save_item(ITEM_PAYLOAD)
            first, second = await client.save_sale(sale(1)), await client.save_sale(sale(2))
            with pytest.raises(DuplicateSale) as duplicate:
                await client.save_sale(sale(1))

        assert (first.receipt_no, first.total_receipt_no, second.receipt_no, second.total_receipt_no) == (
            1,
            1,
            2,
            2,
        )
        assert first.receipt_signature != second.receipt_signature and len(first.internal_data) == 26
        assert duplicate.value.code == "994" and duplicate.value.verified_duplicate
        assert sandbox.stats()["effects"]["sales_signed"] == 2

    async def test_a_number_passed_over_stays_unused_for_good(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        # A void leaves its number unused: the next sale jumps it, and the number can never come
        # later (sales are received in sequence).
        async with oscu(server.url) as client:
            await client.save_item(ITEM_PAYLOAD)
            await client.save_sale(sale(1))
            await client.save_sale(sale(3))
            with pytest.raises(PermanentError) as late:
                await client.save_sale(sale(2))

        assert late.value.code == "921" and "passed over" in late.value.message
        assert sandbox.stats()["effects"]["sales_signed"] == 2
        assert sandbox.stats()["effects"]["invc_no_skipped"] == 1

    async def test_a_credit_note_needs_an_existing_original(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with oscu(server.url) as client:
            await client.save_item(ITEM_PAYLOAD)
            await client.save_sale(sale(1))
            with pytest.raises(PermanentError) as orphan:
                await client.save_sale(sale(2, credit_of=5))
            credit = await client.save_sale(sale(2, credit_of=1))

        assert orphan.value.code == "910" and "orgInvcNo" in orphan.value.message
        assert (credit.receipt_no, credit.total_receipt_no) == (1, 2)  # its own R counter, the shared total
        listed = sandbox.http.get("/_sandbox/etims/sales").json()["branches"][0]["sales"]
        assert [(s["invc_no"], s["rcpt_ty_cd"], s["org_invc_no"]) for s in listed] == [
            (1, "S", 0),
            (2, "R", 1),
        ]

    async def test_a_sale_accepted_after_the_client_gave_up_is_a_994_on_resend_and_find_sale_finds_it(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with oscu(server.url) as setup:
            await setup.save_item(ITEM_PAYLOAD)
        sandbox.http.post(
            "/_sandbox/etims/profile", json={"profile": "timeout_after_accept"}
        ).raise_for_status()
        async with oscu(server.url, timeout=FAST) as impatient:
            with pytest.raises(RetryableError) as timed_out:
                await impatient.save_sale(sale(1))
        sandbox.http.post("/_sandbox/etims/profile", json={"profile": "none"}).raise_for_status()
        async with oscu(server.url) as client:
            with pytest.raises(DuplicateSale):
                await client.save_sale(sale(1))
            found = await client.find_sale(1)
            missing = await client.find_sale(2)

        assert timed_out.value.code == "timeout"
        assert sandbox.stats()["effects"]["sales_signed"] == 1
        assert found is not None and found.invc_no == 1 and found.receipt_no == 1 and found.receipt_signature
        assert missing is None

    async def test_vscu_signs_with_its_own_fields_and_reports_a_duplicate_as_an_unverified_899(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with vscu(server.url) as client:
            await client.save_item(ITEM_PAYLOAD)
            receipt = await client.save_sale(sale(1, device_type="vscu"))
            with pytest.raises(DuplicateSale) as duplicate:
                await client.save_sale(sale(1, device_type="vscu"))
            found = await client.find_sale(1)

        assert receipt.sdc_id and receipt.mrc_no and receipt.sdc_datetime
        assert duplicate.value.code == "899" and duplicate.value.verified_duplicate is False
        assert found is not None and found.receipt_signature == receipt.receipt_signature
        assert sandbox.stats()["paths"].get(PATHS["vscu"].save_sale) == 2

    async def test_an_oscu_key_on_the_vscu_paths_is_refused_with_903(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        client = EtimsClient(server.url, device_type="vscu", tin=PIN, bhf_id=BRANCH, cmc_key=CMC_KEY)
        async with client:
            with pytest.raises(NeedsAttentionError) as caught:
                await client.code_list(PAST)

        assert caught.value.code == "903"

    async def test_the_congestion_profile_slows_answers_and_the_outage_profile_says_when_to_retry(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        profile = "/_sandbox/etims/profile"
        sandbox.http.post(profile, json={"profile": "congestion", "latency_ms": 50}).raise_for_status()
        async with oscu(server.url) as client:
            assert await client.code_list(FUTURE) == []
            sandbox.http.post(profile, json={"profile": "outage"}).raise_for_status()
            with pytest.raises(RetryableError) as outage:
                await client.code_list(FUTURE)

        assert (outage.value.code, outage.value.retry_after) == ("http_503", 5.0)
        assert sandbox.stats()["faults_injected"] == {"latency": 1, "outage": 1}
        assert sandbox.http.post(profile, json={"profile": "sometimes"}).status_code == 422

    async def test_find_sale_on_a_host_without_the_lookup_says_it_is_unavailable(self) -> None:
        async def not_found(request: Request) -> Response:
            return JSONResponse({"message": "no such route"}, status_code=404)

        with LiveServer(Starlette(routes=[Route("/{path:path}", not_found, methods=["POST"])])) as live:
            async with oscu(live.url) as client:
                with pytest.raises(SaleLookupUnavailable) as caught:
                    await client.find_sale(1)

        assert caught.value.code == "sale_lookup_unavailable" and CMC_KEY not in str(caught.value)

    async def test_the_connection_test_reaches_etims_without_initialising_anything(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        def integration(**credentials: str) -> IntegrationSettings:
            return IntegrationSettings(
                UUID(int=1), "etims", True, "sandbox", server.url, {**etims.demo_credentials(), **credentials}
            )

        await etims_settings.test_connection(integration(), httpx.AsyncHTTPTransport())
        with pytest.raises(InvalidCredentials) as caught:
            await etims_settings.test_connection(
                integration(bhf_id="1", device_type="xcu"), httpx.AsyncHTTPTransport()
            )

        assert set(caught.value.problems) == {"bhf_id", "device_type"}
        assert sandbox.stats()["paths"] == {PATHS["oscu"].code_list: 1}
        assert sandbox.stats()["effects"]["devices_initialized"] == 0
