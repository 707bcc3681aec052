"""/v1/tds over the real API app and PostgreSQL: thresholds judged on recorded deductions, the 206AA
rate, refusals, hostile input, tenant scope, and the quarterly summary, Form 26Q data and certificate
statement, whose totals are recomputed here from the deductions the test recorded.

Each test walks many cases against one app and tenant: a fresh schema per case costs seconds."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine.application import LedgerService
from engine.config import Settings
from tests.integration.helpers import client_for, register_tenant

pytestmark = pytest.mark.integration

Api = tuple[TestClient, dict[str, str]]
VENDOR = "ABCPE1234F"  # an individual
COMPANY = "AAACE1234F"


@pytest.fixture
def api(settings: Settings, service: LedgerService) -> Api:
    _, key = register_tenant(service)
    return client_for(settings), {"Authorization": f"Bearer {key}"}


def fields(response: Any) -> list[tuple[str, str]]:
    return [(f["path"], f["code"]) for f in response.json()["error"]["details"].get("fields", [])]


def calculate(client: TestClient, auth: dict[str, str], **changes: Any) -> Any:
    body: dict[str, Any] = {
        "vendor_pan": VENDOR,
        "payment_amount": "100000",
        "payment_nature": "professional_services",
        "financial_year": "2025-26",
        "quarter": 1,
    }
    body.update(changes)
    return client.post("/v1/tds/calculate", json=body, headers=auth)


def record(client: TestClient, auth: dict[str, str], reference: str, **changes: Any) -> Any:
    body: dict[str, Any] = {
        "reference": reference,
        "vendor_pan": VENDOR,
        "vendor_name": "R. Sharma",
        "payment_amount": "20000",
        "payment_nature": "contractor",
        "payment_date": "2025-05-10",
    }
    body.update(changes)
    return client.post("/v1/tds/deductions", json=body, headers=auth)


def test_the_seeds_request_answers_the_seeds_fields_without_cess(api: Api) -> None:
    client, auth = api
    response = calculate(client, auth, financial_year="2024-25")
    assert response.status_code == 200, response.text
    body = response.json()
    assert {
        k: body[k] for k in ("tds_rate", "tds_amount", "net_payment", "section", "surcharge", "cess")
    } == {
        "tds_rate": "10",
        "tds_amount": "10000.00",
        "net_payment": "90000.00",
        "section": "194J",
        "surcharge": "0.00",
        "cess": "0.00",
    }
    assert body["total_tds"] == "10000.00"
    assert body["act"] == "Income-tax Act, 1961"
    assert body["threshold"]["annual_limit"] == "30000.00" and body["threshold"]["exceeded"] is True

    after = calculate(client, auth, financial_year="2026-27").json()
    assert (after["act"], after["section"], after["tds_amount"]) == (
        "Income-tax Act, 2025",
        "393(1) Table Sl. No. 6(iii)",
        "10000.00",
    )


def test_missing_inoperative_and_invalid_pans_pay_twenty_percent_and_non_residents_are_refused(
    api: Api,
) -> None:
    client, auth = api
    for changes, status in (
        ({"vendor_pan": None}, "missing"),
        ({"pan_inoperative": True}, "inoperative"),
        ({"vendor_pan": "ABCDE1234F"}, "invalid"),  # the seed's example: D is no holder type
    ):
        body = calculate(client, auth, **changes).json()
        assert (body["tds_rate"], body["tds_amount"], body["pan_status"], body["higher_rate_provision"]) == (
            "20",
            "20000.00",
            status,
            "206AA",
        ), changes
    refused = calculate(client, auth, resident=False)
    assert refused.status_code == 422, refused.text
    assert fields(refused) == [("resident", "non_resident_not_supported")]


def test_yearly_thresholds_count_the_recorded_payments_to_the_pan(api: Api) -> None:
    client, auth = api
    contract = {
        "payment_nature": "contractor",
        "payment_amount": "25000",
        "quarter": 2,
        "payment_date": "2025-08-01",
    }
    # Nothing recorded yet: 25,000 is below both limits.
    assert calculate(client, auth, **contract).json()["tds_amount"] == "0.00"
    for n, day in enumerate(("2025-04-10", "2025-05-10", "2025-06-10", "2025-07-10")):
        created = record(client, auth, f"V-{n}", payment_date=day)
        assert created.status_code == 201, created.text
        assert created.json()["tds_amount"] == "0.00"  # 20,000 each, aggregate up to 80,000
    # 80,000 recorded + 25,000 = 1,05,000 > 1,00,000: 1% on the whole year's 1,05,000.
    crossed = calculate(client, auth, **contract).json()
    assert (crossed["tds_amount"], crossed["catch_up_amount"], crossed["threshold"]["paid_before"]) == (
        "1050.00",
        "80000.00",
        "80000.00",
    )
    # paid_so_far (not recorded here) counts for the limit too.
    declared = calculate(
        client, auth, **{**contract, "payment_amount": "1000", "paid_so_far": "19001"}
    ).json()
    assert declared["threshold"]["aggregate"] == "100001.00" and declared["tds_amount"] == "810.00"
    # Another vendor's payments do not count.
    other = calculate(client, auth, **{**contract, "vendor_pan": "ABCPF1234G"}).json()
    assert other["tds_amount"] == "0.00"
    # Recording the crossing payment computes the same.
    fifth = record(client, auth, "V-5", payment_amount="25000", payment_date="2025-08-01")
    assert fifth.status_code == 201 and fifth.json()["computed_tds"] == "1050.00"


def test_recording_is_idempotent_per_reference_even_when_concurrent(api: Api) -> None:
    client, auth = api
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: record(client, auth, "DUP-1"), range(4)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    reused = record(client, auth, "DUP-1", payment_amount="30000")
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "reference_reused"


def test_hostile_input_is_a_clear_422(api: Api) -> None:
    client, auth = api
    for changes, path in (
        ({"payment_amount": "1e999999"}, "payment_amount"),
        ({"payment_amount": "-5"}, "payment_amount"),
        ({"payment_amount": "NaN"}, "payment_amount"),
        ({"payment_amount": "100.001"}, "payment_amount"),
        ({"vendor_pan": "ABCPE\x001234F"}, "vendor_pan"),
        ({"vendor_pan": "A" * 5000}, "vendor_pan"),
        ({"payment_nature": "salary"}, "payment_nature"),
        ({"financial_year": "2025-27"}, "financial_year"),
        ({"financial_year": "２０２5-26"}, "financial_year"),
        ({"quarter": 5}, "quarter"),
        ({"quarter": "1"}, "quarter"),
        ({"resident": "no"}, "resident"),
        ({"payment_date": "2025-12-01"}, "payment_date"),  # not in quarter 1
        ({"financial_year": "2019-20"}, "financial_year"),
        ({"unexpected": 1}, "unexpected"),
    ):
        response = calculate(client, auth, **changes)
        assert response.status_code == 422, (changes, response.text)
        assert response.json()["error"]["code"] in ("validation_failed", "invalid_request"), response.text
        assert any(path in p for p, _ in fields(response)), (changes, response.text)
    bad = record(client, auth, "R\u202e1")
    assert bad.status_code == 422, bad.text


def test_a_quarter_per_vendor_the_form_26q_rows_and_a_certificate_statement(
    api: Api, settings: Settings, service: LedgerService
) -> None:
    client, auth = api
    payments = [
        ("Q-1", VENDOR, "R. Sharma", "professional_services", "60000", "2025-07-05"),
        ("Q-2", VENDOR, "R. Sharma", "professional_services", "15000.50", "2025-08-05"),
        ("Q-3", COMPANY, "Acme Builders Ltd", "contractor", "45000", "2025-09-01"),
        ("Q-4", None, "Cash Vendor", "rent_building", "60000", "2025-09-30"),
        ("Q-5", VENDOR, "R. Sharma", "professional_services", "99999", "2025-10-01"),  # quarter 3
    ]
    recorded = []
    for reference, pan, name, nature, amount, day in payments:
        response = record(
            client,
            auth,
            reference,
            vendor_pan=pan,
            vendor_name=name,
            payment_nature=nature,
            payment_amount=amount,
            payment_date=day,
        )
        assert response.status_code == 201, response.text
        recorded.append(response.json())
    q2 = [r for r in recorded if r["quarter"] == 2]
    # Hand-worked: 6,000 (10% of 60,000); 1,500.05 -> 1,500; 900 (2% of 45,000); 12,000 (20%, no PAN).
    assert [r["tds_amount"] for r in q2] == ["6000.00", "1500.00", "900.00", "12000.00"]

    summary = client.get("/v1/tds/summary", params={"financial_year": "2025-26", "quarter": 2}, headers=auth)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    by_vendor = {(v["vendor_pan"], v["vendor_name"]): v for v in body["vendors"]}
    assert by_vendor[(VENDOR, "R. Sharma")]["amount_paid"] == "75000.50"
    assert by_vendor[(VENDOR, "R. Sharma")]["tds_deducted"] == "7500.00"
    assert by_vendor[(None, "Cash Vendor")]["tds_deducted"] == "12000.00"
    assert body["totals"] == {
        "amount_paid": str(sum(Decimal(r["payment_amount"]) for r in q2)),
        "tds_deducted": f"{sum(Decimal(r['tds_amount']) for r in q2):.2f}",
    }

    form = client.get(
        "/v1/tds/form26q", params={"financial_year": "2025-26", "quarter": 2}, headers=auth
    ).json()
    assert [(d["deductee_pan"], d["section_code"], d["tds"], d["remark"]) for d in form["deductees"]] == [
        (VENDOR, "4JB", "6000.00", None),
        (VENDOR, "4JB", "1500.00", None),
        (COMPANY, "94C", "900.00", None),
        ("PANNOTAVBL", "4IB", "12000.00", "C"),
    ]
    assert form["totals"]["tds"] == "20400.00" and form["totals"]["rows"] == 4
    assert {s["section_code"]: s["tds"] for s in form["sections"]} == {
        "4JB": "7500.00",
        "94C": "900.00",
        "4IB": "12000.00",
    }
    assert form["deductor"]["pan"] == "AAGCB7383J" and form["deductor"]["tan"] is None

    cert = client.post(
        "/v1/tds/form16/generate",
        json={"financial_year": "2025-26", "quarter": 2, "vendor_pan": VENDOR.lower()},
        headers=auth,
    )
    assert cert.status_code == 200, cert.text
    statement = cert.json()
    assert statement["total_tds"] == "7500.00" and len(statement["payments"]) == 2
    assert "TRACES" in statement["official_certificate"]
    nothing = client.post(
        "/v1/tds/form16/generate",
        json={"financial_year": "2025-26", "quarter": 1, "vendor_pan": VENDOR},
        headers=auth,
    )
    assert nothing.status_code == 404

    # Another tenant sees none of it and its thresholds start from zero.
    _, other_key = register_tenant(service, gstin="29AAGCB7383J1Z4", state="29")
    other = {"Authorization": f"Bearer {other_key}"}
    empty = client.get("/v1/tds/summary", params={"financial_year": "2025-26", "quarter": 2}, headers=other)
    assert empty.json()["vendors"] == [] and empty.json()["totals"]["tds_deducted"] == "0.00"
    assert (
        client.post(
            "/v1/tds/form16/generate",
            json={"financial_year": "2025-26", "quarter": 2, "vendor_pan": VENDOR},
            headers=other,
        ).status_code
        == 404
    )
    fresh = calculate(
        client, other, payment_amount="40000", financial_year="2025-26", quarter=4, payment_date="2026-01-10"
    ).json()
    assert fresh["threshold"]["paid_before"] == "0.00" and fresh["tds_amount"] == "0.00"
    same = calculate(
        client, auth, payment_amount="40000", financial_year="2025-26", quarter=4, payment_date="2026-01-10"
    ).json()
    assert same["threshold"]["paid_before"] == "174999.50"
