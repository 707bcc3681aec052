"""tally: the standard connector suite, then Tally's own XML contract, over HTTP against its sandbox."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import httpx
import pytest
from starlette.types import ASGIApp

from connectors.errors import NeedsAttentionError, PermanentError
from connectors.tally.client import PATH, TallyClient
from connectors.tally.sandbox import DEMO_COMPANY, create_app
from connectors.tally.vouchers import Leg, Voucher, remote_id
from tests.connectors.contract import ConnectorContract, LiveServer, Operator, SandboxFixtures


def receipt(n: int, *, bank: str = "ICICI Bank", credit: str = "1180.00") -> Voucher:
    return Voucher(
        voucher_type="Receipt",
        remote_id=remote_id("contract", f"receipt:{n}"),
        day=date(2026, 6, 2),
        legs=(
            Leg(bank, "debit", Decimal("1180.00")),
            Leg("Sundry Customers", "credit", Decimal(credit)),
        ),
        narration=f"payment {n}",
    )


class TallyHarness:
    effect = "voucher_created"
    effect_path = PATH

    def create_app(self) -> ASGIApp:
        return create_app()

    def client(self, base_url: str, timeout: httpx.Timeout) -> TallyClient:
        return TallyClient(base_url, DEMO_COMPANY, timeout=timeout)

    async def probe(self, client: TallyClient) -> None:
        await client.ledgers()

    async def perform_effect(self, client: TallyClient, n: int) -> None:
        await client.import_vouchers([receipt(n)])

    def secrets(self) -> list[str]:
        return []  # Tally's XML interface has no credentials


class TestTallyContract(ConnectorContract):
    harness = TallyHarness()


def vouchers(server: LiveServer, company: str = DEMO_COMPANY) -> list[dict[str, object]]:
    items: list[dict[str, object]] = httpx.get(
        f"{server.url}/_sandbox/tally/companies/{company}/vouchers"
    ).json()["items"]
    return items


class TestTallyXml(SandboxFixtures):
    harness = TallyHarness()

    async def test_a_voucher_is_created_once_and_a_repeated_remote_id_alters_it(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with TallyClient(server.url, DEMO_COMPANY) as client:
            first = await client.import_vouchers([receipt(1)])
            again = await client.import_vouchers([receipt(1)])

        assert (first.count("CREATED"), again.count("ALTERED"), again.count("CREATED")) == (1, 1, 0)
        [kept] = vouchers(server)
        assert kept["remote_id"] == receipt(1).remote_id and kept["voucher_type"] == "Receipt"
        assert kept["legs"] == [
            {"ledger": "ICICI Bank", "amount": "-1180.00", "is_deemed_positive": True},
            {"ledger": "Sundry Customers", "amount": "1180.00", "is_deemed_positive": False},
        ]
        assert sandbox.stats()["effects"] == {
            "voucher_created": 1,
            "voucher_altered": 1,
            "budget_created": 0,
            "budget_altered": 0,
        }

    async def test_concurrent_imports_of_one_voucher_leave_one_voucher(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        import asyncio

        async with TallyClient(server.url, DEMO_COMPANY) as a, TallyClient(server.url, DEMO_COMPANY) as b:
            results = await asyncio.gather(*(c.import_vouchers([receipt(7)]) for c in (a, b, a, b)))

        assert sorted(r.count("CREATED") for r in results) == [0, 0, 0, 1]
        assert len(vouchers(server)) == 1

    async def test_an_unknown_ledger_is_refused_with_tallys_line_error(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with TallyClient(server.url, DEMO_COMPANY) as client:
            with pytest.raises(PermanentError) as refused:
                await client.import_vouchers([receipt(2, bank="HDFC Bank")])

        assert refused.value.code == "tally_rejected"
        assert refused.value.message == "Ledger 'HDFC Bank' does not exist!"
        assert vouchers(server) == []

    async def test_an_unbalanced_voucher_never_leaves_us_and_tally_would_refuse_it_too(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with TallyClient(server.url, DEMO_COMPANY) as client:
            with pytest.raises(PermanentError) as ours:
                await client.import_vouchers([receipt(3, credit="1179.99")])
        assert ours.value.code == "unbalanced" and sandbox.stats()["requests"] == 0

        forged = (
            b"<ENVELOPE><HEADER><TALLYREQUEST>Import Data</TALLYREQUEST></HEADER><BODY><IMPORTDATA>"
            b"<REQUESTDESC><REPORTNAME>Vouchers</REPORTNAME><STATICVARIABLES><SVCURRENTCOMPANY>"
            + DEMO_COMPANY.encode()
            + b"</SVCURRENTCOMPANY></STATICVARIABLES></REQUESTDESC><REQUESTDATA><TALLYMESSAGE>"
            b'<VOUCHER REMOTEID="x" VCHTYPE="Receipt" ACTION="Create"><DATE>20260602</DATE>'
            b"<ALLLEDGERENTRIES.LIST><LEDGERNAME>ICICI Bank</LEDGERNAME><ISDEEMEDPOSITIVE>Yes"
            b"</ISDEEMEDPOSITIVE><AMOUNT>-100.00</AMOUNT></ALLLEDGERENTRIES.LIST><ALLLEDGERENTRIES.LIST>"
            b"<LEDGERNAME>Sales</LEDGERNAME><ISDEEMEDPOSITIVE>No</ISDEEMEDPOSITIVE><AMOUNT>90.00</AMOUNT>"
            b"</ALLLEDGERENTRIES.LIST></VOUCHER></TALLYMESSAGE></REQUESTDATA></IMPORTDATA></BODY></ENVELOPE>"
        )
        answer = httpx.post(server.url + PATH, content=forged).text
        assert "<LINEERROR>Voucher totals do not match!" in answer and "<ERRORS>1</ERRORS>" in answer
        assert vouchers(server) == []

    async def test_a_company_tally_has_not_loaded_needs_a_person(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with TallyClient(server.url, "No Such College") as client:
            with pytest.raises(NeedsAttentionError) as ledgers:
                await client.ledgers()
            with pytest.raises(PermanentError) as posted:
                await client.import_vouchers([receipt(4)])
        assert "Could not set 'SVCurrentCompany'" in ledgers.value.message
        assert "Could not set 'SVCurrentCompany'" in posted.value.message

    async def test_the_list_of_accounts_is_read_with_groups_and_balances(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with TallyClient(server.url, DEMO_COMPANY) as client:
            await client.import_vouchers([receipt(5)])
            ledgers = {le.name: le for le in await client.ledgers()}
        assert ledgers["ICICI Bank"].parent == "Bank Accounts"
        assert ledgers["ICICI Bank"].closing_balance == Decimal("-1180.00")
        assert ledgers["Tech Supplies Ltd"].parent == "Sundry Creditors"

    async def test_a_slow_tally_times_out_and_still_posts_and_the_retry_does_not_duplicate(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.http.post("/_sandbox/tally/load", json={"slow_s": 1.5, "slow_requests": 1})
        from connectors.errors import RetryableError
        from tests.connectors.contract import FAST, poll

        async with TallyClient(server.url, DEMO_COMPANY, timeout=FAST) as client:
            with pytest.raises(RetryableError) as slow:
                await client.import_vouchers([receipt(6)])
            poll(lambda: vouchers(server), timeout=10, what="the slow import finishing in Tally")
            retried = await client.import_vouchers([receipt(6)])

        assert slow.value.code == "timeout" and retried.count("ALTERED") == 1
        assert len(vouchers(server)) == 1
