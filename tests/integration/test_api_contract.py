"""The HTTP contract: pagination, error shape for hostile input, 503 while PostgreSQL is away, CLI."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

import orjson
import pytest

from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from schemas import registry
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import client_for, invoice_body, register_tenant
from tests.integration.test_ingest import settings_env

pytestmark = pytest.mark.integration


def assert_error_shape(body: dict[str, Any], code: str) -> None:
    error = body["error"]
    assert set(error) == {"code", "message", "details", "timestamp", "request_id"}
    assert error["code"] == code, error
    assert error["message"] and error["request_id"] and error["timestamp"].endswith("Z")


def test_listing_pages_through_invoices_with_a_cursor_and_filters(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    for day in range(1, 8):
        body = invoice_body(f"P-{day}", date=f"2026-01-{day:02d}")
        assert client.post("/v1/invoices", json=body, headers=auth).status_code == 201
    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)
    wait_for(
        lambda: len(client.get("/v1/invoices?limit=500", headers=auth).json()["items"]) == 7,
        what="7 projected",
    )

    seen: list[str] = []
    url = "/v1/invoices?limit=3&from=2026-01-02&to=2026-01-06"
    while url:
        page = client.get(url, headers=auth).json()
        seen += [item["number"] for item in page["items"]]
        url = (
            f"/v1/invoices?limit=3&from=2026-01-02&to=2026-01-06&cursor={page['next']}"
            if page["next"]
            else ""
        )
    assert seen == ["P-2", "P-3", "P-4", "P-5", "P-6"]

    bad_cursor = client.get("/v1/invoices?cursor=garbage", headers=auth)
    assert bad_cursor.status_code == 422
    assert_error_shape(bad_cursor.json(), "validation_failed")


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"{not json", "body"),
        (b"[]", "body"),
        (
            orjson.dumps(
                {**invoice_body(), "lines": [{**invoice_body()["lines"][0], "quantity": "1e999999"}]}
            ),
            "lines[0].quantity",
        ),
        (orjson.dumps({**invoice_body(), "number": "x" * 5000}), "number"),
        (
            orjson.dumps({**invoice_body(), "lines": [{**invoice_body()["lines"][0], "unit_price": "NaN"}]}),
            "lines[0].unit_price",
        ),
        (orjson.dumps({**invoice_body(), "buyer": "nobody"}), "buyer"),
    ],
    ids=["not-json", "not-an-object", "huge-exponent", "huge-string", "nan", "wrong-type"],
)
def test_hostile_bodies_get_a_422_never_a_500(
    service: LedgerService, settings: Settings, raw: bytes, path: str
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    response = client.post(
        "/v1/invoices",
        content=raw,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert_error_shape(response.json(), "validation_failed")
    assert any(f["path"] == path for f in response.json()["error"]["details"]["fields"]), response.json()


def test_unknown_ids_and_fingerprints_are_404_or_422_in_the_error_shape(
    service: LedgerService, settings: Settings
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    for invoice_id in ("not-a-uuid", "7d0e8f0e-0000-4000-8000-000000000000"):
        response = client.get(f"/v1/invoices/{invoice_id}", headers=auth)
        assert response.status_code == 404
        assert_error_shape(response.json(), "not_found")
    assert client.get("/v1/schemas/0000000000000000").status_code == 404
    assert client.get("/v1/schemas/xyz").status_code == 422
    current = registry.current("ledgerflow.invoice.issued")
    assert client.get(f"/v1/schemas/{current.fingerprint_hex}").json() == current.schema
    assert "/v1/invoices" in client.get("/openapi.json").json()["paths"]


def test_while_postgresql_is_unreachable_the_api_answers_503_with_retry_after(settings: Settings) -> None:
    # Port 1 on loopback: nothing listens there, so every connection is refused at once.
    unreachable = replace(settings, database_url="postgresql://ledgerflow:ledgerflow@127.0.0.1:1/ledgerflow")
    client = client_for(unreachable)
    response = client.post("/v1/invoices", json=invoice_body(), headers={"Authorization": "Bearer lf_a_b"})
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert_error_shape(response.json(), "database_unavailable")
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_the_cli_registers_a_tenant_and_prints_its_key_once_as_json(settings: Settings) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "tenants",
            "create",
            "--name",
            "Acme",
            "--legal-name",
            "Acme Pvt Ltd",
            "--gstin",
            "29AAGCB7383J1Z4",
            "--state",
            "KA",
            "--json",
        ],
        env=settings_env(settings),
        capture_output=True,
        timeout=60,
        check=True,
    )
    printed = orjson.loads(result.stdout)
    assert set(printed) == {"tenant_id", "api_key"}
    client = client_for(settings)
    listed = client.get("/v1/invoices", headers={"Authorization": f"Bearer {printed['api_key']}"})
    assert listed.status_code == 200

    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "tenants",
            "create",
            "--name",
            "Bad",
            "--legal-name",
            "Bad Ltd",
            "--gstin",
            "29AAGCB7383J1Z5",
            "--state",
            "KA",
        ],
        env=settings_env(settings),
        capture_output=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert b"check character" in refused.stderr.lower() or b"gstin" in refused.stderr.lower()
