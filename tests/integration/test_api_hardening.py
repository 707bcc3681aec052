"""The API refuses hostile or racing input cleanly: concurrent idempotent retries, crafted cursors,
oversized bodies, forged request ids, formula injection in CSV and the operators' token."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from engine.application import LedgerService
from engine.config import Settings
from tests.integration.helpers import client_for, invoice_body, register_tenant
from tests.integration.processes import Processes
from tests.integration.test_api_contract import assert_error_shape

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def api_url(settings: Settings, service: LedgerService, tmp_path: Path) -> Iterator[str]:
    """A real ``ledgerflow api`` process (uvicorn, its thread pool, its own connection pools)."""
    processes = Processes(settings, tmp_path)
    port = free_port()
    api = processes.start("api", "--port", str(port))
    base_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        processes.assert_alive(api)
        try:
            return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    processes.wait_for(ready, timeout=90, interval=0.2, what="the API answering /readyz", watch=[api])
    yield base_url
    processes.close()


def issued_invoices(settings: Settings) -> int:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        row = conn.execute("SELECT count(*) FROM ledger_events WHERE topic LIKE '%Invoice.Issued'").fetchone()
    assert row is not None
    return int(row[0])


def post_in_parallel(
    base_url: str, api_key: str, bodies: list[dict[str, Any]], idempotency_key: str
) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": idempotency_key}
    limits = httpx.Limits(max_connections=40)
    with (
        httpx.Client(base_url=base_url, timeout=90, limits=limits) as client,
        ThreadPoolExecutor(max_workers=len(bodies)) as pool,
    ):
        return list(pool.map(lambda b: client.post("/v1/invoices", json=b, headers=headers), bodies))


# -- 1. idempotency under concurrency -------------------------------------------------------------


def test_twenty_parallel_requests_with_one_key_and_different_bodies_issue_exactly_one_invoice(
    settings: Settings, service: LedgerService, api_url: str
) -> None:
    _, api_key = register_tenant(service)
    bodies = [invoice_body(f"RACE-{i % 3}") for i in range(20)]

    responses = post_in_parallel(api_url, api_key, bodies, "race-key-1")

    assert [r for r in responses if r.status_code >= 500] == []
    assert issued_invoices(settings) == 1
    created = [r for r in responses if r.status_code == 201]
    assert created, [r.text for r in responses]
    winner = created[0].json()
    for body, response in zip(bodies, responses, strict=True):
        if response.status_code == 201:
            # Only a request with the winner's body gets the invoice, and all get the same one.
            assert response.json()["id"] == winner["id"]
            assert body["number"] == winner["number"]
        else:
            assert response.status_code == 422, response.text
            assert_error_shape(response.json(), "idempotency_key_reused")
            assert body["number"] != winner["number"]
    assert sum(1 for r in created if "Idempotent-Replayed" not in r.headers) == 1


def test_twenty_parallel_identical_requests_with_one_key_all_answer_the_one_invoice(
    settings: Settings, service: LedgerService, api_url: str
) -> None:
    _, api_key = register_tenant(service)

    responses = post_in_parallel(api_url, api_key, [invoice_body("SAME-1")] * 20, "race-key-2")

    assert {r.status_code for r in responses} == {201}, [r.text for r in responses if r.status_code != 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert [r.headers.get("Idempotent-Replayed") for r in responses].count(None) == 1
    assert issued_invoices(settings) == 1


# -- 2. crafted pagination cursors ----------------------------------------------------------------


def b64(raw: bytes | Any) -> str:
    """A cursor as this API writes them (base64url of JSON), around any payload."""
    data = raw if isinstance(raw, bytes) else orjson.dumps(raw)
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


A_UUID = "7d0e8f0e-0000-4000-8000-000000000000"

# (name, cursor, expected status): a cursor we did not issue is a 422, a well-formed one that
# matches nothing is an empty page; nothing is a 500.
INVOICE_CURSORS: list[tuple[str, str, int]] = [
    ("not-base64", "%%%%", 422),
    ("blank-json", b64(b"  "), 422),
    ("json-null", b64(None), 422),
    ("json-string", b64("2026-01-01"), 422),
    ("json-number", b64(7), 422),
    ("json-object", b64({"after": ["2026-01-01", "A", A_UUID]}), 422),
    ("short-array", b64(["2026-01-01", "A"]), 422),
    ("long-array", b64(["2026-01-01", "A", A_UUID, 1]), 422),
    ("nested-arrays", b64([[["2026-01-01"]], ["A"], [A_UUID]]), 422),
    ("deeply-nested", b64(b"[" * 140 + b"]" * 140), 422),
    ("number-not-a-string", b64(["2026-01-01", 12345, A_UUID]), 422),
    ("nul-in-number", b64(["2026-01-01", "INV\x00-1", A_UUID]), 422),
    ("raw-nul-bytes", b64(b"\x00\x00\x00\x00"), 422),
    ("date-month-13", b64(["2026-13-01", "A", A_UUID]), 422),
    ("date-year-0", b64(["0000-01-01", "A", A_UUID]), 422),
    ("date-year-10000", b64(["10000-01-01", "A", A_UUID]), 422),
    ("date-as-number", b64([20260101, "A", A_UUID]), 422),
    ("huge-number", b64(b'["2026-01-01", "A", 123456789012345678901234567890]'), 422),
    ("infinite-number", b64(b'["2026-01-01", "A", 1e400]'), 422),
    ("non-uuid", b64(["2026-01-01", "A", "not-a-uuid"]), 422),
    ("uuid-as-number", b64(["2026-01-01", "A", 42]), 422),
    ("latin-1-bytes", b64(b'["2026-01-01", "\xe9", "x"]'), 422),
    ("a-report-cursor", b64({"report": "invoices", "after": ["2026-01-01", "A", A_UUID]}), 422),
    ("well-formed-far-future", b64(["9999-12-31", "ZZZ", A_UUID]), 200),
    ("well-formed-year-1", b64(["0001-01-01", "", A_UUID]), 200),
]


def rc(report: str, *after: Any) -> str:
    """A report cursor of this API's shape: the report's name and the last row's key."""
    return b64({"report": report, "after": list(after)})


HSN_KEY = ("2026-01-01", "b2b", "8504", "NOS")
LINE_KEY = ("2026-01-01", "A", A_UUID)

REPORT_CURSORS: list[tuple[str, str, str, int]] = [
    ("not-base64", "invoices", "%%%%", 422),
    ("json-array", "invoices", b64(["2026-01-01", "A", A_UUID]), 422),
    ("json-null", "invoices", b64(None), 422),
    (
        "deeply-nested",
        "invoices",
        b64(b'{"report": "invoices", "after": ' + b"[" * 330 + b"]" * 330 + b"}"),
        422,
    ),
    ("extra-field", "invoices", b64({"report": "invoices", "after": [], "x": 1}), 422),
    ("after-not-a-list", "invoices", b64({"report": "invoices", "after": "2026-01-01"}), 422),
    ("after-too-short", "invoices", rc("invoices", "2026-01-01"), 422),
    ("nested-arrays", "invoices", rc("invoices", ["2026-01-01"], ["A"], [A_UUID]), 422),
    ("date-out-of-range", "invoices", rc("invoices", "10000-01-01", "A", A_UUID), 422),
    ("date-as-number", "invoices", rc("invoices", 20260101, "A", A_UUID), 422),
    ("nul-in-text", "invoices", rc("invoices", "2026-01-01", "A\x00", A_UUID), 422),
    ("non-uuid", "invoices", rc("invoices", "2026-01-01", "A", "nope"), 422),
    ("report-not-a-string", "invoices", b64({"report": ["invoices"], "after": []}), 422),
    ("another-reports-cursor", "invoice_lines", rc("invoices", *LINE_KEY), 422),
    ("unknown-report", "invoices", rc("ledger_events", 1), 422),
    (
        "line-no-beyond-64-bits",
        "invoice_lines",
        b64(
            b'{"report": "invoice_lines", "after": ["2026-01-01", "A", "%s", 1%s]}'
            % (A_UUID.encode(), b"0" * 30)
        ),
        422,
    ),
    ("line-no-boolean", "invoice_lines", rc("invoice_lines", *LINE_KEY, True), 422),
    ("line-no-float", "invoice_lines", rc("invoice_lines", *LINE_KEY, 1.5), 422),
    ("line-no-string", "invoice_lines", rc("invoice_lines", *LINE_KEY, "1"), 422),
    ("line-no-max-bigint", "invoice_lines", rc("invoice_lines", *LINE_KEY, 2**63 - 1), 200),
    ("line-no-min-bigint", "invoice_lines", rc("invoice_lines", *LINE_KEY, -(2**63)), 200),
    ("rate-huge-exponent", "hsn_summary", rc("hsn_summary", *HSN_KEY, "1e999999"), 422),
    ("rate-tiny-exponent", "hsn_summary", rc("hsn_summary", *HSN_KEY, "1e-999999"), 422),
    ("rate-nan", "hsn_summary", rc("hsn_summary", *HSN_KEY, "NaN"), 422),
    ("rate-infinity", "hsn_summary", rc("hsn_summary", *HSN_KEY, "-Infinity"), 422),
    ("rate-not-a-number", "hsn_summary", rc("hsn_summary", *HSN_KEY, "18%"), 422),
    ("rate-as-json-number", "hsn_summary", rc("hsn_summary", *HSN_KEY, 18), 422),
    ("rate-wide-but-valid", "hsn_summary", rc("hsn_summary", *HSN_KEY, "999999999999.999"), 200),
]


@pytest.fixture
def tenant_client(settings: Settings, service: LedgerService) -> tuple[Any, dict[str, str]]:
    _, api_key = register_tenant(service)
    client = client_for(settings)
    assert (
        client.post(
            "/v1/invoices", json=invoice_body("CUR-1"), headers={"Authorization": f"Bearer {api_key}"}
        ).status_code
        == 201
    )
    return client, {"Authorization": f"Bearer {api_key}"}


def assert_cursor_answer(response: httpx.Response, expected: int) -> None:
    assert response.status_code == expected, response.text
    if expected == 422:
        assert_error_shape(response.json(), "validation_failed")
        (field,) = response.json()["error"]["details"]["fields"]
        assert (field["path"], field["code"]) == ("cursor", "invalid_cursor")
    else:
        assert response.json()["items"] == []


def test_crafted_invoice_list_cursors_get_a_422_in_the_error_shape_never_a_500(
    tenant_client: tuple[Any, dict[str, str]],
) -> None:
    client, auth = tenant_client
    for name, cursor, expected in INVOICE_CURSORS:
        response = client.get("/v1/invoices", params={"cursor": cursor}, headers=auth)
        try:
            assert_cursor_answer(response, expected)
        except AssertionError as exc:
            raise AssertionError(f"cursor {name}: {exc}") from None


def test_crafted_report_cursors_get_a_422_in_the_error_shape_never_a_500(
    tenant_client: tuple[Any, dict[str, str]],
) -> None:
    client, auth = tenant_client
    for name, report, cursor, expected in REPORT_CURSORS:
        for output in ("json", "csv"):
            response = client.get(
                f"/v1/reports/{report}", params={"cursor": cursor, "format": output}, headers=auth
            )
            if expected == 200 and output == "csv":
                assert response.status_code == 200 and response.text.count("\r\n") == 1, (name, response.text)
                continue
            try:
                assert_cursor_answer(response, expected)
            except AssertionError as exc:
                raise AssertionError(f"cursor {name} ({output}): {exc}") from None
