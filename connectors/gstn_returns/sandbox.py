"""A local GST returns API: the contract of :mod:`connectors.gstn_returns.client`, with GSTN's behaviour.

* Authentication issues expiring tokens for one GSP account acting for one taxpayer (``gstin``).
* RETSAVE validates the JSON's structure (``gstin``/``fp`` matching the headers, else ``RET191106``)
  and answers a ``reference_id`` at once; the save is processed asynchronously: its status is ``IP``
  for ``processing_s`` seconds of the sandbox clock, then ``P`` or, with refused documents, ``PE`` and
  an error report per document. Refused: a B2B recipient GSTIN that fails the check or is in
  ``unknown_ctins`` (``RET_CTIN_INVALID``), an intra-state item (CGST/SGST) with a place of supply
  other than the supplier's state (``RET191114`` invalid POS).
* The same part saved again (same GSTIN, period and content) is the same save: same reference id,
  no second effect (a client retrying after a lost answer does no harm).
* RETFILE needs a save of the period, none still in progress (refused documents were never saved
  into the draft, so they do not block it: Ledgerflow itself files only returns without refused
  documents) and the account's EVC OTP (``RET_OTP_INVALID``); it answers an ARN, and filing a filed
  period answers the same ARN again.

Effects counted: ``return_saved``, ``return_filed``. Faults, counters and the clock come from
:mod:`connectors.sandbox_kit`. Run it: ``python -m connectors.gstn_returns.sandbox --port 9111``.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from connectors.gstn_returns import errors
from connectors.gstn_returns.client import AUTH_PATH, GSTR1_PATH, STATUS_PATH
from connectors.sandbox_kit import SandboxKit
from engine.tax.errors import TaxRuleError
from engine.tax.gstin import check_character, validate_gstin

EFFECTS = ("return_saved", "return_filed")
UNKNOWN_CTIN = "27AAACU9999Q1Z" + check_character("27AAACU9999Q1Z")
"""A well-formed GSTIN the sandbox's network has no registration for: B2B invoices to it are refused."""


@dataclass(frozen=True)
class SandboxAccount:
    """The one GSP account the sandbox knows, acting for the taxpayer ``gstin``."""

    gstin: str = "29AAGCB7383J1Z4"
    client_id: str = "returns-client-id"
    client_secret: str = "returns-client-secret"
    username: str = "demo_taxpayer"
    otp: str = "575757"
    """The EVC OTP the taxpayer "receives" in the sandbox."""

    def credentials(self) -> dict[str, str]:
        """This account's credentials in the shape a tenant stores for the gstn-returns integration."""
        return {"client_id": self.client_id, "client_secret": self.client_secret, "username": self.username}


@dataclass
class _Save:
    reference_id: str
    gstin: str
    period: str
    saved_at: datetime
    report: dict[str, list[dict[str, Any]]]


@dataclass
class _State:
    tokens: dict[str, datetime] = field(default_factory=dict)
    saves: dict[str, _Save] = field(default_factory=dict)
    by_content: dict[tuple[str, str, str], str] = field(default_factory=dict)
    arns: dict[tuple[str, str], str] = field(default_factory=dict)

    def clear(self) -> None:
        self.tokens.clear()
        self.saves.clear()
        self.by_content.clear()
        self.arns.clear()


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"status_cd": "0", "error": {"error_cd": code, "message": message}}, status_code=status
    )


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(str(value or 0))
    except InvalidOperation:
        return Decimal(0)


def _intra_state_items(document: dict[str, Any]) -> bool:
    items = document.get("itms") or []
    return any(
        _amount((i.get("itm_det") or {}).get("camt")) + _amount((i.get("itm_det") or {}).get("samt")) > 0
        for i in items
        if isinstance(i, dict)
    )


def error_report(
    gstin: str, data: dict[str, Any], unknown_ctins: frozenset[str]
) -> dict[str, list[dict[str, Any]]]:
    """The documents GSTN's processing would refuse, in its error report's shape (pure)."""
    report: dict[str, list[dict[str, Any]]] = {}
    supplier_state = gstin[:2]
    for section, key in (("b2b", "inv"), ("cdnr", "nt")):
        for party in data.get(section) or []:
            if not isinstance(party, dict):
                continue
            ctin = str(party.get("ctin", ""))
            try:
                valid = validate_gstin(ctin) == ctin and ctin not in unknown_ctins and ctin != gstin
            except TaxRuleError:
                valid = False
            for document in party.get(key) or []:
                if not isinstance(document, dict):
                    continue
                if not valid:
                    code, message = errors.INVALID_CTIN, "Recipient GSTIN is invalid or not registered"
                elif _intra_state_items(document) and str(document.get("pos")) != supplier_state:
                    code, message = errors.INVALID_POS, "Invalid POS"
                else:
                    continue
                report.setdefault(section, []).append(
                    {"ctin": ctin, key: [document], "error_cd": code, "error_msg": message}
                )
    for place in data.get("b2cl") or []:
        if isinstance(place, dict) and str(place.get("pos")) == supplier_state:
            # B2C large is inter-state by definition: a place of supply in the supplier's state is wrong.
            report.setdefault("b2cl", []).append(
                {**place, "error_cd": errors.INVALID_POS, "error_msg": "Invalid POS"}
            )
    return report


def create_app(
    *,
    account: SandboxAccount | None = None,
    processing_s: float = 1.0,
    unknown_ctins: frozenset[str] = frozenset({UNKNOWN_CTIN}),
    token_ttl: timedelta = timedelta(minutes=60),
) -> FastAPI:
    account = account or SandboxAccount()
    kit = SandboxKit(effects=EFFECTS)
    state = _State()
    kit.on_reset(state.clear)
    app = FastAPI(title="GST returns sandbox (gstn-returns)", docs_url=None, redoc_url=None)
    kit.install(app)

    def authorised(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        expires = state.tokens.get(auth.removeprefix("Bearer "))
        if not auth.startswith("Bearer ") or expires is None or expires <= kit.clock.now():
            return _error(401, "AUTH4037", "Invalid or expired access token")
        if request.headers.get("gstin") != account.gstin:
            return _error(403, "AUTH4034", "The user is not authorised for this GSTIN")
        period = request.headers.get("ret_period", "")
        if len(period) != 6 or not period.isdigit() or not 1 <= int(period[:2]) <= 12:
            return _error(400, errors.JSON_STRUCTURE, "ret_period must be MMYYYY")
        return None

    @app.post(AUTH_PATH)
    async def authenticate(request: Request) -> JSONResponse:
        h = request.headers
        if not (
            secrets.compare_digest(h.get("client_id", ""), account.client_id)
            and secrets.compare_digest(h.get("client_secret", ""), account.client_secret)
            and h.get("username", "") == account.username
            and h.get("gstin", "") == account.gstin
        ):
            return _error(401, "AUTH4033", "Invalid client credentials")
        token = secrets.token_urlsafe(24)
        state.tokens[token] = kit.clock.now() + token_ttl
        return JSONResponse({"access_token": token, "expires_in": int(token_ttl.total_seconds())})

    @app.put(GSTR1_PATH)
    async def save(request: Request) -> JSONResponse:
        refused = authorised(request)
        if refused is not None:
            return refused
        period = request.headers["ret_period"]
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, errors.JSON_STRUCTURE, "Error in JSON structure")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(body, dict) or body.get("action") != "RETSAVE" or not isinstance(data, dict):
            return _error(400, errors.JSON_STRUCTURE, "Error in JSON structure")
        if data.get("gstin") != account.gstin or data.get("fp") != period:
            return _error(
                400, errors.JSON_STRUCTURE, "Error in JSON structure: gstin/fp differ from the request"
            )
        if (account.gstin, period) in state.arns:
            return _error(409, "RET_ALREADY_FILED", "The return for this period has been filed")
        content = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
        key = (account.gstin, period, content)
        reference_id = state.by_content.get(key)
        if reference_id is None:
            reference_id = "LAPN" + secrets.token_hex(6).upper()
            state.by_content[key] = reference_id
            state.saves[reference_id] = _Save(
                reference_id,
                account.gstin,
                period,
                kit.clock.now(),
                error_report(account.gstin, data, unknown_ctins),
            )
            kit.record_effect("return_saved")
        return JSONResponse({"status_cd": "1", "reference_id": reference_id})

    def status_of(saved: _Save) -> str:
        if kit.clock.now() < saved.saved_at + timedelta(seconds=processing_s):
            return errors.IN_PROGRESS_STATUS
        return errors.PROCESSED_WITH_ERRORS if saved.report else errors.PROCESSED

    @app.get(STATUS_PATH)
    async def status(request: Request) -> JSONResponse:
        refused = authorised(request)
        if refused is not None:
            return refused
        if request.query_params.get("action") != "RETSTATUS":
            return _error(400, errors.JSON_STRUCTURE, "action must be RETSTATUS")
        saved = state.saves.get(request.query_params.get("ref_id", ""))
        if saved is None or saved.gstin != account.gstin or saved.period != request.headers["ret_period"]:
            return _error(404, "RET_REF_NOT_FOUND", "No save with this reference id")
        status_cd = status_of(saved)
        answer: dict[str, Any] = {"status_cd": status_cd, "form_typ": "R1", "action": "SAVE"}
        if status_cd == errors.PROCESSED_WITH_ERRORS:
            answer["error_report"] = saved.report
        return JSONResponse(answer)

    @app.post(GSTR1_PATH)
    async def file(request: Request) -> JSONResponse:
        refused = authorised(request)
        if refused is not None:
            return refused
        period = request.headers["ret_period"]
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, errors.JSON_STRUCTURE, "Error in JSON structure")
        if not isinstance(body, dict) or body.get("action") != "RETFILE":
            return _error(400, errors.JSON_STRUCTURE, "Error in JSON structure")
        if not secrets.compare_digest(str(body.get("otp", "")), account.otp):
            return _error(400, errors.INVALID_OTP, "Invalid OTP")
        filed = state.arns.get((account.gstin, period))
        if filed is not None:
            return JSONResponse({"status_cd": "1", "ack_num": filed})
        saves = [s for s in state.saves.values() if s.gstin == account.gstin and s.period == period]
        # Refused documents were never saved into the draft, so they do not block filing what was
        # (the taxpayer files the draft); a save still being processed does.
        if not saves or any(status_of(s) == errors.IN_PROGRESS_STATUS for s in saves):
            return _error(
                400, errors.NOT_PROCESSED, "Nothing saved for the period, or a save is still being processed"
            )
        # ARN shape as GSTN prints it: AA, state code, MMYY of the period, then a serial.
        arn = f"AA{account.gstin[:2]}{period[:2]}{period[4:]}{secrets.randbelow(10**7):07d}"
        state.arns[(account.gstin, period)] = arn
        kit.record_effect("return_filed")
        return JSONResponse({"status_cd": "1", "ack_num": arn})

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Local GST returns API sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9111)
    parser.add_argument("--gstin", default=SandboxAccount().gstin, help="the taxpayer the account acts for")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(account=SandboxAccount(gstin=args.gstin)),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
