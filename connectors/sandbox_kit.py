"""What every provider sandbox shares: fault injection, counters and a settable clock.

A sandbox is a real ASGI app that speaks its provider's contract. :class:`SandboxKit` adds the operator
endpoints, the same on every sandbox, under ``/_sandbox``:

* ``POST /_sandbox/faults`` replaces the fault configuration (:class:`Faults`; unknown keys are a 422, so a
  typo cannot silently inject nothing). Faults are drawn from a ``random.Random(seed)``: the same seed and
  the same request sequence inject the same faults, so tests are reproducible.
* ``GET /_sandbox/stats``: ``requests``, ``paths``, ``effects`` (what the provider really did, e.g.
  ``irn_generated``), ``peak_rps`` (most requests within any 1-second sliding window) and
  ``faults_injected``.
* ``POST /_sandbox/reset``: faults off, counters zero, the provider state emptied, the clock real again.
* ``GET|POST /_sandbox/clock``: the sandbox's "now" (``{"now": iso}`` to set, ``{"advance_s": n}`` to move
  it), so a test can cross a token expiry or a 24-hour window without sleeping.

Faults apply only to provider requests (never to ``/_sandbox``), in this order: outage (503), latency,
timeout (hold the request without answering, longer than the client waits), rate limit (429 with
Retry-After), error (500), and after-effect failure: the provider does the work, records the effect, and
then the answer is replaced by a 502 or never sent. That last one is the case an at-most-once client must
survive: its request "failed", yet the effect exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SANDBOX_PREFIX = "/_sandbox"


class Faults(BaseModel):
    """Fault configuration; every rate is a probability per provider request."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: Annotated[int, Field(ge=0, le=60_000)] = 0
    timeout_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    hang_s: Annotated[float, Field(gt=0.0, le=600.0)] = 30.0
    """How long a "timeout" request is held; it ends earlier when the client hangs up."""
    error_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    rate_limit_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    retry_after_s: Annotated[int, Field(ge=0, le=3600)] = 1
    """Retry-After sent with an injected 429 or outage 503 (RFC 9110 delay-seconds)."""
    after_effect_failure_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    after_effect: Literal["error", "hang"] = "error"
    """After the effect: answer 502 ("error") or hold the answer until the client gives up ("hang")."""
    outage: bool = False
    seed: int = 0
    paths: list[str] = Field(default_factory=list)
    """Only requests whose path starts with one of these are faulted; empty means all."""
    max_faults: Annotated[int | None, Field(ge=0)] = None
    """Stop injecting after this many faults (e.g. 1: fail exactly the next matching request)."""


class SandboxClock:
    """The sandbox's "now": real time plus an offset, or a fixed instant; always timezone-aware."""

    def __init__(self) -> None:
        self._fixed: datetime | None = None
        self._offset = timedelta()

    def now(self) -> datetime:
        return self._fixed if self._fixed is not None else datetime.now(UTC) + self._offset

    def set(self, when: datetime) -> None:
        self._fixed = when if when.tzinfo is not None else when.replace(tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        if self._fixed is not None:
            self._fixed += timedelta(seconds=seconds)
        else:
            self._offset += timedelta(seconds=seconds)

    def reset(self) -> None:
        self._fixed = None
        self._offset = timedelta()


class ClockChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    now: datetime | None = None
    advance_s: float | None = None


class SandboxKit:
    """Operator endpoints and fault injection for one sandbox app; see the module docstring."""

    def __init__(self, *, effects: tuple[str, ...] = ()) -> None:
        self.clock = SandboxClock()
        self._effect_names = effects
        self._reset_hooks: list[Callable[[], None]] = []
        self.faults = Faults()
        self._rng = random.Random(0)
        self._reset_counters()
        self.router = self._build_router()

    # -- used by the sandbox's own handlers -------------------------------------------------------

    def record_effect(self, name: str) -> None:
        """Count something the provider really did (an IRN generated, a document cancelled)."""
        self.effects[name] += 1

    def on_reset(self, hook: Callable[[], None]) -> None:
        """Register how the sandbox empties its own state on ``POST /_sandbox/reset``."""
        self._reset_hooks.append(hook)

    def install(self, app: FastAPI) -> None:
        app.include_router(self.router)
        app.add_middleware(FaultInjection, kit=self)

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "paths": dict(self.paths),
            "effects": {name: self.effects[name] for name in sorted({*self._effect_names, *self.effects})},
            "peak_rps": float(self.peak_rps),
            "faults_injected": dict(self.faults_injected),
        }

    def reset(self) -> None:
        self.set_faults(Faults())
        self._reset_counters()
        self.clock.reset()
        for hook in self._reset_hooks:
            hook()

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._faults_left = faults.max_faults

    # -- bookkeeping ------------------------------------------------------------------------------

    def _reset_counters(self) -> None:
        self.requests = 0
        self.paths: Counter[str] = Counter()
        self.effects: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.peak_rps = 0
        self._recent: deque[float] = deque()
        self._faults_left = self.faults.max_faults

    def _count_request(self, path: str) -> None:
        self.requests += 1
        self.paths[path] += 1
        # The busiest 1-second window always ends at some request, so checking the window ending at
        # each arrival finds the maximum. Monotonic time: the settable clock must not distort rates.
        now = time.monotonic()
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        self.peak_rps = max(self.peak_rps, len(self._recent))

    def _applies_to(self, path: str) -> bool:
        paths = self.faults.paths
        return not paths or any(path.startswith(prefix) for prefix in paths)

    def _draw(self, kind: str, rate: float) -> bool:
        """One seeded draw per fault kind and request, whatever the rate, so sequences stay aligned."""
        hit = self._rng.random() < rate
        if not hit or self._faults_left == 0:
            return False
        if self._faults_left is not None:
            self._faults_left -= 1
        self.faults_injected[kind] += 1
        return True

    def _build_router(self) -> APIRouter:
        router = APIRouter(prefix=SANDBOX_PREFIX, tags=["sandbox"])

        @router.post("/faults")
        def set_faults(faults: Faults) -> Faults:
            self.set_faults(faults)
            return self.faults

        @router.get("/faults")
        def get_faults() -> Faults:
            return self.faults

        @router.get("/stats")
        def get_stats() -> dict[str, Any]:
            return self.stats()

        @router.post("/reset")
        def reset() -> dict[str, str]:
            self.reset()
            return {"status": "reset"}

        @router.get("/clock")
        def get_clock() -> dict[str, str]:
            return {"now": self.clock.now().isoformat()}

        @router.post("/clock")
        def change_clock(change: ClockChange) -> dict[str, str]:
            if change.now is not None:
                self.clock.set(change.now)
            if change.advance_s is not None:
                self.clock.advance(change.advance_s)
            return {"now": self.clock.now().isoformat()}

        return router


class FaultInjection:
    """Pure ASGI middleware: it must see the app's response before deciding to swallow it."""

    def __init__(self, app: ASGIApp, kit: SandboxKit) -> None:
        self.app = app
        self.kit = kit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(SANDBOX_PREFIX):
            await self.app(scope, receive, send)
            return
        kit = self.kit
        kit._count_request(path)
        faults = kit.faults
        if not kit._applies_to(path):
            await self.app(scope, receive, send)
            return
        if faults.outage and kit._draw("outage", 1.0):
            await _answer(send, 503, "outage", retry_after=faults.retry_after_s)
            return
        if faults.latency_ms and kit._draw("latency", 1.0):
            await asyncio.sleep(faults.latency_ms / 1000)
        # Draw every kind on every request (see _draw) and act on the first hit.
        timeout = kit._draw("timeout", faults.timeout_rate)
        rate_limit = kit._draw("rate_limit", faults.rate_limit_rate)
        error = kit._draw("error", faults.error_rate)
        after_effect = kit._draw("after_effect_failure", faults.after_effect_failure_rate)
        if timeout:
            await _hold(receive, faults.hang_s)
            return
        if rate_limit:
            await _answer(send, 429, "rate_limited", retry_after=faults.retry_after_s)
            return
        if error:
            await _answer(send, 500, "injected_error")
            return
        if after_effect:
            await self.app(scope, receive, _discard)
            if faults.after_effect == "hang":
                await _hold(receive, faults.hang_s)
            else:
                await _answer(send, 502, "failed_after_effect")
            return
        await self.app(scope, receive, send)


async def _discard(message: Message) -> None:
    """The app's answer to an after-effect failure: produced, then lost on the way back."""


async def _answer(send: Send, status: int, fault: str, *, retry_after: int | None = None) -> None:
    body = b'{"sandbox_fault": "' + fault.encode() + b'"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _hold(receive: Receive, seconds: float) -> None:
    """Answer nothing for ``seconds``, or until the client hangs up, whichever comes first.

    Returning without a response makes the server close the connection; by then the client has given up.
    Waiting for the disconnect keeps test runs short and lets the server shut down promptly.
    """

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(until_disconnect(), seconds)
