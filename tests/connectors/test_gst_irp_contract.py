"""gst-irp: the standard connector suite, then the IRP's own contract, over HTTP against the sandbox."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.types import ASGIApp

from connectors import gst_irp
from connectors.errors import NeedsAttentionError, PermanentError, RetryableError
from connectors.gst_irp import jws
from connectors.gst_irp.client import INVOICE_PATH, IST, DuplicateIrn, IrpClient, IrpCredentials
from connectors.gst_irp.mapping import SellerProfile, irn_for, to_einvoice
from connectors.gst_irp.routes import ISSUED
from connectors.gst_irp.sandbox import SandboxAccount, create_app
from connectors.gst_irp.service import cancellable, generate_or_adopt
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.publishing import invoice_document
from streams.connectors.jobs import Job
from tests.connectors.contract import (
    ConnectorContract,
    ConnectorJobContract,
    LiveServer,
    Operator,
    SandboxFixtures,
)
from tests.integration.helpers import IRP_ACCOUNT, invoice_body, register_irp_tenant

ACCOUNT = SandboxAccount()
CREDENTIALS = IrpCredentials(
    ACCOUNT.client_id, ACCOUNT.client_secret, ACCOUNT.username, ACCOUNT.password, ACCOUNT.gstin
)
SELLER = SellerProfile(
    gstin=ACCOUNT.gstin,
    legal_name="Anand Traders Private Limited",
    address_line1="12 MG Road",
    location="Bengaluru",
    pincode="560001",
    state_code="29",
)
SAMPLE = Path(__file__).resolve().parents[2] / "schemas" / "samples" / "invoice" / "issued.v2.json"
BUYER = "33AAJFK5678L1Z2"
TOTAL = Decimal("1180.00")


def payload(number: str = "INV/25-26/00042") -> dict[str, Any]:
    record = json.loads(SAMPLE.read_text())
    record["number"] = number
    return to_einvoice(record, SELLER)


class GstIrpHarness:
    effect = "irn_generated"
    effect_path = INVOICE_PATH

    def create_app(self) -> ASGIApp:
        return create_app(account=ACCOUNT)

    def client(self, base_url: str, timeout: httpx.Timeout) -> IrpClient:
        return IrpClient(base_url, CREDENTIALS, timeout=timeout)

    async def probe(self, client: IrpClient) -> None:
        await client.authenticate(force=True)

    async def perform_effect(self, client: IrpClient, n: int) -> None:
        await client.generate_irn(payload(f"CT/{n}"))

    def secrets(self) -> list[str]:
        return [ACCOUNT.client_id, ACCOUNT.client_secret, ACCOUNT.password]


class TestGstIrpContract(ConnectorContract):
    harness = GstIrpHarness()


class TestGstIrpSandbox(SandboxFixtures):
    harness = GstIrpHarness()

    @asynccontextmanager
    async def irp(self, server: LiveServer, **kwargs: Any) -> AsyncIterator[IrpClient]:
        async with IrpClient(
            server.url, CREDENTIALS, timeout=httpx.Timeout(5.0, read=0.5), **kwargs
        ) as client:
            yield client

    def public_key(self, sandbox: Operator) -> rsa.RSAPublicKey:
        key = serialization.load_pem_public_key(sandbox.http.get("/_sandbox/public-key").content)
        assert isinstance(key, rsa.RSAPublicKey)
        return key

    async def test_a_generated_irn_is_signed_by_the_irp_key(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.irp(server) as irp:
            result = await irp.generate_irn(payload())

        key = self.public_key(sandbox)
        invoice = jws.verify(result.signed_invoice, key)
        qr = jws.verify(result.signed_qr_code, key)
        assert result.irn == irn_for(ACCOUNT.gstin, date(2025, 5, 1), "INV", "INV/25-26/00042")
        assert len(result.ack_no) == 15 and result.ack_no.isdigit()
        assert result.status == "ACT"
        assert invoice["Irn"] == result.irn and invoice["ValDtls"]["TotInvVal"] == 1180.0
        assert qr == {
            "SellerGstin": ACCOUNT.gstin,
            "BuyerGstin": BUYER,
            "DocNo": "INV/25-26/00042",
            "DocTyp": "INV",
            "DocDt": "01/05/2025",
            "TotInvVal": 1180.0,
            "ItemCnt": 1,
            "MainHsnCode": "7323",
            "Irn": result.irn,
            "IrnDt": result.ack_dt.strftime("%Y-%m-%d %H:%M:%S"),
        }
        header = json.loads(jws._unb64(result.signed_qr_code.split(".")[0]))
        assert header["alg"] == "RS256" and header["typ"] == "JWT" and header["kid"] and header["x5t"]
        assert sandbox.stats()["effects"]["irn_generated"] == 1

    async def test_a_tampered_signature_does_not_verify(self, sandbox: Operator, server: LiveServer) -> None:
        async with self.irp(server) as irp:
            result = await irp.generate_irn(payload())
        head, body, signature = result.signed_qr_code.split(".")
        forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")

        with pytest.raises(jws.InvalidToken):
            jws.verify(f"{head}.{forged}.{signature}", self.public_key(sandbox))

    async def test_an_irn_is_found_by_irn_and_by_document(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.irp(server) as irp:
            created = await irp.generate_irn(payload())
            by_irn = await irp.get_irn(created.irn)
            by_document = await irp.get_irn_by_document("INV", "INV/25-26/00042", date(2025, 5, 1))
            unknown = await irp.get_irn_by_document("INV", "INV/25-26/99999", date(2025, 5, 1))

        assert by_irn == by_document == created
        assert unknown is None

    async def test_an_expired_token_is_renewed_once_transparently(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.irp(server) as irp:
            await irp.authenticate()
            sandbox.clock(advance_s=61 * 60)  # NIC's sandbox tokens last 60 minutes

            await irp.generate_irn(payload())

        paths = sandbox.stats()["paths"]
        assert paths["/eivital/v1.04/auth"] == 2
        assert paths[INVOICE_PATH] == 2  # rejected with 1005, then accepted

    async def test_the_client_renews_its_token_five_minutes_before_expiry(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        now = [datetime.now(UTC)]
        async with self.irp(server, clock=lambda: now[0]) as irp:
            await irp.authenticate()
            now[0] += timedelta(minutes=54)
            await irp.authenticate()  # still 6 minutes to go: cached
            now[0] += timedelta(minutes=2)
            await irp.generate_irn(payload())  # 4 minutes to go: renewed first

        paths = sandbox.stats()["paths"]
        assert (paths["/eivital/v1.04/auth"], paths[INVOICE_PATH]) == (2, 1)

    async def test_wrong_credentials_need_attention(self, sandbox: Operator, server: LiveServer) -> None:
        wrong = IrpCredentials(
            ACCOUNT.client_id, ACCOUNT.client_secret, ACCOUNT.username, "nope", ACCOUNT.gstin
        )
        async with IrpClient(server.url, wrong) as irp:
            with pytest.raises(NeedsAttentionError) as caught:
                await irp.authenticate()

        assert caught.value.code == "1008"

    async def test_a_duplicate_reports_the_registered_irn(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.irp(server) as irp:
            first = await irp.generate_irn(payload())
            with pytest.raises(DuplicateIrn) as caught:
                await irp.generate_irn(payload())

        assert caught.value.existing is not None
        assert (caught.value.existing.irn, caught.value.existing.ack_no) == (first.irn, first.ack_no)

    async def test_a_matching_duplicate_is_adopted(self, sandbox: Operator, server: LiveServer) -> None:
        async with self.irp(server) as irp:
            first = await irp.generate_irn(payload())
            adopted = await generate_or_adopt(irp, payload(), expected_total=TOTAL, buyer_gstin=BUYER)

        assert adopted == first
        assert sandbox.stats()["effects"]["irn_generated"] == 1

    @pytest.mark.parametrize(
        "total, buyer, mismatch",
        [(Decimal("1190.00"), BUYER, "TotInvVal"), (TOTAL, "29AAJFK5678L1Z9", "BuyerGstin")],
    )
    async def test_a_duplicate_with_other_data_is_not_adopted(
        self, sandbox: Operator, server: LiveServer, total: Decimal, buyer: str, mismatch: str
    ) -> None:
        async with self.irp(server) as irp:
            await irp.generate_irn(payload())
            with pytest.raises(NeedsAttentionError) as caught:
                await generate_or_adopt(irp, payload(), expected_total=total, buyer_gstin=buyer)

        assert caught.value.code == "duplicate_irn_mismatch"
        assert list(caught.value.details["mismatches"]) == [mismatch]

    @pytest.mark.parametrize("after_effect, code", [("error", "http_502"), ("hang", "timeout")])
    async def test_an_irn_whose_answer_was_lost_is_recovered_without_a_second_irn(
        self, sandbox: Operator, server: LiveServer, after_effect: str, code: str
    ) -> None:
        sandbox.faults(
            after_effect_failure_rate=1.0, after_effect=after_effect, max_faults=1, paths=[INVOICE_PATH]
        )
        async with self.irp(server) as irp:
            with pytest.raises(RetryableError) as caught:
                await generate_or_adopt(irp, payload(), expected_total=TOTAL, buyer_gstin=BUYER)
            # The retry policy calls again: the IRP answers 2150 and the registered IRN is adopted.
            result = await generate_or_adopt(irp, payload(), expected_total=TOTAL, buyer_gstin=BUYER)

        assert caught.value.code == code
        assert result.irn == irn_for(ACCOUNT.gstin, date(2025, 5, 1), "INV", "INV/25-26/00042")
        assert sandbox.stats()["effects"]["irn_generated"] == 1

    async def test_an_irn_is_cancelled_within_24_hours(self, sandbox: Operator, server: LiveServer) -> None:
        async with self.irp(server) as irp:
            result = await irp.generate_irn(payload())
            sandbox.clock(advance_s=23 * 3600)
            now = datetime.fromisoformat(sandbox.clock())
            assert cancellable(result.ack_dt, now)

            cancelled = await irp.cancel_irn(result.irn, 2, "Data entry mistake")
            after = await irp.get_irn(result.irn)

        assert cancelled.irn == result.irn
        assert cancelled.cancel_date.utcoffset() == IST.utcoffset(None)
        assert cancelled.cancel_date - result.ack_dt >= timedelta(hours=23)
        assert after is not None and after.status == "CNL"
        assert sandbox.stats()["effects"] == {"irn_cancelled": 1, "irn_generated": 1}

    async def test_cancelling_after_24_hours_is_permanent(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.irp(server) as irp:
            result = await irp.generate_irn(payload())
            sandbox.clock(advance_s=24 * 3600 + 1)
            with pytest.raises(PermanentError) as caught:
                await irp.cancel_irn(result.irn, 3, "Order cancelled")

        assert caught.value.code == "2270"
        assert not cancellable(result.ack_dt, datetime.fromisoformat(sandbox.clock()))

    async def test_an_active_eway_bill_blocks_cancellation(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.irp(server) as irp:
            result = await irp.generate_irn(payload())
            sandbox.http.post("/_sandbox/eway-bill", json={"irn": result.irn}).raise_for_status()
            with pytest.raises(NeedsAttentionError) as caught:
                await irp.cancel_irn(result.irn, 4, "Others")

        assert caught.value.code == "2230"

    async def test_a_cancelled_document_cannot_be_registered_or_cancelled_again(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with self.irp(server) as irp:
            result = await irp.generate_irn(payload())
            await irp.cancel_irn(result.irn, 1, "Duplicate")
            with pytest.raises(PermanentError) as reused:
                await irp.generate_irn(payload())
            with pytest.raises(PermanentError) as again:
                await irp.cancel_irn(result.irn, 1, "Duplicate")

        assert (reused.value.code, again.value.code) == ("2278", "9999")

    async def test_a_schema_invalid_document_is_permanent_with_the_irp_code(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        document = payload()
        document["ItemList"][0]["PrdDesc"] = 'Tiffin box 12" wide'
        del document["BuyerDtls"]["Addr1"]
        async with self.irp(server) as irp:
            with pytest.raises(PermanentError) as caught:
                await irp.generate_irn(document)

        assert caught.value.code == "2140"
        messages = [e["message"] for e in caught.value.details["errors"]]
        assert any(m.startswith("BuyerDtls") and "Addr1" in m for m in messages)
        assert any(m.startswith("ItemList/0/PrdDesc") for m in messages)
        assert sandbox.stats()["effects"]["irn_generated"] == 0

    async def test_arithmetic_the_irp_recomputes_is_checked_with_its_codes(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        wrong_item = payload()
        wrong_item["ItemList"][0]["AssAmt"] = 990.0
        wrong_total = payload()
        wrong_total["ValDtls"]["TotInvVal"] = 1185.0
        async with self.irp(server) as irp:
            with pytest.raises(PermanentError) as item_error:
                await irp.generate_irn(wrong_item)
            with pytest.raises(PermanentError) as total_error:
                await irp.generate_irn(wrong_total)

        assert [e["code"] for e in item_error.value.details["errors"]] == ["2193", "2182"]
        assert total_error.value.code == "2189"

    async def test_timeouts_are_retryable_and_create_nothing(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.faults(timeout_rate=1.0, hang_s=30, paths=[INVOICE_PATH])
        async with self.irp(server) as irp:
            with pytest.raises(RetryableError) as caught:
                await irp.generate_irn(payload())

        assert caught.value.code == "timeout"
        assert sandbox.stats()["effects"]["irn_generated"] == 0


class GstIrpJobHarness:
    """gst-irp as the engine runs it: a registered seller, an issued B2B invoice, its IRN job."""

    connector = gst_irp.CONNECTOR
    effect = "irn_generated"

    def create_app(self) -> ASGIApp:
        return create_app(account=IRP_ACCOUNT)

    def credentials(self) -> dict[str, str]:
        return IRP_ACCOUNT.credentials()

    def wrong_credentials(self) -> dict[str, str]:
        return {**IRP_ACCOUNT.credentials(), "password": "not-the-password"}

    def prepare(self, service: LedgerService, settings: Settings, base_url: str) -> tuple[UUID, Job]:
        tenant = register_irp_tenant(service, settings, base_url).tenant_id
        invoice = service.issue_invoice(tenant, IssueInvoice.model_validate(invoice_body())).invoice
        record = {**invoice_document(invoice, invoice.id), "tenant_id": str(tenant)}
        [job] = gst_irp.CONNECTOR.routes(ISSUED, f"contract-{invoice.id}", record)
        return tenant, job

    def results(self, service: LedgerService, job: Job) -> list[str]:
        names = {"IrnGenerated": "result", "IrnCancelled": "result", "IrnFailed": "failed"}
        events = service.ledger.events.get(UUID(job.subject))
        return [names[type(e).__name__] for e in events if type(e).__name__ in names]

    def failure(self, service: LedgerService, job: Job) -> dict[str, Any] | None:
        return service.get_invoice(UUID(job.tenant_id), UUID(job.subject)).einvoice_failure

    def unclassified_answer(self) -> tuple[int, dict[str, Any]]:
        return 200, {"Status": 0, "ErrorDetails": [{"ErrorCode": "9876", "ErrorMessage": "nobody knows"}]}


class TestGstIrpJobs(ConnectorJobContract):
    harness = GstIrpJobHarness()
