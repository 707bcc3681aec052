"""POST /v1/tally/vouchers end to end: the API on the real stack, the job on Kafka, the connector worker
posting to the Tally sandbox (a real HTTP server speaking Tally's XML) under faults; posted once, a
refused voucher shown failed with Tally's LINEERROR; unbalanced vouchers and unknown ledgers refused
before anything is queued; hostile input a clear 4xx; another college sees nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi.testclient import TestClient

from connectors import tally
from connectors.tally.sandbox import DEMO_COMPANY, DEMO_LEDGER_MAP, create_app
from connectors.tally.vouchers import remote_id
from engine.application import LedgerService
from engine.config import Settings
from engine.security.secrets import load_key_ring
from streams.catalogue import connector_specs
from streams.connectors import ConnectorWorker
from tests.conftest import BackgroundLoop, wait_for
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for

pytestmark = pytest.mark.integration

BASE = "/v1/tally/vouchers"
SEED = {
    "voucher_type": "payment",
    "voucher_number": "PAY-2024-000123",
    "date": "2024-01-15",
    "ledger_entries": [
        {"ledger": "Tech Supplies Ltd", "amount": -50000, "narration": "Payment for Invoice INV-2024-001"},
        {"ledger": "ICICI Bank", "amount": 50000, "narration": "NEFT payment"},
    ],
}


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return replace(settings, retry_delays=(0, 1, 1, 1, 1, 1, 1, 1), breaker_open_seconds=1)


@pytest.fixture
def sandbox() -> Iterator[tuple[str, Operator]]:
    with LiveServer(create_app()) as server:
        yield server.url, Operator(server.url)


def college(service: LedgerService, settings: Settings, name: str) -> TestClient:
    registered = service.register_tenant(
        name=name, legal_name=f"{name} Trust", country="IN", gstin="27AAGCB7383J1Z8", state="27"
    )
    client = client_for(settings)
    client.headers["Authorization"] = f"Bearer {registered.api_key}"
    return client


def connect(client: TestClient, url: str) -> None:
    body = {
        "enabled": True,
        "environment": "sandbox",
        "base_url": url,
        "credentials": {"company": DEMO_COMPANY},
    }
    assert client.put("/v1/integrations/tally", json=body).status_code == 200
    assert client.put("/v1/tally/ledger-map", json={"ledgers": DEMO_LEDGER_MAP}).status_code == 200


def held(url: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/_sandbox/tally/companies/{DEMO_COMPANY}/vouchers", timeout=5)
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def start_worker(settings: Settings, service: LedgerService, background: BackgroundLoop) -> Any:
    specs, handlers = connector_specs(settings, service, load_key_ring(settings.var_dir), [tally.CONNECTOR])
    background.start(ConnectorWorker(settings, specs).run)
    return handlers


def status_of(client: TestClient, voucher_id: str, wanted: str) -> dict[str, Any]:
    def done() -> dict[str, Any]:
        found: dict[str, Any] = client.get(f"{BASE}/{voucher_id}").json()
        return found if found["status"] == wanted else {}

    return wait_for(done, timeout=90, what=f"voucher {voucher_id} {wanted}")


def test_a_voucher_is_posted_once_through_faults_and_a_refused_one_shows_tallys_lineerror(
    fast: Settings,
    service: LedgerService,
    topics: list[str],
    background: BackgroundLoop,
    sandbox: tuple[str, Operator],
) -> None:
    url, operator = sandbox
    client = college(service, fast, "Alpha")
    stranger = college(service, fast, "Beta")
    connect(client, url)
    handlers = start_worker(fast, service, background)
    try:
        # Before any ledger sync we cannot know Tally's ledgers: Tally itself refuses this one.
        ghost = {**SEED, "voucher_number": "JV-GHOST", "voucher_type": "journal"}
        ghost["ledger_entries"] = [
            {"ledger": "Ghost Ledger", "amount": "10.00"},
            {"ledger": "ICICI Bank", "amount": "-10.00"},
        ]
        refused = client.post(BASE, json=ghost)
        assert refused.status_code == 202, refused.text
        failed = status_of(client, refused.json()["voucher_id"], "failed")
        assert failed["error"]["message"] == "Ledger 'Ghost Ledger' does not exist!"
        assert failed["error"]["code"] == "tally_rejected" and failed["tally"] is None

        # Synced: now our ledger list answers for Tally, before anything is queued.
        assert client.post("/v1/tally/ledgers/sync").status_code == 200
        unknown = client.post(BASE, json={**ghost, "voucher_number": "JV-GHOST-2"})
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "unknown_ledger")
        assert unknown.json()["error"]["details"]["ledgers"] == ["Ghost Ledger"]

        # Tally imports the voucher and its answer is lost: the retry alters it, never a second one.
        operator.faults(after_effect_failure_rate=1.0, paths=["/"], max_faults=1)
        key = {"Idempotency-Key": "pay-123-first-try"}
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: client_for(fast).post(
                BASE, json=SEED, headers={**key, "Authorization": client.headers["Authorization"]}
            ), range(4)))  # fmt: skip
        assert sorted(a.status_code for a in answers) == [200, 200, 200, 202], [a.text for a in answers]
        assert len({a.json()["voucher_id"] for a in answers}) == 1
        queued = next(a.json() for a in answers if a.status_code == 202)
        assert queued["status"] == "queued" and queued["ledger_entries"][0]["amount"] == "-50000.00"
        posted = status_of(client, queued["voucher_id"], "posted")
        assert posted["tally"]["action"] == "altered" and posted["tally"]["voucher_type"] == "Payment"
        assert posted["posted_at"] and posted["error"] is None

        # The same voucher number again, without a key: the same voucher, not a second post.
        again = client.post(BASE, json=SEED)
        assert (again.status_code, again.json()["voucher_id"]) == (200, queued["voucher_id"])
        changed = {**SEED, "date": "2024-01-16"}
        taken = client.post(BASE, json=changed)
        assert (taken.status_code, taken.json()["error"]["code"]) == (409, "duplicate_voucher_number")
        reused = client.post(BASE, json={**changed, "voucher_number": "PAY-9"}, headers=key)
        assert (reused.status_code, reused.json()["error"]["code"]) == (422, "idempotency_key_reused")

        [payment] = [v for v in held(url) if v["voucher_type"] == "Payment"]
        assert payment["remote_id"] == posted["remote_id"]
        assert payment["remote_id"] == remote_id(str(_tenant(client)), "manual:PAY-2024-000123")
        assert payment["legs"] == [
            {"ledger": "Tech Supplies Ltd", "amount": "50000.00", "is_deemed_positive": False},
            {"ledger": "ICICI Bank", "amount": "-50000.00", "is_deemed_positive": True},
        ]
        assert (payment["date"], payment["voucher_number"]) == ("2024-01-15", "PAY-2024-000123")
        effects = operator.stats()["effects"]
        assert (effects["voucher_created"], effects["voucher_altered"]) == (1, 1)

        listed = {s: client.get(BASE, params={"status": s}).json()["vouchers"] for s in ("posted", "failed")}
        assert [v["voucher_number"] for v in listed["posted"]] == ["PAY-2024-000123"]
        assert [v["voucher_number"] for v in listed["failed"]] == ["JV-GHOST"]
        assert client.get(BASE, params={"status": "lost"}).status_code == 422

        # Another college: none of it is visible, and it cannot post without its own Tally.
        assert stranger.get(f"{BASE}/{queued['voucher_id']}").status_code == 404
        assert stranger.get(BASE).json() == {"vouchers": []}
        denied = stranger.post(BASE, json=SEED)
        assert (denied.status_code, denied.json()["error"]["code"]) == (409, "integration_not_configured")
    finally:
        asyncio.run_coroutine_threadsafe(handlers.close(), background.loop).result(timeout=10)


def _tenant(client: TestClient) -> UUID:
    return UUID(client.get("/v1/tenant").json()["tenant_id"])


def test_unbalanced_and_hostile_vouchers_are_a_clear_4xx_and_nothing_is_queued(
    settings: Settings, service: LedgerService, sandbox: tuple[str, Operator]
) -> None:
    url, _ = sandbox
    client = college(service, settings, "Gamma")
    connect(client, url)

    def entries(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
        return [{"ledger": ledger, "amount": amount} for ledger, amount in pairs]

    bodies: list[tuple[dict[str, Any], str]] = [
        ({**SEED, "ledger_entries": entries(("ICICI Bank", "100"), ("Cash", "-99.99"))}, "unbalanced"),
        ({**SEED, "ledger_entries": entries(("ICICI Bank", "100"), ("Cash", "100"))}, "unbalanced"),
        ({**SEED, "ledger_entries": entries(("ICICI Bank", "1e30"), ("Cash", "-1e30"))}, "bad_amount"),
        ({**SEED, "ledger_entries": entries(("ICICI Bank", 10**40), ("Cash", -(10**40)))}, "bad_amount"),
        ({**SEED, "ledger_entries": entries(("ICICI Bank", "0.001"), ("Cash", "-0.001"))}, "bad_amount"),
        ({**SEED, "ledger_entries": entries(("ICICI\u0000Bank", "1"), ("Cash", "-1"))}, "bad_name"),
        ({**SEED, "ledger_entries": entries(("ICICI Bank\u202e", "1"), ("Cash", "-1"))}, "bad_name"),
        ({**SEED, "voucher_number": "PAY\r\n1"}, "bad_name"),
        ({**SEED, "voucher_type": "debit_note"}, "bad_voucher_type"),
        ({**SEED, "voucher_number": "x" * 10_000}, "validation_error"),
        ({**SEED, "date": "2024-02-30"}, "validation_error"),
        ({**SEED, "ledger_entries": entries(("ICICI Bank", True), ("Cash", False))}, "validation_error"),
        ({**SEED, "ledger_entries": entries(("ICICI Bank", "1"))}, "validation_error"),
        ({**SEED, "ledger_entries": entries(*[("Cash", "1")] * 1000)}, "validation_error"),
        ({**SEED, "voucher_id": "TLY-VCH-1"}, "validation_error"),
    ]
    answers = [client.post(BASE, json=body) for body, _ in bodies]
    nan = b'{"voucher_type": "journal", "voucher_number": "J-NaN", "date": "2024-01-15", "ledger_entries":'
    nan += b' [{"ledger": "ICICI Bank", "amount": NaN}, {"ledger": "Cash", "amount": -1}]}'
    raw = client.post(BASE, content=nan, headers={"content-type": "application/json"})

    assert [a.status_code for a in answers] == [422] * len(bodies), [a.text[:200] for a in answers]
    codes = [a.json()["error"]["code"] for a in answers]
    validation = {c for c, (_, want) in zip(codes, bodies, strict=True) if want == "validation_error"}
    assert [c for c, (_, want) in zip(codes, bodies, strict=True) if want != "validation_error"] == [
        want for _, want in bodies if want != "validation_error"
    ]
    assert len(validation) == 1 and validation != {"unbalanced"}
    assert raw.status_code in (400, 422) and "error" in raw.json()
    assert client.get(BASE).json() == {"vouchers": []}
    assert client.get(f"{BASE}/{UUID(int=7)}").status_code == 404
    assert client.get(f"{BASE}/not-a-uuid").status_code == 422
    assert held(url) == []
