"""The API refuses hostile or racing input cleanly: concurrent idempotent retries, crafted cursors,
oversized bodies, forged request ids, formula injection in CSV and the operators' token."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from engine.application import LedgerService
from engine.config import Settings
from tests.integration.helpers import invoice_body, register_tenant
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
