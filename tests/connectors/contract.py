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

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, closing
from typing import Any, ClassVar, Protocol

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from connectors.errors import ConnectorError, RetryableError

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
