"""The standard suite every connector's client and sandbox pass, over real HTTP.

A connector joins in one line, after writing a :class:`SandboxHarness` for itself::

    class TestGstIrpContract(ConnectorContract):
        harness = GstIrpHarness()

The sandbox runs under uvicorn on a free loopback port in a background thread, once per test class; each
test starts from ``POST /_sandbox/reset``. The suite checks the shared operator endpoints
(connectors.sandbox_kit), that injected faults reach the caller as the right ConnectorError (429 and
outages with their Retry-After, 5xx, timeouts, refused connections), that faults are reproducible from a
seed, that an effect whose answer was lost is still counted, that a redirect is never followed (it would
carry the credentials to wherever it points), and that credentials stay out of reprs, error messages and
logs. No test sleeps: timeouts are short client timeouts against a sandbox that holds
the request, and every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, closing
from typing import Any, ClassVar, Protocol
from uuid import UUID

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from connectors.errors import ConnectorError, ErrorClass, PermanentError, RetryableError
from connectors.kit import Connector, ConnectorHandler
from engine.application import LedgerService
from engine.config import Settings
from streams.connectors.jobs import Job, JobResult

FAST = httpx.Timeout(5.0, read=0.3)
"""Client timeout for fault tests: the sandbox holds "timeout" requests far longer than 0.3 s."""


def redirecting_to(target: str) -> ASGIApp:
    """An app answering every request with a 307 to the same path on ``target``."""

    async def redirect(request: Request) -> Response:
        return RedirectResponse(target + request.url.path, status_code=307)

    methods = ["GET", "POST", "PUT", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", redirect, methods=methods)])


class SandboxHarness(Protocol):
    """How the suite drives one provider's client against its sandbox."""

    effect: str
    """Name of the effect :meth:`perform_effect` causes, as counted in ``/_sandbox/stats``."""
    effect_path: str
    """Path prefix of the effectful request, to aim after-effect faults at it alone."""

    def create_app(self) -> ASGIApp: ...

    def client(self, base_url: str, timeout: httpx.Timeout) -> AbstractAsyncContextManager[Any]: ...

    async def probe(self, client: Any) -> None:
        """One cheap request with no effect, exactly one HTTP request (e.g. authenticate)."""

    async def perform_effect(self, client: Any, n: int) -> None:
        """One effectful operation; ``n`` makes it distinct from earlier ones in the same test."""

    def secrets(self) -> list[str]:
        """Strings that must never appear in a repr, an error or a log line."""


def poll(condition: Callable[[], Any], *, timeout: float = 10.0, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        threading.Event().wait(0.01)
    raise AssertionError(f"within {timeout:.0f}s, {what} never happened")


class LiveServer:
    """An ASGI app served by uvicorn on 127.0.0.1 in a thread; the socket is bound before start."""

    def __init__(self, app: ASGIApp) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        poll(lambda: self.server.started, what=f"the sandbox starting on {self.url}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class Operator:
    """The sandbox's operator endpoints, as a test uses them."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=5.0)

    def faults(self, **faults: Any) -> httpx.Response:
        response = self.http.post("/_sandbox/faults", json=faults)
        response.raise_for_status()
        return response

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.http.get("/_sandbox/stats").raise_for_status().json()
        return stats

    def reset(self) -> None:
        self.http.post("/_sandbox/reset").raise_for_status()

    def clock(self, **change: Any) -> str:
        now: str = self.http.post("/_sandbox/clock", json=change).raise_for_status().json()["now"]
        return now


class SandboxFixtures:
    """Fixtures shared by the standard suite and a connector's own HTTP tests."""

    harness: ClassVar[SandboxHarness]

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls) -> Iterator[LiveServer]:
        with LiveServer(cls.harness.create_app()) as live:
            yield live

    @pytest.fixture
    def sandbox(self, server: LiveServer) -> Iterator[Operator]:
        operator = Operator(server.url)
        operator.reset()
        yield operator
        operator.http.close()

    def client(self, server: LiveServer, timeout: httpx.Timeout = FAST) -> AbstractAsyncContextManager[Any]:
        return self.harness.client(server.url, timeout)


class ConnectorContract(SandboxFixtures):
    """The standard suite; see the module docstring."""

    def test_stats_start_at_zero_after_a_reset(self, sandbox: Operator) -> None:
        stats = sandbox.stats()

        assert stats["requests"] == 0
        assert stats["peak_rps"] == 0.0
        assert stats["faults_injected"] == {}
        assert stats["effects"] == dict.fromkeys(stats["effects"], 0)
        assert self.harness.effect in stats["effects"]

    def test_fault_settings_are_validated(self, sandbox: Operator) -> None:
        for bad in ({"error_rat": 0.5}, {"error_rate": 1.5}, {"latency_ms": -1}, {"timeout_rate": "often"}):
            response = sandbox.http.post("/_sandbox/faults", json=bad)
            assert response.status_code == 422, bad

        assert sandbox.http.get("/_sandbox/faults").json()["error_rate"] == 0.0

    async def test_requests_and_peak_rps_are_counted(self, sandbox: Operator, server: LiveServer) -> None:
        async with self.client(server) as client:
            for _ in range(3):
                await self.harness.probe(client)

        stats = sandbox.stats()
        assert stats["requests"] == 3
        assert 1.0 <= stats["peak_rps"] <= 3.0

    async def test_an_outage_is_retryable_and_says_when_to_retry(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.faults(outage=True, retry_after_s=3)

        error = await self._probe_error(server)

        assert (type(error), error.code, error.retry_after) == (RetryableError, "http_503", 3.0)

    async def test_server_errors_are_retryable(self, sandbox: Operator, server: LiveServer) -> None:
        sandbox.faults(error_rate=1.0)

        error = await self._probe_error(server)

        assert (type(error), error.code) == (RetryableError, "http_500")
        assert sandbox.stats()["faults_injected"] == {"error": 1}

    async def test_rate_limits_are_retryable_with_retry_after(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.faults(rate_limit_rate=1.0, retry_after_s=9)

        error = await self._probe_error(server)

        assert (type(error), error.code, error.retry_after) == (RetryableError, "http_429", 9.0)

    async def test_a_provider_that_does_not_answer_times_out_as_retryable(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.faults(timeout_rate=1.0, hang_s=30)

        error = await self._probe_error(server)

        assert (type(error), error.code) == (RetryableError, "timeout")
        assert sandbox.stats()["faults_injected"] == {"timeout": 1}

    async def test_an_unreachable_provider_is_retryable(self) -> None:
        with closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # bound but not listening: connections are refused
            async with self.harness.client(f"http://127.0.0.1:{port}", FAST) as client:
                with pytest.raises(ConnectorError) as caught:
                    await self.harness.probe(client)

        assert (type(caught.value), caught.value.code) == (RetryableError, "connect_error")

    async def test_latency_is_injected_without_failing_the_call(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.faults(latency_ms=20)

        async with self.client(server) as client:
            await self.harness.probe(client)

        assert sandbox.stats()["faults_injected"] == {"latency": 1}

    async def test_max_faults_fails_only_the_next_request(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.faults(error_rate=1.0, max_faults=1)

        async with self.client(server) as client:
            with pytest.raises(RetryableError):
                await self.harness.probe(client)
            await self.harness.probe(client)

    async def test_the_same_seed_injects_the_same_faults(self, sandbox: Operator, server: LiveServer) -> None:
        async def outcomes() -> list[bool]:
            sandbox.faults(error_rate=0.5, seed=7)
            failed = []
            async with self.client(server) as client:
                for _ in range(16):
                    try:
                        await self.harness.probe(client)
                        failed.append(False)
                    except RetryableError:
                        failed.append(True)
            return failed

        first, second = await outcomes(), await outcomes()

        assert first == second
        assert any(first) and not all(first)

    async def test_an_effect_whose_answer_is_lost_still_happened(
        self, sandbox: Operator, server: LiveServer
    ) -> None:
        sandbox.faults(after_effect_failure_rate=1.0, paths=[self.harness.effect_path])

        async with self.client(server) as client:
            with pytest.raises(RetryableError) as caught:
                await self.harness.perform_effect(client, 1)

        assert caught.value.code == "http_502"
        assert sandbox.stats()["effects"][self.harness.effect] == 1

    async def test_credentials_stay_out_of_reprs_errors_and_logs(
        self, sandbox: Operator, server: LiveServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        errors: list[ConnectorError] = []
        async with self.client(server) as client:
            await self.harness.probe(client)
            await self.harness.perform_effect(client, 1)
            sandbox.faults(error_rate=1.0)
            try:
                await self.harness.probe(client)
            except ConnectorError as exc:
                errors.append(exc)
            seen = [repr(client), *(f"{e!r} {e} {e.details}" for e in errors), caplog.text]

        assert errors, "the injected error never reached the client"
        for secret in self.harness.secrets():
            for text in seen:
                assert secret not in text

    async def test_a_redirect_is_never_followed(self, sandbox: Operator, server: LiveServer) -> None:
        with LiveServer(redirecting_to(server.url)) as redirecting:
            async with self.harness.client(redirecting.url, FAST) as client:
                with pytest.raises(ConnectorError) as caught:
                    await self.harness.probe(client)

        assert caught.value.code == "redirect_not_followed"
        assert sandbox.stats()["requests"] == 0

    async def _probe_error(self, server: LiveServer) -> ConnectorError:
        async with self.client(server) as client:
            with pytest.raises(ConnectorError) as caught:
                await self.harness.probe(client)
        return caught.value


# ---------------------------------------------------------------------------------------------
# The settings and job halves: a connector as the engine runs it, against the real engine
# (PostgreSQL through the ``settings`` and ``service`` fixtures, the key ring, the API app).


class SettingsHarness(Protocol):
    """How the suite configures one connector for a tenant."""

    connector: Connector

    def create_app(self) -> ASGIApp: ...

    def credentials(self) -> dict[str, str]:
        """Credentials the sandbox accepts."""

    def wrong_credentials(self) -> dict[str, str]:
        """Complete credentials the sandbox refuses."""


class JobHarness(SettingsHarness, Protocol):
    """How the suite gives one connector a job to run (for connectors with a handler)."""

    effect: str
    """The sandbox effect one successful job causes, as counted in ``/_sandbox/stats``."""

    def prepare(self, service: LedgerService, settings: Settings, base_url: str) -> tuple[UUID, Job]:
        """A tenant whose integration points at ``base_url`` and the ledger state a job needs;
        returns the tenant and the job (as the connector's routes would make it)."""

    def results(self, service: LedgerService, job: Job) -> list[str]:
        """The result events recorded in the ledger for ``job``, in order: "result" for a success,
        "failed" for a recorded failure."""

    def failure(self, service: LedgerService, job: Job) -> dict[str, Any] | None:
        """What the ledger says about the job's failure, once it was dead-lettered."""

    def unclassified_answer(self) -> tuple[int, dict[str, Any]]:
        """An answer in the provider's error shape with a code nobody classified."""


def _secret_values(harness: SettingsHarness) -> list[str]:
    secret = harness.connector.settings.secret_fields
    return [v for k, v in harness.credentials().items() if k in secret and v]


@pytest.mark.integration
class ConnectorSettingsContract:
    """Every connector, through ``/v1/integrations``: its sandbox refuses wrong credentials and
    nothing the API answers ever echoes a secret."""

    harness: ClassVar[SettingsHarness]

    @pytest.fixture
    def provider(self) -> Iterator[LiveServer]:
        with LiveServer(self.harness.create_app()) as live:
            yield live

    def _configure(
        self, settings: Settings, service: LedgerService, url: str, credentials: dict[str, str]
    ) -> Any:
        from tests.integration.helpers import client_for, register_tenant

        _, key = register_tenant(service)
        http = client_for(settings)
        http.headers["Authorization"] = f"Bearer {key}"
        body = {"enabled": True, "environment": "sandbox", "base_url": url, "credentials": credentials}
        saved = http.put(f"/v1/integrations/{self.harness.connector.name}", json=body)
        assert saved.status_code == 200, saved.text
        return http

    def test_the_sandbox_refuses_wrong_credentials_and_the_test_says_so(
        self, settings: Settings, service: LedgerService, provider: LiveServer
    ) -> None:
        name = self.harness.connector.name
        wrong = self._configure(settings, service, provider.url, self.harness.wrong_credentials())
        refused = wrong.post(f"/v1/integrations/{name}/test").json()
        right = self._configure(settings, service, provider.url, self.harness.credentials())
        accepted = right.post(f"/v1/integrations/{name}/test").json()

        assert refused["ok"] is False and refused["error"]["code"] == "credentials_refused", refused
        assert accepted["ok"] is True, accepted

    def test_the_settings_never_echo_a_secret(
        self, settings: Settings, service: LedgerService, provider: LiveServer
    ) -> None:
        name = self.harness.connector.name
        http = self._configure(settings, service, provider.url, self.harness.credentials())
        answers = [
            http.get(f"/v1/integrations/{name}").text,
            http.get("/v1/integrations").text,
            http.post(f"/v1/integrations/{name}/test").text,
            str(self.harness.connector.settings.describe()),
        ]
        shown = http.get(f"/v1/integrations/{name}").json()["credentials"]

        assert set(shown) == set(self.harness.connector.settings.credential_fields)
        assert all(field["set"] for field in shown.values()), shown
        assert _secret_values(self.harness), "the harness declares no secret to look for"
        for secret in _secret_values(self.harness):
            for answer in answers:
                assert secret not in answer


@pytest.mark.integration
class ConnectorJobContract(ConnectorSettingsContract):
    """Every connector that runs jobs: its handler, as the connector workers call it."""

    harness: ClassVar[JobHarness]

    def _handler(self, settings: Settings, service: LedgerService) -> ConnectorHandler:
        from engine.security.secrets import load_key_ring
        from streams.catalogue import context_for

        factory = self.harness.connector.handler
        assert factory is not None
        return factory(
            context_for(settings, service, load_key_ring(settings.var_dir), self.harness.connector)
        )

    def _attempts(self, settings: Settings, service: LedgerService, job: Job, count: int) -> list[Any]:
        """Run ``job`` ``count`` times (deliveries of the same record); the outcome of each."""

        async def run() -> list[Any]:
            handler = self._handler(settings, service)
            outcomes: list[Any] = []
            try:
                for attempt in range(1, count + 1):
                    try:
                        outcomes.append(await handler(job, attempt))
                    except ConnectorError as exc:
                        handler.record_failure(job, exc, attempt)
                        outcomes.append(exc)
            finally:
                await handler.close()
            return outcomes

        return asyncio.run(run())

    def test_a_redelivered_job_has_no_second_effect_and_its_result_is_recorded_once(
        self, settings: Settings, service: LedgerService, provider: LiveServer
    ) -> None:
        _, job = self.harness.prepare(service, settings, provider.url)

        first, again = self._attempts(settings, service, job, 2)

        assert isinstance(first, JobResult) and isinstance(again, JobResult), (first, again)
        assert Operator(provider.url).stats()["effects"][self.harness.effect] == 1
        assert self.harness.results(service, job) == ["result"]

    def test_an_unclassified_provider_error_needs_attention_and_is_recorded(
        self, settings: Settings, service: LedgerService
    ) -> None:
        status, body = self.harness.unclassified_answer()

        async def answer(request: Request) -> Response:
            return JSONResponse(body, status_code=status)

        methods = ["GET", "POST", "PUT", "DELETE"]
        odd = Starlette(routes=[Route("/{path:path}", answer, methods=methods)])
        with LiveServer(odd) as live:
            _, job = self.harness.prepare(service, settings, live.url)
            [outcome] = self._attempts(settings, service, job, 1)

        assert isinstance(outcome, ConnectorError), outcome
        assert outcome.error_class == ErrorClass.NEEDS_ATTENTION, repr(outcome)
        failure = self.harness.failure(service, job)
        assert failure is not None and failure["error_class"] == "needs_attention", failure

    def test_a_dead_letter_records_why_the_job_never_completed(
        self, settings: Settings, service: LedgerService, provider: LiveServer
    ) -> None:
        _, job = self.harness.prepare(service, settings, provider.url)
        error = PermanentError("contract_test", "given up by the contract suite")

        handler = self._handler(settings, service)
        handler.record_failure(job, error, 3)
        handler.record_failure(job, error, 3)  # a redelivered dead-letter notice records nothing new
        asyncio.run(handler.close())

        failure = self.harness.failure(service, job)
        assert failure is not None
        assert (failure["code"], failure["error_class"], failure["attempts"]) == (
            "contract_test",
            "permanent",
            3,
        )
        assert self.harness.results(service, job).count("failed") == 1
