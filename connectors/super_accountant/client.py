"""A typed async client of the consolidating accountant's API (seed "College Accounts": the Super
Accountant portal; docs/super-accountant.md describes the contract).

- ``POST /oauth/token`` (OAuth 2.0 client credentials, RFC 6749 section 4.4) gives a bearer token;
  it is kept until shortly before it expires and fetched again once on a 401;
- every request body is signed: ``X-Signature`` is the hex HMAC-SHA256 of the raw body with the
  integration's signing secret (the seed's section 3.3);
- ``POST /api/v1/sync/expenses``: one batch of at most 1000 expenses, ``Idempotency-Key`` = batch id;
- ``POST /api/v1/financial-reports/submit``: one monthly P&L, ``Idempotency-Key`` = our report id.

A 409 ``duplicate_batch`` / ``duplicate_submission`` means the accountant already has that batch or
report (our earlier attempt's answer was lost): it is a receipt marked ``duplicate``, not an error.
Transport failures and other answers become ``ConnectorError``s (errors.py); no secret appears in one.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import orjson

from connectors.errors import NeedsAttentionError, RetryableError
from connectors.super_accountant.errors import classify, provider_code, provider_details

PROVIDER = "super-accountant"
TOKEN_PATH = "/oauth/token"
EXPENSE_SYNC_PATH = "/api/v1/sync/expenses"
REPORT_SUBMIT_PATH = "/api/v1/financial-reports/submit"
# The seed's timeouts (section 5.3): connect 10 s, read 30 s.
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# A token is renewed this long before the expiry it was given, so a request never carries a token
# that lapses on the way.
TOKEN_MARGIN_S = 60.0


def signature(secret: str, body: bytes) -> str:
    """The seed's body signature: hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class BatchReceipt:
    batch_id: str
    accepted: int
    duplicate: bool


@dataclass(frozen=True)
class SubmissionReceipt:
    submission_id: str
    status: str
    next_action: str | None
    duplicate: bool


class SuperAccountantClient:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        signing_secret: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._signing_secret = signing_secret
        self._token: str | None = None
        self._token_until = 0.0
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport, follow_redirects=False
        )

    async def __aenter__(self) -> SuperAccountantClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"SuperAccountantClient({str(self._http.base_url)!r})"  # never a secret

    async def authenticate(self) -> None:
        """Fetch a token: proves reachability and the client credentials (one request, no effect)."""
        response = await self._call(
            "POST",
            TOKEN_PATH,
            data={
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._client_secret,
            },
        )
        if response.status_code != 200:
            raise classify(response.status_code, _json(response), response.headers)
        body = _json(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise NeedsAttentionError("invalid_token_response", "the token endpoint gave no access_token")
        expires = body.get("expires_in", 3600)
        lifetime = (
            float(expires) if isinstance(expires, int | float) and not isinstance(expires, bool) else 3600.0
        )
        self._token = token
        self._token_until = time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN_S)

    async def sync_expenses(self, batch: dict[str, Any]) -> BatchReceipt:
        response = await self._signed(
            "POST", EXPENSE_SYNC_PATH, batch, idempotency_key=str(batch["batch_id"])
        )
        body = _json(response)
        if response.status_code == 409 and provider_code(body) == "duplicate_batch":
            accepted = provider_details(body).get("accepted")
            return BatchReceipt(
                str(batch["batch_id"]), int(accepted) if isinstance(accepted, int) else 0, True
            )
        if response.status_code not in (200, 201):
            raise classify(response.status_code, body, response.headers)
        accepted = body.get("accepted") if isinstance(body, dict) else None
        if not isinstance(accepted, int):
            raise NeedsAttentionError("invalid_response", "the batch answer carries no accepted count")
        return BatchReceipt(str(batch["batch_id"]), accepted, False)

    async def submit_report(self, report: dict[str, Any], idempotency_key: str) -> SubmissionReceipt:
        response = await self._signed("POST", REPORT_SUBMIT_PATH, report, idempotency_key=idempotency_key)
        body = _json(response)
        if response.status_code == 409 and provider_code(body) == "duplicate_submission":
            found = provider_details(body)
            return SubmissionReceipt(str(found.get("submission_id", "")), "received", None, True)
        if response.status_code not in (200, 201):
            raise classify(response.status_code, body, response.headers)
        if not isinstance(body, dict) or body.get("submission_id") in (None, ""):
            raise NeedsAttentionError("invalid_response", "the submission answer carries no submission_id")
        return SubmissionReceipt(
            str(body["submission_id"]), str(body.get("status", "received")), body.get("next_action"), False
        )

    async def _signed(
        self, method: str, path: str, payload: dict[str, Any], *, idempotency_key: str
    ) -> httpx.Response:
        raw = orjson.dumps(payload)
        for attempt in (1, 2):
            if self._token is None or time.monotonic() >= self._token_until:
                await self.authenticate()
            response = await self._call(
                method,
                path,
                content=raw,
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Content-Type": "application/json",
                    "X-Signature": signature(self._signing_secret, raw),
                    "Idempotency-Key": idempotency_key,
                },
            )
            if (
                response.status_code == 401
                and attempt == 1
                and provider_code(_json(response)) == "token_expired"
            ):
                self._token = None  # revoked or expired early: one fresh token, then the answer stands
                continue
            return response
        raise AssertionError("unreachable")

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise RetryableError(
                "timeout", f"the accountant's API did not answer {method} {path} in time"
            ) from exc
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
