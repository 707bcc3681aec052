"""gstn-returns: the standard connector suite, then the GST returns API's own contract, over HTTP."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import orjson
import psycopg
import pytest
from starlette.types import ASGIApp

from connectors import gstn_returns
from connectors.catalogue import endpoint_policy
from connectors.errors import NeedsAttentionError, PermanentError
from connectors.gstn_returns.client import GSTR1_PATH, PROVIDER, ReturnsClient, ReturnsCredentials
from connectors.gstn_returns.routes import submit_job
from connectors.gstn_returns.sandbox import UNKNOWN_CTIN, SandboxAccount, create_app
from engine import integrations
from engine.application import LedgerService
from engine.config import Settings
from engine.domain.tax_return import TaxReturn
from engine.security.secrets import load_key_ring
from engine.tax_returns import TaxReturns
from streams.connectors.jobs import Job
from tests.connectors.contract import (
    ConnectorContract,
    ConnectorJobContract,
    LiveServer,
    Operator,
    SandboxFixtures,
)

ACCOUNT = SandboxAccount()
CREDENTIALS = ReturnsCredentials(ACCOUNT.client_id, ACCOUNT.client_secret, ACCOUNT.username)
PERIOD = "012026"


def part(*b2b: dict[str, object], period: str = PERIOD, gstin: str = ACCOUNT.gstin) -> bytes:
    return orjson.dumps({"gstin": gstin, "fp": period, "version": "GST3.2", "hash": "hash", "b2b": list(b2b)})


def invoice(inum: str, ctin: str = "27AAACR5055K1Z7", pos: str = "27", **tax: str) -> dict[str, object]:
    det = {"txval": "100.00", "rt": 18, **(tax or {"iamt": "18.00"})}
    return {
        "ctin": ctin,
        "inv": [
            {
                "inum": inum,
                "idt": "19-01-2026",
                "val": "118.00",
                "pos": pos,
                "itms": [{"num": 1, "itm_det": det}],
            }
        ],
    }


class GstnReturnsHarness:
    effect = "return_saved"
    effect_path = GSTR1_PATH

    def create_app(self) -> ASGIApp:
        return create_app(account=ACCOUNT, processing_s=0.0)

    def client(self, base_url: str, timeout: httpx.Timeout) -> ReturnsClient:
        return ReturnsClient(base_url, CREDENTIALS, ACCOUNT.gstin, timeout=timeout)

    async def probe(self, client: ReturnsClient) -> None:
        await client.authenticate(force=True)

    async def perform_effect(self, client: ReturnsClient, n: int) -> None:
        await client.save(PERIOD, part(invoice(f"INV-{n}")))

    def secrets(self) -> list[str]:
        return [ACCOUNT.client_secret]


class TestGstnReturnsContract(ConnectorContract):
    harness = GstnReturnsHarness()


class GstnReturnsJobHarness:
    connector = gstn_returns.CONNECTOR
    effect = "return_saved"

    def create_app(self) -> ASGIApp:
        return create_app(account=ACCOUNT, processing_s=0.0)

    def credentials(self) -> dict[str, str]:
        return {**ACCOUNT.credentials(), "gstin": ACCOUNT.gstin}

    def wrong_credentials(self) -> dict[str, str]:
        return {**self.credentials(), "client_secret": "not-the-secret"}

    def prepare(self, service: LedgerService, settings: Settings, base_url: str) -> tuple[UUID, Job]:
        registered = service.register_tenant(
            name="Demo", legal_name="Demo Private Limited", country="IN", gstin=ACCOUNT.gstin, state="29"
        )
        with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
            integrations.save(
                conn,
                load_key_ring(settings.var_dir),
                registered.tenant_id,
                PROVIDER,
                enabled=True,
                environment="sandbox",
                base_url=base_url,
                credentials=self.credentials(),
                endpoints=endpoint_policy(PROVIDER),
                mode=settings.mode,
            )
        returns = TaxReturns(service)
        generation = returns.generate(
            registered.tenant_id,
            ACCOUNT.gstin,
            PERIOD,
            parts=[orjson.loads(part(invoice("INV-1")))],
            summary={"sections": {"b2b": {"count": 1}}},
            diff=lambda old, new: {},
            generated_by="contract",
        )
        tax_return, job_id = returns.submit(registered.tenant_id, generation.tax_return.id, "contract")
        return registered.tenant_id, submit_job(tax_return, job_id)

    def _events(self, service: LedgerService, job: Job) -> list[Any]:
        return list(service.ledger.events.get(UUID(job.subject)))

    def results(self, service: LedgerService, job: Job) -> list[str]:
        kinds = {
            TaxReturn.Processed: "result",
            TaxReturn.RejectedRecords: "result",
            TaxReturn.Failed: "failed",
        }
        return [kinds[type(e)] for e in self._events(service, job) if type(e) in kinds]

    def failure(self, service: LedgerService, job: Job) -> dict[str, Any] | None:
        return TaxReturns(service).get(UUID(job.tenant_id), UUID(job.subject)).failure

    def unclassified_answer(self) -> tuple[int, dict[str, Any]]:
        return 400, {"status_cd": "0", "error": {"error_cd": "XYZ9001", "message": "something new"}}


class TestGstnReturnsJobs(ConnectorJobContract):
    harness = GstnReturnsJobHarness()


class TestGstnReturnsFlow(SandboxFixtures):
    harness = GstnReturnsHarness()

    @pytest.fixture
    def slow_server(self) -> object:
        with LiveServer(create_app(account=ACCOUNT, processing_s=60.0)) as server:
            yield server

    async def test_a_save_is_in_progress_until_the_network_processed_it(
        self, slow_server: LiveServer
    ) -> None:
        operator = Operator(slow_server.url)
        async with ReturnsClient(slow_server.url, CREDENTIALS, ACCOUNT.gstin) as client:
            with pytest.raises(PermanentError) as nothing_saved:
                await client.file(PERIOD, ACCOUNT.otp)
            reference = await client.save(PERIOD, part(invoice("INV-1")))
            assert (await client.status(PERIOD, reference)).in_progress
            with pytest.raises(PermanentError) as processing:
                await client.file(PERIOD, ACCOUNT.otp)  # not while a save is being processed
            operator.clock(advance_s=61)
            done = await client.status(PERIOD, reference)
        assert (done.status_cd, done.errors) == ("P", [])
        assert nothing_saved.value.code == processing.value.code == "RET_NOT_PROCESSED"

    async def test_saving_the_same_part_again_is_the_same_save(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with ReturnsClient(server.url, CREDENTIALS, ACCOUNT.gstin) as client:
            first = await client.save(PERIOD, part(invoice("INV-1")))
            again = await client.save(PERIOD, part(invoice("INV-1")))
            other = await client.save(PERIOD, part(invoice("INV-2")))
        assert first == again != other
        assert sandbox.stats()["effects"]["return_saved"] == 2

    async def test_refused_documents_come_back_one_by_one_with_their_error(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        data = part(
            invoice("OK-1"),
            invoice("BAD-CTIN", ctin=UNKNOWN_CTIN),
            invoice("BAD-POS", ctin="29AABCT1332L1ZA", pos="27", camt="9.00", samt="9.00"),
        )
        async with ReturnsClient(server.url, CREDENTIALS, ACCOUNT.gstin) as client:
            status = await client.status(PERIOD, await client.save(PERIOD, data))
        assert status.status_cd == "PE"
        assert sorted((e["inum"], e["error_cd"]) for e in status.errors) == [
            ("BAD-CTIN", "RET_CTIN_INVALID"),
            ("BAD-POS", "RET191114"),
        ]

    async def test_filing_needs_the_otp_gives_an_arn_and_gives_the_same_arn_again(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with ReturnsClient(server.url, CREDENTIALS, ACCOUNT.gstin) as client:
            await client.status(PERIOD, await client.save(PERIOD, part(invoice("INV-1"))))
            with pytest.raises(PermanentError) as wrong:
                await client.file(PERIOD, "000000")
            arn = await client.file(PERIOD, ACCOUNT.otp)
            again = await client.file(PERIOD, ACCOUNT.otp)
            with pytest.raises(PermanentError) as late:
                await client.save(PERIOD, part(invoice("INV-9")))
        assert wrong.value.code == "RET_OTP_INVALID" and "000000" not in str(wrong.value)
        assert arn == again and arn.startswith("AA290126") and len(arn) == 15
        assert sandbox.stats()["effects"]["return_filed"] == 1
        assert late.value.code == "RET_ALREADY_FILED"

    async def test_a_part_for_another_gstin_or_period_is_a_json_structure_error(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with ReturnsClient(server.url, CREDENTIALS, ACCOUNT.gstin) as client:
            for wrong in (
                part(invoice("X"), period="022026"),
                part(invoice("X"), gstin="27AAACR5055K1Z7"),
                b"[1]",
            ):
                with pytest.raises(PermanentError) as refused:
                    await client.save(PERIOD, wrong)
                assert refused.value.code == "RET191106"

    async def test_a_gstin_the_account_does_not_act_for_needs_attention(self, server: LiveServer) -> None:
        async with ReturnsClient(server.url, CREDENTIALS, "27AAACR5055K1Z7") as client:
            with pytest.raises(NeedsAttentionError) as refused:
                await client.save(PERIOD, part(invoice("X"), gstin="27AAACR5055K1Z7"))
        assert refused.value.code == "AUTH4033"
