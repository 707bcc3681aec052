"""Payouts through the bank connector against the real stack and the bank sandbox.

The sandbox (connectors/bank/sandbox.py) runs under uvicorn on a loopback port; the event store and
the payouts list are the real PostgreSQL. Jobs are run by the connector's real handler, one attempt
at a time, so each error code's rule is seen without waiting its 30 minutes or a day; the retry
schedule those rules pick is pinned in tests/unit/test_bank_rules.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from connectors.bank import errors, sandbox, webhook
from connectors.bank.handler import BankHandler
from connectors.bank.payouts import Applied, PayoutBook
from connectors.bank.routes import statements_job
from connectors.errors import ConnectorError, ErrorClass, NotYet, RetryableError
from engine.application import LedgerService
from engine.config import Settings
from engine.security.secrets import load_key_ring
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job
from tests.connectors.contract import LiveServer
from tests.integration.helpers import client_for

pytestmark = pytest.mark.integration

ACCOUNT = sandbox.SandboxAccount()


def payout_body(reference: str = "PAY-2024-000123", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": "5000.00",
        "currency": "INR",
        "mode": "NEFT",
        "beneficiary": {"name": "Tech Supplies Ltd", "account_number": "1234567890", "ifsc": "HDFC0001234"},
        "purpose": "Payment for Invoice INV-2024-001",
        "reference": reference,
    }
    body.update(changes)
    return body


@dataclass
class Bank:
    settings: Settings
    service: LedgerService
    url: str
    api: TestClient
    operator: httpx.Client

    def tenant(self, *, configure: bool = True) -> tuple[UUID, dict[str, str]]:
        registered = self.service.register_tenant(
            name="College",
            legal_name="College Accounts Private Limited",
            country="IN",
            gstin="27AAGCB7383J1Z8",
            state="27",
        )
        auth = {"Authorization": f"Bearer {registered.api_key}"}
        if configure:
            answer = self.api.put(
                "/v1/integrations/bank",
                json={
                    "enabled": True,
                    "environment": "sandbox",
                    "base_url": self.url,
                    "credentials": ACCOUNT.credentials(),
                },
                headers=auth,
            )
            assert answer.status_code == 200, answer.text
        return registered.tenant_id, auth

    def post(self, auth: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        answer = self.api.post("/v1/payouts", json=body, headers=auth)
        assert answer.status_code == 201, answer.text
        return answer.json()

    def get(self, auth: dict[str, str], payout_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/v1/payouts/{payout_id}", headers=auth)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def attempt(self, tenant_id: UUID, payout_id: str) -> Any:
        """One attempt of the payout's job by the real handler: its result, or the error it raised."""

        async def run() -> Any:
            context = HandlerContext(
                self.settings,
                self.service,
                load_key_ring(self.settings.var_dir),
                connector="bank",
                request_rate_per_s=None,
            )
            handler = BankHandler(context)
            try:
                return await handler.payout(tenant_id, UUID(payout_id))
            except ConnectorError as exc:
                return exc
            finally:
                await handler.close()

        return asyncio.run(run())

    def paid(self) -> int:
        return int(self.operator.get("/_sandbox/stats").json()["effects"]["payout_initiated"])

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(
            self.settings.database_url, options=f"-c search_path={self.settings.db_schema}"
        ) as c:
            return c.execute(query, params).fetchall()


@pytest.fixture
def bank(settings: Settings, service: LedgerService) -> Iterator[Bank]:
    with LiveServer(sandbox.create_app(account=ACCOUNT)) as server, httpx.Client(base_url=server.url) as op:
        yield Bank(settings, service, server.url, client_for(settings), op)


def test_a_neft_payout_is_submitted_once_and_completes_with_utr_and_charges(bank: Bank) -> None:
    tenant_id, auth = bank.tenant()
    created = bank.post(auth, payout_body())
    assert (created["status"], created["amount"], created["beneficiary"]["account_number"]) == (
        "requested",
        "5000.00",
        "XXXXXX7890",
    )

    result = bank.attempt(tenant_id, created["id"])

    payout = bank.get(auth, created["id"])
    assert result.data["status"] == "completed"
    assert payout["status"] == "completed" and payout["utr"] and payout["charges"] == "5.00"
    assert bank.paid() == 1
    # A redelivered job changes nothing and pays nothing.
    assert bank.attempt(tenant_id, created["id"]).data["status"] == "completed"
    assert bank.paid() == 1
    # The same POST again is the same payout; another payout under the same reference is refused.
    again = bank.api.post("/v1/payouts", json=payout_body(), headers=auth)
    assert (again.status_code, again.json()["id"]) == (200, created["id"])
    clash = bank.api.post("/v1/payouts", json=payout_body(amount="10.00"), headers=auth)
    assert (clash.status_code, clash.json()["error"]["code"]) == (409, "reference_reused")


def test_lost_answers_and_timeouts_never_pay_twice(bank: Bank) -> None:
    tenant_id, auth = bank.tenant()
    # Every initiate is carried out and then its answer is lost (a 502 after the effect).
    bank.operator.post(
        "/_sandbox/faults",
        json={"after_effect_failure_rate": 1.0, "paths": ["/api/v2/payments/neft"], "max_faults": 3},
    )
    created = bank.post(auth, payout_body())
    outcomes = [bank.attempt(tenant_id, created["id"]) for _ in range(4)]

    assert [isinstance(o, RetryableError) for o in outcomes[:3]] == [True, True, True]
    assert bank.get(auth, created["id"])["status"] == "completed"
    assert bank.paid() == 1


def test_a_slow_bank_is_polled_without_counting_as_a_failure(bank: Bank) -> None:
    tenant_id, auth = bank.tenant()
    bank.operator.post("/_bank/settings", json={"completes_after_s": 3600})
    created = bank.post(auth, payout_body())

    first = bank.attempt(tenant_id, created["id"])
    assert isinstance(first, NotYet) and first.code == errors.PAYOUT_PROCESSING
    assert bank.get(auth, created["id"])["status"] == "processing"
    bank.operator.post("/_sandbox/clock", json={"advance_s": 3601})
    assert bank.attempt(tenant_id, created["id"]).data["status"] == "completed"
    assert bank.paid() == 1


def test_bank_offline_is_retried_in_the_same_round_and_pays_once(bank: Bank) -> None:
    tenant_id, auth = bank.tenant()
    bank.operator.post("/_bank/refusals", json={"codes": ["bank_offline", "bank_offline"]})
    created = bank.post(auth, payout_body())

    outcomes = [bank.attempt(tenant_id, created["id"]) for _ in range(3)]

    assert [getattr(o, "code", None) for o in outcomes[:2]] == ["bank_offline", "bank_offline"]
    assert outcomes[0].error_class is ErrorClass.RETRYABLE and outcomes[0].retry_after == 1800.0
    payout = bank.get(auth, created["id"])
    assert (payout["status"], payout["round"]) == ("completed", 1)
    assert bank.paid() == 1


def test_daily_limit_exceeded_waits_a_day(bank: Bank) -> None:
    tenant_id, auth = bank.tenant()
    bank.operator.post("/_bank/refusals", json={"codes": ["daily_limit_exceeded"]})
    created = bank.post(auth, payout_body())

    outcome = bank.attempt(tenant_id, created["id"])

    assert (outcome.code, outcome.error_class, outcome.retry_after) == (
        "daily_limit_exceeded",
        ErrorClass.RETRYABLE,
        86400.0,
    )
    assert bank.get(auth, created["id"])["status"] == "requested"
    assert bank.paid() == 0


def test_invalid_account_fails_for_good(bank: Bank) -> None:
    tenant_id, auth = bank.tenant()
    beneficiary = {"name": "Nobody", "account_number": "000000000000", "ifsc": "HDFC0001234"}
    created = bank.post(auth, payout_body(beneficiary=beneficiary))

    result = bank.attempt(tenant_id, created["id"])

    payout = bank.get(auth, created["id"])
    assert result.data == {"status": "failed", "code": "invalid_account"}
    assert (payout["status"], payout["failure"]["code"]) == ("failed", "invalid_account")
    assert bank.attempt(tenant_id, created["id"]).data["status"] == "failed"
    retry = bank.api.post(f"/v1/payouts/{created['id']}/retry", headers=auth)
    assert (retry.status_code, retry.json()["error"]["code"]) == (409, "payout_state_conflict")
    assert bank.paid() == 0


def test_insufficient_funds_waits_for_a_person_with_an_alert_then_the_retry_pays(bank: Bank) -> None:
    tenant_id, auth = bank.tenant()
    bank.operator.post("/_bank/balance", json={"available_balance": 100})
    created = bank.post(auth, payout_body())

    result = bank.attempt(tenant_id, created["id"])

    assert result.data == {"status": "on_hold", "code": "insufficient_funds"}
    assert bank.get(auth, created["id"])["status"] == "on_hold"
    alerts = bank.sql(
        "SELECT count(*) FROM ledger_events WHERE topic LIKE %s AND convert_from(state, 'UTF8') LIKE %s",
        "%Alert.Raised%",
        "%bank.insufficient_funds%",
    )
    assert alerts[0][0] == 1
    # The job does nothing more until a person releases the payout.
    assert bank.attempt(tenant_id, created["id"]).data["status"] == "on_hold"
    bank.operator.post("/_bank/balance", json={"available_balance": 10_000_000})
    released = bank.api.post(f"/v1/payouts/{created['id']}/retry", headers=auth)
    assert (released.status_code, released.json()["status"], released.json()["round"]) == (
        200,
        "requested",
        2,
    )
    assert bank.attempt(tenant_id, created["id"]).data["status"] == "completed"
    assert bank.paid() == 1


def test_a_payment_the_bank_fails_after_accepting_is_paid_in_a_new_round(bank: Bank) -> None:
    tenant_id, auth = bank.tenant()
    bank.operator.post("/_bank/failures", json={"codes": ["bank_offline"]})
    created = bank.post(auth, payout_body())

    bounced = bank.attempt(tenant_id, created["id"])

    assert (bounced.code, bounced.retry_after) == ("bank_offline", 1800.0)
    assert (bank.get(auth, created["id"])["status"], bank.get(auth, created["id"])["round"]) == (
        "requested",
        2,
    )
    assert bank.attempt(tenant_id, created["id"]).data["status"] == "completed"
    # Two payments were made, one failed by the bank (its money never left): one payout paid.
    assert bank.paid() == 2
    balance = bank.operator.get(
        "/api/v1/bank/balance",
        params={"account_number": ACCOUNT.account_number},
        headers={"Authorization": f"Bearer {ACCOUNT.api_key}"},
    ).json()
    assert balance["available_balance"] == ACCOUNT.opening_paise - 500_000 - 500


def test_callbacks_and_polls_record_the_completion_once(bank: Bank) -> None:
    tenant_id, auth = bank.tenant()
    bank.operator.post("/_bank/settings", json={"completes_after_s": 60})
    created = bank.post(auth, payout_body())
    assert isinstance(bank.attempt(tenant_id, created["id"]), NotYet)
    bank.operator.post("/_sandbox/clock", json={"advance_s": 61})
    [delivery] = bank.operator.get("/_bank/callbacks").json()
    body = delivery["body"].encode()
    assert webhook.verify(body, delivery["signature"], [ACCOUNT.webhook_secret])
    assert not webhook.verify(body, delivery["signature"], ["another-secret"])
    assert not webhook.verify(body + b" ", delivery["signature"], [ACCOUNT.webhook_secret])

    book = PayoutBook(bank.service)
    import orjson

    first = webhook.handle(book, tenant_id, orjson.loads(body))
    again = webhook.handle(book, tenant_id, orjson.loads(body))
    polled = bank.attempt(tenant_id, created["id"])

    assert (first, again) == (Applied.RECORDED, Applied.UNCHANGED)
    assert polled.data["status"] == "completed"
    completed = bank.sql("SELECT count(*) FROM ledger_events WHERE topic LIKE %s", "%Payout.Completed%")
    assert completed[0][0] == 1
    # Another tenant's callback never finds this payout.
    stranger, _ = bank.tenant(configure=False)
    assert webhook.handle(book, stranger, orjson.loads(body)) is Applied.UNKNOWN


def test_a_payout_without_a_bank_integration_is_refused(bank: Bank) -> None:
    _, auth = bank.tenant(configure=False)
    answer = bank.api.post("/v1/payouts", json=payout_body(), headers=auth)
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "bank_not_configured")
    assert bank.api.get("/v1/payouts", headers=auth).json()["items"] == []


def test_payouts_are_scoped_to_their_tenant(bank: Bank) -> None:
    _, auth = bank.tenant()
    _, other = bank.tenant()
    created = bank.post(auth, payout_body())
    assert bank.api.get(f"/v1/payouts/{created['id']}", headers=other).status_code == 404
    assert bank.api.post(f"/v1/payouts/{created['id']}/retry", headers=other).status_code == 404
    assert bank.api.get("/v1/payouts", headers=other).json()["items"] == []
    # The same reference in another tenant is another payout.
    theirs = bank.post(other, payout_body())
    assert theirs["id"] != created["id"]
    mine = bank.api.get("/v1/payouts", params={"status": "requested"}, headers=auth).json()["items"]
    assert [p["id"] for p in mine] == [created["id"]]


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"mode": "RTGS", "amount": "199999.99"}, "amount"),
        ({"mode": "IMPS", "amount": "500000.01"}, "amount"),
        ({"amount": "1.001"}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "1" * 39}, "amount"),
        ({"currency": "USD"}, "currency"),
        (
            {"beneficiary": {"name": "X", "account_number": "1234567890", "ifsc": "HDFC1001234"}},
            "beneficiary.ifsc",
        ),
        (
            {"beneficiary": {"name": "X", "account_number": "12ab", "ifsc": "HDFC0001234"}},
            "beneficiary.account_number",
        ),
    ],
)
def test_payouts_breaking_a_rule_are_refused_with_the_field(
    bank: Bank, changes: dict[str, Any], path: str
) -> None:
    _, auth = bank.tenant(configure=False)
    answer = bank.api.post("/v1/payouts", json=payout_body(**changes), headers=auth)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["details"]["fields"][0]["path"] == path


@pytest.mark.parametrize(
    "body",
    [
        {**payout_body(), "amount": 5000.5},
        {**payout_body(), "purpose": "pay\x00me"},
        {**payout_body(), "reference": "ref\u202ethgir"},
        {**payout_body(), "extra": 1},
        {**payout_body(), "beneficiary": "someone"},
    ],
)
def test_hostile_payout_bodies_are_a_4xx_in_the_error_shape(bank: Bank, body: dict[str, Any]) -> None:
    _, auth = bank.tenant(configure=False)
    answer = bank.api.post("/v1/payouts", json=body, headers=auth)
    assert 400 <= answer.status_code < 500, answer.text
    assert set(answer.json()["error"]) >= {"code", "message", "details", "timestamp", "request_id"}


def test_the_same_payout_posted_concurrently_is_one_payout(bank: Bank) -> None:
    _, auth = bank.tenant()
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(
            pool.map(lambda _: bank.api.post("/v1/payouts", json=payout_body(), headers=auth), range(6))
        )

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(bank.api.get("/v1/payouts", headers=auth).json()["items"]) == 1


def test_the_statement_poll_job_renews_itself_and_only_the_newest_one_polls(bank: Bank) -> None:
    tenant_id, auth = bank.tenant()
    older = statements_job("ce-older", str(tenant_id))
    newer = replace(
        statements_job("ce-newer", str(tenant_id)), created_at=older.created_at + timedelta(seconds=1)
    )

    async def run(job: Job, attempt: int) -> Any:
        context = HandlerContext(
            bank.settings,
            bank.service,
            load_key_ring(bank.settings.var_dir),
            connector="bank",
            request_rate_per_s=None,
        )
        handler = BankHandler(context)
        try:
            return await handler(job, attempt)
        except ConnectorError as exc:
            return exc
        finally:
            await handler.close()

    first = asyncio.run(run(older, 1))
    assert isinstance(first, NotYet) and first.code == errors.STATEMENT_POLL_DUE
    assert isinstance(asyncio.run(run(newer, 1)), NotYet)
    # The older job, back from its wait, sees it was superseded and ends.
    assert asyncio.run(run(older, 2)).data == {"superseded": True}
    assert isinstance(asyncio.run(run(newer, 2)), NotYet)
    assert bank.sql("SELECT count(*) FROM bank_statement_polls WHERE last_polled_at IS NOT NULL")[0][0] == 1
    # Switched off, the poll ends quietly (no dead letter).
    bank.api.put(
        "/v1/integrations/bank",
        json={
            "enabled": False,
            "environment": "sandbox",
            "base_url": bank.url,
            "credentials": ACCOUNT.credentials(),
        },
        headers=auth,
    )
    assert asyncio.run(run(newer, 3)).data == {"stopped": "integration_disabled"}
