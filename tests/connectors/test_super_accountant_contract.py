"""super-accountant: the standard connector suite, then the accountant's own contract (tokens, signed
bodies, paise, batch idempotency), over HTTP against its sandbox."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import httpx
import pytest
from starlette.types import ASGIApp

from connectors import super_accountant
from connectors.errors import NeedsAttentionError, PermanentError
from connectors.super_accountant.client import EXPENSE_SYNC_PATH, SuperAccountantClient
from connectors.super_accountant.sandbox import SandboxAccount, create_app
from tests.connectors.contract import (
    ConnectorContract,
    ConnectorSettingsContract,
    LiveServer,
    Operator,
    SandboxFixtures,
)

ACCOUNT = SandboxAccount()


def a_batch(n: int = 1, size: int = 2, amount: int = 500000) -> dict[str, Any]:
    batch_id = str(uuid4())
    expenses = [
        {
            "expense_number": f"EXP-2024-{n:03d}{i:03d}-{batch_id[:4]}",
            "college_id": ACCOUNT.college_id,
            "amount": amount,
            "category": "supplies",
            "status": "approved",
            "expense_date": "2024-01-15",
        }
        for i in range(size)
    ]
    return {
        "batch_id": batch_id,
        "college_id": ACCOUNT.college_id,
        "expense_count": size,
        "total_amount": amount * size,
        "expenses": expenses,
    }


# This file's own cases are not about timeouts: a loaded CI machine answered a token request in over
# FAST's 0.3 s read. The contract suite passes its own (FAST) timeout through the harness.
PATIENT = httpx.Timeout(10.0)


def client(url: str, timeout: httpx.Timeout = PATIENT, **changes: str) -> SuperAccountantClient:
    c = {**ACCOUNT.credentials(), **changes}
    return SuperAccountantClient(
        url, c["client_id"], c["client_secret"], c["signing_secret"], timeout=timeout
    )


class SuperAccountantHarness:
    effect = "batch_received"
    effect_path = EXPENSE_SYNC_PATH

    def create_app(self) -> ASGIApp:
        return create_app(ACCOUNT)

    def client(self, base_url: str, timeout: httpx.Timeout) -> SuperAccountantClient:
        return client(base_url, timeout)

    async def probe(self, client: SuperAccountantClient) -> None:
        await client.authenticate()

    async def perform_effect(self, client: SuperAccountantClient, n: int) -> None:
        await client.authenticate()  # the token first, so the effectful request is the one faulted
        await client.sync_expenses(a_batch(n))

    def secrets(self) -> list[str]:
        return [ACCOUNT.client_secret, ACCOUNT.signing_secret]


class TestSuperAccountantContract(ConnectorContract):
    harness = SuperAccountantHarness()


class SuperAccountantSettingsHarness:
    connector = super_accountant.CONNECTOR

    def create_app(self) -> ASGIApp:
        return create_app(ACCOUNT)

    def credentials(self) -> dict[str, str]:
        return ACCOUNT.credentials()

    def wrong_credentials(self) -> dict[str, str]:
        return {**ACCOUNT.credentials(), "client_secret": "not-the-secret"}


class TestSuperAccountantSettings(ConnectorSettingsContract):
    harness = SuperAccountantSettingsHarness()


class TestAccountantApi(SandboxFixtures):
    harness = SuperAccountantHarness()

    async def test_a_batch_is_received_once_and_a_retry_of_it_is_a_duplicate_receipt(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        batch = a_batch(size=3)
        async with client(server.url) as c:
            first = await c.sync_expenses(batch)
            again = await c.sync_expenses(batch)

        assert (first.accepted, first.duplicate) == (3, False)
        assert (again.accepted, again.duplicate) == (3, True)
        assert sandbox.stats()["effects"]["batch_received"] == 1
        [kept] = httpx.get(f"{server.url}/_sandbox/batches").json()["batches"]
        assert kept["total_amount"] == 1500000

    async def test_a_lost_answer_then_a_retry_does_not_double_the_batch(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        batch = a_batch()
        sandbox.faults(after_effect_failure_rate=1.0, max_faults=1, paths=[EXPENSE_SYNC_PATH])
        async with client(server.url) as c:
            with pytest.raises(Exception) as lost:
                await c.sync_expenses(batch)
            retried = await c.sync_expenses(batch)

        assert getattr(lost.value, "code", None) == "http_502"
        assert retried.duplicate is True
        assert sandbox.stats()["effects"]["batch_received"] == 1

    async def test_an_expired_token_is_renewed_once(self, sandbox: Operator, server: LiveServer) -> None:
        async with client(server.url) as c:
            await c.sync_expenses(a_batch(1))
            sandbox.clock(advance_s=7200)  # past the sandbox's one-hour tokens, without sleeping
            receipt = await c.sync_expenses(a_batch(2))

        assert receipt.accepted == 2
        assert sandbox.stats()["paths"].get("/oauth/token") == 2

    @pytest.mark.parametrize(
        ("change", "error", "code"),
        [
            ({"amount": "5000.00"}, PermanentError, "invalid_amount"),
            ({"amount": 5000.5}, PermanentError, "invalid_amount"),
            ({"amount": True}, PermanentError, "invalid_amount"),
            ({"amount": 0}, PermanentError, "invalid_amount"),
            ({"college_id": "2"}, PermanentError, "invalid_expense"),
        ],
    )
    async def test_amounts_must_be_whole_paise(
        self,
        sandbox: Operator,
        server: LiveServer,
        change: dict[str, Any],
        error: type[PermanentError],
        code: str,
    ) -> None:
        batch = a_batch(size=1)
        batch["expenses"][0].update(change)
        async with client(server.url) as c:
            with pytest.raises(error) as caught:
                await c.sync_expenses(batch)
        assert caught.value.code == code
        assert sandbox.stats()["effects"]["batch_received"] == 0

    async def test_a_batch_over_a_thousand_and_a_wrong_total_are_refused(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        big = a_batch(size=1001, amount=1)
        wrong = a_batch(size=2) | {"total_amount": 1}
        async with client(server.url) as c:
            with pytest.raises(PermanentError) as too_big:
                await c.sync_expenses(big)
            with pytest.raises(PermanentError) as mismatch:
                await c.sync_expenses(wrong)
        assert (too_big.value.code, mismatch.value.code) == ("batch_too_large", "total_mismatch")

    async def test_a_forged_signature_needs_a_person_and_the_secret_is_never_echoed(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        async with client(server.url, signing_secret="forged-secret") as c:
            with pytest.raises(NeedsAttentionError) as caught:
                await c.sync_expenses(a_batch())
        assert caught.value.code == "invalid_signature"
        text = f"{caught.value!r} {caught.value} {caught.value.details} {c!r}"
        assert "forged-secret" not in text and ACCOUNT.client_secret not in text

    async def test_the_same_expense_in_another_batch_is_refused(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        first = a_batch()
        second = a_batch() | {"expenses": first["expenses"]}
        async with client(server.url) as c:
            await c.sync_expenses(first)
            with pytest.raises(NeedsAttentionError) as caught:
                await c.sync_expenses(second)
        assert caught.value.code == "duplicate_expense"
        assert sandbox.stats()["effects"]["batch_received"] == 1
