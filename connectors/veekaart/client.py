"""A typed async client of VeeKaart's partner API: bulk product, inventory and price pushes.

Wire contract (as the sandbox serves it): ``POST /api/v1/{products|inventory|pricing}/bulk`` with
``Authorization: Bearer <api key>`` and ``{"items": [...]}`` (at most ``BATCH`` items); the answer is
``{"accepted": [sku...], "rejected": [{"sku", "field", "message"}]}``. 429 carries ``Retry-After``
(seconds): the client waits that long and sends the same batch again, at most ``MAX_THROTTLED``
times per batch (the seed: "implement backoff"; Retry-After says how long, RFC 9110 10.2.3).

Errors::

    ConnectorError (connectors/errors.py)
    ├── RetryableError       unreachable, 5xx, still throttled after MAX_THROTTLED waits
    ├── NeedsAttentionError  401/403: the API key
    └── PermanentError       400: the shop refused the whole batch
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from connectors.errors import NeedsAttentionError, PermanentError, RetryableError
from connectors.veekaart.settings import TIMEOUT

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


def retry_after_seconds(value: str | None) -> float:
    """Delay-seconds of a Retry-After header (an HTTP date is not used by the shop); 1 s if absent."""
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0


class VeeKaartClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
            timeout=TIMEOUT,
            follow_redirects=False,
        )
        self._sleep = sleep

    async def __aenter__(self) -> VeeKaartClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def push(self, feed: Feed, items: Sequence[dict[str, Any]]) -> PushResult:
        """Push one batch; every item ends up accepted or rejected with the shop's reason."""
        result = PushResult()
        for _ in range(MAX_THROTTLED + 1):
            try:
                response = await self._http.post(f"/api/v1/{feed}/bulk", json={"items": list(items)})
            except httpx.HTTPError as exc:
                raise RetryableError("unreachable", f"VeeKaart did not answer: {type(exc).__name__}") from exc
            if response.status_code != 429:
                break
            result.throttled += 1
            wait = retry_after_seconds(response.headers.get("retry-after"))
            if wait > MAX_RETRY_AFTER_S:
                raise RetryableError("rate_limited", f"VeeKaart asks to wait {wait:.0f} s")
            await self._sleep(wait)
        else:
            raise RetryableError("rate_limited", f"VeeKaart still throttles after {MAX_THROTTLED} waits")
        if response.status_code in (401, 403):
            raise NeedsAttentionError("unauthorized", "VeeKaart refused the API key")
        if response.status_code == 400:
            raise PermanentError("invalid_batch", f"VeeKaart refused the batch: {response.text[:300]}")
        if response.status_code >= 400:
            raise RetryableError(f"http_{response.status_code}", "VeeKaart failed the push")
        try:
            body = response.json()
            result.accepted = [str(s) for s in body.get("accepted", [])]
            result.rejected = [
                {"sku": str(r.get("sku")), "field": str(r.get("field")), "message": str(r.get("message"))}
                for r in body.get("rejected", [])
            ]
        except (ValueError, AttributeError, TypeError) as exc:
            raise RetryableError("bad_answer", "VeeKaart's answer is not the expected JSON") from exc
        return result
