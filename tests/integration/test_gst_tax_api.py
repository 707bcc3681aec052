"""/v1/gst/hsn and /v1/gst/calculate over the real API app and PostgreSQL (tenant keys), incl. hostile input.

Expected rates come from the shared HSN reference (see tests/unit/test_rates.py); the calculation values
are worked by hand in tests/unit/test_gst_calc.py. Each test walks a table of cases against one app and
tenant: a fresh schema per case would cost seconds each on the shared machine.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine.application import LedgerService
from engine.config import Settings
from engine.tax.india_gst import today_in_india
from tests.integration.helpers import client_for, invoice_body, register_tenant

pytestmark = pytest.mark.integration

Api = tuple[TestClient, dict[str, str]]


@pytest.fixture
def api(settings: Settings, service: LedgerService) -> Api:
    _, key = register_tenant(service)
    return client_for(settings), {"Authorization": f"Bearer {key}"}


def fields(response: Any) -> list[tuple[str, str]]:
    body = response.json()
    return [(f["path"], f["code"]) for f in body["error"]["details"].get("fields", [])]


def test_every_route_needs_a_tenant_key(api: Api) -> None:
    client, _ = api
    for response in (
        client.get("/v1/gst/hsn", params={"q": "fan"}),
        client.get("/v1/gst/hsn/84145110"),
        client.post("/v1/gst/calculate", json={"amount": 100, "gst_rate": 18}),
        client.get("/v1/gst/hsn/84145110", headers={"Authorization": "Bearer lf_nope"}),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"


def test_search_finds_codes_by_words_with_the_rate_on_the_date(api: Api) -> None:
    client, auth = api
    response = client.get("/v1/gst/hsn", params={"q": "table fan", "date": "2026-01-19"}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["date"] == "2026-01-19"
    fan = next(item for item in body["items"] if item["code"] == "84145110")
    assert fan == {
        "code": "84145110",
        "description": "TABLE FANS",
        "kind": "goods",
        "date": "2026-01-19",
        "rate": "18",
        "candidates": ["18"],
        "rate_required": False,
        "outside_gst": False,
        "cess_rate": None,
        "cess_text": None,
        "effective_from": "2017-07-01",
        "basis": fan["basis"],
        "notes": "",
    }
    assert "9/2025-CT(R)" in fan["basis"]

    before = client.get("/v1/gst/hsn", params={"q": "8415", "date": "2025-09-21", "limit": 1}, headers=auth)
    after = client.get("/v1/gst/hsn", params={"q": "8415", "date": "2025-09-22", "limit": 1}, headers=auth)
    assert [(i["code"], i["rate"]) for i in before.json()["items"]] == [("8415", "28")]
    assert [(i["code"], i["rate"]) for i in after.json()["items"]] == [("8415", "18")]


def test_search_defaults_to_today_in_india_and_twenty_results(api: Api) -> None:
    client, auth = api
    before = today_in_india(datetime.now(UTC))
    body = client.get("/v1/gst/hsn", params={"q": "84"}, headers=auth).json()
    after = today_in_india(datetime.now(UTC))
    assert body["date"] in {before.isoformat(), after.isoformat()}
    assert len(body["items"]) == 20
    # A date a year ahead is answered too: rates are published in advance of their dates.
    ahead = (after + timedelta(days=365)).isoformat()
    assert client.get("/v1/gst/hsn", params={"q": "84", "date": ahead}, headers=auth).status_code == 200


ODD_QUERIES = [
    "%",
    "_",
    "'; DROP TABLE events; --",
    "🙂",
    "\u0301",
    "ｆａｎ" * 3,
    "a" * 100,
    "99999999",
    " fan ",
]


def test_odd_queries_are_answered_not_errors(api: Api) -> None:
    client, auth = api
    for q in ODD_QUERIES:
        response = client.get("/v1/gst/hsn", params={"q": q}, headers=auth)
        assert response.status_code == 200, (q, response.text)
        assert isinstance(response.json()["items"], list)


BAD_SEARCHES: list[tuple[dict[str, str], str, str]] = [
    ({"q": "fan\x00"}, "q", "control_character"),
    ({"q": "fan\n"}, "q", "control_character"),
    ({"q": "\u202efan"}, "q", "control_character"),
    ({"q": "a" * 101}, "q", "too_long"),
    ({"q": ""}, "q", "too_short"),
    ({}, "q", "missing"),
    ({"q": "fan", "limit": "0"}, "limit", "greater_than_equal"),
    ({"q": "fan", "limit": "101"}, "limit", "less_than_equal"),
    ({"q": "fan", "limit": "9" * 40}, "limit", "less_than_equal"),
    ({"q": "fan", "limit": "ten"}, "limit", "int_parsing"),
    ({"q": "fan", "date": "2026-13-01"}, "date", "invalid_date"),
    ({"q": "fan", "date": "19/01/2026"}, "date", "invalid_date"),
    ({"q": "fan", "date": "2017-06-30"}, "date", "before_gst"),
]


def test_bad_search_parameters_are_422_in_our_shape(api: Api) -> None:
    client, auth = api
    for params, path, code in BAD_SEARCHES:
        response = client.get("/v1/gst/hsn", params=params, headers=auth)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["code"] == "validation_failed"
        assert (path, code) in fields(response), (params, response.text)


ONE_CODE: list[tuple[str, str, str | None, list[str], bool]] = [
    ("84145110", "2026-01-19", "18", ["18"], False),  # table fan
    ("62052000", "2026-01-19", None, ["5", "18"], False),  # cotton shirt: by sale value
    ("62052000", "2025-09-21", None, ["5", "12"], False),
    ("22030000", "2026-01-19", None, [], True),  # beer: outside GST
    ("998314", "2026-01-19", "18", ["18"], False),  # IT design and development service
    ("996311", "2026-01-19", None, ["5", "18"], False),  # hotel room: by tariff
]


def test_one_code(api: Api) -> None:
    client, auth = api
    for code, day, rate, candidates, outside in ONE_CODE:
        response = client.get(f"/v1/gst/hsn/{code}", params={"date": day}, headers=auth)
        assert response.status_code == 200, response.text
        body = response.json()
        got = (body["code"], body["rate"], body["candidates"], body["outside_gst"], body["rate_required"])
        assert got == (code, rate, candidates, outside, len(candidates) > 1)

    cigarettes = client.get("/v1/gst/hsn/24022010", params={"date": "2025-09-21"}, headers=auth).json()
    assert cigarettes["cess_rate"] == "5"
    assert "Rs.2076 per thousand" in cigarettes["cess_text"]
    pan = client.get("/v1/gst/hsn/21069020", params={"date": "2025-09-21"}, headers=auth).json()
    assert (pan["cess_rate"], pan["cess_text"]) == (None, "0.32R per unit (Pan-masala)")
    after = client.get("/v1/gst/hsn/24022010", params={"date": "2026-02-01"}, headers=auth).json()
    assert (after["rate"], after["cess_rate"], after["cess_text"]) == ("40", None, None)


BAD_CODES: list[tuple[str, int, str]] = [
    ("99999999", 404, "hsn_not_found"),
    ("84145199", 404, "hsn_not_found"),  # a tariff item missing from the portal's list
    ("84A5", 422, "validation_failed"),
    ("８４１４", 422, "validation_failed"),
    ("841", 422, "validation_failed"),
    ("1" * 21, 422, "validation_failed"),
    ("%00", 422, "validation_failed"),
    ("%E2%80%AE8414", 422, "validation_failed"),
]


def test_bad_or_unknown_codes(api: Api) -> None:
    client, auth = api
    for code, status, error in BAD_CODES:
        response = client.get(f"/v1/gst/hsn/{code}", headers=auth)
        assert response.status_code == status, (code, response.text)
        assert response.json()["error"]["code"] == error


CALCULATIONS: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    (  # the seed's example, numbers in the request
        {"amount": 10000, "gst_rate": 18, "include_tax": False},
        ("10000.00", "900.00", "900.00", "0.00", "1800.00", "11800.00"),
    ),
    (
        {"amount": "10000.00", "gst_rate": "18", "supplier_state": "KA", "place_of_supply": "27"},
        ("10000.00", "0.00", "0.00", "1800.00", "1800.00", "11800.00"),
    ),
    (
        {"amount": "1.00", "gst_rate": 5, "supplier_state": "KA", "place_of_supply": "29"},
        ("1.00", "0.03", "0.03", "0.00", "0.06", "1.06"),
    ),
    (
        {"amount": 100, "gst_rate": 18, "include_tax": True},
        ("84.74", "7.63", "7.63", "0.00", "15.26", "100.00"),
    ),
    (
        {"amount": 1000, "gst_rate": 12, "date": "2025-09-21"},
        ("1000.00", "60.00", "60.00", "0.00", "120.00", "1120.00"),
    ),
]


def test_calculate(api: Api) -> None:
    client, auth = api
    names = ("taxable_amount", "cgst", "sgst", "igst", "total_gst", "total_amount")
    for body, expected in CALCULATIONS:
        response = client.post("/v1/gst/calculate", json={"date": "2026-01-19", **body}, headers=auth)
        assert response.status_code == 200, response.text
        got = response.json()
        assert tuple(got[name] for name in names) == expected, body

    response = client.post(
        "/v1/gst/calculate", json={"amount": 100, "gst_rate": 12, "date": "2026-02-01"}, headers=auth
    )
    assert response.status_code == 422, response.text
    (field,) = response.json()["error"]["details"]["fields"]
    assert (field["path"], field["code"]) == ("gst_rate", "rate_not_valid_on_date")
    assert field["valid_rates"] == ["0", "0.1", "0.25", "1", "1.5", "3", "5", "6", "7.5", "18", "40"]


HOSTILE_CALCULATIONS: list[tuple[dict[str, Any], str, str]] = [
    ({"amount": "1e3", "gst_rate": 18}, "amount", "invalid_number"),
    ({"amount": "１２", "gst_rate": 18}, "amount", "invalid_number"),
    ({"amount": "NaN", "gst_rate": 18}, "amount", "invalid_number"),
    ({"amount": 10**22, "gst_rate": 18}, "amount", "too_large"),
    ({"amount": "0.001", "gst_rate": 18}, "amount", "decimal_max_places"),
    ({"amount": -5, "gst_rate": 18}, "amount", "negative_amount"),
    ({"amount": True, "gst_rate": 18}, "amount", "invalid_number"),
    ({"amount": 100, "gst_rate": 101}, "gst_rate", "too_large"),
    ({"amount": 100, "gst_rate": 18, "include_tax": "yes"}, "include_tax", "bool_type"),
    ({"amount": 100}, "gst_rate", "missing"),
    ({"amount": 100, "gst_rate": 18, "cgst": 9}, "cgst", "extra_forbidden"),
    (
        {"amount": 100, "gst_rate": 18, "supplier_state": "K\x00A", "place_of_supply": "29"},
        "supplier_state",
        "control_character",
    ),
    (
        {"amount": 100, "gst_rate": 18, "supplier_state": "XX", "place_of_supply": "29"},
        "supplier_state",
        "unknown_state",
    ),
    ({"amount": 100, "gst_rate": 18, "supplier_state": "29"}, "place_of_supply", "state_missing"),
    ({"amount": 100, "gst_rate": 18, "date": "2017-06-30"}, "date", "before_gst"),
]


def test_calculate_refuses_hostile_input_with_422(api: Api) -> None:
    client, auth = api
    for body, path, code in HOSTILE_CALCULATIONS:
        response = client.post("/v1/gst/calculate", json=body, headers=auth)
        assert response.status_code == 422, (body, response.text)
        assert (path, code) in fields(response), (body, response.text)
    for raw in (b"[]", b"null", b"{", b"\xff\xfe"):
        response = client.post(
            "/v1/gst/calculate", content=raw, headers={**auth, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, (raw, response.text)


def test_invoice_line_with_a_conditional_code_asks_for_the_rate_with_candidates(api: Api) -> None:
    client, auth = api
    shirt = {
        "description": "Cotton shirt",
        "hsn": "62052000",
        "quantity": "2",
        "unit": "NOS",
        "unit_price": "999",
    }
    response = client.post("/v1/invoices", json=invoice_body("GST-1", lines=[shirt]), headers=auth)
    assert response.status_code == 422, response.text
    (field,) = response.json()["error"]["details"]["fields"]
    assert (field["path"], field["code"], field["candidates"]) == (
        "lines[0].hsn",
        "rate_required",
        ["5", "18"],
    )

    # A fan resolves from the master; the shirt is accepted once its rate is sent.
    fan = {
        "description": "Table fan",
        "hsn": "84145110",
        "quantity": "1",
        "unit": "NOS",
        "unit_price": "1000",
    }
    priced = {**shirt, "gst_rate": "5", "gst_rate_reason": "sale value up to Rs 2,500 a piece"}
    response = client.post("/v1/invoices", json=invoice_body("GST-2", lines=[fan, priced]), headers=auth)
    assert response.status_code in (200, 201), response.text
    lines = response.json()["lines"]
    assert [(line["hsn"], line["gst_rate"]) for line in lines] == [("84145110", "18"), ("62052000", "5")]
