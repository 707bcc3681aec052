"""An async client for the GST network's taxpayer search ("search taxpayer by GSTIN"), through a GSP.

What it speaks: JSON over HTTPS in the shape of the GST common API's taxpayer search as GSPs (GST
Suvidha Providers) expose it: ``POST /commonapi/v1.0/authenticate`` with the GSP-issued ``client_id``
and ``client_secret`` headers answers ``{"access_token", "expires_in"}``; ``GET
/commonapi/v1.1/search?action=TP&gstin=...`` with ``Authorization: Bearer <token>`` answers the
taxpayer record in the common API's field names (``gstin``, ``lgnm`` legal name, ``tradeNam``, ``sts``
status, ``dty`` taxpayer type, ``rgdt``/``cxdt`` registration and cancellation dates as dd/mm/yyyy,
``stjCd`` state jurisdiction). Unconfirmed: the exact paths and the auth step differ between GSPs
(india-gst.md section 1 lists the search as ``/eivital/v1.04/Master/gstin/{gstin}`` on the e-invoice
API); a GSP's variant is a change to the two path constants and ``_send``.

A GSTIN is checked locally first (engine/tax/gstin.py): a malformed one never costs a billed search.
Every failure leaves as a :class:`connectors.errors.ConnectorError`; httpx's exceptions never escape.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any

import httpx

from connectors.errors import (
    ConnectorError,
    NeedsAttentionError,
    PermanentError,
    RetryableError,
    retry_after_seconds,
    without_secrets,
)
from connectors.gstin_lookup import errors
from engine.tax.errors import TaxRuleError
from engine.tax.gstin import validate_gstin

log = logging.getLogger(__name__)

PROVIDER = "gstin-lookup"
AUTH_PATH = "/commonapi/v1.0/authenticate"
SEARCH_PATH = "/commonapi/v1.1/search"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
"""platform.md: connect 10 s, read 30 s, as for every connector."""
REFRESH_MARGIN = timedelta(minutes=1)
DATE_FORMAT = "%d/%m/%Y"


@dataclass(frozen=True)
class LookupCredentials:
    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"LookupCredentials(client_id={self.client_id!r}, client_secret=[redacted])"

    def secrets(self) -> tuple[str, ...]:
        return (self.client_secret,)


@dataclass(frozen=True)
class Taxpayer:
    """A taxpayer's registration as the GST network reports it."""

    gstin: str
    legal_name: str
    trade_name: str | None
    status: str
    """"Active", "Cancelled", "Suspended", "Inactive" as the portal words it."""
    taxpayer_type: str | None
    registered_on: date | None
    cancelled_on: date | None
    state_jurisdiction: str | None
    business_type: str | None = None
    """Constitution of business (``ctb``): "Private Limited Company", "Partnership", ..."""
    address: str | None = None
    """The principal place of business (``pradr.addr``) on one line, as an invoice prints it."""

    @property
    def active(self) -> bool:
        return self.status.lower() == "active"


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: datetime


class LookupClient:
    """``async with LookupClient(url, credentials) as gst: taxpayer = await gst.search(gstin)``."""

    def __init__(
        self,
        base_url: str,
        credentials: LookupCredentials,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._credentials = credentials
        # Never follow a redirect: it would resend the credential headers wherever Location points.
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, follow_redirects=False
        )
        self._token: _Token | None = None
        self._auth_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (
            f"LookupClient(base_url={str(self._http.base_url)!r}, client_id={self._credentials.client_id!r})"
        )

    async def __aenter__(self) -> LookupClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def authenticate(self, *, force: bool = False) -> None:
        """Get an access token unless the cached one is good for longer than :data:`REFRESH_MARGIN`."""
        try:
            await self._authenticate(force=force)
        except ConnectorError as exc:
            without_secrets(exc, self._credentials.secrets())
            raise

    async def search(self, gstin: str) -> Taxpayer | None:
        """The taxpayer registered under ``gstin``; None if the GST network has no such registration."""
        try:
            number = validate_gstin(gstin)
        except TaxRuleError as exc:
            raise PermanentError("invalid_gstin", exc.violations[0].message) from exc
        try:
            return await self._search(number)
        except ConnectorError as exc:
            without_secrets(exc, self._credentials.secrets())
            raise

    # -- the wire ---------------------------------------------------------------------------------

    async def _authenticate(self, *, force: bool) -> None:
        async with self._auth_lock:
            now = datetime.now(UTC)
            if not force and self._token is not None and now < self._token.expires_at - REFRESH_MARGIN:
                return
            creds = self._credentials
            response = await self._send(
                "POST", AUTH_PATH, {"client_id": creds.client_id, "client_secret": creds.client_secret}
            )
            body = _json(_checked(response))
            try:
                self._token = _Token(
                    str(body["access_token"]), now + timedelta(seconds=float(body["expires_in"]))
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise NeedsAttentionError(
                    "invalid_auth_response", "no access_token/expires_in in the answer"
                ) from exc

    async def _search(self, gstin: str) -> Taxpayer | None:
        for attempt in (1, 2):
            await self._authenticate(force=False)
            assert self._token is not None
            response = await self._send(
                "GET",
                SEARCH_PATH,
                {"Authorization": f"Bearer {self._token.value}"},
                params={"action": "TP", "gstin": gstin},
            )
            if response.status_code != 401:
                break
            self._token = None  # revoked or expired early: one fresh token, then a person looks
            if attempt == 2:
                raise NeedsAttentionError(
                    "token_rejected_after_reauth", "the search refused a token it had just issued"
                )
        if response.status_code == errors.NOT_FOUND:
            return None
        return _taxpayer(_json(_checked(response)))

    async def _send(
        self, method: str, path: str, headers: dict[str, str], params: dict[str, str] | None = None
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, path, headers=headers, params=params)
        except httpx.TimeoutException as exc:
            raise RetryableError("timeout", f"{method} {path}: {type(exc).__name__}") from exc
        except httpx.ConnectError as exc:
            raise RetryableError("connect_error", f"{method} {path}: could not connect") from exc
        except httpx.TransportError as exc:
            raise RetryableError("transport_error", f"{method} {path}: {type(exc).__name__}") from exc
        log.debug("taxpayer search %s %s -> %s", method, path, response.status_code)
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
    code, text = f"http_{status}", f"HTTP {status}"
    try:
        error = response.json().get("error") or {}
        text = f"{error.get('error_cd', code)}: {error.get('message', '')}"
    except (ValueError, AttributeError):
        pass
    raise ConnectorError.of(
        errors.classify(status),
        code,
        text,
        retry_after=retry_after_seconds(response.headers.get("retry-after")),
        details={"provider": PROVIDER},
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise NeedsAttentionError("invalid_response", "the answer is not a JSON object")
    return body


def _date(value: object) -> date | None:
    if not value:
        return None
    try:
        return datetime.strptime(str(value), DATE_FORMAT).date()
    except ValueError:
        return None


def _text(value: object) -> str | None:
    return (str(value).strip() or None) if isinstance(value, str | int) else None


# The order a postal address is written in, from the common API's address fields: building number,
# building name, floor, street, locality, city, district, state, PIN code.
_ADDRESS_PARTS = ("bno", "bnm", "flno", "st", "loc", "city", "dst", "stcd", "pncd")


def _address(value: object) -> str | None:
    addr = value.get("addr") if isinstance(value, dict) else None
    if not isinstance(addr, dict):
        return None
    parts = [_text(addr.get(k)) for k in _ADDRESS_PARTS]
    return ", ".join(p for p in parts if p) or None


def _taxpayer(body: dict[str, Any]) -> Taxpayer:
    try:
        return Taxpayer(
            gstin=str(body["gstin"]),
            legal_name=str(body["lgnm"]),
            trade_name=body.get("tradeNam") or None,
            status=str(body["sts"]),
            taxpayer_type=body.get("dty") or None,
            registered_on=_date(body.get("rgdt")),
            cancelled_on=_date(body.get("cxdt")),
            state_jurisdiction=body.get("stjCd") or None,
            business_type=_text(body.get("ctb")),
            address=_address(body.get("pradr")),
        )
    except KeyError as exc:
        raise NeedsAttentionError("invalid_response", f"the taxpayer record lacks {exc}") from exc
