"""QuickBooks Online on the real stack: the OAuth 2.0 flow through the API, the scheduled token
refresh, and invoices and payments pushed by the handler (real PostgreSQL, the real LedgerService, the
sandbox over HTTP as Intuit's OAuth server and Accounting API)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from connectors import oauth
from connectors.catalogue import checked_transport
from connectors.errors import ConnectorError, NeedsAttentionError, RetryableError
from connectors.quickbooks import routes
from connectors.quickbooks.handler import create_handler
from connectors.quickbooks.sandbox import SandboxAccount, create_app
from connectors.quickbooks.settings import OAUTH
from engine.application import LedgerService
from engine.commands import CancelInvoice, IssueInvoice
from engine.config import Settings
from engine.payments import PaymentBook, PaymentFact, open_inbox
from engine.publishing import invoice_document
from engine.security.secrets import load_key_ring
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for, invoice_body
from tests.integration.processes import Processes

pytestmark = pytest.mark.integration

ACCOUNT = SandboxAccount()
CREDENTIALS = {
    "client_id": ACCOUNT.client_id,
    "client_secret": ACCOUNT.client_secret,
    "income_account_id": "79",
    "deposit_account_id": "4",
    "tax_codes": "0=NON,5=12,12=13,18=14,28=15",
}
CALLBACK = "/v1/integrations/quickbooks/oauth/callback"


@pytest.fixture
def intuit() -> Iterator[tuple[str, Operator]]:
    with LiveServer(create_app(ACCOUNT)) as server:
        yield server.url, Operator(server.url)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tenant(service: LedgerService, name: str = "Books") -> tuple[UUID, str]:
    registered = service.register_tenant(
        name=name, legal_name=f"{name} Private Limited", country="IN", gstin="27AAGCB7383J1Z8", state="27"
    )
    return registered.tenant_id, registered.api_key


def configure(client: TestClient, key: str, url: str) -> None:
    body = {"enabled": True, "environment": "sandbox", "base_url": url, "credentials": CREDENTIALS}
    answer = client.put("/v1/integrations/quickbooks", headers=auth(key), json=body)
    assert answer.status_code == 200, answer.text


def consent(client: TestClient, key: str) -> dict[str, str]:
    """Ask for the authorisation URL, then consent at the provider: the redirect's parameters."""
    started = client.get("/v1/integrations/quickbooks/oauth/authorize", headers=auth(key))
    assert started.status_code == 200, started.text
    answered = httpx.get(started.json()["authorization_url"], follow_redirects=False)
    assert answered.status_code == 302, answered.text
    location = answered.headers["location"]
    assert location.startswith(oauth.redirect_uri("quickbooks") + "?")
    return dict(parse_qsl(urlsplit(location).query))


def connect(client: TestClient, key: str, url: str) -> dict[str, Any]:
    configure(client, key, url)
    answer = client.get(CALLBACK, params=consent(client, key))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def error_code(answer: httpx.Response) -> str:
    code: str = answer.json()["error"]["code"]
    return code


def keeper(settings: Settings, service: LedgerService) -> oauth.TokenKeeper:
    return oauth.TokenKeeper(
        settings,
        load_key_ring(settings.var_dir),
        service,
        {"quickbooks": OAUTH},
        lambda loaded: checked_transport(loaded, settings.mode),
    )


def alerts(settings: Settings) -> list[bytes]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute("SELECT state FROM ledger_events WHERE topic LIKE '%Alert.Raised'").fetchall()
    return [bytes(r[0]) for r in rows]


def test_connecting_takes_the_user_through_consent_with_pkce_and_keeps_the_tokens_sealed(
    service: LedgerService, settings: Settings, intuit: tuple[str, Operator]
) -> None:
    url, operator = intuit
    tenant_id, key = tenant(service)
    client = client_for(settings)
    configure(client, key, url)

    started = client.get("/v1/integrations/quickbooks/oauth/authorize", headers=auth(key)).json()
    query = dict(parse_qsl(urlsplit(started["authorization_url"]).query))
    assert started["authorization_url"].startswith(url + "/connect/oauth2?")
    assert (query["code_challenge_method"], query["scope"], query["redirect_uri"]) == (
        "S256",
        "com.intuit.quickbooks.accounting",
        oauth.redirect_uri("quickbooks"),
    )
    back = dict(parse_qsl(urlsplit(httpx.get(started["authorization_url"]).headers["location"]).query))
    connected = client.get(CALLBACK, params=back)

    assert connected.status_code == 200, connected.text
    view = connected.json()
    assert (view["status"], view["account_id"]) == ("connected", ACCOUNT.realm_id)
    assert client.get("/v1/integrations/quickbooks/oauth", headers=auth(key)).json()["status"] == "connected"
    assert operator.stats()["effects"]["code_exchanged"] == 1
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT scope, secret_sealed FROM connector_secrets WHERE tenant_id = %s ORDER BY scope",
            (tenant_id,),
        ).fetchall()
        states = conn.execute("SELECT count(*) FROM oauth_states").fetchone()
    token = asyncio.run(keeper(settings, service).access_token(tenant_id, "quickbooks"))
    assert [r[0] for r in rows] == ["oauth:access", "oauth:refresh"]
    assert all(token not in r[1] for r in rows)
    assert token not in connected.text
    assert states == (0,)  # the state was spent


def test_a_state_works_once_and_only_for_the_tenant_that_asked(
    service: LedgerService, settings: Settings, intuit: tuple[str, Operator]
) -> None:
    url, _ = intuit
    client = client_for(settings)
    _a_id, a_key = tenant(service, "Alpha")
    _b_id, b_key = tenant(service, "Beta")
    configure(client, a_key, url)
    configure(client, b_key, url)
    back = consent(client, a_key)

    first = client.get(CALLBACK, params=back)
    replayed = client.get(CALLBACK, params=back)

    assert first.status_code == 200
    assert (replayed.status_code, error_code(replayed)) == (400, "invalid_state")
    assert (
        client.get("/v1/integrations/quickbooks/oauth", headers=auth(a_key)).json()["status"] == "connected"
    )
    not_b = client.get("/v1/integrations/quickbooks/oauth", headers=auth(b_key))
    assert (not_b.status_code, error_code(not_b)) == (404, "not_found")
    nobody = client.get("/v1/integrations/quickbooks/oauth/authorize")
    assert nobody.status_code == 401


def test_hostile_callbacks_are_clear_4xx_and_connect_nothing(
    service: LedgerService, settings: Settings, intuit: tuple[str, Operator]
) -> None:
    url, operator = intuit
    client = client_for(settings)
    tenant_id, key = tenant(service)
    configure(client, key, url)

    def fresh() -> dict[str, str]:
        return consent(client, key)

    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        old_state, _, _ = oauth.begin(
            conn,
            load_key_ring(settings.var_dir),
            tenant_id,
            "quickbooks",
            now=datetime.now(UTC) - timedelta(hours=1),
        )
    cases: list[tuple[dict[str, str], int, str]] = [
        ({}, 400, "invalid_state"),
        ({"state": "x" * 600, "code": "c"}, 422, "validation_failed"),
        ({"state": "abc\x00" * 10, "code": "c"}, 400, "invalid_state"),
        ({"state": oauth.new_state(), "code": "c", "realmId": ACCOUNT.realm_id}, 400, "invalid_state"),
        ({"state": old_state, "code": "c", "realmId": ACCOUNT.realm_id}, 400, "invalid_state"),
        ({**fresh(), "code": "ok\r\nSet-Cookie: a=b"}, 400, "invalid_code"),
        ({k: v for k, v in fresh().items() if k != "realmId"}, 400, "invalid_account"),
        ({**fresh(), "realmId": "1 OR 1=1"}, 400, "invalid_account"),
        ({**fresh(), "error": "access_denied"}, 400, "authorization_denied"),
        ({**fresh(), "code": "AB11forged-code"}, 400, "token_exchange_refused"),
        ({**fresh(), "code": "\u202e" * 3}, 400, "invalid_code"),
    ]
    for params, status, code in cases:
        answer = client.get(CALLBACK, params=params)
        assert (answer.status_code, error_code(answer)) == (status, code), params
        assert set(answer.json()["error"]) >= {"code", "message", "request_id"}

    sealed_with_a_retired_key = fresh()
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        conn.execute("UPDATE oauth_states SET verifier_sealed = 'retired:AAAA'")
    answer = client.get(CALLBACK, params=sealed_with_a_retired_key)
    assert (answer.status_code, error_code(answer)) == (400, "invalid_state")

    assert client.get("/v1/integrations/quickbooks/oauth", headers=auth(key)).status_code == 404
    assert operator.stats()["effects"].get("code_exchanged", 0) == 0
    unknown = client.get("/v1/integrations/stripe/oauth/authorize", headers=auth(key))
    assert (unknown.status_code, error_code(unknown)) == (404, "not_found")


def test_tokens_are_refreshed_before_they_expire_on_a_schedule_that_survives_a_restart(
    service: LedgerService, settings: Settings, intuit: tuple[str, Operator]
) -> None:
    url, operator = intuit
    client = client_for(settings)
    tenant_id, key = tenant(service)
    connect(client, key, url)
    first_token = asyncio.run(keeper(settings, service).access_token(tenant_id, "quickbooks"))
    now = datetime.now(UTC)

    assert asyncio.run(keeper(settings, service).refresh_due(now=now))["refreshed"] == 0
    assert asyncio.run(keeper(settings, service).refresh_due(now=now + timedelta(minutes=51))) == {
        "refreshed": 1,
        "needs_reauth": 0,
        "retrying": 0,
    }
    # A new process (a restart) reads the schedule from PostgreSQL: nothing is due right after a refresh,
    # and the next refresh spends the rotated refresh token.
    assert (
        asyncio.run(keeper(settings, service).refresh_due(now=now + timedelta(minutes=1)))["refreshed"] == 0
    )
    assert (
        asyncio.run(keeper(settings, service).refresh_due(now=now + timedelta(minutes=52)))["refreshed"] == 1
    )

    token = asyncio.run(keeper(settings, service).access_token(tenant_id, "quickbooks"))
    view = client.get("/v1/integrations/quickbooks/oauth", headers=auth(key)).json()
    assert token != first_token
    assert operator.stats()["effects"]["token_refreshed"] == 2
    assert view["status"] == "connected" and view["last_refreshed_at"] is not None
    assert httpx.get(
        f"{url}/v3/company/{ACCOUNT.realm_id}/companyinfo/{ACCOUNT.realm_id}", headers=auth(token)
    ).is_success


def test_a_refused_refresh_needs_a_person_and_raises_a_critical_alert(
    service: LedgerService, settings: Settings, intuit: tuple[str, Operator]
) -> None:
    url, operator = intuit
    client = client_for(settings)
    tenant_id, key = tenant(service, "Alpha")
    _other_id, other_key = tenant(service, "Beta")
    connect(client, key, url)
    operator.http.post("/_sandbox/quickbooks/revoke").raise_for_status()
    connect(client, other_key, url)  # connected after the revocation: still good

    outcome = asyncio.run(
        keeper(settings, service).refresh_due(now=datetime.now(UTC) + timedelta(minutes=51))
    )

    assert outcome == {"refreshed": 1, "needs_reauth": 1, "retrying": 0}
    view = client.get("/v1/integrations/quickbooks/oauth", headers=auth(key)).json()
    assert view["status"] == "needs_reauth" and view["last_error"].startswith("invalid_grant")
    assert (
        client.get("/v1/integrations/quickbooks/oauth", headers=auth(other_key)).json()["status"]
        == "connected"
    )
    [alert] = alerts(settings)
    assert b"oauth_refresh_failed" in alert and b"critical" in alert
    assert tenant_id.hex.encode() in alert or str(tenant_id).encode() in alert
    with pytest.raises(NeedsAttentionError) as refused:
        asyncio.run(keeper(settings, service).access_token(tenant_id, "quickbooks"))
    assert refused.value.code == "not_connected"
    handler = create_handler(
        HandlerContext(
            settings,
            service,
            load_key_ring(settings.var_dir),
            connector="quickbooks",
            request_rate_per_s=None,
        )
    )
    job = {"tenant_id": str(tenant_id), "invoice_id": str(uuid4())}
    [void] = routes.routes(routes.CANCELLED, "ce-reauth", job)
    waiting = asyncio.run(_error_of(handler, void))  # kept for a redrive, not skipped
    assert (type(waiting), waiting.code) == (NeedsAttentionError, "not_connected")
    # Connecting again is the cure (docs/runbooks/quickbooks-needs-reauth.md).
    assert client.get(CALLBACK, params=consent(client, key)).json()["status"] == "connected"


def context_for(settings: Settings, service: LedgerService) -> HandlerContext:
    ring = load_key_ring(settings.var_dir)
    return HandlerContext(settings, service, ring, connector="quickbooks", request_rate_per_s=None)


def run_until_done(handler: Any, job: Job, limit: int = 40) -> tuple[JobResult, int]:
    """Attempts as the connector runtime makes them (retryable -> again), without its delays."""

    async def attempts() -> tuple[JobResult, int]:
        for attempt in range(1, limit + 1):
            try:
                return await handler(job, attempt), attempt
            except RetryableError:
                continue
        raise AssertionError(f"job {job.kind} never succeeded in {limit} attempts")

    return asyncio.run(attempts())


def test_an_invoice_and_its_payment_reach_quickbooks_once_under_faults_and_a_cancellation_voids_it(
    service: LedgerService, settings: Settings, intuit: tuple[str, Operator]
) -> None:
    url, operator = intuit
    client = client_for(settings)
    tenant_id, key = tenant(service)
    connect(client, key, url)
    issued = service.issue_invoice(tenant_id, IssueInvoice.model_validate(invoice_body("QB-1"))).invoice
    record = {"event_id": "e", "tenant_id": str(tenant_id), **invoice_document(issued, issued.id)}
    [push] = routes.routes(routes.ISSUED, f"ce-{uuid4()}", record)
    book = PaymentBook(service, open_inbox(settings))
    try:
        captured = book.apply(
            PaymentFact(
                tenant_id=tenant_id,
                provider="razorpay",
                provider_payment_id="pay_29QQoUBi66xm2f",
                provider_event_id="evt_1",
                occurred_at=datetime.now(UTC),
                amount=Decimal("1180.00"),
                currency="INR",
                paid_at=datetime(2026, 6, 2, 10, 0, tzinfo=UTC),
                status="captured",
                reference={"invoice_id": str(issued.id)},  # no number: the handler looks it up
            )
        )
    finally:
        book.close()
    status = {"tenant_id": str(tenant_id), "payment_id": str(captured.id), "status": "captured"}
    [pay] = routes.routes(routes.PAYMENT_STATUS_CHANGED, f"ce-{uuid4()}", status)
    context = HandlerContext(
        settings, service, load_key_ring(settings.var_dir), connector="quickbooks", request_rate_per_s=None
    )
    handler = create_handler(context)
    operator.faults(
        after_effect_failure_rate=0.4,
        error_rate=0.15,
        rate_limit_rate=0.15,
        retry_after_s=1,
        seed=11,
        paths=["/v3/"],
    )

    early = asyncio.run(_error_of(handler, pay))  # the payment before its invoice: wait, never guess
    pushed, attempts = run_until_done(handler, push)
    operator.clock(advance_s=3700)  # the access token expired at Intuit: the handler refreshes it
    paid, _ = run_until_done(handler, pay)
    again = [run_until_done(handler, job)[0] for job in (push, pay)]  # redeliveries

    assert early.code in ("invoice_not_synced", "http_429", "http_500", "http_502")
    assert attempts > 1, "the seeded faults should have failed the first attempt"
    assert pushed.data["action"] in ("created", "unchanged") and paid.data["action"] in (
        "created",
        "unchanged",
    )
    assert [r.data["action"] for r in again] == ["unchanged", "unchanged"]
    effects = operator.stats()["effects"]
    assert (effects["customer_created"], effects["item_created"], effects["invoice_created"]) == (1, 1, 1)
    assert effects["payment_created"] == 1 and effects["token_refreshed"] == 1
    assert effects.get("invoice_updated", 0) == 0
    [invoice] = operator.http.get("/_sandbox/quickbooks/entities/invoice").json()["items"]
    [line] = invoice["Line"]
    assert (invoice["DocNumber"], line["Amount"], invoice["Balance"]) == ("QB-1", 1000.0, -180.0)
    assert invoice["PrivateNote"] == f"ledgerflow:{issued.id}"

    operator.faults(after_effect_failure_rate=0.5, seed=5, paths=["/v3/"])
    service.cancel_invoice(tenant_id, issued.id, CancelInvoice(reason="data_entry_mistake"))
    [void] = routes.routes(
        routes.CANCELLED, f"ce-{uuid4()}", {"tenant_id": str(tenant_id), "invoice_id": str(issued.id)}
    )
    voided, _ = run_until_done(handler, void)
    repeated, _ = run_until_done(handler, void)

    assert (
        voided.data["action"] in ("voided", "already_voided") and repeated.data["action"] == "already_voided"
    )
    assert operator.stats()["effects"]["invoice_voided"] == 1
    [invoice] = operator.http.get("/_sandbox/quickbooks/entities/invoice").json()["items"]
    assert invoice["TotalAmt"] == 0 and "Voided" in invoice["PrivateNote"]


def test_a_tenant_without_the_connection_gets_nothing_pushed(
    service: LedgerService, settings: Settings, intuit: tuple[str, Operator]
) -> None:
    url, operator = intuit
    client = client_for(settings)
    connected_id, connected_key = tenant(service, "Alpha")
    stranger_id, stranger_key = tenant(service, "Beta")
    connect(client, connected_key, url)
    configure(client, stranger_key, url)  # configured, never authorised
    issued = service.issue_invoice(stranger_id, IssueInvoice.model_validate(invoice_body("QB-9"))).invoice
    record = {"event_id": "e", "tenant_id": str(stranger_id), **invoice_document(issued, issued.id)}
    [push] = routes.routes(routes.ISSUED, "ce-stranger", record)
    handler = create_handler(
        HandlerContext(
            settings,
            service,
            load_key_ring(settings.var_dir),
            connector="quickbooks",
            request_rate_per_s=None,
        )
    )

    skipped = asyncio.run(handler(push, 1))

    assert skipped.data == {"action": "skipped_not_connected"}
    assert operator.stats()["effects"].get("invoice_created", 0) == 0
    # Another tenant's invoice id in a cancellation job for the connected tenant is not found, not voided.
    [void] = routes.routes(
        routes.CANCELLED, "ce-x", {"tenant_id": str(connected_id), "invoice_id": str(issued.id)}
    )
    assert asyncio.run(_error_of(handler, void)).code == "invoice_not_found"


async def _error_of(handler: Any, job: Job) -> ConnectorError:
    try:
        await handler(job, 1)
    except ConnectorError as exc:
        return exc
    raise AssertionError(f"job {job.kind} succeeded")


@pytest.mark.slow
def test_an_invoice_its_captured_payment_and_its_cancellation_reach_quickbooks_through_the_running_engine(
    service: LedgerService,
    settings: Settings,
    topics: list[str],
    intuit: tuple[str, Operator],
    tmp_path: Path,
) -> None:
    url, operator = intuit
    fast = replace(settings, retry_delays=(0, 1, 1, 2), breaker_open_seconds=3)
    client = client_for(fast)
    tenant_id, key = tenant(service)
    connect(client, key, url)
    operator.faults(error_rate=1.0, paths=["/v3/"], max_faults=2)  # a short outage first
    issued = service.issue_invoice(tenant_id, IssueInvoice.model_validate(invoice_body("QB-E2E"))).invoice
    book = PaymentBook(service, open_inbox(fast))
    try:
        book.apply(
            PaymentFact(
                tenant_id=tenant_id,
                provider="razorpay",
                provider_payment_id="pay_e2e",
                provider_event_id="evt_e2e",
                occurred_at=datetime.now(UTC),
                amount=Decimal("1180.00"),
                currency="INR",
                paid_at=datetime.now(UTC),
                status="captured",
                reference={"invoice_number": "QB-E2E"},
            )
        )
    finally:
        book.close()

    def effect(name: str) -> int:
        count: int = operator.stats()["effects"].get(name, 0)
        return count

    processes = Processes(fast, tmp_path)
    try:
        engine = [processes.start("relay"), processes.start("worker")]
        engine.append(processes.start("connectors", "run", name="connectors"))
        processes.wait_for(
            lambda: effect("payment_created"), what="the payment in QuickBooks", watch=engine, timeout=180
        )
        service.cancel_invoice(tenant_id, issued.id, CancelInvoice(reason="data_entry_mistake"))
        processes.wait_for(
            lambda: effect("invoice_voided"),
            what="the invoice voided in QuickBooks",
            watch=engine,
            timeout=120,
        )
    finally:
        processes.close()

    assert [effect(n) for n in ("invoice_created", "payment_created", "invoice_voided")] == [1, 1, 1]
    assert operator.stats()["faults_injected"] == {"error": 2}


def test_concurrent_refreshes_of_one_connection_spend_its_refresh_token_once(
    service: LedgerService, settings: Settings, intuit: tuple[str, Operator]
) -> None:
    url, operator = intuit
    client = client_for(settings)
    tenant_id, key = tenant(service)
    connect(client, key, url)
    keepers = [keeper(settings, service) for _ in range(3)]  # three processes noticing the same expiry

    async def together() -> list[str]:
        return list(await asyncio.gather(*(k.refresh(tenant_id, "quickbooks") for k in keepers)))

    tokens = asyncio.run(together())

    assert len(set(tokens)) == 1
    assert operator.stats()["effects"]["token_refreshed"] == 1
    assert client.get("/v1/integrations/quickbooks/oauth", headers=auth(key)).json()["status"] == "connected"
    assert alerts(settings) == []
