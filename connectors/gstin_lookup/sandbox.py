"""A local taxpayer search: the contract of :mod:`connectors.gstin_lookup.client`, with taxpayer records.

It issues expiring access tokens for one GSP account (``client_id``/``client_secret``), answers
``GET /commonapi/v1.1/search?action=TP&gstin=`` from :data:`TAXPAYERS` (404 for an unknown GSTIN, 400
for a malformed one or another ``action``), and counts each answered search as the effect
``taxpayer_searched`` (GSPs bill per search). Fault injection, counters and the settable clock come
from :mod:`connectors.sandbox_kit`.

The records cover each status a buyer can be in: active (regular and composition), cancelled,
suspended (the portal's status while a cancellation is pending, Rule 21A of the CGST Rules), and
GSTINs nobody holds (404). An operator can add or change one with ``PUT /_sandbox/taxpayers/{gstin}``
(the record in the search's own field names), e.g. to have a buyer cancelled between two invoices;
``POST /_sandbox/reset`` restores :data:`TAXPAYERS`.

Run it: ``python -m connectors.gstin_lookup.sandbox --port 9102``.
"""

from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from connectors.gstin_lookup.client import AUTH_PATH, SEARCH_PATH
from connectors.sandbox_kit import SANDBOX_PREFIX, SandboxKit
from engine.tax.errors import TaxRuleError
from engine.tax.gstin import check_character, validate_gstin

EFFECTS = ("taxpayer_searched",)


def _gstin(first14: str) -> str:
    return first14 + check_character(first14)


def _record(
    gstin: str, legal: str, trade: str | None, status: str, kind: str, since: str, **more: Any
) -> dict[str, Any]:
    return {
        "gstin": gstin,
        "lgnm": legal,
        "tradeNam": trade,
        "sts": status,
        "dty": kind,
        "rgdt": since,
        "cxdt": more.get("cxdt", ""),
        "stjCd": gstin[:2],
        "ctb": more.get("ctb", "Private Limited Company"),
        "pradr": {"addr": more.get("addr", {}), "ntr": "Wholesale Business"},
    }


def _addr(bno: str, st: str, loc: str, dst: str, stcd: str, pncd: str) -> dict[str, str]:
    return {"bno": bno, "bnm": "", "flno": "", "st": st, "loc": loc, "dst": dst, "stcd": stcd, "pncd": pncd}


ACTIVE = _gstin("29AAGCB7383J1Z")
"""The demo tenant's own GSTIN (ops/supervisor.py DEMO_GSTIN), active."""
BUYER = _gstin("27AAACR5055K1Z")
CANCELLED = _gstin("33AAJFK5678L1Z")
COMPOSITION = _gstin("24AAACC1206D1Z")
SUSPENDED = _gstin("07AABFF4321M1Z")

TAXPAYERS: dict[str, dict[str, Any]] = {
    r["gstin"]: r
    for r in (
        _record(
            ACTIVE,
            "Demo Electricals Private Limited",
            "Demo Electricals",
            "Active",
            "Regular",
            "01/07/2017",
            addr=_addr("14", "Residency Road", "Shanthala Nagar", "Bengaluru Urban", "Karnataka", "560025"),
        ),
        _record(
            BUYER,
            "Reliable Traders Private Limited",
            "Reliable Traders",
            "Active",
            "Regular",
            "15/09/2018",
            addr=_addr("221", "Linking Road", "Bandra West", "Mumbai Suburban", "Maharashtra", "400050"),
        ),
        _record(
            CANCELLED,
            "Kaveri Fabrics",
            None,
            "Cancelled",
            "Regular",
            "03/01/2019",
            cxdt="31/03/2024",
            ctb="Partnership",
        ),
        _record(COMPOSITION, "Chandra Stores", "Chandra Stores", "Active", "Composition", "20/11/2020"),
        _record(
            SUSPENDED,
            "Falcon Freight LLP",
            "Falcon Freight",
            "Suspended",
            "Regular",
            "12/08/2019",
            ctb="Limited Liability Partnership",
        ),
    )
}


@dataclass(frozen=True)
class SandboxAccount:
    """The one GSP account the sandbox knows; any request with other credentials is refused."""

    client_id: str = "lookup-client-id"
    client_secret: str = "lookup-client-secret"

    def credentials(self) -> dict[str, str]:
        """This account's credentials in the shape a tenant stores for the gstin-lookup integration."""
        return {"client_id": self.client_id, "client_secret": self.client_secret}


@dataclass
class _State:
    tokens: dict[str, datetime] = field(default_factory=dict)
    taxpayers: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(TAXPAYERS))

    def reset(self) -> None:
        self.tokens.clear()
        self.taxpayers = dict(TAXPAYERS)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"error_cd": code, "message": message}}, status_code=status)


def create_app(
    *, account: SandboxAccount | None = None, token_ttl: timedelta = timedelta(minutes=60)
) -> FastAPI:
    account = account or SandboxAccount()
    kit = SandboxKit(effects=EFFECTS)
    state = _State()
    kit.on_reset(state.reset)
    app = FastAPI(title="Taxpayer search sandbox (gstin-lookup)", docs_url=None, redoc_url=None)
    kit.install(app)

    @app.post(AUTH_PATH)
    async def authenticate(request: Request) -> JSONResponse:
        client_id = request.headers.get("client_id", "")
        client_secret = request.headers.get("client_secret", "")
        if not (
            secrets.compare_digest(client_id, account.client_id)
            and secrets.compare_digest(client_secret, account.client_secret)
        ):
            return _error(401, "AUTH4033", "Invalid client credentials")
        token = secrets.token_urlsafe(24)
        state.tokens[token] = kit.clock.now() + token_ttl
        return JSONResponse({"access_token": token, "expires_in": int(token_ttl.total_seconds())})

    @app.get(SEARCH_PATH)
    async def search(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        expires = state.tokens.get(token)
        if not auth.startswith("Bearer ") or expires is None or expires <= kit.clock.now():
            return _error(401, "AUTH4037", "Invalid or expired access token")
        if request.query_params.get("action") != "TP":
            return _error(400, "SEARCH001", "action must be TP")
        try:
            gstin = validate_gstin(request.query_params.get("gstin", ""))
        except TaxRuleError as exc:
            return _error(400, "SEARCH002", exc.violations[0].message)
        kit.record_effect("taxpayer_searched")
        found = state.taxpayers.get(gstin)
        if found is None:
            return _error(404, "SEARCH404", "No records found for the provided GSTIN")
        return JSONResponse(found)

    @app.put(f"{SANDBOX_PREFIX}/taxpayers/{{gstin}}")
    async def put_taxpayer(gstin: str, request: Request) -> JSONResponse:
        # Operator only, like the kit's endpoints: set what the search answers for one GSTIN.
        try:
            number = validate_gstin(gstin)
        except TaxRuleError as exc:
            return _error(400, "SANDBOX001", exc.violations[0].message)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not {"lgnm", "sts"} <= body.keys():
            return _error(400, "SANDBOX002", "a taxpayer record needs at least lgnm and sts")
        state.taxpayers[number] = {**_record(number, "", None, "", "Regular", ""), **body, "gstin": number}
        return JSONResponse(state.taxpayers[number])

    @app.delete(f"{SANDBOX_PREFIX}/taxpayers/{{gstin}}")
    async def delete_taxpayer(gstin: str) -> JSONResponse:
        removed = state.taxpayers.pop(gstin.upper(), None)
        return JSONResponse({"removed": removed is not None})

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Local GST taxpayer search sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9102)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
