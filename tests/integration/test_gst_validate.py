"""``POST /v1/gst/validate`` and ``GET /v1/gst/parties/{gstin}`` against the real API app, PostgreSQL
and the taxpayer-search sandbox over HTTP (connectors/gstin_lookup/sandbox.py)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from connectors.gstin_lookup.sandbox import BUYER, CANCELLED, SUSPENDED, SandboxAccount, create_app
from engine.api import gst_parties
from engine.application import LedgerService
from engine.config import Settings
from engine.tax.gstin import check_character
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for, register_tenant

pytestmark = pytest.mark.integration

ACCOUNT = SandboxAccount()
UNREGISTERED = "29AAACZ9999Q1Z" + check_character("29AAACZ9999Q1Z")


@pytest.fixture
def lookup() -> Iterator[tuple[str, Operator]]:
    with LiveServer(create_app(account=ACCOUNT)) as server:
        yield server.url, Operator(server.url)


class Caller:
    """One tenant of the API, with the taxpayer search configured (or not)."""

    def __init__(self, client: TestClient, service: LedgerService, *, gstin: str = "27AAGCB7383J1Z8") -> None:
        self.tenant_id, key = register_tenant(service, state=gstin[:2], gstin=gstin)
        self.client = client
        self.auth = {"Authorization": f"Bearer {key}"}

    def configure(self, url: str, credentials: dict[str, str] | None = None) -> None:
        saved = self.client.put(
            "/v1/integrations/gstin-lookup",
            json={
                "enabled": True,
                "environment": "sandbox",
                "base_url": url,
                "credentials": credentials or ACCOUNT.credentials(),
            },
            headers=self.auth,
        )
        assert saved.status_code == 200, saved.text

    def validate(self, gstin: Any) -> Any:
        return self.client.post("/v1/gst/validate", json={"gstin": gstin}, headers=self.auth)


def searches(operator: Operator) -> int:
    return int(operator.stats()["effects"]["taxpayer_searched"])


def test_an_active_gstin_is_answered_in_the_seed_shape_then_from_the_cache(
    service: LedgerService, settings: Settings, lookup: tuple[str, Operator]
) -> None:
    url, operator = lookup
    caller = Caller(client_for(settings), service)
    caller.configure(url)

    first = caller.validate(BUYER.lower())
    assert first.status_code == 200, first.text
    shown = first.json()
    # The seed's fields (College Accounts, POST /api/v1/gst/validate).
    assert {k: shown[k] for k in ("gstin", "legal_name", "trade_name", "status", "registration_date")} == {
        "gstin": BUYER,
        "legal_name": "Reliable Traders Private Limited",
        "trade_name": "Reliable Traders",
        "status": "active",
        "registration_date": "2018-09-15",
    }
    assert shown["business_type"] == "Private Limited Company"
    assert shown["address"] == "221, Linking Road, Bandra West, Mumbai Suburban, Maharashtra, 400050"
    assert (shown["kind"], shown["state_code"], shown["pan"], shown["cached"]) == (
        "regular",
        "27",
        "AAACR5055K",
        False,
    )

    again = caller.validate(BUYER)
    assert again.status_code == 200 and again.json()["cached"] is True
    assert again.json()["legal_name"] == shown["legal_name"]
    assert searches(operator) == 1  # the second answer cost no billed search

    # Expired (as LEDGERFLOW_GSTIN_LOOKUP_TTL_S later makes it): searched again.
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        conn.execute("UPDATE gstin_lookup_taxpayers SET expires_at = now() - interval '1 second'")
    assert caller.validate(BUYER).json()["cached"] is False
    assert searches(operator) == 2


@pytest.mark.parametrize(
    ("gstin", "status", "cancelled_on"),
    [(CANCELLED, "cancelled", "2024-03-31"), (SUSPENDED, "suspended", None)],
)
def test_a_cancelled_or_suspended_registration_says_so(
    service: LedgerService,
    settings: Settings,
    lookup: tuple[str, Operator],
    gstin: str,
    status: str,
    cancelled_on: str | None,
) -> None:
    url, _ = lookup
    caller = Caller(client_for(settings), service)
    caller.configure(url)

    shown = caller.validate(gstin)
    assert shown.status_code == 200, shown.text
    assert (shown.json()["status"], shown.json()["cancellation_date"]) == (status, cancelled_on)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("29ABCDE1234F1Z5", id="seed-example-not-a-pan"),
        pytest.param(BUYER[:14] + "0", id="wrong-check-character"),
        pytest.param("40AAACR5055K1Z7", id="unknown-state"),
        pytest.param(BUYER + "\x00", id="nul-byte"),
        pytest.param("27AAACR5055K1Z7\u202e", id="bidi-override"),
        pytest.param("２７AAACR5055K1Z7", id="fullwidth-digits"),
        pytest.param("9" * 100_000, id="huge"),
        pytest.param("", id="empty"),
    ],
)
def test_an_invalid_gstin_is_the_seeds_400_without_a_search(
    service: LedgerService, settings: Settings, lookup: tuple[str, Operator], bad: str
) -> None:
    url, operator = lookup
    caller = Caller(client_for(settings), service)
    caller.configure(url)

    refused = caller.validate(bad)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_gstin"
    assert {"message", "details", "timestamp", "request_id"} <= error.keys()
    assert len(refused.text) < 2000  # a huge input is described, never echoed
    assert operator.stats()["requests"] == 0


def test_a_body_that_is_not_a_gstin_string_is_a_422(service: LedgerService, settings: Settings) -> None:
    caller = Caller(client_for(settings), service)
    for body in ({"gstin": 27}, {"gstin": None}, {}, {"gstin": BUYER, "more": 1}):
        answer = caller.client.post("/v1/gst/validate", json=body, headers=caller.auth)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["code"] == "validation_failed"
    assert caller.client.post("/v1/gst/validate", json={"gstin": BUYER}).status_code == 401


def test_a_well_formed_gstin_nobody_holds_is_invalid_and_the_answer_is_cached(
    service: LedgerService, settings: Settings, lookup: tuple[str, Operator]
) -> None:
    url, operator = lookup
    caller = Caller(client_for(settings), service)
    caller.configure(url)

    for cached in (False, True):
        refused = caller.validate(UNREGISTERED)
        assert refused.status_code == 400, refused.text
        details = refused.json()["error"]["details"]
        assert refused.json()["error"]["code"] == "invalid_gstin"
        assert (details["registered"], details["cached"], details["local"]["gstin"]) == (
            False,
            cached,
            UNREGISTERED,
        )
    assert searches(operator) == 1


def test_the_network_down_is_a_503_with_the_local_result_and_nothing_cached(
    service: LedgerService, settings: Settings, lookup: tuple[str, Operator]
) -> None:
    url, operator = lookup
    caller = Caller(client_for(settings), service)
    caller.configure(url)
    operator.faults(outage=True, retry_after_s=7)

    down = caller.validate(BUYER)
    assert down.status_code == 503, down.text
    error = down.json()["error"]
    assert error["code"] == "gst_network_unavailable"
    assert error["details"]["local"] == {
        "gstin": BUYER,
        "kind": "regular",
        "state_code": "27",
        "pan": "AAACR5055K",
    }
    assert down.headers["retry-after"] == "7"

    operator.faults()  # back
    up = caller.validate(BUYER)
    assert up.status_code == 200 and up.json()["cached"] is False


def test_refused_credentials_are_a_502_that_never_shows_them(
    service: LedgerService, settings: Settings, lookup: tuple[str, Operator]
) -> None:
    url, _ = lookup
    caller = Caller(client_for(settings), service)
    caller.configure(url, {**ACCOUNT.credentials(), "client_secret": "not-the-secret-xyz"})

    refused = caller.validate(BUYER)
    assert refused.status_code == 502, refused.text
    assert refused.json()["error"]["code"] == "gst_network_error"
    assert refused.json()["error"]["details"]["provider_code"] == "http_401"
    assert "not-the-secret-xyz" not in refused.text


def test_without_the_search_configured_the_local_result_is_given_with_a_409(
    service: LedgerService, settings: Settings
) -> None:
    caller = Caller(client_for(settings), service)
    answer = caller.validate("07AAGFF2194N1CC")
    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["code"] == "gstin_lookup_not_configured"
    assert error["details"]["local"]["kind"] == "tcs"


def test_answers_are_each_tenants_own(
    service: LedgerService, settings: Settings, lookup: tuple[str, Operator]
) -> None:
    url, operator = lookup
    client = client_for(settings)
    mine, theirs = Caller(client, service), Caller(client, service, gstin="29AAGCB7383J1Z4")
    mine.configure(url)
    theirs.configure(url)

    assert mine.validate(BUYER).json()["cached"] is False
    # Another tenant's earlier search is not theirs to see: searched on their own account.
    assert theirs.validate(BUYER).json()["cached"] is False
    assert searches(operator) == 2

    assert mine.client.get(f"/v1/gst/parties/{BUYER}", headers=mine.auth).status_code == 200
    stranger = Caller(client, service, gstin="07AAGFF2194N1Z1")
    unseen = stranger.client.get(f"/v1/gst/parties/{BUYER}", headers=stranger.auth)
    assert unseen.status_code == 404 and unseen.json()["error"]["code"] == "not_found"
    malformed = stranger.client.get("/v1/gst/parties/NOT-A-GSTIN", headers=stranger.auth)
    assert malformed.status_code == 404 and malformed.json()["error"]["code"] == "not_found"


def test_a_search_that_hangs_is_a_503_within_the_apis_timeout(
    service: LedgerService, settings: Settings, lookup: tuple[str, Operator], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, operator = lookup
    monkeypatch.setattr(gst_parties, "SEARCH_TIMEOUT", httpx.Timeout(5.0, read=0.3))
    caller = Caller(client_for(settings), service)
    caller.configure(url)
    operator.faults(timeout_rate=1.0, paths=["/commonapi/v1.1/search"])

    held = caller.validate(BUYER)
    assert held.status_code == 503, held.text
    assert held.json()["error"]["details"]["provider_code"] == "timeout"


def test_concurrent_validations_of_one_gstin_all_answer_and_keep_one_row(
    service: LedgerService, settings: Settings, lookup: tuple[str, Operator]
) -> None:
    url, _ = lookup
    caller = Caller(client_for(settings), service)
    caller.configure(url)

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: caller.validate(BUYER), range(12)))

    assert {a.status_code for a in answers} == {200}, [a.text for a in answers if a.status_code != 200]
    assert {a.json()["legal_name"] for a in answers} == {"Reliable Traders Private Limited"}
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute("SELECT count(*) FROM gstin_lookup_taxpayers").fetchone()
    assert rows is not None and rows[0] == 1
