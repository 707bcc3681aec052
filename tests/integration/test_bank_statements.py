"""Bank statements against the real stack: uploads (MT940, camt.053), the bank API poll, dedupe,
the balance check, balances and tenant scope."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from connectors.bank import sandbox, statements
from connectors.bank.client import BankClient
from engine.application import LedgerService
from engine.config import Settings
from tests.connectors.contract import LiveServer
from tests.integration.helpers import client_for

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).parent.parent / "samples" / "bank"
MT940 = (SAMPLES / "january.mt940").read_bytes()
CAMT053 = (SAMPLES / "january.camt053.xml").read_bytes()
# Overlaps january.mt940 on 16 January (its two identical NONREF fee credits) and adds one line.
OVERLAPPING = (
    b":20:STMT20240205\r\n:25:ICIC0005678/9876543210\r\n:28C:00002/001\r\n:60F:C240116INR97495,00\r\n"
    b":61:2401160116C2500,00NTRFNONREF\r\n:86:FEE COLLECTION ROLL 17\r\n"
    b":61:2401160116C2500,00NTRFNONREF\r\n:86:FEE COLLECTION ROLL 18\r\n"
    b":61:2402050205C1200,50NTRFICIC240205000042\r\n:86:UPI-HOSTEL FEE\r\n"
    b":62F:C240205INR103695,50\r\n-\r\n"
)
# Closing balance 10.00 short of opening + lines.
MISMATCHED = MT940.replace(b":62F:C240131INR99995,00", b":62F:C240131INR99985,00")


class Api:
    def __init__(self, settings: Settings, service: LedgerService) -> None:
        self.settings = settings
        self.service = service
        self.http: TestClient = client_for(settings)

    def tenant(self) -> tuple[Any, dict[str, str]]:
        registered = self.service.register_tenant(
            name="College",
            legal_name="College Accounts Private Limited",
            country="IN",
            gstin="27AAGCB7383J1Z8",
            state="27",
        )
        return registered.tenant_id, {"Authorization": f"Bearer {registered.api_key}"}

    def upload(self, auth: dict[str, str], body: bytes, fmt: str | None = None) -> Any:
        params = {"format": fmt} if fmt else {}
        return self.http.post("/v1/bank/statements", content=body, params=params, headers=auth)

    def lines(self, auth: dict[str, str], **params: str) -> list[dict[str, Any]]:
        answer = self.http.get(
            "/v1/bank/transactions", params={"account": "9876543210", **params}, headers=auth
        )
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])

    def count(self, topic_like: str, text_like: str = "%") -> int:
        with psycopg.connect(
            self.settings.database_url, options=f"-c search_path={self.settings.db_schema}"
        ) as conn:
            row = conn.execute(
                "SELECT count(*) FROM ledger_events"
                " WHERE topic LIKE %s AND convert_from(state, 'UTF8') LIKE %s",
                (topic_like, text_like),
            ).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def api(settings: Settings, service: LedgerService) -> Iterator[Api]:
    yield Api(settings, service)


def test_an_mt940_upload_imports_each_line_once_whatever_comes_again(api: Api) -> None:
    _, auth = api.tenant()

    first = api.upload(auth, MT940)
    again = api.upload(auth, MT940)
    as_camt = api.upload(auth, CAMT053)

    assert first.status_code == 201, first.text
    [statement] = first.json()["statements"]
    assert (statement["lines"], statement["imported"], statement["balanced"]) == (3, 3, True)
    assert (statement["opening_balance"], statement["closing_balance"]) == ("100000.00", "99995.00")
    assert [s["imported"] for s in again.json()["statements"] + as_camt.json()["statements"]] == [0, 0]
    lines = api.lines(auth)
    assert [(line["amount"], line["reference"], line["position"]) for line in lines] == [
        ("-5005.00", "HDFC2024011598765", 1),
        ("2500.00", None, 1),
        ("2500.00", None, 2),
    ]
    assert api.count("%BankTransaction.Recorded%") == 3


def test_an_overlapping_statement_imports_only_its_new_line(api: Api) -> None:
    _, auth = api.tenant()
    api.upload(auth, MT940)

    overlap = api.upload(auth, OVERLAPPING, "mt940")

    [statement] = overlap.json()["statements"]
    assert (statement["lines"], statement["imported"], statement["duplicates"]) == (3, 1, 2)
    assert statement["balanced"] is True
    assert len(api.lines(auth)) == 4
    assert [line["reference"] for line in api.lines(auth, **{"from": "2024-02-01"})] == ["ICIC240205000042"]
    balance = api.http.get("/v1/bank/accounts/9876543210/balance", headers=auth).json()
    assert (balance["balance"], balance["source"]) == ("103695.50", "statement:mt940")


def test_a_camt053_upload_counts_booked_entries_only(api: Api) -> None:
    _, auth = api.tenant()

    answer = api.upload(auth, CAMT053)

    assert answer.status_code == 201, answer.text
    [statement] = answer.json()["statements"]
    assert (statement["source"], statement["lines"], statement["balanced"]) == ("camt.053", 3, True)
    assert statement["statement_ref"] == "STMT-2024-01"


def test_a_statement_that_does_not_add_up_is_reported_and_alerted(api: Api) -> None:
    _, auth = api.tenant()

    answer = api.upload(auth, MISMATCHED)

    assert answer.status_code == 201, answer.text
    body = answer.json()
    [statement] = body["statements"]
    assert body["balanced"] is False
    assert (statement["balanced"], statement["computed_closing"], statement["difference"]) == (
        False,
        "99995.00",
        "-10.00",
    )
    assert api.count("%Alert.Raised%", "%bank.statement_mismatch%") == 1


def test_statements_transactions_and_balances_are_the_tenants_own(api: Api) -> None:
    _, mine = api.tenant()
    _, theirs = api.tenant()
    api.upload(mine, MT940)

    assert api.lines(theirs) == []
    assert api.http.get("/v1/bank/accounts/9876543210/balance", headers=theirs).status_code == 404
    # The same statement uploaded by the other tenant is theirs to import in full.
    [statement] = api.upload(theirs, MT940).json()["statements"]
    assert statement["imported"] == 3


@pytest.mark.parametrize(
    ("body", "fmt", "status"),
    [
        (b"hello", None, 422),
        (b":20:X\r\n:61:garbage\r\n-\r\n", "mt940", 422),
        (b"<?xml version='1.0'?><!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><d>&x;</d>", None, 422),
        (b"<Document xmlns='urn:iso:std:iso:20022:tech:xsd:camt.053.001.08'><oops", None, 422),
        (CAMT053.replace(b">5005.00<", b">1e999999<"), None, 422),
        (CAMT053.replace(b">5005.00<", b">NaN<"), None, 422),
        (MT940.replace(b"NEFT-Tech", b"NEFT\x00\x1b[31mTech"), None, 201),
        (b"", None, 422),
        (b"x" * (10 * 1024 * 1024 + 1), None, 413),
    ],
)
def test_hostile_statements_are_a_4xx_in_the_error_shape(
    api: Api, body: bytes, fmt: str | None, status: int
) -> None:
    _, auth = api.tenant()
    answer = api.upload(auth, body, fmt)
    assert answer.status_code == status, answer.text
    if status >= 400:
        assert set(answer.json()["error"]) >= {"code", "message", "details", "timestamp", "request_id"}
    else:
        assert "\x00" not in answer.text and "\x1b" not in str(api.lines(auth))


def test_the_bank_api_poll_imports_the_statement_and_balance_once(
    settings: Settings, service: LedgerService
) -> None:
    api = Api(settings, service)
    tenant_id, auth = api.tenant()
    account = sandbox.SandboxAccount()
    with LiveServer(sandbox.create_app(account=account, page_size=2)) as server:
        import httpx

        for n in range(3):
            httpx.post(
                f"{server.url}/_bank/credits",
                json={"date": "2024-01-16", "amount": 250_000, "description": f"FEE {n}", "ref_number": None},
            )

        async def poll() -> statements.ImportResult:
            async with BankClient(server.url, account.api_key) as bank:
                return await statements.poll_account(
                    service, tenant_id, bank, account.account_number, today=date(2024, 1, 20)
                )

        first = asyncio.run(poll())
        second = asyncio.run(poll())

    assert (first.imported, second.imported, first.statement.balanced) == (3, 0, True)
    assert [line["position"] for line in api.lines(auth)] == [1, 2, 3]
    balance = api.http.get("/v1/bank/accounts/9876543210/balance", headers=auth).json()
    assert (balance["balance"], balance["source"]) == ("10007500.00", "api")
