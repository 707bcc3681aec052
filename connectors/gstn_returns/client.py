"""An async client for the GST network's returns API (GSTR-1 save, status, file), through a GSP.

The real API is served only to GSPs; this speaks a faithful, simplified JSON version of its flow
(the GSP wrappers of it expose the same steps):

* ``POST /taxpayerapi/v1.0/authenticate`` with the GSP-issued ``client_id``/``client_secret`` and the
  taxpayer's ``gstin`` and portal ``username`` headers answers ``{"access_token", "expires_in"}``.
* ``PUT /taxpayerapi/v2.0/returns/gstr1`` (headers ``gstin``, ``ret_period`` MMYYYY) with
  ``{"action": "RETSAVE", "data": <one offline-tool JSON part>}`` answers ``{"reference_id"}``: the
  save is processed asynchronously.
* ``GET /taxpayerapi/v2.0/returns?action=RETSTATUS&ref_id=`` answers ``{"status_cd": "IP"|"P"|"PE"|"ER",
  "form_typ": "R1", "action": "SAVE", "error_report": {<section>: [...]}}``: in progress, processed,
  processed with errors (the report names each refused document with ``error_cd``/``error_msg``), error.
* ``POST /taxpayerapi/v2.0/returns/gstr1`` with ``{"action": "RETFILE", "otp"}`` (EVC) answers
  ``{"ack_num"}``: the ARN.

Unconfirmed: exact paths, headers and the encryption GSTN layers under the GSP (india-gst.md section
1: "paths partly unconfirmed"); a GSP's variant is a change to the path constants and ``_send``.
Every failure leaves as a :class:`connectors.errors.ConnectorError`; httpx's exceptions never escape.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import httpx

from connectors.errors import (
    ConnectorError,
    NeedsAttentionError,
    RetryableError,
    retry_after_seconds,
    without_secrets,
)
from connectors.gstn_returns import errors

PROVIDER = "gstn-returns"
AUTH_PATH = "/taxpayerapi/v1.0/authenticate"
GSTR1_PATH = "/taxpayerapi/v2.0/returns/gstr1"
STATUS_PATH = "/taxpayerapi/v2.0/returns"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
"""platform.md: connect 10 s, read 30 s, as for every connector."""
REFRESH_MARGIN = timedelta(minutes=1)


@dataclass(frozen=True)
class ReturnsCredentials:
    client_id: str
    client_secret: str
    username: str
    """The taxpayer's GST portal user name (the GSP acts for it)."""

    def __repr__(self) -> str:
        return (
            f"ReturnsCredentials(client_id={self.client_id!r}, username={self.username!r},"
            " client_secret=[redacted])"
        )

    def secrets(self) -> tuple[str, ...]:
        return (self.client_secret,)


@dataclass(frozen=True)
class SaveStatus:
    """Where one save stands (RETSTATUS)."""

    status_cd: str
    errors: list[dict[str, str]] = field(default_factory=list)
    """One entry per refused document: ``section`` and the document's keys (``ctin``, ``inum`` or
    ``nt_num``, ``pos``...) with ``error_cd`` and ``error_msg``."""

    @property
    def in_progress(self) -> bool:
        return self.status_cd == errors.IN_PROGRESS_STATUS


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: datetime


class ReturnsClient:
    """``async with ReturnsClient(url, credentials, gstin) as gstn: ref = await gstn.save(period, part)``."""

    def __init__(
        self,
        base_url: str,
        credentials: ReturnsCredentials,
        gstin: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._credentials = credentials
        self.gstin = gstin
        # Never follow a redirect: it would resend the credential headers wherever Location points.
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, follow_redirects=False
        )
        self._token: _Token | None = None
        self._auth_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ReturnsClient(base_url={str(self._http.base_url)!r}, gstin={self.gstin!r})"

    async def __aenter__(self) -> ReturnsClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the public surface -----------------------------------------------------------------------

    async def authenticate(self, *, force: bool = False) -> None:
        """Get an access token unless the cached one is good for longer than :data:`REFRESH_MARGIN`."""
        await self._guarded(self._authenticate(force=force))

    async def save(self, period: str, part: bytes) -> str:
        """RETSAVE one upload part (its exact JSON text); returns the save's reference id. Saving
        the same part again gives the same reference id (the network treats it as one save)."""
        body = b'{"action":"RETSAVE","data":' + part + b"}"
        answer = await self._guarded(self._call("PUT", GSTR1_PATH, period, content=body))
        try:
            return str(answer["reference_id"])
        except KeyError as exc:
            raise NeedsAttentionError("invalid_response", "the save's answer has no reference_id") from exc

    async def status(self, period: str, reference_id: str) -> SaveStatus:
        """Where the save ``reference_id`` stands, with the documents it refused if any."""
        answer = await self._guarded(
            self._call("GET", STATUS_PATH, period, params={"action": "RETSTATUS", "ref_id": reference_id})
        )
        status_cd = str(answer.get("status_cd", ""))
        if status_cd not in (
            errors.PROCESSED,
            errors.PROCESSED_WITH_ERRORS,
            errors.ERROR,
            errors.IN_PROGRESS_STATUS,
        ):
            raise NeedsAttentionError("invalid_response", f"unknown save status {status_cd[:20]!r}")
        return SaveStatus(status_cd, error_rows(answer.get("error_report")))

    async def file(self, period: str, otp: str) -> str:
        """RETFILE with the taxpayer's EVC OTP; returns the ARN. Filing a filed period again gives
        its ARN again."""
        payload = {"action": "RETFILE", "otp": otp}
        answer = await self._guarded(self._call("POST", GSTR1_PATH, period, json=payload), otp)
        try:
            return str(answer["ack_num"])
        except KeyError as exc:
            raise NeedsAttentionError("invalid_response", "the filing's answer has no ack_num") from exc

    # -- the wire ---------------------------------------------------------------------------------

    async def _guarded(self, call: Any, *more_secrets: str) -> Any:
        try:
            return await call
        except ConnectorError as exc:
            without_secrets(exc, (*self._credentials.secrets(), *more_secrets))
            raise

    async def _authenticate(self, *, force: bool) -> None:
        async with self._auth_lock:
            now = datetime.now(UTC)
            if not force and self._token is not None and now < self._token.expires_at - REFRESH_MARGIN:
                return
            creds = self._credentials
            response = await self._send(
                "POST",
                AUTH_PATH,
                headers={
                    "client_id": creds.client_id,
                    "client_secret": creds.client_secret,
                    "gstin": self.gstin,
                    "username": creds.username,
                },
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

    async def _call(self, method: str, path: str, period: str, **request: Any) -> dict[str, Any]:
        for _attempt in (1, 2):
            await self._authenticate(force=False)
            assert self._token is not None
            headers = {
                "Authorization": f"Bearer {self._token.value}",
                "gstin": self.gstin,
                "ret_period": period,
            }
            if "content" in request:
                headers["content-type"] = "application/json"
            response = await self._send(method, path, headers=headers, **request)
            if response.status_code != 401:
                return _json(_checked(response))
            self._token = None  # revoked or expired early: one fresh token, then a person looks
        raise NeedsAttentionError(
            "token_rejected_after_reauth", "the network refused a token it had just issued"
        )

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


def error_rows(report: Any) -> list[dict[str, str]]:
    """The documents an error report refuses, one flat row each (pure).

    A report is ``{section: [entry]}``; an entry either holds documents (``inv`` for invoices, ``nt``
    for notes) under a party (``ctin``) or place (``pos``) with one ``error_cd``/``error_msg``, or is
    itself a summary row (b2cs, hsn) carrying its error."""
    if not isinstance(report, dict):
        return []
    rows: list[dict[str, str]] = []
    for section, entries in report.items():
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            shared = {
                k: _text(v)
                for k, v in entry.items()
                if k in ("ctin", "pos", "sply_ty", "rt", "hsn_sc", "exp_typ") and v is not None
            }
            error = {"error_cd": _text(entry.get("error_cd")), "error_msg": _text(entry.get("error_msg"))}
            documents = entry.get("inv") or entry.get("nt") or []
            if not isinstance(documents, list) or not documents:
                rows.append({"section": str(section), **shared, **error})
                continue
            for document in documents:
                if not isinstance(document, dict):
                    continue
                keys = {
                    k: _text(document[k]) for k in ("inum", "idt", "nt_num", "nt_dt", "pos") if k in document
                }
                own = {
                    "error_cd": _text(document.get("error_cd") or error["error_cd"]),
                    "error_msg": _text(document.get("error_msg") or error["error_msg"]),
                }
                rows.append({"section": str(section), **shared, **keys, **own})
    return rows


def _text(value: Any) -> str:
    # Remote text, kept short: it is recorded on the return and published.
    return "" if value is None else str(value)[:500]


def _checked(response: httpx.Response) -> httpx.Response:
    status = response.status_code
    if response.is_success:
        return response
    code: str | None = None
    text = f"HTTP {status}"
    try:
        error = response.json().get("error") or {}
        code = str(error.get("error_cd")) if error.get("error_cd") else None
        text = f"{code or f'http_{status}'}: {str(error.get('message', ''))[:300]}"
    except (ValueError, AttributeError):
        pass
    raise ConnectorError.of(
        errors.classify(status, code),
        code or f"http_{status}",
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
