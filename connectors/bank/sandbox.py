"""A local bank: the contract of :mod:`connectors.bank.client` (seed 002, 2.1 and 2.2).

* One remitter account per API key (:class:`SandboxAccount`), with a balance in paise and a daily
  limit. An initiate is refused with the seed's codes when they are true (``insufficient_funds``
  when the balance is short, ``daily_limit_exceeded`` past the day's limit, ``invalid_account`` for
  a beneficiary account in :attr:`SandboxAccount.invalid_beneficiaries`) and on demand: ``POST
  /_bank/refusals {"codes": [...]}`` queues codes the next initiates answer with (``bank_offline``
  included), ``POST /_bank/failures {"codes": [...]}`` makes the next accepted payments fail later.
* Idempotency on ``X-Request-ID``: a key the bank accepted always answers the same payment (a
  refused initiate binds no key). The same key with another body is a 409. Each payment made counts
  as the effect ``payout_initiated`` (``GET /_sandbox/stats``): the figure a never-pays-twice test reads.
* A payment is ``processing`` until ``completes_after_s`` (sandbox clock) have passed, then completed
  with a UTR and charges, the debit (amount + charges) appearing on the account's statement; or
  failed with its queued code, the amount never leaving.
* Statements in pages of ``page_size`` with opening and closing balances; ``POST /_bank/credits``
  adds incoming lines. ``GET /_bank/callbacks`` lists the signed payment-status callbacks the bank
  would have sent (body and ``X-Signature`` under the account's webhook secret).

Faults, counters and the settable clock come from :mod:`connectors.sandbox_kit`. Run it:
``python -m connectors.bank.sandbox --port 9107``.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from connectors.bank import errors
from connectors.bank.client import BALANCE_PATH, STATEMENTS_PATH
from connectors.bank.webhook import sign
from connectors.sandbox_kit import SandboxKit
from engine.domain.payout import ACCOUNT_NUMBER, IFSC

EFFECTS = ("payout_initiated",)
CHARGES_PAISE = {"NEFT": 500, "RTGS": 2500, "IMPS": 1000}
"""Illustrative per-transfer charges (the seed's example charges 500 paise on a NEFT payment)."""


@dataclass(frozen=True)
class SandboxAccount:
    api_key: str = "bank-api-key"
    account_number: str = "9876543210"
    ifsc: str = "ICIC0005678"
    webhook_secret: str = "bank-webhook-secret"
    opening_paise: int = 10_000_000_00
    daily_limit_paise: int = 5_000_000_00
    invalid_beneficiaries: tuple[str, ...] = ("000000000000",)

    def credentials(self) -> dict[str, str]:
        return {
            "api_key": self.api_key,
            "account_number": self.account_number,
            "ifsc": self.ifsc,
            "webhook_secret": self.webhook_secret,
        }


@dataclass
class _Payment:
    payment_id: str
    key: str
    body_hash: str
    mode: str
    amount: int
    reference: str
    accepted_at: datetime
    fail_with: str | None
    charges: int
    utr: str
    settled: bool = False


@dataclass
class _Line:
    day: date
    description: str
    ref: str | None
    amount: int  # signed paise


@dataclass
class _State:
    balance: int = 0
    opening: int = 0
    lines: list[_Line] = field(default_factory=list)
    payments: dict[str, _Payment] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    refusals: deque[str] = field(default_factory=deque)
    failures: deque[str] = field(default_factory=deque)
    sent_today: dict[date, int] = field(default_factory=dict)
    callbacks: list[dict[str, str]] = field(default_factory=list)


class Codes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    codes: list[str] = Field(max_length=1000)


class Credit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    date: date
    amount: int = Field(gt=0)
    description: str = Field(max_length=200)
    ref_number: str | None = Field(default=None, max_length=64)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": {}, "timestamp": None, "request_id": None}},
        status_code=status,
    )


REFUSAL_STATUS = {
    errors.BANK_OFFLINE: 503,
    errors.INSUFFICIENT_FUNDS: 422,
    errors.INVALID_ACCOUNT: 422,
    errors.DAILY_LIMIT_EXCEEDED: 422,
}


def create_app(
    *, account: SandboxAccount | None = None, completes_after_s: float = 0.0, page_size: int = 50
) -> FastAPI:
    account = account or SandboxAccount()
    kit = SandboxKit(effects=EFFECTS)
    state = _State()
    settings = {"completes_after_s": completes_after_s}

    def reset() -> None:
        nonlocal state
        state = _State(balance=account.opening_paise, opening=account.opening_paise)

    reset()
    kit.on_reset(reset)
    app = FastAPI(title="Bank sandbox (payouts, statements, balance)", docs_url=None, redoc_url=None)
    kit.install(app)

    def authorised(request: Request) -> bool:
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        return secrets.compare_digest(given.encode(), account.api_key.encode())

    def settle(p: _Payment) -> None:
        """Move a payment to its end once its time has come (lazily, on any read)."""
        if p.settled or (kit.clock.now() - p.accepted_at).total_seconds() < settings["completes_after_s"]:
            return
        p.settled = True
        if p.fail_with is None:
            state.lines.append(
                _Line(kit.clock.now().date(), f"{p.mode}-{p.reference}", p.utr, -(p.amount + p.charges))
            )
        else:
            state.balance += p.amount + p.charges  # the hold is released
        state.callbacks.append(_callback(p))

    def describe(p: _Payment) -> dict[str, Any]:
        settle(p)
        done = p.settled and p.fail_with is None
        return {
            "payment_id": p.payment_id,
            "status": "processing" if not p.settled else ("completed" if done else "failed"),
            "transaction_id": f"TXN{p.payment_id[4:16].upper()}" if done else None,
            "utr_number": p.utr if done else None,
            "completed_at": p.accepted_at.isoformat() if done else None,
            "amount": p.amount,
            "charges": p.charges if done else 0,
            "failure_code": p.fail_with if p.settled else None,
            "failure_reason": p.fail_with if p.settled else None,
        }

    def _callback(p: _Payment) -> dict[str, str]:
        done = p.fail_with is None
        payload = {
            "event": "payment.completed" if done else "payment.failed",
            "payment_id": p.payment_id,
            "reference_number": p.reference,
            "status": "completed" if done else "failed",
            "transaction_id": f"TXN{p.payment_id[4:16].upper()}" if done else None,
            "utr_number": p.utr if done else None,
            "completed_at": p.accepted_at.isoformat() if done else None,
            "charges": p.charges if done else 0,
            "failure_code": p.fail_with,
        }
        body = orjson.dumps(payload).decode()
        return {"body": body, "signature": sign(account.webhook_secret, body.encode())}

    @app.post("/api/v2/payments/{mode}/initiate")
    async def initiate(mode: str, request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, "unauthorized", "missing or invalid API key")
        mode = mode.upper()
        if mode not in CHARGES_PAISE:
            return _error(404, "not_found", f"no payment mode {mode}")
        key = request.headers.get("x-request-id", "")
        if not key or len(key) > 128:
            return _error(400, "missing_request_id", "X-Request-ID is required (at most 128 characters)")
        raw = await request.body()
        body_hash = hashlib.sha256(raw).hexdigest()
        known = state.by_key.get(key)
        if known is not None:
            p = state.payments[known]
            if p.body_hash != body_hash:
                return _error(409, "idempotency_conflict", "X-Request-ID was used for another payment")
            return JSONResponse(
                {**describe(p), "status": "processing" if not p.settled else describe(p)["status"]}, 202
            )
        try:
            body = orjson.loads(raw)
            amount = body["amount"]
            beneficiary = body["beneficiary"]
            remitter = body["remitter"]
            reference = str(body["reference_number"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(
                400, "invalid_request", "amount, beneficiary, remitter and reference_number are required"
            )
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return _error(400, "invalid_amount", "amount is a positive integer in paise")
        if remitter.get("account_number") != account.account_number:
            return _error(403, "forbidden", "the remitter account is not this API key's")
        if not ACCOUNT_NUMBER.match(str(beneficiary.get("account_number", ""))) or not IFSC.match(
            str(beneficiary.get("ifsc", ""))
        ):
            return _error(422, errors.INVALID_ACCOUNT, "Beneficiary account invalid")
        code = state.refusals.popleft() if state.refusals else None
        today = kit.clock.now().date()
        charges = CHARGES_PAISE[mode]
        if code is None and beneficiary["account_number"] in account.invalid_beneficiaries:
            code = errors.INVALID_ACCOUNT
        if code is None and state.sent_today.get(today, 0) + amount > account.daily_limit_paise:
            code = errors.DAILY_LIMIT_EXCEEDED
        if code is None and state.balance < amount + charges:
            code = errors.INSUFFICIENT_FUNDS
        if code is not None:
            return _error(REFUSAL_STATUS.get(code, 422), code, code.replace("_", " "))
        payment_id = f"pay_{secrets.token_hex(8)}"
        p = _Payment(
            payment_id=payment_id,
            key=key,
            body_hash=body_hash,
            mode=mode,
            amount=amount,
            reference=reference,
            accepted_at=kit.clock.now(),
            fail_with=state.failures.popleft() if state.failures else None,
            charges=charges,
            utr=f"{account.ifsc[:4]}{today:%Y%m%d}{secrets.randbelow(10**8):08d}",
        )
        state.payments[payment_id] = p
        state.by_key[key] = payment_id
        state.balance -= amount + charges  # held until it completes or fails
        state.sent_today[today] = state.sent_today.get(today, 0) + amount
        kit.record_effect("payout_initiated")
        return JSONResponse(
            {
                "payment_id": payment_id,
                "status": "processing",
                "estimated_completion": None,
                "transaction_id": None,
            },
            202,
        )

    @app.get("/api/v2/payments/{payment_id}/status")
    async def status(payment_id: str, request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, "unauthorized", "missing or invalid API key")
        p = state.payments.get(payment_id)
        if p is None:
            return _error(404, "not_found", f"no payment {payment_id}")
        return JSONResponse(describe(p))

    @app.get(STATEMENTS_PATH)
    async def statements(request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, "unauthorized", "missing or invalid API key")
        q = request.query_params
        if q.get("account_number") != account.account_number:
            return _error(404, "not_found", "no such account")
        try:
            start, end = date.fromisoformat(q["from_date"]), date.fromisoformat(q["to_date"])
            page = max(1, int(q.get("page", "1")))
        except (KeyError, ValueError):
            return _error(400, "invalid_request", "from_date and to_date (YYYY-MM-DD), page >= 1")
        for p in list(state.payments.values()):
            settle(p)
        ordered = sorted(enumerate(state.lines), key=lambda il: (il[1].day, il[0]))
        before = sum(line.amount for _, line in ordered if line.day < start)
        period = [line for _, line in ordered if start <= line.day <= end]
        opening = state.opening + before
        closing = opening + sum(line.amount for line in period)
        running = opening
        rows = []
        for line in period:
            running += line.amount
            rows.append(
                {
                    "date": line.day.isoformat(),
                    "description": line.description,
                    "ref_number": line.ref,
                    "debit": -line.amount if line.amount < 0 else 0,
                    "credit": line.amount if line.amount > 0 else 0,
                    "balance": running,
                }
            )
        chunk = rows[(page - 1) * page_size : page * page_size]
        return JSONResponse(
            {
                "account_number": account.account_number,
                "bank_name": "Sandbox Bank",
                "statement_period": {"from": start.isoformat(), "to": end.isoformat()},
                "opening_balance": opening,
                "closing_balance": closing,
                "transactions": chunk,
                "page": page,
                "has_more": page * page_size < len(rows),
            }
        )

    @app.get(BALANCE_PATH)
    async def balance(request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, "unauthorized", "missing or invalid API key")
        if request.query_params.get("account_number") != account.account_number:
            return _error(404, "not_found", "no such account")
        for p in list(state.payments.values()):
            settle(p)
        return JSONResponse(
            {
                "account_number": account.account_number,
                "available_balance": state.balance,
                "as_of": kit.clock.now().isoformat(),
            }
        )

    # -- operator endpoints (not the bank's contract) -------------------------------------------

    @app.post("/_bank/refusals")
    async def queue_refusals(codes: Codes) -> dict[str, int]:
        state.refusals.extend(codes.codes)
        return {"queued": len(state.refusals)}

    @app.post("/_bank/failures")
    async def queue_failures(codes: Codes) -> dict[str, int]:
        state.failures.extend(codes.codes)
        return {"queued": len(state.failures)}

    @app.post("/_bank/credits")
    async def add_credit(credit: Credit) -> dict[str, int]:
        state.lines.append(_Line(credit.date, credit.description, credit.ref_number, credit.amount))
        state.balance += credit.amount
        return {"balance": state.balance}

    @app.post("/_bank/balance")
    async def set_balance(body: dict[str, int]) -> dict[str, int]:
        """Set the available balance (e.g. to 0, for insufficient_funds); the difference is a line."""
        target = int(body["available_balance"])
        diff = target - state.balance
        if diff:
            state.lines.append(_Line(kit.clock.now().date(), "SANDBOX ADJUSTMENT", None, diff))
            state.balance = target
        return {"balance": state.balance}

    @app.get("/_bank/callbacks")
    async def callbacks() -> list[dict[str, str]]:
        for p in list(state.payments.values()):
            settle(p)
        return state.callbacks

    @app.post("/_bank/settings")
    async def change_settings(body: dict[str, float]) -> dict[str, float]:
        if "completes_after_s" in body:
            settings["completes_after_s"] = float(body["completes_after_s"])
        return settings

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Local bank sandbox (payouts, statements, balance)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9107)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
