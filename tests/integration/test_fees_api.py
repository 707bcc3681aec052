"""/v1/fee-collections and /v1/reconciliation/fees over the real API app and PostgreSQL: receipts
recorded once (also when sent concurrently), the seed's list shape with its summary and a cursor,
hostile input refused in our error shape, tenants kept apart, and a month reconciled against an
uploaded bank statement with every kind of discrepancy, totals recomputed here."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from engine.application import LedgerService
from engine.config import Settings
from tests.integration.helpers import client_for, register_tenant

pytestmark = pytest.mark.integration

Auth = dict[str, str]


@pytest.fixture
def http(settings: Settings) -> TestClient:
    return client_for(settings)


def tenant(service: LedgerService) -> Auth:
    _, key = register_tenant(service)
    return {"Authorization": f"Bearer {key}"}


def fee(client: TestClient, auth: Auth, receipt: str, **changes: Any) -> Any:
    body: dict[str, Any] = {
        "receipt_number": receipt,
        "student_id": 5678,
        "student_name": "Jane Student",
        "amount": "50000",
        "payment_mode": "upi",
        "payment_date": "2024-01-10",
        "fee_type": "tuition",
        "academic_year": "2023-24",
        "semester": 1,
    }
    body.update(changes)
    return client.post("/v1/fee-collections", json=body, headers=auth)


def statement(lines: list[tuple[str, str, str, str]]) -> bytes:
    """An MT940 statement of credits (value date YYMMDD, amount, reference, text), balanced."""
    opening = Decimal("100000.00")
    closing = opening + sum((Decimal(a) for _, a, _, _ in lines), Decimal(0))
    body = ":20:STMT2024FEES\r\n:25:ICIC0005678/9876543210\r\n:28C:00001/001\r\n"
    body += f":60F:C240101INR{opening:.2f}\r\n".replace(".", ",")
    for day, amount, ref, text in lines:
        body += f":61:{day}{day[2:]}C{Decimal(amount):.2f}NTRF{ref}\r\n".replace(".", ",")
        body += f":86:{text}\r\n"
    body += f":62F:C240131INR{closing:.2f}\r\n-\r\n".replace(".", ",")
    return body.encode()


def events(settings: Settings, like: str) -> int:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        row = conn.execute("SELECT count(*) FROM ledger_events WHERE topic LIKE %s", (like,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_receipt_is_recorded_once_and_listed_in_the_seeds_shape(
    http: TestClient, service: LedgerService, settings: Settings
) -> None:
    auth = tenant(service)

    first = fee(http, auth, "FEE-2024-001234", payment_reference="401012345678")
    again = fee(http, auth, "FEE-2024-001234", payment_reference="401012345678")
    other = fee(http, auth, "FEE-2024-001234", amount="49999.99", payment_reference="401012345678")
    fee(http, auth, "FEE-2024-001235", student_id="ROLL-17", amount="1250.50", payment_date="2024-01-31")
    fee(http, auth, "FEE-2024-001236", payment_date="2024-02-01")

    assert first.status_code == 201, first.text
    assert first.json()["amount"] == "50000.00" and first.json()["student_id"] == "5678"
    assert (again.status_code, again.json()) == (200, first.json())
    assert other.status_code == 409 and other.json()["error"]["code"] == "receipt_reused"
    assert events(settings, "%FeeCollection.Recorded%") == 3
    listed = http.get(
        "/v1/fee-collections", params={"from_date": "2024-01-01", "to_date": "2024-01-31"}, headers=auth
    )
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert [r["receipt_number"] for r in page["data"]] == ["FEE-2024-001234", "FEE-2024-001235"]
    assert page["summary"] == {"total_collected": "51250.50", "transaction_count": 2}
    assert set(page["data"][0]) >= {
        "receipt_number", "student_id", "student_name", "amount", "payment_mode", "payment_date",
        "fee_type", "academic_year", "semester",
    }  # fmt: skip
    walked, cursor = [], None
    while True:
        params = {"from_date": "2024-01-01", "to_date": "2024-12-31", "limit": "1"}
        got = http.get(
            "/v1/fee-collections", params={**params, **({"cursor": cursor} if cursor else {})}, headers=auth
        )
        walked += [r["receipt_number"] for r in got.json()["data"]]
        assert got.json()["summary"]["transaction_count"] == 3
        cursor = got.json()["next_cursor"]
        if cursor is None:
            break
    assert walked == ["FEE-2024-001234", "FEE-2024-001235", "FEE-2024-001236"]


def test_the_same_receipt_sent_concurrently_is_one_collection(
    http: TestClient, service: LedgerService, settings: Settings
) -> None:
    auth = tenant(service)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: fee(http, auth, "FEE-RACE-0001"), range(8)))

    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert events(settings, "%FeeCollection.Recorded%") == 1


HOSTILE: list[dict[str, Any]] = [
    {"student_name": "Jane\x00Student"},
    {"student_name": "Jane\u202eStudent"},
    {"receipt_number": "FEE 1"},
    {"amount": "1e9"},
    {"amount": "9" * 40},
    {"amount": "0"},
    {"amount": "-5"},
    {"amount": "10.005"},
    {"amount": True},
    {"payment_mode": "bitcoin"},
    {"payment_date": "2024-02-30"},
    {"semester": 0},
    {"academic_year": "2023-2024"},
    {"college_id": 2},
]


def test_hostile_fee_input_is_a_clear_422_and_records_nothing(
    http: TestClient, service: LedgerService, settings: Settings
) -> None:
    auth = tenant(service)

    answers = [(changes, fee(http, auth, "FEE-HOSTILE-1", **changes)) for changes in HOSTILE]

    refused = [(c, a.status_code, a.json()["error"]["code"]) for c, a in answers]
    assert refused == [(c, 422, "validation_failed") for c in HOSTILE]
    assert events(settings, "%FeeCollection.Recorded%") == 0


def test_bad_periods_and_cursors_are_422_and_no_key_is_401(http: TestClient, service: LedgerService) -> None:
    auth = tenant(service)
    period = {"from_date": "2024-01-31", "to_date": "2024-01-01"}

    backwards = http.get("/v1/fee-collections", params=period, headers=auth)
    forged = http.get(
        "/v1/fee-collections",
        params={"from_date": "2024-01-01", "to_date": "2024-01-31", "cursor": "%%%"},
        headers=auth,
    )
    too_long = http.post(
        "/v1/reconciliation/fees", json={"from_date": "2020-01-01", "to_date": "2024-01-31"}, headers=auth
    )
    tolerance = http.post(
        "/v1/reconciliation/fees",
        json={"from_date": "2024-01-01", "to_date": "2024-01-31", "tolerance_days": 10**12},
        headers=auth,
    )
    anonymous = http.get("/v1/fee-collections", params={"from_date": "2024-01-01", "to_date": "2024-01-31"})

    assert [backwards.status_code, forged.status_code, too_long.status_code, tolerance.status_code] == [
        422
    ] * 4
    codes = [a.json()["error"]["code"] for a in (backwards, forged, too_long)]
    assert codes == ["invalid_period", "invalid_cursor", "invalid_period"]
    assert anonymous.status_code == 401


def test_a_month_is_reconciled_against_the_bank_statement(http: TestClient, service: LedgerService) -> None:
    auth = tenant(service)
    fee(http, auth, "FEE-2024-0001", amount="50000", payment_date="2024-01-10")
    fee(
        http, auth, "FEE-2024-0002", student_id=7, student_name="Ravi Kumar", amount="25000",
        payment_date="2024-01-12", payment_reference="401212345678",
    )  # fmt: skip
    fee(
        http,
        auth,
        "FEE-2024-0003",
        student_id=8,
        student_name="Asha Rao",
        amount="12000",
        payment_date="2024-01-15",
    )
    fee(
        http,
        auth,
        "FEE-2024-0004",
        student_id=9,
        student_name="Meena Iyer",
        amount="8000",
        payment_date="2024-01-05",
    )
    fee(
        http,
        auth,
        "FEE-2024-0005",
        student_id=10,
        student_name="Arjun Das",
        amount="3000",
        payment_date="2024-01-20",
    )
    fee(
        http,
        auth,
        "FEE-2024-0006",
        student_id=10,
        student_name="Arjun Das",
        amount="3000",
        payment_date="2024-01-20",
    )
    fee(
        http,
        auth,
        "FEE-2024-0007",
        student_id=11,
        student_name="Kiran Shah",
        amount="4500",
        payment_date="2024-01-29",
    )
    upload = http.post(
        "/v1/bank/statements",
        content=statement(
            [
                ("240110", "50000", "FEE-2024-0001", "UPI CR"),  # matched by receipt
                ("240113", "25000", "NONREF", "UPI/401212345678/RAVI"),  # matched by UPI reference
                ("240115", "11000", "FEE-2024-0003", "NEFT ASHA RAO"),  # amount differs
                ("240126", "8000", "FEE-2024-0004", "CHQ DEP"),  # banked 21 days later
                ("240116", "50000", "FEE-2024-0001", "UPI CR AGAIN"),  # the same receipt banked twice
                ("240120", "3000", "FEE-2024-0005", "UPI CR"),  # 0006 is its duplicate receipt
                ("240118", "777", "NONREF", "INTEREST CREDIT"),  # nobody's fee
                ("240201", "4500", "NONREF", "UPI KIRAN SHAH"),  # after the month, inside the tolerance
                ("240203", "999", "NONREF", "NEXT MONTH"),  # after the month: not this period's
            ]
        ),
        params={"format": "mt940"},
        headers=auth,
    )
    assert upload.status_code == 201, upload.text

    answer = http.post(
        "/v1/reconciliation/fees", json={"from_date": "2024-01-01", "to_date": "2024-01-31"}, headers=auth
    )

    assert answer.status_code == 201, answer.text
    r = answer.json()
    assert (r["status"], r["reconciliation_status"]) == ("completed", "discrepancies")
    assert sorted((m["collection"]["receipt_number"], m["method"]) for m in r["matched"]) == [
        ("FEE-2024-0001", "reference"),
        ("FEE-2024-0002", "reference"),
        ("FEE-2024-0005", "reference"),
        ("FEE-2024-0007", "amount_date_counterparty"),
    ]
    found = sorted(
        (d["kind"], tuple(c["receipt_number"] for c in d["collections"]), d["difference"])
        for d in r["discrepancies"]
    )
    assert found == [
        ("amount_differs", ("FEE-2024-0003",), "-1000.00"),
        ("date_outside_tolerance", ("FEE-2024-0004",), "0.00"),
        ("duplicate_collection", ("FEE-2024-0005", "FEE-2024-0006"), "-3000.00"),
        ("duplicate_deposit", ("FEE-2024-0001",), "0.00"),
    ]
    assert [c["receipt_number"] for c in r["unmatched_collections"]] == ["FEE-2024-0006"]
    assert [(d["amount"], d["description"]) for d in r["unmatched_deposits"]] == [
        ("777.00", "INTEREST CREDIT")
    ]
    collected = Decimal("50000") + 25000 + 12000 + 8000 + 3000 + 3000 + 4500
    deposited = Decimal("50000") + 25000 + 11000 + 8000 + 50000 + 3000 + 777 + 4500
    assert r["fee_collections_total"] == f"{collected:.2f}"
    assert r["bank_deposits_total"] == f"{deposited:.2f}"
    assert r["totals"]["difference"] == f"{deposited - collected:.2f}"
    assert r["totals"]["matched_amount"] == f"{Decimal(50000 + 25000 + 3000 + 4500):.2f}"
    assert (r["totals"]["unmatched_collections_amount"], r["totals"]["unmatched_deposits_amount"]) == (
        "3000.00",
        "777.00",
    )
    again = http.get(f"/v1/reconciliation/fees/{r['reconciliation_id']}", headers=auth)
    assert (again.status_code, again.json()) == (200, r)


def test_colleges_are_strangers(http: TestClient, service: LedgerService) -> None:
    a, b = tenant(service), tenant(service)
    fee(http, a, "FEE-2024-0001")
    http.post(
        "/v1/bank/statements", content=statement([("240110", "50000", "FEE-2024-0001", "UPI")]), headers=a
    )
    a_run = http.post(
        "/v1/reconciliation/fees", json={"from_date": "2024-01-01", "to_date": "2024-01-31"}, headers=a
    )
    assert a_run.json()["reconciliation_status"] == "matched", a_run.text

    b_list = http.get(
        "/v1/fee-collections", params={"from_date": "2024-01-01", "to_date": "2024-01-31"}, headers=b
    )
    b_run = http.post(
        "/v1/reconciliation/fees", json={"from_date": "2024-01-01", "to_date": "2024-01-31"}, headers=b
    )
    b_peek = http.get(f"/v1/reconciliation/fees/{a_run.json()['reconciliation_id']}", headers=b)
    b_same_receipt = fee(http, b, "FEE-2024-0001", amount="10")

    assert b_list.json()["data"] == [] and b_list.json()["summary"]["transaction_count"] == 0
    assert (b_run.json()["fee_collections_total"], b_run.json()["bank_deposits_total"]) == ("0.00", "0.00")
    assert b_peek.status_code == 404 and b_peek.json()["error"]["code"] == "not_found"
    assert b_same_receipt.status_code == 201
    assert b_same_receipt.json()["id"] != a_run.json()["matched"][0]["collection"]["id"]
