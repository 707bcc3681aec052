"""bank: the standard connector suite (client half and settings), then the bank API's own contract."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from starlette.types import ASGIApp

from connectors import bank
from connectors.bank.client import BankClient, payout_body
from connectors.bank.sandbox import SandboxAccount, create_app
from connectors.errors import ErrorClass, NeedsAttentionError
from tests.connectors.contract import (
    ConnectorContract,
    ConnectorSettingsContract,
    LiveServer,
    Operator,
    SandboxFixtures,
)

ACCOUNT = SandboxAccount()


def _body(n: int, amount: int = 500_000) -> dict[str, object]:
    return payout_body(
        amount_paise=amount,
        beneficiary={"name": "Tech Supplies Ltd", "account_number": "1234567890", "ifsc": "HDFC0001234"},
        remitter_account=ACCOUNT.account_number,
        remitter_ifsc=ACCOUNT.ifsc,
        purpose="contract",
        reference=f"PAY-{n}",
    )


class BankHarness:
    effect = "payout_initiated"
    effect_path = "/api/v2/payments/neft/initiate"

    def create_app(self) -> ASGIApp:
        return create_app(account=ACCOUNT)

    def client(self, base_url: str, timeout: httpx.Timeout) -> BankClient:
        return BankClient(base_url, ACCOUNT.api_key, timeout=timeout)

    async def probe(self, client: BankClient) -> None:
        await client.balance(ACCOUNT.account_number)

    async def perform_effect(self, client: BankClient, n: int) -> None:
        await client.initiate(mode="NEFT", idempotency_key=f"contract:{n}", body=_body(n))

    def secrets(self) -> list[str]:
        return [ACCOUNT.api_key]


class TestBankContract(ConnectorContract):
    harness = BankHarness()


class BankSettingsHarness:
    connector = bank.CONNECTOR

    def create_app(self) -> ASGIApp:
        return create_app(account=ACCOUNT)

    def credentials(self) -> dict[str, str]:
        return ACCOUNT.credentials()

    def wrong_credentials(self) -> dict[str, str]:
        return {**ACCOUNT.credentials(), "api_key": "not-the-key"}


class TestBankSettings(ConnectorSettingsContract):
    harness = BankSettingsHarness()


class TestBankApi(SandboxFixtures):
    harness = BankHarness()

    async def test_the_same_idempotency_key_is_the_same_payment(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with BankClient(server.url, ACCOUNT.api_key) as client:
            first = await client.initiate(mode="NEFT", idempotency_key="k1", body=_body(1))
            again = await client.initiate(mode="NEFT", idempotency_key="k1", body=_body(1))
            other = await client.initiate(mode="IMPS", idempotency_key="k2", body=_body(2))

        assert first.payment_id == again.payment_id != other.payment_id
        assert sandbox.stats()["effects"]["payout_initiated"] == 2

    async def test_each_error_code_is_classified_by_its_rule(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        codes = ["bank_offline", "insufficient_funds", "invalid_account", "daily_limit_exceeded"]
        httpx.post(f"{server.url}/_bank/refusals", json={"codes": codes})
        seen = []
        async with BankClient(server.url, ACCOUNT.api_key) as client:
            for n, _ in enumerate(codes):
                try:
                    await client.initiate(mode="NEFT", idempotency_key=f"r{n}", body=_body(n))
                except Exception as exc:
                    seen.append((getattr(exc, "code", None), getattr(exc, "error_class", None)))

        assert seen == [
            ("bank_offline", ErrorClass.RETRYABLE),
            ("insufficient_funds", ErrorClass.NEEDS_ATTENTION),
            ("invalid_account", ErrorClass.PERMANENT),
            ("daily_limit_exceeded", ErrorClass.RETRYABLE),
        ]
        assert sandbox.stats()["effects"]["payout_initiated"] == 0

    async def test_a_statement_is_read_across_pages_with_its_balances(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        for n in range(1, 121):
            httpx.post(
                f"{server.url}/_bank/credits",
                json={"date": "2024-01-15", "amount": n, "description": f"fee {n}", "ref_number": f"R{n}"},
            )
        async with BankClient(server.url, ACCOUNT.api_key) as client:
            statement = await client.statement(ACCOUNT.account_number, date(2024, 1, 1), date(2024, 1, 31))
            balance = await client.balance(ACCOUNT.account_number)

        assert len(statement.lines) == 120 and statement.lines[-1].reference == "R120"
        assert statement.closing_paise == statement.opening_paise + sum(range(1, 121))
        assert balance.available_paise == statement.closing_paise
        assert sandbox.stats()["paths"]["/api/v1/bank/statements"] == 3

    async def test_an_unknown_account_is_refused_for_a_person(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with BankClient(server.url, ACCOUNT.api_key) as client:
            with pytest.raises(NeedsAttentionError) as caught:
                await client.balance("1111111111")
        assert caught.value.code == "not_found"
