"""A typed async client of SendGrid's v3 API: ``POST /v3/mail/send`` and ``GET /v3/scopes``.

Bearer API key; a mail is accepted with 202 and an empty body, its id in ``X-Message-Id`` (SendGrid
docs, "Mail Send"). Transport failures and every non-success answer become ``ConnectorError``s
(errors.py); the key never appears in one.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from connectors.errors import NeedsAttentionError, RetryableError
from connectors.sendgrid.errors import classify

PROVIDER = "sendgrid"
MAIL_SEND_PATH = "/v3/mail/send"
SCOPES_PATH = "/v3/scopes"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class SendGridClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> SendGridClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    async def send(self, mail: dict[str, Any]) -> str:
        """Hand a mail to SendGrid; returns its message id (empty if SendGrid gave none)."""
        response = await self._call("POST", MAIL_SEND_PATH, json=mail)
        if response.status_code != 202:
            raise classify(response.status_code, _json(response), response.headers)
        return response.headers.get("x-message-id", "")

    async def scopes(self) -> list[str]:
        """The API key's scopes: proves the key without sending a mail."""
        response = await self._call("GET", SCOPES_PATH)
        if response.status_code != 200:
            raise classify(response.status_code, _json(response), response.headers)
        body = _json(response)
        return [str(s) for s in body.get("scopes", [])] if isinstance(body, dict) else []

    def __repr__(self) -> str:
        return f"SendGridClient({str(self._http.base_url)!r})"  # never the key

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise RetryableError("timeout", f"SendGrid did not answer {method} {path} in time") from exc
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


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
