"""A tenant's API key can never send the stored provider credentials anywhere else, nor read them back.

Each refusal of docs/integrations.md over the real API and PostgreSQL, with real local HTTP servers
standing in for the places credentials must never reach: a redirect target, a server that echoes what
it was sent, a host that resolves to loopback in a production deployment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from connectors import catalogue
from connectors.errors import ConnectorError
from connectors.gst_irp.handler import CONNECTOR, IrnJobs
from connectors.gst_irp.routes import GENERATE
from connectors.gst_irp.sandbox import SandboxAccount, create_app
from engine import integrations
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.security.egress import EndpointPolicy
from engine.security.secrets import load_key_ring
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job
from tests.connectors.contract import LiveServer, Operator
from tests.integration.helpers import client_for, invoice_body, register_irp_tenant, register_tenant

pytestmark = pytest.mark.integration

ACCOUNT = SandboxAccount()
GOOD = ACCOUNT.credentials()
MARKER = "REMOTE-BODY-MARKER-7f3a"


class Recorder:
    """A tiny HTTP server: answers every request with ``answer(request)`` and keeps what it saw."""

    def __init__(self, answer: Any) -> None:
        self.seen: list[dict[str, Any]] = []

        async def endpoint(request: Request) -> Response:
            body = await request.body()
            self.seen.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
            response: Response = answer(request, body)
            return response

        methods = ["GET", "POST", "PUT", "DELETE"]
        self.app = Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])


@pytest.fixture
def sandbox() -> Iterator[tuple[LiveServer, Operator]]:
    with LiveServer(create_app(account=ACCOUNT)) as server:
        operator = Operator(server.url)
        yield server, operator
        operator.http.close()


@pytest.fixture
def tenant(service: LedgerService, settings: Settings) -> tuple[TestClient, dict[str, str]]:
    _, key = register_tenant(service)
    return client_for(settings), {"Authorization": f"Bearer {key}"}


def put(client: TestClient, auth: dict[str, str], **body: Any) -> Any:
    return client.put("/v1/integrations/gst-irp", json=body, headers=auth)


def error_of(response: Any, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def paths_of(error: dict[str, Any]) -> set[str]:
    return {f["path"] for f in error["details"]["fields"]}


def test_a_new_base_url_without_the_credentials_is_refused_and_nothing_is_sent_there(
    tenant: tuple[TestClient, dict[str, str]], sandbox: tuple[LiveServer, Operator]
) -> None:
    client, auth = tenant
    server, _ = sandbox
    attacker = Recorder(lambda request, body: JSONResponse({"Status": 1, "Data": {}}))
    assert put(client, auth, base_url=server.url, credentials=GOOD).status_code == 200

    with LiveServer(attacker.app) as elsewhere:
        alone = error_of(put(client, auth, base_url=elsewhere.url))
        partly = error_of(put(client, auth, base_url=elsewhere.url, credentials={"password": "p"}))
        tested = client.post("/v1/integrations/gst-irp/test", headers=auth).json()

    assert alone["code"] == "credentials_required"
    assert paths_of(alone) == {f"credentials.{f}" for f in GOOD}
    assert "base_url" in alone["message"]
    assert partly["code"] == "credentials_required"
    assert paths_of(partly) == {f"credentials.{f}" for f in GOOD if f != "password"}
    # The stored settings still point at the sandbox, which the test reached; the other server saw nothing.
    assert client.get("/v1/integrations/gst-irp", headers=auth).json()["base_url"] == server.url
    assert tested["ok"] is True, tested
    assert attacker.seen == []


def test_a_new_environment_needs_the_credentials_again(tenant: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = tenant
    url = "https://api.einvoice1.gst.gov.in"
    # A sandbox integration may not name the production host (issue 10): it starts on NIC's sandbox.
    sandbox = "https://einv-apisandbox.nic.in"
    assert put(client, auth, environment="sandbox", base_url=sandbox, credentials=GOOD).status_code == 200
    assert error_of(put(client, auth, environment="sandbox", base_url=url))["code"] == "url_not_allowed"

    refused = error_of(put(client, auth, environment="production", base_url=url))
    moved = put(client, auth, environment="production", base_url=url, credentials=GOOD)

    assert refused["code"] == "credentials_required" and "environment" in refused["message"]
    assert moved.status_code == 200, moved.text
    assert moved.json()["environment"] == "production"


def test_turning_an_integration_off_and_on_keeps_its_credentials(
    tenant: tuple[TestClient, dict[str, str]], sandbox: tuple[LiveServer, Operator]
) -> None:
    client, auth = tenant
    server, _ = sandbox
    saved = put(client, auth, base_url=server.url, credentials=GOOD).json()

    off = put(client, auth, enabled=False)
    on = put(client, auth, enabled=True, base_url=server.url + "/", environment="sandbox")

    assert off.status_code == 200 and off.json()["enabled"] is False, off.text
    assert on.status_code == 200 and on.json()["enabled"] is True, on.text
    assert on.json()["credentials"] == saved["credentials"]  # same fields, same rotation times
    assert client.post("/v1/integrations/gst-irp/test", headers=auth).json()["ok"] is True


def test_a_new_integration_needs_a_base_url(tenant: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = tenant
    error = error_of(put(client, auth, credentials=GOOD))
    assert error["code"] == "invalid_base_url" and paths_of(error) == {"base_url"}


@pytest.mark.parametrize(
    "url", ["https://user:secret@gsp.example", "http://admin@127.0.0.1:9101", "https://:pw@gsp.example"]
)
def test_a_url_with_userinfo_is_refused_at_save_time(
    tenant: tuple[TestClient, dict[str, str]], url: str
) -> None:
    client, auth = tenant
    error = error_of(put(client, auth, base_url=url, credentials=GOOD))
    assert error["code"] == "url_not_allowed" and paths_of(error) == {"base_url"}
    assert "user" in error["message"]


@pytest.mark.parametrize(
    "url",
    [
        "https://gsp.example",
        "https://api.einvoice1.gst.gov.in.attacker.example",
        "http://api.einvoice1.gst.gov.in",  # production is https only
        "https://127.0.0.1",
    ],
)
def test_a_production_integration_refuses_hosts_its_connector_does_not_declare(
    tenant: tuple[TestClient, dict[str, str]], url: str
) -> None:
    client, auth = tenant
    error = error_of(put(client, auth, environment="production", base_url=url, credentials=GOOD))
    assert error["code"] == "url_not_allowed" and paths_of(error) == {"base_url"}


def test_a_production_integration_accepts_the_connectors_known_hosts(
    tenant: tuple[TestClient, dict[str, str]],
) -> None:
    client, auth = tenant
    refused = error_of(
        put(client, auth, environment="production", base_url="https://gsp.example", credentials=GOOD)
    )
    for url in catalogue.endpoint_policy("gst-irp").allowed():
        saved = put(client, auth, environment="production", base_url=url, credentials=GOOD)
        assert saved.status_code == 200, saved.text
    # The refusal lists what is allowed, so the operator knows what to ask for.
    assert "https://api.einvoice1.gst.gov.in" in refused["details"]["fields"][0]["allowed"]


def test_a_production_deployment_refuses_sandbox_integrations_when_saving(
    service: LedgerService, settings: Settings
) -> None:
    _, key = register_tenant(service)
    client = client_for(replace(settings, mode="production"))
    auth = {"Authorization": f"Bearer {key}"}

    explicit = error_of(
        put(client, auth, environment="sandbox", base_url="https://einv-apisandbox.nic.in", credentials=GOOD)
    )
    default = error_of(put(client, auth, base_url="https://einv-apisandbox.nic.in", credentials=GOOD))

    for error in (explicit, default):
        assert error["code"] == "environment_not_allowed" and paths_of(error) == {"environment"}


def test_a_production_deployment_refuses_a_stored_sandbox_integration_when_calling(
    service: LedgerService, settings: Settings, sandbox: tuple[LiveServer, Operator]
) -> None:
    server, operator = sandbox
    _, key = register_tenant(service)
    auth = {"Authorization": f"Bearer {key}"}
    # Saved while the deployment ran in development mode, then the deployment moved to production.
    assert put(client_for(settings), auth, base_url=server.url, credentials=GOOD).status_code == 200

    tested = client_for(replace(settings, mode="production")).post(
        "/v1/integrations/gst-irp/test", headers=auth
    )

    assert tested.status_code == 200, tested.text
    assert tested.json()["ok"] is False
    assert tested.json()["error"]["code"] == "environment_not_allowed", tested.json()
    assert operator.stats()["requests"] == 0


def test_a_name_that_resolves_to_loopback_is_refused_at_connect_time_in_production(
    service: LedgerService, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = Recorder(lambda request, body: JSONResponse({"Status": 1, "Data": {}}))
    with LiveServer(target.app) as server:
        port = int(server.url.rsplit(":", 1)[1])
        # A connector whose declared host answers DNS with a loopback address (misdeclared, or the
        # name's owner changed its answer since): the declaration passes, the address must not.
        policy = EndpointPolicy(provider="gst-irp", known_hosts=(f"localhost:{port}",))
        monkeypatch.setitem(catalogue.ENDPOINT_POLICIES, "gst-irp", policy)
        production = replace(settings, mode="production")
        _, key = register_tenant(service)
        auth = {"Authorization": f"Bearer {key}"}
        saved = put(
            client_for(production),
            auth,
            environment="production",
            base_url=f"https://localhost:{port}",
            credentials=GOOD,
        )
        assert saved.status_code == 200, saved.text

        tested = client_for(production).post("/v1/integrations/gst-irp/test", headers=auth).json()

    assert tested["ok"] is False
    assert tested["error"]["code"] == "address_not_allowed", tested
    assert target.seen == []


def test_a_redirect_is_not_followed(tenant: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = tenant
    target = Recorder(lambda request, body: JSONResponse({"Status": 1, "Data": {}}))
    with LiveServer(target.app) as elsewhere:
        redirect = Recorder(lambda request, body: RedirectResponse(elsewhere.url + request.url.path, 307))
        with LiveServer(redirect.app) as redirecting:
            assert put(client, auth, base_url=redirecting.url, credentials=GOOD).status_code == 200
            tested = client.post("/v1/integrations/gst-irp/test", headers=auth).json()

    assert tested["ok"] is False
    assert tested["error"]["code"] == "redirect_not_followed", tested
    assert len(redirect.seen) == 1
    assert target.seen == []


def echoing(status: int, kind: str) -> Any:
    """A server that answers with the marker and everything it was sent (the credentials included)."""

    def answer(request: Request, body: bytes) -> Response:
        echoed = f"{MARKER} {dict(request.headers)} {body.decode(errors='replace')}"
        if kind == "irp-error":
            return JSONResponse(
                {
                    "Status": 0,
                    "ErrorDetails": [{"ErrorCode": echoed, "ErrorMessage": echoed}],
                    "InfoDtls": echoed,
                },
                status_code=status,
            )
        return PlainTextResponse(echoed, status_code=status)

    return answer


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (200, "irp-error", "credentials_refused"),
        (400, "irp-error", "credentials_refused"),
        (401, "text", "credentials_refused"),
        (403, "irp-error", "credentials_refused"),
        (404, "text", "http_4xx"),
        (500, "text", "http_5xx"),
        (503, "irp-error", "http_5xx"),
        (200, "text", "invalid_response"),
    ],
)
def test_the_connection_test_never_echoes_the_remote_answer(
    tenant: tuple[TestClient, dict[str, str]], status: int, kind: str, code: str
) -> None:
    client, auth = tenant
    remote = Recorder(echoing(status, kind))
    with LiveServer(remote.app) as server:
        put(client, auth, base_url=server.url, credentials=GOOD)
        tested = client.post("/v1/integrations/gst-irp/test", headers=auth)

    assert remote.seen, "the connection test never reached the server"
    assert tested.json()["ok"] is False
    assert tested.json()["error"]["code"] == code, tested.json()
    assert tested.json()["error"]["message"] == catalogue.TEST_OUTCOMES[code]
    assert MARKER not in tested.text
    for secret in (GOOD["password"], GOOD["client_secret"]):
        assert secret not in tested.text


def test_a_provider_error_is_recorded_on_the_invoice_without_the_stored_secrets(
    service: LedgerService, settings: Settings
) -> None:
    remote = Recorder(echoing(200, "irp-error"))
    with LiveServer(remote.app) as server:
        registered = register_irp_tenant(service, settings, server.url, credentials=GOOD)
        invoice = service.issue_invoice(
            registered.tenant_id, IssueInvoice.model_validate(invoice_body())
        ).invoice
        jobs = IrnJobs(
            HandlerContext(
                settings,
                service,
                load_key_ring(settings.var_dir),
                connector=CONNECTOR,
                request_rate_per_s=None,
            )
        )
        job = Job.for_event(
            CONNECTOR,
            GENERATE,
            ce_id="test-event",
            tenant_id=str(registered.tenant_id),
            subject=str(invoice.id),
            payload={"invoice_id": str(invoice.id)},
        )
        with pytest.raises(ConnectorError) as caught:
            asyncio.run(_attempt(jobs, job))
        jobs.record_failure(job, caught.value, 1)

    failure = service.get_invoice(registered.tenant_id, UUID(str(invoice.id))).einvoice_failure
    recorded = json.dumps(failure) + str(caught.value) + json.dumps(caught.value.details, default=str)
    assert failure is not None and MARKER in failure["message"]  # the provider's answer is kept
    for secret in (GOOD["password"], GOOD["client_secret"], GOOD["client_id"], GOOD["username"]):
        assert secret not in json.dumps(failure), failure
        assert secret not in str(caught.value), str(caught.value)
        assert secret not in json.dumps(caught.value.details, default=str), caught.value.details
        assert secret not in recorded
    assert "[redacted]" in failure["message"]


async def _attempt(jobs: IrnJobs, job: Job) -> None:
    try:
        await jobs(job, 1)
    finally:
        await jobs.close()


def test_settings_saved_before_this_policy_are_checked_again_when_called(
    service: LedgerService, settings: Settings
) -> None:
    """A production row whose host a newer policy no longer declares is refused at call time."""
    target = Recorder(lambda request, body: JSONResponse({"Status": 1, "Data": {}}))
    tenant_id, key = register_tenant(service)
    with (
        LiveServer(target.app) as server,
        psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn,
    ):
        port = int(server.url.rsplit(":", 1)[1])
        old_policy = EndpointPolicy(provider="gst-irp", known_hosts=(f"localhost:{port}",))
        integrations.save(
            conn,
            load_key_ring(settings.var_dir),
            UUID(tenant_id),
            "gst-irp",
            enabled=True,
            environment="production",
            base_url=f"https://localhost:{port}",
            credentials=GOOD,
            endpoints=old_policy,
            mode="development",
        )
        conn.commit()
        tested = client_for(settings).post(
            "/v1/integrations/gst-irp/test", headers={"Authorization": f"Bearer {key}"}
        )

    assert tested.json()["ok"] is False
    assert tested.json()["error"]["code"] == "url_not_allowed", tested.json()
    assert target.seen == []


def test_a_job_in_a_production_deployment_never_calls_a_stored_sandbox_integration(
    service: LedgerService, settings: Settings, sandbox: tuple[LiveServer, Operator]
) -> None:
    server, operator = sandbox
    registered = register_irp_tenant(service, settings, server.url, credentials=GOOD)
    invoice = service.issue_invoice(registered.tenant_id, IssueInvoice.model_validate(invoice_body())).invoice
    production = replace(settings, mode="production")
    jobs = IrnJobs(
        HandlerContext(
            production, service, load_key_ring(settings.var_dir), connector=CONNECTOR, request_rate_per_s=None
        )
    )
    job = Job.for_event(
        CONNECTOR,
        GENERATE,
        ce_id="test-event",
        tenant_id=str(registered.tenant_id),
        subject=str(invoice.id),
        payload={"invoice_id": str(invoice.id)},
    )

    with pytest.raises(ConnectorError) as caught:
        asyncio.run(_attempt(jobs, job))

    assert (caught.value.code, str(caught.value.error_class)) == (
        "environment_not_allowed",
        "needs_attention",
    )
    assert operator.stats()["requests"] == 0
