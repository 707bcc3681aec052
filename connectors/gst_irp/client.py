"""An async client for the e-invoice Invoice Registration Portal (IRP), in the GSP style.

What it speaks: plain JSON over HTTPS, the paths of NIC's e-invoice API v1.03/v1.04 (india-gst.md
section 1) with the headers ``client_id``, ``client_secret``, ``Gstin``, ``user_name`` and ``AuthToken``,
and answers of the form ``{"Status": 1, "Data": {...}}`` or ``{"Status": 0, "ErrorDetails": [...],
"InfoDtls": [...]}``.

What it does not speak: NIC's *direct* API encrypts the auth request with NIC's RSA public key and every
later payload with AES under the session key (Sek) the auth call returns (``{"Data": base64(AES(Sek,
json))}``). GSPs (GST Suvidha Providers), through which most taxpayers reach the IRP, hide that layer
behind plain JSON, and this client targets such a wrapper. Talking to NIC directly would add an
encryption step around ``_send``; nothing else here changes. Unconfirmed: the exact paths and header
names differ between GSPs (the paths are NIC's; "irnbydocdetails" is documented for v1.03 but we have not
seen it called with these exact query names), and whether business errors come with HTTP 200 or 4xx,
so both are accepted.

Every failure leaves as a :class:`connectors.errors.ConnectorError`; httpx's exceptions never escape.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from connectors.errors import (
    ConnectorError,
    NeedsAttentionError,
    RetryableError,
    retry_after_seconds,
    without_secrets,
)
from connectors.gst_irp import errors as irp_errors
from connectors.gst_irp.jws import InvalidToken, decode_unverified

log = logging.getLogger(__name__)

PROVIDER = "gst-irp"
AUTH_PATH = "/eivital/v1.04/auth"
INVOICE_PATH = "/eicore/v1.03/Invoice"
IRN_PATH = "/eicore/v1.03/Invoice/irn/{irn}"
IRN_BY_DOCUMENT_PATH = "/eicore/v1.03/Invoice/irnbydocdetails"
CANCEL_PATH = "/eicore/v1.03/Invoice/Cancel"

IST = timezone(timedelta(hours=5, minutes=30), "IST")
"""The IRP's timestamps (AckDt, CancelDate, TokenExpiry) are Indian Standard Time without an offset."""
IRP_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
"""platform.md: connect 10 s, read 30 s, as the seed's connector policy asks."""
REFRESH_MARGIN = timedelta(minutes=5)
"""Re-authenticate this long before the token expires, so no request races the expiry (NIC tokens last
6 hours in production; a request in flight at the boundary would otherwise fail with 1005)."""
CANCEL_REASONS = {1: "Duplicate", 2: "Data entry mistake", 3: "Order cancelled", 4: "Others"}
_NOT_FOUND = frozenset({irp_errors.IRN_NOT_AVAILABLE, "3001"})


@dataclass(frozen=True)
class IrpCredentials:
    """API credentials issued per GSTIN. ``repr`` shows the GSTIN only, so they never reach a log."""

    client_id: str
    client_secret: str
    username: str
    password: str
    gstin: str

    def __repr__(self) -> str:
        masked = ", ".join(f"{name}='***'" for name in ("client_id", "client_secret", "username", "password"))
        return f"IrpCredentials(gstin={self.gstin!r}, {masked})"

    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in an error, a log line or an event (not the GSTIN,
        which is public and which the IRP's messages name usefully)."""
        return (self.client_id, self.client_secret, self.username, self.password)


@dataclass(frozen=True)
class IrnResult:
    irn: str
    ack_no: str
    """15 digits."""
    ack_dt: datetime
    """Timezone-aware (IST as the IRP reports it)."""
    signed_invoice: str
    signed_qr_code: str
    status: str
    """``ACT`` (active) or ``CNL`` (cancelled)."""
    ewb_no: str | None = None

    def qr_data(self) -> dict[str, Any]:
        """The QR code's data claim (SellerGstin, BuyerGstin, DocNo, DocDt, TotInvVal, Irn...), unverified."""
        try:
            return decode_unverified(self.signed_qr_code)
        except InvalidToken as exc:
            raise NeedsAttentionError("invalid_signed_qr_code", str(exc)) from exc


@dataclass(frozen=True)
class DuplicateInfo:
    """What a 2150 answer says about the IRN already registered (InfoDtls, InfCd DUPIRN)."""

    irn: str | None
    ack_no: str | None
    ack_dt: datetime | None


class DuplicateIrn(NeedsAttentionError):
    """The document already has an IRN (2150). Adopt it only after verifying it is ours: see
    :func:`connectors.gst_irp.service.generate_or_adopt`."""

    def __init__(
        self, existing: DuplicateInfo | None, message: str = "", details: dict[str, Any] | None = None
    ):
        super().__init__(irp_errors.DUPLICATE_IRN, message or "Duplicate IRN", details=details)
        self.existing = existing


@dataclass(frozen=True)
class CancelResult:
    irn: str
    cancel_date: datetime


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: datetime


P = ParamSpec("P")
R = TypeVar("R")


def _keeping_secrets(
    operation: Callable[Concatenate[IrpClient, P], Awaitable[R]],
) -> Callable[Concatenate[IrpClient, P], Awaitable[R]]:
    """Every error an operation raises leaves without the tenant's credentials in its text
    (connectors.errors.without_secrets): the IRP's messages are remote text."""

    @functools.wraps(operation)
    async def guarded(self: IrpClient, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await operation(self, *args, **kwargs)
        except ConnectorError as exc:
            without_secrets(exc, self._credentials.secrets())
            raise

    return guarded


class IrpClient:
    """``async with IrpClient(url, credentials) as irp: result = await irp.generate_irn(payload)``."""

    def __init__(
        self,
        base_url: str,
        credentials: IrpCredentials,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._credentials = credentials
        # Never follow a redirect: it would resend the credential headers wherever Location points.
        # (connectors/egress.py's transport also turns any 3xx into an error.)
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, follow_redirects=False
        )
        self._clock = clock or (lambda: datetime.now(UTC))
        self._token: _Token | None = None
        self._auth_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"IrpClient(base_url={str(self._http.base_url)!r}, gstin={self._credentials.gstin!r})"

    async def __aenter__(self) -> IrpClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- operations -------------------------------------------------------------------------------

    @_keeping_secrets
    async def authenticate(self, *, force: bool = False) -> None:
        """Get a token unless the cached one is good for longer than :data:`REFRESH_MARGIN`."""
        async with self._auth_lock:
            if (
                not force
                and self._token is not None
                and self._clock() < self._token.expires_at - REFRESH_MARGIN
            ):
                return
            creds = self._credentials
            response = await self._send(
                "POST",
                AUTH_PATH,
                headers=self._client_headers(),
                json={
                    "UserName": creds.username,
                    "Password": creds.password,
                    "ForceRefreshAccessToken": force,
                },
            )
            data = _data(response)
            try:
                expiry = datetime.strptime(str(data["TokenExpiry"]), IRP_TIME_FORMAT).replace(tzinfo=IST)
                self._token = _Token(str(data["AuthToken"]), expiry)
            except (KeyError, ValueError) as exc:
                raise NeedsAttentionError(
                    "invalid_auth_response", "no AuthToken/TokenExpiry in the answer"
                ) from exc

    @_keeping_secrets
    async def generate_irn(self, payload: Mapping[str, Any]) -> IrnResult:
        """Register an e-invoice (schema v1.1 JSON, see mapping.to_einvoice).

        Raises :class:`DuplicateIrn` when the document is already registered; a retry after a lost
        answer lands there too, which is why callers go through service.generate_or_adopt.
        """
        return _irn_result(await self._call("POST", INVOICE_PATH, json=dict(payload)))

    @_keeping_secrets
    async def get_irn(self, irn: str) -> IrnResult | None:
        try:
            return _irn_result(await self._call("GET", IRN_PATH.format(irn=irn)))
        except ConnectorError as exc:
            if exc.code in _NOT_FOUND:
                return None
            raise

    @_keeping_secrets
    async def get_irn_by_document(self, doc_type: str, doc_no: str, doc_date: date) -> IrnResult | None:
        params = {"doctype": doc_type, "docnum": doc_no, "docdate": doc_date.strftime("%d/%m/%Y")}
        try:
            return _irn_result(await self._call("GET", IRN_BY_DOCUMENT_PATH, params=params))
        except ConnectorError as exc:
            if exc.code in _NOT_FOUND:
                return None
            raise

    @_keeping_secrets
    async def cancel_irn(self, irn: str, reason_code: int, remark: str) -> CancelResult:
        """Cancel within 24 hours of AckDt (else 2270) and while no e-way bill is active (else 2230).

        ``reason_code``: 1 duplicate, 2 data entry mistake, 3 order cancelled, 4 others. A ValueError for
        a bad code or a remark over 100 characters: that is a bug in the caller, not an IRP answer.
        """
        if reason_code not in CANCEL_REASONS:
            raise ValueError(f"reason_code must be one of {sorted(CANCEL_REASONS)}, not {reason_code!r}")
        if len(remark) > 100:
            raise ValueError("remark is limited to 100 characters (CnlRem)")
        data = await self._call(
            "POST", CANCEL_PATH, json={"Irn": irn, "CnlRsn": str(reason_code), "CnlRem": remark}
        )
        try:
            return CancelResult(str(data["Irn"]), _irp_time(data["CancelDate"]))
        except (KeyError, ValueError) as exc:
            raise NeedsAttentionError("invalid_cancel_response", "no Irn/CancelDate in the answer") from exc

    # -- plumbing ---------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One authenticated call; on a rejected token, re-authenticate and try exactly once more."""
        for attempt in (1, 2):
            await self.authenticate()
            token = self._token
            assert token is not None
            response = await self._send(
                method, path, headers=self._session_headers(token), json=json, params=params
            )
            if not _token_rejected(response):
                return _data(response)
            self._token = None  # expired early (server clock, revoked): the cached expiry lied
            if attempt == 2:
                raise NeedsAttentionError(
                    "token_rejected_after_reauth", "the IRP rejected a token it had just issued"
                )
            log.info(
                "IRP rejected the auth token; re-authenticating once (gstin %s)", self._credentials.gstin
            )
        raise AssertionError("unreachable")

    async def _send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, path, headers=headers, json=json, params=params)
        except httpx.TimeoutException as exc:
            raise RetryableError("timeout", f"{method} {path}: {type(exc).__name__}") from exc
        except httpx.ConnectError as exc:
            if _tls_failure(exc):
                raise RetryableError("tls_error", f"{method} {path}: TLS failed") from exc
            raise RetryableError("connect_error", f"{method} {path}: could not connect") from exc
        except httpx.TransportError as exc:
            raise RetryableError("transport_error", f"{method} {path}: {type(exc).__name__}") from exc
        log.debug("IRP %s %s -> %s", method, path, response.status_code)
        status = response.status_code
        if response.is_redirect or 300 <= status < 400:
            raise NeedsAttentionError(
                "redirect_not_followed", f"{method} {path}: HTTP {status} redirect, not followed"
            )
        if status in (408, 429) or status >= 500:
            raise RetryableError(
                f"http_{status}",
                f"{method} {path}: HTTP {status}",
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
            )
        return response

    def _client_headers(self) -> dict[str, str]:
        creds = self._credentials
        return {"client_id": creds.client_id, "client_secret": creds.client_secret, "Gstin": creds.gstin}

    def _session_headers(self, token: _Token) -> dict[str, str]:
        return {**self._client_headers(), "user_name": self._credentials.username, "AuthToken": token.value}


def _tls_failure(exc: BaseException) -> bool:
    """httpx reports a failed TLS handshake as a ConnectError; the ssl error is in its causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        error_class = irp_errors.classify(response.status_code, [])
        raise ConnectorError.of(
            error_class, f"http_{response.status_code}", "the IRP's answer is not a JSON object"
        )
    return body


def _error_codes(body: Mapping[str, Any]) -> list[dict[str, str]]:
    details = body.get("ErrorDetails") or []
    return [
        {"code": str(item.get("ErrorCode", "")), "message": str(item.get("ErrorMessage", ""))}
        for item in details
        if isinstance(item, dict)
    ]


def _token_rejected(response: httpx.Response) -> bool:
    if response.status_code == 401:
        return True
    try:
        body = _body(response)
    except ConnectorError:
        return False
    return body.get("Status") in (0, "0") and any(
        e["code"] == irp_errors.INVALID_TOKEN for e in _error_codes(body)
    )


def _data(response: httpx.Response) -> dict[str, Any]:
    """The ``Data`` of a successful answer, or the classified error of a failed one."""
    body = _body(response)
    if str(body.get("Status")) == "1" and response.is_success:
        data = body.get("Data")
        if isinstance(data, str):  # some wrappers pass NIC's Data through as a JSON string
            try:
                data = json.loads(data)
            except ValueError:
                data = None
        if isinstance(data, dict):
            return data
        raise NeedsAttentionError("invalid_response", "Status 1 without a Data object")
    errors = _error_codes(body)
    codes = [e["code"] for e in errors]
    message = "; ".join(f"{e['code']}: {e['message']}" for e in errors) or f"HTTP {response.status_code}"
    details = {"provider": PROVIDER, "errors": errors, "info": body.get("InfoDtls")}
    if irp_errors.DUPLICATE_IRN in codes:
        raise DuplicateIrn(_duplicate_info(body.get("InfoDtls")), message, details)
    error_class = irp_errors.classify(response.status_code, codes)
    raise ConnectorError.of(
        error_class, codes[0] if codes else f"http_{response.status_code}", message, details=details
    )


def _duplicate_info(info: object) -> DuplicateInfo | None:
    for item in info if isinstance(info, list) else []:
        if isinstance(item, dict) and item.get("InfCd") == "DUPIRN" and isinstance(item.get("Desc"), dict):
            desc = item["Desc"]
            try:
                ack_dt = _irp_time(desc["AckDt"]) if desc.get("AckDt") else None
            except ValueError:
                ack_dt = None
            ack_no = desc.get("AckNo")
            return DuplicateInfo(desc.get("Irn"), str(ack_no) if ack_no is not None else None, ack_dt)
    return None


def _irn_result(data: Mapping[str, Any]) -> IrnResult:
    try:
        return IrnResult(
            irn=str(data["Irn"]),
            ack_no=str(data["AckNo"]),
            ack_dt=_irp_time(data["AckDt"]),
            signed_invoice=str(data["SignedInvoice"]),
            signed_qr_code=str(data["SignedQRCode"]),
            status=str(data.get("Status", "ACT")),
            ewb_no=str(data["EwbNo"]) if data.get("EwbNo") else None,
        )
    except (KeyError, ValueError) as exc:
        raise NeedsAttentionError("invalid_irn_response", f"incomplete IRN answer: {exc}") from exc


def _irp_time(value: object) -> datetime:
    return datetime.strptime(str(value), IRP_TIME_FORMAT).replace(tzinfo=IST)
