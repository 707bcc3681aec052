"""A local consolidating accountant (the seed's Super Accountant portal): its token endpoint, the
daily expense batch and the monthly financial report, with the seed's auth, paise and error shape.

- ``POST /oauth/token`` (form: ``grant_type=client_credentials``, ``client_id``, ``client_secret``)
  -> ``{"access_token", "token_type": "Bearer", "expires_in"}``; tokens lapse on the sandbox clock;
- every other request needs ``Authorization: Bearer <token>`` and ``X-Signature`` = hex
  HMAC-SHA256 of the raw body with the signing secret (401 ``invalid_signature`` otherwise);
- ``POST /api/v1/sync/expenses``: ``{"batch_id", "college_id", "expense_count", "total_amount",
  "expenses": [...]}``, at most 1000 expenses, every amount an integer number of paise (422
  ``invalid_amount`` for ``"5000.00"``, ``5000.5`` or ``true``), counts and totals checked, the batch id
  equal to the ``Idempotency-Key``; 201 ``{"batch_id", "accepted", "status": "received"}``. The same
  batch again is 409 ``duplicate_batch`` (details: ``accepted``); an expense number already received
  in another batch is 409 ``duplicate_expense``;
- ``POST /api/v1/financial-reports/submit``: the seed's body (paise), 201 ``{"submission_id",
  "status": "received", "next_action": "review_by_super_accountant"}``; the same key again is 409
  ``duplicate_submission`` (details: ``submission_id``).

Errors use the seed's shape. ``GET /_sandbox/batches``, ``/_sandbox/reports`` and
``/_sandbox/expenses`` show what was received, ``POST /_sandbox/refusals {"count", "status", "code"}``
refuses the next batch or report requests with a 4xx of the operator's choosing; faults (outage,
5xx, 429, latency, a lost answer after the effect) come from :mod:`connectors.sandbox_kit`.

Run it: ``python -m connectors.super_accountant.sandbox --port 9131``.
"""

from __future__ import annotations

import argparse
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from connectors.sandbox_kit import SANDBOX_PREFIX, SandboxKit
from connectors.super_accountant.client import EXPENSE_SYNC_PATH, REPORT_SUBMIT_PATH, TOKEN_PATH, signature
from connectors.super_accountant.mapping import BATCH_SIZE

EFFECTS = ("batch_received", "report_received")
TOKEN_LIFETIME_S = 3600


@dataclass(frozen=True)
class SandboxAccount:
    client_id: str = "college-accounts-sandbox"
    client_secret: str = "sandbox-client-secret-ledgerflow"
    signing_secret: str = "sandbox-signing-secret-ledgerflow"
    college_id: str = "1"

    def credentials(self) -> dict[str, str]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "signing_secret": self.signing_secret,
            "college_id": self.college_id,
        }


@dataclass
class _State:
    tokens: dict[str, datetime] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    expenses: dict[str, str] = field(default_factory=dict)
    """expense number -> the batch that brought it."""
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    refusals: list[tuple[int, str]] = field(default_factory=list)
    """Answers the next batch or report requests get instead of being judged (operator's choice)."""

    def reset(self) -> None:
        self.refusals.clear()
        self.tokens.clear()
        self.batches.clear()
        self.expenses.clear()
        self.reports.clear()


class Refusals(BaseModel):
    """``POST /_sandbox/refusals``: the next ``count`` batch or report requests are refused."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=0, le=100)
    status: int = Field(default=422, ge=400, le=499)
    code: str = Field(default="invalid_payload", pattern=r"^[a-z][a-z0-9_]{0,63}$")


def _error(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "code": code,
                "message": message,
                "details": details,
                "timestamp": datetime.now(UTC).isoformat(),
                "request_id": f"req_{secrets.token_hex(6)}",
            }
        },
        status_code=status,
    )


def _paise(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _batch_problem(batch: Any, key: str) -> JSONResponse | None:
    if not isinstance(batch, dict) or not isinstance(batch.get("expenses"), list):
        return _error(400, "invalid_payload", "a batch is an object with an expenses list")
    if batch.get("batch_id") != key:
        return _error(422, "batch_id_mismatch", "batch_id must equal the Idempotency-Key")
    expenses = batch["expenses"]
    if not expenses:
        return _error(422, "empty_batch", "a batch holds at least one expense")
    if len(expenses) > BATCH_SIZE:
        return _error(
            413, "batch_too_large", f"a batch holds at most {BATCH_SIZE} expenses", limit=BATCH_SIZE
        )
    for i, e in enumerate(expenses):
        if not isinstance(e, dict) or not isinstance(e.get("expense_number"), str) or not e["expense_number"]:
            return _error(422, "invalid_expense", "every expense has an expense_number", index=i)
        if not _paise(e.get("amount")) or e["amount"] <= 0:
            return _error(422, "invalid_amount", "amount is a positive integer number of paise", index=i)
        if (
            not e.get("category")
            or not e.get("expense_date")
            or e.get("college_id") != batch.get("college_id")
        ):
            return _error(
                422, "invalid_expense", "category, expense_date and the batch's college_id", index=i
            )
    if batch.get("expense_count") != len(expenses):
        return _error(422, "count_mismatch", "expense_count differs from the expenses sent")
    if not _paise(batch.get("total_amount")) or batch["total_amount"] != sum(e["amount"] for e in expenses):
        return _error(422, "total_mismatch", "total_amount differs from the sum of the amounts")
    return None


def _report_problem(report: Any) -> JSONResponse | None:
    if not isinstance(report, dict) or not isinstance(report.get("data"), dict):
        return _error(400, "invalid_payload", "a report is an object with data")
    if report.get("report_type") != "monthly_pl":
        return _error(422, "invalid_report_type", "report_type monthly_pl only")
    period = report.get("period")
    try:
        datetime.strptime(str(period), "%Y-%m")
    except ValueError:
        return _error(422, "invalid_period", "period is YYYY-MM")
    data = report["data"]
    amounts = [data.get("revenue"), data.get("net_income"), data.get("total_expenses")]
    amounts += list((data.get("expenses") or {}).values())
    if not all(_paise(a) for a in amounts) or not isinstance(data.get("expenses"), dict):
        return _error(422, "invalid_amount", "amounts are integer numbers of paise")
    if data["revenue"] - data["total_expenses"] != data["net_income"]:
        return _error(422, "net_income_mismatch", "net_income is revenue less total_expenses")
    if sum(data["expenses"].values()) != data["total_expenses"]:
        return _error(422, "total_mismatch", "total_expenses differs from the sum of the categories")
    return None


def create_app(account: SandboxAccount | None = None) -> FastAPI:
    account = account or SandboxAccount()
    kit = SandboxKit(effects=EFFECTS)
    state = _State()
    kit.on_reset(state.reset)
    app = FastAPI(title="Consolidating accountant sandbox", docs_url=None, redoc_url=None)
    kit.install(app)

    async def authorised(request: Request) -> tuple[bytes, JSONResponse | None]:
        raw = await request.body()
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        expires = state.tokens.get(token)
        if expires is None:
            return raw, _error(401, "invalid_token", "unknown bearer token")
        if kit.clock.now() >= expires:
            return raw, _error(401, "token_expired", "the bearer token has expired")
        given = request.headers.get("x-signature", "")
        if not hmac.compare_digest(given, signature(account.signing_secret, raw)):
            return raw, _error(401, "invalid_signature", "X-Signature does not match the body")
        if state.refusals:
            status, code = state.refusals.pop(0)
            return raw, _error(status, code, "refused on the operator's demand")
        return raw, None

    @app.post(TOKEN_PATH)
    async def token(request: Request) -> JSONResponse:
        # application/x-www-form-urlencoded (RFC 6749 section 4.4.2), parsed from the raw body.
        fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        form = {k: v[0] for k, v in fields.items()}
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        good_id = hmac.compare_digest(str(form.get("client_id", "")), account.client_id)
        good_secret = hmac.compare_digest(str(form.get("client_secret", "")), account.client_secret)
        if not (good_id and good_secret):
            return _error(401, "invalid_client", "client authentication failed")
        issued = secrets.token_urlsafe(24)
        state.tokens[issued] = kit.clock.now() + timedelta(seconds=TOKEN_LIFETIME_S)
        return JSONResponse({"access_token": issued, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME_S})

    @app.post(EXPENSE_SYNC_PATH)
    async def sync_expenses(request: Request) -> JSONResponse:
        raw, refused = await authorised(request)
        if refused is not None:
            return refused
        key = request.headers.get("idempotency-key", "")
        if key in state.batches:
            return _error(
                409,
                "duplicate_batch",
                "this batch was received before",
                accepted=state.batches[key]["accepted"],
            )
        try:
            batch = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "invalid_json", "the body is not JSON")
        problem = _batch_problem(batch, key)
        if problem is not None:
            return problem
        seen = [e["expense_number"] for e in batch["expenses"] if e["expense_number"] in state.expenses]
        numbers = [e["expense_number"] for e in batch["expenses"]]
        if seen or len(set(numbers)) != len(numbers):
            return _error(409, "duplicate_expense", "expenses already received", expense_numbers=seen[:10])
        state.batches[key] = {
            "batch_id": key,
            "accepted": len(numbers),
            "total_amount": batch["total_amount"],
            "college_id": batch["college_id"],
            "received_at": kit.clock.now().isoformat(),
            "expenses": batch["expenses"],
        }
        for number in numbers:
            state.expenses[number] = key
        kit.record_effect("batch_received")
        return JSONResponse(
            {"batch_id": key, "accepted": len(numbers), "status": "received"}, status_code=201
        )

    @app.post(REPORT_SUBMIT_PATH)
    async def submit_report(request: Request) -> JSONResponse:
        raw, refused = await authorised(request)
        if refused is not None:
            return refused
        key = request.headers.get("idempotency-key", "")
        if key in state.reports:
            return _error(
                409,
                "duplicate_submission",
                "this report was received before",
                submission_id=state.reports[key]["submission_id"],
            )
        try:
            report = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "invalid_json", "the body is not JSON")
        problem = _report_problem(report)
        if problem is not None:
            return problem
        submission_id = str(700 + len(state.reports) + 89)
        state.reports[key] = {"submission_id": submission_id, "report": report, "key": key}
        kit.record_effect("report_received")
        return JSONResponse(
            {
                "submission_id": submission_id,
                "status": "received",
                "next_action": "review_by_super_accountant",
            },
            status_code=201,
        )

    @app.post(f"{SANDBOX_PREFIX}/refusals")
    async def refuse(change: Refusals) -> dict[str, Any]:
        state.refusals[:] = [(change.status, change.code)] * change.count
        return {"pending": len(state.refusals)}

    @app.get(f"{SANDBOX_PREFIX}/batches")
    async def batches() -> dict[str, Any]:
        return {"batches": list(state.batches.values())}

    @app.get(f"{SANDBOX_PREFIX}/expenses")
    async def expenses() -> dict[str, Any]:
        return {"expenses": dict(state.expenses)}

    @app.get(f"{SANDBOX_PREFIX}/reports")
    async def reports() -> dict[str, Any]:
        return {"reports": list(state.reports.values())}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Local consolidating accountant sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9131)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
