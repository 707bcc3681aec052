"""A typed async client of Tally Prime's XML-over-HTTP interface.

Tally listens on one port (9000 unless configured otherwise, F1 Help > Settings > Connectivity) and
takes every request as ``POST /`` with an XML body: imports (``Import Data``) and exports
(``Export Data``). It has no authentication of its own: whoever reaches the port can post, so it is
reached over the tenant's own network or tunnel (docs/tally.md). Transport failures and every answer
that is not a success become ``ConnectorError``s (errors.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import httpx

from connectors.errors import NeedsAttentionError, PermanentError, RetryableError
from connectors.tally.budgets import BudgetMaster, build_budget_import
from connectors.tally.errors import classify_http, classify_import
from connectors.tally.vouchers import (
    ImportResult,
    LedgerInfo,
    ResponseUnreadable,
    Voucher,
    VoucherRefused,
    build_import,
    build_ledger_export,
    parse_import_response,
    parse_ledgers,
)

PROVIDER = "tally"
PATH = "/"
# Below the ~10 s users see Tally stall under load (platform.md): a stalled import is given up and
# retried later, never waited on while a worker slot is held. The REMOTEID makes the retry safe.
TIMEOUT = httpx.Timeout(8.0, connect=3.0)
MAX_ANSWER = 20_000_000
"""Bytes of an answer we read at most (a List of Accounts of a large company is a few MB)."""


class TallyClient:
    def __init__(
        self,
        base_url: str,
        company: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:
        self.company = company
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport, follow_redirects=False
        )

    async def __aenter__(self) -> TallyClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"TallyClient({str(self._http.base_url)!r}, company={self.company!r})"

    async def import_vouchers(self, vouchers: Sequence[Voucher]) -> ImportResult:
        """Post ``vouchers``; returns Tally's counts when it holds them, raises otherwise (a voucher
        we refuse to send is a ``PermanentError`` before any request)."""
        try:
            body = build_import(self.company, vouchers)
        except VoucherRefused as exc:
            raise PermanentError(exc.code, exc.message) from exc
        answer = await self._post(body)
        try:
            result = parse_import_response(answer)
        except ResponseUnreadable as exc:
            raise NeedsAttentionError("unreadable_answer", str(exc)) from exc
        error = classify_import(result)
        if error is not None:
            raise error
        return result

    async def import_budgets(self, budgets: Sequence[BudgetMaster]) -> ImportResult:
        """Create or replace Budget masters (budgets.py); Tally's counts, or a ``ConnectorError``."""
        try:
            body = build_budget_import(self.company, budgets)
        except VoucherRefused as exc:
            raise PermanentError(exc.code, exc.message) from exc
        try:
            result = parse_import_response(await self._post(body))
        except ResponseUnreadable as exc:
            raise NeedsAttentionError("unreadable_answer", str(exc)) from exc
        error = classify_import(result)
        if error is not None:
            raise error
        return result

    async def ledgers(self) -> list[LedgerInfo]:
        """The company's ledgers ("List of Accounts")."""
        try:
            body = build_ledger_export(self.company)
        except VoucherRefused as exc:
            raise NeedsAttentionError(exc.code, exc.message) from exc
        answer = await self._post(body)
        try:
            return parse_ledgers(answer)
        except VoucherRefused as exc:
            raise NeedsAttentionError(exc.code, exc.message) from exc
        except ResponseUnreadable as exc:
            raise NeedsAttentionError("unreadable_answer", str(exc)) from exc

    async def _post(self, body: bytes) -> bytes:
        try:
            response = await self._http.post(
                PATH, content=body, headers={"content-type": "text/xml; charset=utf-8"}
            )
        except httpx.TimeoutException as exc:
            raise RetryableError("timeout", "Tally did not answer in time") from exc
        except httpx.ConnectError as exc:
            raise RetryableError("connect_error", "could not connect to Tally") from exc
        except httpx.TransportError as exc:
            raise RetryableError("transport_error", f"Tally: {type(exc).__name__}") from exc
        if response.is_redirect or 300 <= response.status_code < 400:
            raise NeedsAttentionError(
                "redirect_not_followed", f"HTTP {response.status_code} redirect, not followed"
            )
        if response.status_code != 200:
            raise classify_http(response)
        if len(response.content) > MAX_ANSWER:
            raise NeedsAttentionError("answer_too_large", "Tally's answer is larger than we read")
        return response.content
