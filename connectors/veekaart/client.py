"""A typed async client of VeeKaart's partner API: bulk product, inventory and price pushes.

Wire contract (as the sandbox serves it): ``POST /api/v1/{products|inventory|pricing}/bulk`` with
``Authorization: Bearer <api key>`` and ``{"items": [...]}`` (at most ``BATCH`` items); the answer is
``{"accepted": [sku...], "rejected": [{"sku", "field", "message"}]}``. 429 carries ``Retry-After``
(seconds): the client waits that long and sends the same batch again, at most ``MAX_THROTTLED``
times per batch (the seed: "implement backoff"; Retry-After says how long, RFC 9110 10.2.3).

Errors::

    ConnectorError (connectors/errors.py)
    ├── RetryableError       timeout, connect_error, http_5xx, http_429 (still throttled after
    │                        MAX_THROTTLED waits, or asked to wait longer than MAX_RETRY_AFTER_S)
    ├── NeedsAttentionError  http_401/403 (the API key), redirect_not_followed, invalid_response
    └── PermanentError       http_400: the shop refused the whole batch
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from connectors.errors import (
    ConnectorError,
    ErrorClass,
    NeedsAttentionError,
    RetryableError,
    retry_after_seconds,
)
from connectors.veekaart.settings import API_KEY
from engine.integrations import IntegrationSettings

TIMEOUT = httpx.Timeout(10.0, read=30.0)
Feed = Literal["products", "inventory", "pricing"]
BATCH = 100
MAX_THROTTLED = 5
# A Retry-After longer than this is not waited out inside a sync run: the run fails its batch and
# the next run (manual or scheduled) picks the items up again.
MAX_RETRY_AFTER_S = 60.0


@dataclass
class PushResult:
    accepted: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    throttled: int = 0


def classify(status: int) -> ErrorClass:
    """The shop's statuses: 429 and 5xx pass; 401/403 are the key; any other 4xx is our request."""
    if status == 429 or status >= 500:
        return ErrorClass.RETRYABLE
    if status in (401, 403):
        return ErrorClass.NEEDS_ATTENTION
    return ErrorClass.PERMANENT


class VeeKaartClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        timeout: httpx.Timeout = TIMEOUT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
        )
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"VeeKaartClient(base_url={str(self._http.base_url)!r})"

    async def __aenter__(self) -> VeeKaartClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def store(self) -> dict[str, Any]:
        """The store's profile: no effect, proves reachability and the key."""
        return _json(_checked(await self._send("GET", "/api/v1/store")))

    async def push(self, feed: Feed, items: Sequence[dict[str, Any]]) -> PushResult:
        """Push one batch; every item ends up accepted or rejected with the shop's reason. A 429 is
        waited out (Retry-After) and the batch sent again, up to ``MAX_THROTTLED`` times."""
        result = PushResult()
        path = f"/api/v1/{feed}/bulk"
        for _ in range(MAX_THROTTLED):
            try:
                response = _checked(await self._send("POST", path, {"items": list(items)}))
                break
            except RetryableError as exc:
                if exc.code != "http_429":
                    raise
                wait = exc.retry_after if exc.retry_after is not None else 1.0
                if wait > MAX_RETRY_AFTER_S:
                    raise
                result.throttled += 1
                await self._sleep(wait)
        else:
            response = _checked(await self._send("POST", path, {"items": list(items)}))
        body = _json(response)
        try:
            result.accepted = [str(s) for s in body.get("accepted", [])]
            result.rejected = [
                {"sku": str(r.get("sku")), "field": str(r.get("field")), "message": str(r.get("message"))}
                for r in body.get("rejected", [])
            ]
        except (AttributeError, TypeError) as exc:
            raise NeedsAttentionError(
                "invalid_response", "the answer's items are not the shop's shape"
            ) from exc
        return result

    async def _send(self, method: str, path: str, payload: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=payload)
        except httpx.TimeoutException as exc:
            raise RetryableError("timeout", f"{method} {path}: {type(exc).__name__}") from exc
        except httpx.ConnectError as exc:
            raise RetryableError("connect_error", f"{method} {path}: could not connect") from exc
        except httpx.TransportError as exc:
            raise RetryableError("transport_error", f"{method} {path}: {type(exc).__name__}") from exc
        if response.is_redirect or 300 <= response.status_code < 400:
            raise NeedsAttentionError(
                "redirect_not_followed",
                f"{method} {path}: HTTP {response.status_code} redirect, not followed",
            )
        return response


def _checked(response: httpx.Response) -> httpx.Response:
    status = response.status_code
    if response.is_success:
        return response
    raise ConnectorError.of(
        classify(status),
        f"http_{status}",
        f"HTTP {status}",
        retry_after=retry_after_seconds(response.headers.get("retry-after")),
        details={"provider": "veekaart"},
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise NeedsAttentionError("invalid_response", "the answer is not a JSON object")
    return body


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    """Reading the store's profile proves reachability, TLS and the API key, and changes nothing."""
    async with VeeKaartClient(settings.base_url, settings.credentials[API_KEY], transport) as client:
        await client.store()
