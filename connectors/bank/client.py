"""An async client for the bank API of seed 002 ("College Accounts", sections 2.1 and 2.2).

What it speaks (JSON over HTTPS, ``Authorization: Bearer <api_key>``; amounts are integers in paise)::

    POST /api/v2/payments/{neft|rtgs|imps}/initiate   X-Request-ID: <idempotency key>
         {amount, currency, beneficiary{name, account_number, ifsc}, remitter{account_number, ifsc},
          purpose, reference_number}                  -> 202 {payment_id, status: processing, ...}
    GET  /api/v2/payments/{payment_id}/status          -> {status: processing|completed|failed,
                                                            transaction_id, utr_number, completed_at,
                                                            amount, charges, failure_code?}
    GET  /api/v1/bank/statements?account_number=&from_date=&to_date=&page=
                                                       -> {opening_balance, closing_balance,
                                                            transactions[], page, has_more}
    GET  /api/v1/bank/balance?account_number=         -> {available_balance, as_of}

Refusals use the seed's error shape ``{"error": {"code", "message", ...}}`` with the codes of
connectors/bank/errors.py. The seed shows the NEFT path only: the RTGS and IMPS paths are by analogy
(unconfirmed), as are the statement's paging fields and the query parameters (the seed writes the
statement and balance requests as JSON bodies on GET, which many HTTP stacks drop).

``X-Request-ID`` carries our idempotency key: the bank answers a repeated key with the payment it
already made (seed 002 names the header; its dedupe on it is what this client relies on, and what
the sandbox implements). Every failure leaves as a :class:`connectors.errors.ConnectorError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any

import httpx

from connectors.bank import errors
from connectors.errors import (
    ConnectorError,
    ErrorClass,
    NeedsAttentionError,
    RetryableError,
    retry_after_seconds,
    without_secrets,
)

PROVIDER = "bank"
INITIATE_PATH = "/api/v2/payments/{mode}/initiate"
STATUS_PATH = "/api/v2/payments/{payment_id}/status"
STATEMENTS_PATH = "/api/v1/bank/statements"
BALANCE_PATH = "/api/v1/bank/balance"
# Seed 002, 5.3: connect 10 s; read 30 s, 45 s for payment operations.
DEFAULT_TIMEOUT = httpx.Timeout(45.0, connect=10.0)
MAX_STATEMENT_PAGES = 1000


@dataclass(frozen=True)
class PaymentStatus:
    payment_id: str
    status: str
    """processing, completed or failed."""
    utr: str | None = None
    transaction_id: str | None = None
    completed_at: datetime | None = None
    amount_paise: int | None = None
    charges_paise: int = 0
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class StatementLine:
    value_date: date
    description: str
    reference: str | None
    amount_paise: int
    """Signed: credits positive, debits negative."""
    balance_paise: int | None


@dataclass(frozen=True)
class Statement:
    account_number: str
    from_date: date
    to_date: date
    opening_paise: int
    closing_paise: int
    lines: tuple[StatementLine, ...]


@dataclass(frozen=True)
class Balance:
    account_number: str
    available_paise: int
    as_of: datetime


class BankClient:
    """``async with BankClient(url, api_key) as bank: accepted = await bank.initiate(...)``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key = api_key
        # Never follow a redirect: it would resend the bearer token wherever Location points.
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            headers={"Authorization": f"Bearer {api_key}"},
        )

    def __repr__(self) -> str:
        return f"BankClient(base_url={str(self._http.base_url)!r}, api_key=[redacted])"

    async def __aenter__(self) -> BankClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def initiate(self, *, mode: str, idempotency_key: str, body: dict[str, Any]) -> PaymentStatus:
        """Ask the bank to pay; the same ``idempotency_key`` always names the same payment."""
        path = INITIATE_PATH.format(mode=mode.lower())
        answer = await self._call("POST", path, json=body, headers={"X-Request-ID": idempotency_key})
        return _status(answer)

    async def status(self, payment_id: str) -> PaymentStatus:
        return _status(await self._call("GET", STATUS_PATH.format(payment_id=payment_id)))

    async def statement(self, account_number: str, from_date: date, to_date: date) -> Statement:
        """The statement of ``account_number`` for the period, every page."""
        lines: list[StatementLine] = []
        first: dict[str, Any] | None = None
        last: dict[str, Any] = {}
        for page in range(1, MAX_STATEMENT_PAGES + 1):
            last = await self._call(
                "GET",
                STATEMENTS_PATH,
                params={
                    "account_number": account_number,
                    "from_date": from_date.isoformat(),
                    "to_date": to_date.isoformat(),
                    "page": str(page),
                },
            )
            first = first or last
            lines += [_line(t) for t in _list(last.get("transactions"))]
            if not last.get("has_more"):
                break
        else:
            raise NeedsAttentionError(
                "too_many_pages", f"statement has more than {MAX_STATEMENT_PAGES} pages"
            )
        assert first is not None
        try:
            return Statement(
                account_number=str(first.get("account_number") or account_number),
                from_date=from_date,
                to_date=to_date,
                opening_paise=_paise(first["opening_balance"]),
                closing_paise=_paise(last["closing_balance"]),
                lines=tuple(lines),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NeedsAttentionError("invalid_response", f"statement: {exc}") from exc

    async def balance(self, account_number: str) -> Balance:
        body = await self._call("GET", BALANCE_PATH, params={"account_number": account_number})
        try:
            return Balance(
                account_number=str(body.get("account_number") or account_number),
                available_paise=_paise(body["available_balance"]),
                as_of=_datetime(body.get("as_of")) or datetime.now(UTC),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NeedsAttentionError("invalid_response", f"balance: {exc}") from exc

    # -- the wire ---------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        try:
            try:
                response = await self._http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TimeoutException as exc:
                raise RetryableError("timeout", f"{method} {path}: {type(exc).__name__}") from exc
            except httpx.ConnectError as exc:
                raise RetryableError("connect_error", f"{method} {path}: could not connect") from exc
            except httpx.TransportError as exc:
                raise RetryableError("transport_error", f"{method} {path}: {type(exc).__name__}") from exc
            return _json(_checked(response))
        except ConnectorError as exc:
            raise without_secrets(exc, (self._api_key,)) from exc.__cause__


def classify(code: str, status: int) -> ErrorClass:
    """The class of a refusal: the bank's own codes by their rule (errors.py), else by HTTP status.
    A refusal nobody classified needs a person: repeating an unknown refusal of a payment could pay
    twice, and giving it up silently could never pay."""
    if code in errors.RULES:
        rule = errors.rule_for(code)
        if rule in (errors.Rule.RETRY_LATER, errors.Rule.RETRY_NEXT_DAY):
            return ErrorClass.RETRYABLE
        if rule is errors.Rule.NEVER_RETRY:
            return ErrorClass.PERMANENT
        return ErrorClass.NEEDS_ATTENTION
    if status in (408, 425, 429) or status >= 500:
        return ErrorClass.RETRYABLE
    return ErrorClass.NEEDS_ATTENTION


def _checked(response: httpx.Response) -> httpx.Response:
    status = response.status_code
    if 300 <= status < 400:
        raise NeedsAttentionError("redirect_not_followed", f"HTTP {status} redirect, not followed")
    if response.is_success:
        return response
    code, text = f"http_{status}", f"HTTP {status}"
    try:
        error = response.json().get("error") or {}
        if isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"]:
            code = error["code"][:64]
            text = str(error.get("message") or code)[:500]
    except (ValueError, AttributeError):
        pass
    retry_after = errors.retry_after(code) if code in errors.RULES else None
    raise ConnectorError.of(
        classify(code, status),
        code,
        text,
        retry_after=retry_after or retry_after_seconds(response.headers.get("retry-after")),
        details={"provider": PROVIDER, "http_status": status},
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise NeedsAttentionError("invalid_response", "the answer is not a JSON object")
    return body


def _list(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise NeedsAttentionError("invalid_response", "transactions is not a list of objects")
    return value


def _paise(value: Any) -> int:
    """An integer amount in paise; a float or text with a fraction is refused, never rounded."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"not an amount in paise: {value!r}")
    return int(value)


def _datetime(value: Any) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _status(body: dict[str, Any]) -> PaymentStatus:
    try:
        return PaymentStatus(
            payment_id=str(body["payment_id"]),
            status=str(body["status"]),
            utr=body.get("utr_number") or None,
            transaction_id=body.get("transaction_id") or None,
            completed_at=_datetime(body.get("completed_at")),
            amount_paise=_paise(body["amount"]) if body.get("amount") is not None else None,
            charges_paise=_paise(body.get("charges") or 0),
            failure_code=body.get("failure_code") or None,
            failure_message=body.get("failure_reason") or None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise NeedsAttentionError("invalid_response", f"payment status: {exc}") from exc


def _line(t: dict[str, Any]) -> StatementLine:
    try:
        debit, credit = _paise(t.get("debit") or 0), _paise(t.get("credit") or 0)
        return StatementLine(
            value_date=date.fromisoformat(str(t["date"])),
            description=str(t.get("description") or ""),
            reference=(str(t["ref_number"]) if t.get("ref_number") else None),
            amount_paise=credit - debit,
            balance_paise=_paise(t["balance"]) if t.get("balance") is not None else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise NeedsAttentionError("invalid_response", f"statement line: {exc}") from exc


def payout_body(
    *,
    amount_paise: int,
    beneficiary: dict[str, str],
    remitter_account: str,
    remitter_ifsc: str,
    purpose: str,
    reference: str,
) -> dict[str, Any]:
    """The initiate body in the seed's field names (pure)."""
    return {
        "amount": amount_paise,
        "currency": "INR",
        "beneficiary": beneficiary,
        "remitter": {"account_number": remitter_account, "ifsc": remitter_ifsc},
        "purpose": purpose,
        "reference_number": reference,
    }


def rupees(paise: int) -> Decimal:
    return (Decimal(paise) / 100).quantize(Decimal("0.01"))
