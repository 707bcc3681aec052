"""A typed async client of QuickBooks Online's Accounting API (v3), the subset Ledgerflow uses.

Every request goes to ``{base_url}/v3/company/{realm_id}/...`` with ``Authorization: Bearer`` and
``Accept: application/json``. Writes carry ``requestid``: Intuit answers a repeated request id with the
first answer instead of doing the work twice, which makes a create whose answer was lost safe to
retry. Updates are sparse (``"sparse": true``, only the fields sent change) and name the entity's
``SyncToken`` (optimistic concurrency: a stale one is fault 5010).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal
from types import TracebackType
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import httpx
import orjson

from connectors.errors import ConnectorError, NeedsAttentionError, RetryableError, retry_after_seconds
from connectors.quickbooks import errors
from connectors.quickbooks.settings import PROVIDER

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
MINOR_VERSION = "75"
_REQUEST_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/quickbooks-requestid")

TokenSource = Callable[[bool], Awaitable[str]]
"""``force`` -> an access token; ``force=True`` after a 401 asks for a refreshed one."""


class QuickBooksClient:
    def __init__(
        self,
        base_url: str,
        realm_id: str,
        token: TokenSource,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.realm_id = realm_id
        self._token = token
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport, follow_redirects=False
        )

    def __repr__(self) -> str:
        return f"QuickBooksClient(base_url={str(self._http.base_url)!r}, realm_id={self.realm_id!r})"

    async def __aenter__(self) -> QuickBooksClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the API -----------------------------------------------------------------------------

    async def company_info(self) -> dict[str, Any]:
        answer = await self._call("GET", f"companyinfo/{self.realm_id}")
        return dict(answer.get("CompanyInfo") or {})

    async def query(self, entity: str, statement: str) -> list[dict[str, Any]]:
        """Rows of ``entity`` matching a query-language ``statement`` (mapping.py builds them)."""
        answer = await self._call("GET", "query", params={"query": statement})
        rows = (answer.get("QueryResponse") or {}).get(entity) or []
        return [dict(r) for r in rows if isinstance(r, dict)]

    async def create(self, entity: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        return await self._write(entity, body, request_id)

    async def sparse_update(self, entity: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        return await self._write(entity, {**body, "sparse": True}, request_id)

    async def void_invoice(self, invoice_id: str, sync_token: str, request_id: str) -> dict[str, Any]:
        return await self._write(
            "Invoice", {"Id": invoice_id, "SyncToken": sync_token}, request_id, operation="void"
        )

    # -- plumbing ----------------------------------------------------------------------------

    async def _write(
        self, entity: str, body: dict[str, Any], request_id: str, *, operation: str | None = None
    ) -> dict[str, Any]:
        params = {"requestid": request_token(request_id)}
        if operation:
            params["operation"] = operation
        answer = await self._call("POST", entity.lower(), params=params, content=encode(body))
        found = answer.get(entity)
        if not isinstance(found, dict) or "Id" not in found:
            raise NeedsAttentionError("invalid_response", f"the {entity} answer has no {entity}.Id")
        return found

    async def _call(self, method: str, path: str, **request: Any) -> dict[str, Any]:
        url = f"/v3/company/{self.realm_id}/{path}"
        params = {**request.pop("params", {}), "minorversion": MINOR_VERSION}
        for attempt in (1, 2):
            token = await self._token(attempt == 2)
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            if "content" in request:
                headers["Content-Type"] = "application/json"
            response = await self._send(method, url, params=params, headers=headers, **request)
            if response.status_code == 401 and attempt == 1:
                continue  # the access token expired early or was revoked: refresh once
            try:
                return _json(_checked(response))
            except ConnectorError as exc:
                raise _without(exc, token) from None
        raise AssertionError("unreachable")

    async def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **request)
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


def request_token(key: str) -> str:
    """The ``requestid`` sent for an idempotency key: a UUID derived from the whole key. Keys are long
    (job id + step); cutting them to fit would make two steps of one job share an id, and the second
    would get the first one's answer."""
    return str(uuid5(_REQUEST_NAMESPACE, key))


def encode(body: dict[str, Any]) -> bytes:
    """JSON with amounts as JSON numbers written from their exact decimal text (QuickBooks wants
    numbers; a float in between could change a paisa). Each Decimal is first written as a string
    wrapped in a random marker, then unquoted: no text of the document can forge the marker."""
    marker = secrets.token_hex(8)

    def default(value: Any) -> str:
        if isinstance(value, Decimal) and value.is_finite():
            return f"{marker}{value:f}{marker}"
        raise TypeError(f"cannot encode {type(value).__name__}")

    data = orjson.dumps(body, default=default)
    return data.replace(f'"{marker}'.encode(), b"").replace(f'{marker}"'.encode(), b"")


def _without(error: ConnectorError, token: str) -> ConnectorError:
    from connectors.errors import without_secrets

    return without_secrets(error, [token])


def _checked(response: httpx.Response) -> httpx.Response:
    status = response.status_code
    if response.is_success:
        return response
    code: str | None = None
    fault_type: str | None = None
    text = f"HTTP {status}"
    try:
        fault = response.json().get("Fault") or {}
        fault_type = str(fault.get("type") or "")[:40] or None
        first = (fault.get("Error") or [{}])[0]
        code = str(first.get("code"))[:20] if first.get("code") else None
        text = f"{str(first.get('Message', ''))[:200]}: {str(first.get('Detail', ''))[:300]}"
    except (ValueError, AttributeError, IndexError, TypeError):
        pass
    raise ConnectorError.of(
        errors.classify(status, code, fault_type),
        code if code and status != 429 and status < 500 else f"http_{status}",
        text,
        retry_after=retry_after_seconds(response.headers.get("retry-after")),
        details={"provider": PROVIDER, "status": status, "fault_type": fault_type},
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise NeedsAttentionError("invalid_response", "the answer is not JSON") from exc
    if not isinstance(body, dict):
        raise NeedsAttentionError("invalid_response", "the answer is not a JSON object")
    return body
