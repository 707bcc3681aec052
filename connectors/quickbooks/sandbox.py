"""A local QuickBooks Online: Intuit's OAuth 2.0 endpoints and the Accounting API subset we call.

Run it: ``python -m connectors.quickbooks.sandbox --port 9140``. It serves, under one base URL:

* ``GET /connect/oauth2`` - the consent page, consenting at once: 302 to the ``redirect_uri`` with
  ``code``, ``state`` and ``realmId``. The code works once, for 10 minutes, with the same redirect URI
  and (if a ``code_challenge`` was sent) the PKCE verifier matching it (S256).
* ``POST /oauth2/v1/tokens/bearer`` - HTTP Basic client authentication; ``authorization_code`` and
  ``refresh_token`` grants. Access tokens last 3600 s by the sandbox clock; every refresh returns a new
  refresh token and retires the one spent (rotation), so a spent or revoked one is ``invalid_grant``.
* ``/v3/company/{realm}/`` ``query``, ``companyinfo``, and creates of ``customer``, ``item``,
  ``invoice`` (also ``operation=void`` and sparse updates with SyncToken) and ``payment``, answering
  faults in Intuit's ``{"Fault": {"Error": [...], "type": ...}}`` shape; a repeated ``requestid`` gets
  the first answer again without a second effect.
* Operator: ``POST /_sandbox/quickbooks/revoke`` (every refresh token stops working),
  ``GET /_sandbox/quickbooks/entities/{entity}``, plus the shared kit (faults, stats, clock).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from connectors.quickbooks.client import encode
from connectors.quickbooks.settings import AUTHORIZE_PATH, SCOPE, TOKEN_PATH
from connectors.sandbox_kit import SandboxKit

ACCESS_TTL = timedelta(seconds=3600)
REFRESH_TTL = timedelta(days=100)
CODE_TTL = timedelta(minutes=10)
EFFECTS = (
    "code_exchanged",
    "token_refreshed",
    "customer_created",
    "item_created",
    "invoice_created",
    "invoice_updated",
    "invoice_voided",
    "payment_created",
)
_QUERY = re.compile(
    r"^select \* from (\w+)(?: where (\w+) = '((?:[^'\\]|\\.)*)')?(?: maxresults (\d+))?$", re.IGNORECASE
)
_ENTITIES = {"customer": "Customer", "item": "Item", "invoice": "Invoice", "payment": "Payment"}


@dataclass(frozen=True)
class SandboxAccount:
    client_id: str = "ABsandboxclientid0001"
    client_secret: str = "sandbox-client-secret-9f1c"
    realm_id: str = "9130350000000001"
    static_access_token: str = "qbo-static-access-token-5d2e8a"
    """Valid until the sandbox resets, for the client-half contract tests that skip the OAuth dance."""


@dataclass
class _Code:
    redirect_uri: str
    challenge: str | None
    expires_at: datetime


@dataclass
class _State:
    codes: dict[str, _Code] = field(default_factory=dict)
    access: dict[str, datetime] = field(default_factory=dict)
    refresh: dict[str, datetime] = field(default_factory=dict)
    entities: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    next_id: int = 100


def _fault(status: int, code: str, message: str, detail: str = "", kind: str = "ValidationFault") -> Response:
    body = {
        "Fault": {"Error": [{"Message": message, "Detail": detail or message, "code": code}], "type": kind}
    }
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _ok(body: dict[str, Any]) -> Response:
    return Response(encode(body), media_type="application/json")


def _oauth_error(status: int, error: str) -> Response:
    return Response(orjson.dumps({"error": error}), status_code=status, media_type="application/json")


def create_app(account: SandboxAccount | None = None) -> FastAPI:
    account = account or SandboxAccount()
    kit = SandboxKit(effects=EFFECTS)
    app = FastAPI(title="QuickBooks Online sandbox")
    state = _State()

    def reset() -> None:
        fresh = _State()
        state.__dict__.update(fresh.__dict__)
        state.access[account.static_access_token] = datetime.max.replace(tzinfo=kit.clock.now().tzinfo)

    kit.on_reset(reset)
    reset()
    kit.install(app)

    def issue_tokens() -> dict[str, Any]:
        now = kit.clock.now()
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        state.access[access] = now + ACCESS_TTL
        state.refresh[refresh] = now + REFRESH_TTL
        return {
            "token_type": "bearer",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": int(ACCESS_TTL.total_seconds()),
            "x_refresh_token_expires_in": int(REFRESH_TTL.total_seconds()),
        }

    @app.get(AUTHORIZE_PATH)
    def authorize(request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != account.client_id or q.get("response_type") != "code":
            return _oauth_error(400, "invalid_request")
        if SCOPE not in (q.get("scope") or "").split():
            return _oauth_error(400, "invalid_scope")
        redirect = q.get("redirect_uri") or ""
        if not redirect.startswith(("http://", "https://")):
            return _oauth_error(400, "invalid_request")
        challenge = q.get("code_challenge")
        if challenge is not None and q.get("code_challenge_method") != "S256":
            return _oauth_error(400, "invalid_request")
        code = "AB11" + secrets.token_urlsafe(24)
        state.codes[code] = _Code(redirect, challenge, kit.clock.now() + CODE_TTL)
        back = {"code": code, "state": q.get("state") or "", "realmId": account.realm_id}
        return RedirectResponse(f"{redirect}?{urlencode(back)}", status_code=302)

    @app.post(TOKEN_PATH)
    async def token(request: Request) -> Response:
        expected = base64.b64encode(f"{account.client_id}:{account.client_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return _oauth_error(401, "invalid_client")
        # application/x-www-form-urlencoded (RFC 6749 section 4.1.3), parsed without a form library.
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        grant = form.get("grant_type")
        now = kit.clock.now()
        if grant == "authorization_code":
            code = state.codes.pop(str(form.get("code") or ""), None)
            if code is None or code.expires_at <= now or code.redirect_uri != form.get("redirect_uri"):
                return _oauth_error(400, "invalid_grant")
            if code.challenge is not None:
                verifier = str(form.get("code_verifier") or "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
                if digest.decode() != code.challenge:
                    return _oauth_error(400, "invalid_grant")
            kit.record_effect("code_exchanged")
            return Response(orjson.dumps(issue_tokens()), media_type="application/json")
        if grant == "refresh_token":
            spent = str(form.get("refresh_token") or "")
            expires = state.refresh.pop(spent, None)
            if expires is None or expires <= now:
                return _oauth_error(400, "invalid_grant")
            kit.record_effect("token_refreshed")
            return Response(orjson.dumps(issue_tokens()), media_type="application/json")
        return _oauth_error(400, "unsupported_grant_type")

    @app.post("/_sandbox/quickbooks/revoke")
    def revoke() -> dict[str, int]:
        revoked = len(state.refresh)
        state.refresh.clear()
        return {"revoked": revoked}

    @app.get("/_sandbox/quickbooks/entities/{entity}")
    def entities(entity: str) -> Response:
        return _ok({"items": list(state.entities.get(_ENTITIES.get(entity, entity), {}).values())})

    def authorised(request: Request, realm: str) -> Response | None:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        expires = state.access.get(token)
        if expires is None or expires <= kit.clock.now():
            return _fault(
                401,
                "3200",
                "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                kind="AUTHENTICATION",
            )
        if realm != account.realm_id:
            return _fault(403, "3100", "ApplicationAuthorizationFailed", kind="AuthorizationFault")
        return None

    @app.get("/v3/company/{realm}/companyinfo/{company}")
    def company_info(realm: str, company: str, request: Request) -> Response:
        refused = authorised(request, realm)
        if refused is not None:
            return refused
        return _ok({"CompanyInfo": {"Id": company, "CompanyName": "Sandbox Company_IN_1", "Country": "IN"}})

    @app.get("/v3/company/{realm}/query")
    def query(realm: str, request: Request) -> Response:
        refused = authorised(request, realm)
        if refused is not None:
            return refused
        match = _QUERY.match((request.query_params.get("query") or "").strip())
        if match is None:
            return _fault(
                400, "4000", "Error parsing query", "QueryParserError: Encountered unexpected input"
            )
        entity, column, raw, limit = match.groups()
        name = _ENTITIES.get(entity.lower())
        if name is None:
            return _fault(400, "4001", "Invalid query", f"unknown entity {entity[:40]}")
        rows = list(state.entities.get(name, {}).values())
        if column is not None:
            value = re.sub(r"\\(.)", r"\1", raw)
            rows = [r for r in rows if str(r.get(column, "")) == value]
        rows = rows[: int(limit)] if limit else rows
        found: dict[str, Any] = {"startPosition": 1, "maxResults": len(rows)}
        if rows:
            found[name] = rows
        return _ok({"QueryResponse": found, "time": kit.clock.now().isoformat()})

    @app.post("/v3/company/{realm}/{entity}")
    async def write(realm: str, entity: str, request: Request) -> Response:
        refused = authorised(request, realm)
        if refused is not None:
            return refused
        name = _ENTITIES.get(entity)
        if name is None:
            return _fault(400, "2010", "Unsupported Operation", f"no entity {entity[:40]}")
        request_id = request.query_params.get("requestid")
        if request_id and request_id in state.answers:
            status, content = state.answers[request_id]
            return Response(content, status_code=status, media_type="application/json")
        try:
            body = _parse(await request.body())
        except ValueError:
            return _fault(400, "2500", "Invalid Request", "Request has invalid or unsupported property")
        answer = _apply(name, body, request.query_params.get("operation"))
        if request_id and answer.status_code < 500:
            state.answers[request_id] = (answer.status_code, bytes(answer.body))
        return answer

    def _apply(name: str, body: dict[str, Any], operation: str | None) -> Response:
        table = state.entities.setdefault(name, {})
        if "Id" in body:
            found = table.get(str(body["Id"]))
            if found is None:
                return _fault(400, "610", "Object Not Found", f"{name} {str(body['Id'])[:20]} not found")
            if str(body.get("SyncToken")) != found["SyncToken"]:
                return _fault(400, "5010", "Stale Object Error", "You and someone else were working on this")
            if operation == "void" and name == "Invoice":
                for line in found.get("Line", []):
                    line["Amount"] = Decimal(0)
                found.update(TotalAmt=Decimal(0), Balance=Decimal(0))
                found["PrivateNote"] = f"{found.get('PrivateNote', '')} Voided".strip()
                effect = "invoice_voided"
            elif body.get("sparse") is True:
                found.update({k: v for k, v in body.items() if k not in ("Id", "SyncToken", "sparse")})
                _totals(found)
                effect = f"{name.lower()}_updated"
            else:
                return _fault(
                    400, "2010", "Unsupported Operation", "full updates are not served; send sparse"
                )
            found["SyncToken"] = str(int(found["SyncToken"]) + 1)
            if effect in EFFECTS:
                kit.record_effect(effect)
            return _ok({name: found, "time": kit.clock.now().isoformat()})
        problem = _validate(name, body)
        if problem is not None:
            return problem
        state.next_id += 1
        created = {**body, "Id": str(state.next_id), "SyncToken": "0"}
        _totals(created)
        if name == "Payment":
            for line in created.get("Line", []):
                for linked in line.get("LinkedTxn", []):
                    invoice = state.entities["Invoice"][linked["TxnId"]]
                    invoice["Balance"] = invoice["Balance"] - Decimal(str(line["Amount"]))
        table[created["Id"]] = created
        kit.record_effect(f"{name.lower()}_created")
        return _ok({name: created, "time": kit.clock.now().isoformat()})

    def _validate(name: str, body: dict[str, Any]) -> Response | None:
        table = state.entities.get(name, {})
        if name in ("Customer", "Item"):
            key = "DisplayName" if name == "Customer" else "Name"
            if not body.get(key):
                return _fault(400, "2020", "Required param missing, need to supply the required value", key)
            if any(r.get(key) == body[key] for r in table.values()):
                return _fault(400, "6240", "Duplicate Name Exists Error", "The name supplied already exists.")
            if name == "Item" and not (body.get("IncomeAccountRef") or {}).get("value"):
                return _fault(400, "2020", "Required param missing", "IncomeAccountRef")
            return None
        customer = (body.get("CustomerRef") or {}).get("value")
        if customer not in state.entities.get("Customer", {}):
            return _fault(400, "2500", "Invalid Reference Id", "Invalid Reference Id : Customer assigned")
        if name == "Invoice":
            if body.get("DocNumber") and any(r.get("DocNumber") == body["DocNumber"] for r in table.values()):
                return _fault(400, "6140", "Duplicate Document Number Error", "Duplicate Document Number")
            items = state.entities.get("Item", {})
            for line in body.get("Line") or []:
                ref = ((line.get("SalesItemLineDetail") or {}).get("ItemRef") or {}).get("value")
                if ref not in items:
                    return _fault(400, "2500", "Invalid Reference Id", "Invalid Reference Id : Item assigned")
        if name == "Payment":
            invoices = state.entities.get("Invoice", {})
            for line in body.get("Line") or []:
                for linked in line.get("LinkedTxn") or []:
                    if linked.get("TxnType") != "Invoice" or linked.get("TxnId") not in invoices:
                        return _fault(400, "2500", "Invalid Reference Id", "LinkedTxn")
        return None

    return app


def _parse(content: bytes) -> dict[str, Any]:
    # Amounts as exact decimals, as QuickBooks keeps them.
    body = json.loads(content, parse_float=Decimal)
    if not isinstance(body, dict):
        raise ValueError("not an object")
    return body


def _totals(entity: dict[str, Any]) -> None:
    if "LinkedTxn" in str(entity.get("Line", "")):
        return  # a payment states its own TotalAmt
    lines = [line for line in entity.get("Line") or [] if line.get("DetailType") == "SalesItemLineDetail"]
    if lines:
        total = sum((Decimal(str(line["Amount"])) for line in lines), Decimal(0))
        paid = Decimal(str(entity.get("TotalAmt", total))) - Decimal(str(entity.get("Balance", total)))
        entity["TotalAmt"] = total
        entity["Balance"] = total - paid


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        description="Local QuickBooks Online sandbox (OAuth 2.0 and Accounting API)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9140)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
