"""A small typed client of Razorpay's subscriptions API (https://api.razorpay.com/v1, basic auth with
the key id and secret; razorpay-python's wire contract). Failures map to the connector error
vocabulary (connectors/errors.py) at this boundary."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from connectors.errors import NeedsAttentionError, PermanentError, RetryableError

# Razorpay's list endpoints return at most 100 items per page.
PAGE = 100


class RazorpayClient:
    def __init__(
        self, base_url: str, key_id: str, key_secret: str, *, transport: httpx.AsyncBaseTransport
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=(key_id, key_secret),
            transport=transport,
            timeout=httpx.Timeout(10.0, read=45.0),  # seed "College Accounts": 45 s for payment calls
        )

    async def __aenter__(self) -> RazorpayClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise RetryableError("timeout", "Razorpay did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise RetryableError(
                "unreachable", f"Razorpay could not be reached: {type(exc).__name__}"
            ) from exc
        if response.status_code == 401:
            raise NeedsAttentionError("unauthorized", "Razorpay refused the key id and secret")
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableError(f"http_{response.status_code}", "Razorpay is unavailable; retry later")
        try:
            body = response.json()
        except ValueError as exc:
            raise RetryableError("bad_response", "Razorpay answered something that is not JSON") from exc
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            code = str(error.get("code")) if isinstance(error, dict) else f"http_{response.status_code}"
            raise PermanentError(
                code, "Razorpay refused the request", details={"status": response.status_code}
            )
        if not isinstance(body, dict):
            raise RetryableError("bad_response", "Razorpay answered something that is not an object")
        return body

    async def create_subscription(
        self, plan_id: str, *, customer_id: str | None, total_count: int, notes: dict[str, str]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"plan_id": plan_id, "total_count": total_count, "notes": notes}
        if customer_id:
            body["customer_id"] = customer_id
        return await self._call("POST", "/v1/subscriptions", json=body)

    async def fetch_subscription(self, subscription_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/subscriptions/{subscription_id}")

    async def find_subscription(self, plan_id: str, note: str, value: str) -> dict[str, Any] | None:
        """The plan's subscription whose ``notes[note]`` is ``value``: how a retry learns that its
        earlier create went through (Razorpay takes no idempotency key for subscriptions)."""
        listed = await self._call("GET", "/v1/subscriptions", params={"plan_id": plan_id, "count": PAGE})
        for item in listed.get("items") or []:
            notes = item.get("notes") if isinstance(item, dict) else None
            if isinstance(notes, dict) and notes.get(note) == value:
                return item
        return None
