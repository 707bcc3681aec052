"""A local IRP: the e-invoice contract of :mod:`connectors.gst_irp.client`, faithfully enough to test on.

It authenticates with expiring tokens, validates documents against the NIC v1.1 schema and the IRP's
arithmetic, answers failures IRP-style (``Status 0``, ``ErrorDetails``, ``InfoDtls``) with the codes in
:mod:`connectors.gst_irp.errors`, derives the IRN as the IRP does, signs SignedInvoice and SignedQRCode
with its own RSA key (published at ``GET /_sandbox/public-key``), refuses duplicates (2150 with DUPIRN),
cancellations after 24 hours (2270) or under an active e-way bill (2230), and reuse of a cancelled number.
Fault injection, counters and the settable clock come from :mod:`connectors.sandbox_kit`.

Run it: ``python -m connectors.gst_irp.sandbox --port 9101``. Business errors are answered with HTTP 200,
as NIC does for its own error payloads (as far as we know; GSP wrappers vary).
"""

from __future__ import annotations

import argparse
import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from connectors.gst_irp import errors as codes
from connectors.gst_irp import jws
from connectors.gst_irp.client import (
    AUTH_PATH,
    CANCEL_PATH,
    INVOICE_PATH,
    IRN_BY_DOCUMENT_PATH,
    IRN_PATH,
    IRP_TIME_FORMAT,
    IST,
)
from connectors.gst_irp.mapping import irn_for, schema
from connectors.sandbox_kit import SANDBOX_PREFIX, SandboxKit

EFFECTS = ("irn_generated", "irn_cancelled")
CANCEL_WINDOW = timedelta(hours=24)
_TOLERANCE = Decimal("1")
"""TotInvVal may differ from the sum of its parts by up to one rupee (2189 is raised beyond that)."""


@dataclass(frozen=True)
class SandboxAccount:
    """The one API user the sandbox knows; any request with other credentials is refused."""

    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"
    username: str = "sandbox-user"
    password: str = "sandbox-password"
    gstin: str = "29AAACA1234F1Z5"

    def credentials(self) -> dict[str, str]:
        """This user's credentials in the shape a tenant stores for the gst-irp integration."""
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "username": self.username,
            "password": self.password,
            "gstin": self.gstin,
        }


@dataclass
class _Registered:
    irn: str
    gstin: str
    ack_no: int
    ack_dt: datetime
    signed_invoice: str
    signed_qr_code: str
    status: str = "ACT"
    cancel_date: datetime | None = None
    eway_bill_active: bool = False

    def data(self) -> dict[str, Any]:
        return {
            "AckNo": self.ack_no,
            "AckDt": self.ack_dt.strftime(IRP_TIME_FORMAT),
            "Irn": self.irn,
            "SignedInvoice": self.signed_invoice,
            "SignedQRCode": self.signed_qr_code,
            "Status": self.status,
            "EwbNo": None,
            "EwbDt": None,
            "EwbValidTill": None,
        }


@dataclass
class _State:
    tokens: dict[str, datetime] = field(default_factory=dict)
    documents: dict[str, _Registered] = field(default_factory=dict)
    ack_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(112_010_000_000_001))


class _IrpError(Exception):
    def __init__(self, *errors: tuple[str, str], info: list[dict[str, Any]] | None = None) -> None:
        super().__init__(errors)
        self.errors = errors
        self.info = info


class EwayBill(BaseModel):
    irn: str


def create_app(
    *,
    account: SandboxAccount | None = None,
    token_ttl: timedelta = timedelta(minutes=60),
    key: rsa.RSAPrivateKey | None = None,
) -> FastAPI:
    """The sandbox app. ``token_ttl`` defaults to NIC's sandbox lifetime (60 min; 6 h in production)."""
    account = account or SandboxAccount()
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = jws.thumbprint(key.public_key())[:16]
    kit = SandboxKit(effects=EFFECTS)
    state = _State()

    def reset_state() -> None:
        state.tokens.clear()
        state.documents.clear()
        state.ack_numbers = itertools.count(112_010_000_000_001)

    kit.on_reset(reset_state)
    app = FastAPI(title="IRP sandbox (gst-irp)", docs_url=None, redoc_url=None)
    kit.install(app)
    validator = _validator()

    @app.exception_handler(_IrpError)
    async def irp_error(request: Request, exc: _IrpError) -> JSONResponse:
        return JSONResponse(
            {
                "Status": 0,
                "Data": None,
                "ErrorDetails": [{"ErrorCode": c, "ErrorMessage": m} for c, m in exc.errors],
                "InfoDtls": exc.info,
            }
        )

    def ok(data: dict[str, Any]) -> dict[str, Any]:
        return {"Status": 1, "Data": data, "ErrorDetails": None, "InfoDtls": None}

    def check_client(request: Request) -> None:
        headers = request.headers
        if not headers.get("client_id"):
            raise _IrpError(("1011", "Client Id is required"))
        if not headers.get("client_secret"):
            raise _IrpError(("1012", "Client Secret is required"))
        if (headers["client_id"], headers["client_secret"]) != (account.client_id, account.client_secret):
            raise _IrpError(("1010", "Invalid Client-ID/Client-Secret"))
        if not headers.get("Gstin"):
            raise _IrpError(("1004", "Header GSTIN is required"))
        if headers["Gstin"] != account.gstin:
            raise _IrpError(("1015", "Invalid GSTIN for this user"))

    def check_session(request: Request) -> str:
        check_client(request)
        token = request.headers.get("AuthToken", "")
        expires = state.tokens.get(token)
        if (
            expires is None
            or kit.clock.now() >= expires
            or request.headers.get("user_name") != account.username
        ):
            raise _IrpError((codes.INVALID_TOKEN, "Invalid Token"))
        return account.gstin

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _IrpError((codes.SCHEMA_INVALID, "The request is not a JSON object"))
        return body

    @app.post(AUTH_PATH)
    async def authenticate(request: Request) -> dict[str, Any]:
        check_client(request)
        body = await json_body(request)
        if not body.get("UserName"):
            raise _IrpError(("1006", "User Name is required"))
        if (body.get("UserName"), body.get("Password")) != (account.username, account.password):
            raise _IrpError(("1008", "Invalid login credentials"))
        token = secrets.token_urlsafe(24)
        expires = kit.clock.now() + token_ttl
        state.tokens[token] = expires
        return ok(
            {
                "ClientId": account.client_id,
                "UserName": account.username,
                "AuthToken": token,
                "TokenExpiry": expires.astimezone(IST).strftime(IRP_TIME_FORMAT),
            }
        )

    @app.post(INVOICE_PATH)
    async def generate(request: Request) -> dict[str, Any]:
        gstin = check_session(request)
        document = await json_body(request)
        problems = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
        if problems:
            raise _IrpError(
                *(
                    (codes.SCHEMA_INVALID, f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
                    for e in problems
                )
            )
        if document["SellerDtls"]["Gstin"] != gstin:
            raise _IrpError(("2143", "Invoice does not belong to the user GSTIN"))
        _check_arithmetic(document)
        doc = document["DocDtls"]
        doc_date = datetime.strptime(doc["Dt"], "%d/%m/%Y").date()
        irn = irn_for(gstin, doc_date, doc["Typ"], doc["No"])
        existing = state.documents.get(irn)
        if existing is not None and existing.status == "CNL":
            raise _IrpError(
                (
                    codes.CANCELLED_DOCUMENT_REUSED,
                    "IRN is already generated and cancelled for this document number",
                )
            )
        if existing is not None:
            raise _IrpError(
                (codes.DUPLICATE_IRN, "Duplicate IRN"),
                info=[
                    {
                        "InfCd": "DUPIRN",
                        "Desc": {
                            "AckNo": existing.ack_no,
                            "AckDt": existing.ack_dt.strftime(IRP_TIME_FORMAT),
                            "Irn": existing.irn,
                        },
                    }
                ],
            )
        ack_no = next(state.ack_numbers)
        ack_dt = kit.clock.now().astimezone(IST).replace(microsecond=0)
        ack_text = ack_dt.strftime(IRP_TIME_FORMAT)
        signed_invoice = jws.sign({**document, "Irn": irn, "AckNo": ack_no, "AckDt": ack_text}, key, kid=kid)
        items = document["ItemList"]
        main_item = max(items, key=lambda item: Decimal(str(item["AssAmt"])))
        qr = {
            "SellerGstin": gstin,
            "BuyerGstin": document["BuyerDtls"]["Gstin"],
            "DocNo": doc["No"],
            "DocTyp": doc["Typ"],
            "DocDt": doc["Dt"],
            "TotInvVal": document["ValDtls"]["TotInvVal"],
            "ItemCnt": len(items),
            # The HSN of the item with the highest assessable value stands for the invoice.
            "MainHsnCode": main_item["HsnCd"],
            "Irn": irn,
            "IrnDt": ack_text,
        }
        registered = _Registered(irn, gstin, ack_no, ack_dt, signed_invoice, jws.sign(qr, key, kid=kid))
        state.documents[irn] = registered
        kit.record_effect("irn_generated")
        return ok(registered.data())

    def find(irn: str, gstin: str) -> _Registered:
        registered = state.documents.get(irn)
        if registered is None or registered.gstin != gstin:
            raise _IrpError((codes.IRN_NOT_AVAILABLE, "Requested IRN data is not available"))
        return registered

    @app.get(IRN_BY_DOCUMENT_PATH)
    async def by_document(
        request: Request, doctype: str = "", docnum: str = "", docdate: str = ""
    ) -> dict[str, Any]:
        gstin = check_session(request)
        try:
            doc_date = datetime.strptime(docdate, "%d/%m/%Y").date()
        except ValueError as exc:
            raise _IrpError(("2144", "Invalid date format; dd/mm/yyyy expected")) from exc
        return ok(find(irn_for(gstin, doc_date, doctype, docnum), gstin).data())

    @app.get(IRN_PATH)
    async def by_irn(request: Request, irn: str) -> dict[str, Any]:
        return ok(find(irn, check_session(request)).data())

    @app.post(CANCEL_PATH)
    async def cancel(request: Request) -> dict[str, Any]:
        gstin = check_session(request)
        body = await json_body(request)
        if str(body.get("CnlRsn")) not in {"1", "2", "3", "4"} or len(str(body.get("CnlRem", ""))) > 100:
            raise _IrpError((codes.SCHEMA_INVALID, "CnlRsn must be 1-4 and CnlRem at most 100 characters"))
        registered = find(str(body.get("Irn", "")), gstin)
        now = kit.clock.now()
        if registered.status != "ACT":
            raise _IrpError((codes.INVOICE_NOT_ACTIVE, "Invoice is not active"))
        if now - registered.ack_dt >= CANCEL_WINDOW:
            raise _IrpError(
                (
                    codes.CANCEL_WINDOW_PASSED,
                    "The allowed cancellation time limit is crossed, you cannot cancel the IRN",
                )
            )
        if registered.eway_bill_active:
            raise _IrpError(
                (codes.EWAY_BILL_ACTIVE, "This IRN cannot be cancelled because e-way bill is active")
            )
        registered.status = "CNL"
        registered.cancel_date = now.astimezone(IST).replace(microsecond=0)
        kit.record_effect("irn_cancelled")
        return ok({"Irn": registered.irn, "CancelDate": registered.cancel_date.strftime(IRP_TIME_FORMAT)})

    operator = APIRouter(prefix=SANDBOX_PREFIX, tags=["sandbox"])

    @operator.get("/public-key", response_class=PlainTextResponse)
    def public_key() -> str:
        return (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )

    @operator.post("/eway-bill")
    def eway_bill(request: EwayBill) -> JSONResponse:
        """Mark an e-way bill as active for an IRN, so its cancellation meets 2230."""
        registered = state.documents.get(request.irn)
        if registered is None:
            return JSONResponse({"detail": "unknown IRN"}, status_code=404)
        registered.eway_bill_active = True
        return JSONResponse({"irn": request.irn, "eway_bill_active": True})

    app.include_router(operator)
    return app


def _validator() -> Any:
    from jsonschema import Draft7Validator

    return Draft7Validator(schema())


def _amount(value: Any) -> Decimal:
    return Decimal(str(value if value is not None else 0))


def _check_arithmetic(document: dict[str, Any]) -> None:
    """The IRP's sums (india-gst.md section 1), each failure with the code the IRP uses for it."""
    errors: list[tuple[str, str]] = []
    seller_state = document["SellerDtls"]["Stcd"]
    intra = (
        document["TranDtls"]["SupTyp"] == "B2B"
        and document["BuyerDtls"]["Pos"] == seller_state
        and document["TranDtls"].get("IgstOnIntra") != "Y"
    )
    items = document["ItemList"]
    for item in items:
        where = f"HSN - {item['HsnCd']} and Sl. No - {item['SlNo']}"
        if _amount(item["AssAmt"]) != _amount(item["TotAmt"]) - _amount(item.get("Discount")):
            errors.append(("2193", f"For {where}, AssAmt value should be equal to (TotAmt - Discount)"))
        if intra and _amount(item.get("IgstAmt")) > 0:
            errors.append(("2172", f"For intrastate transaction IGST amounts are not applicable for {where}"))
    ass_val = _amount(document["ValDtls"]["AssVal"])
    if sum((_amount(item["AssAmt"]) for item in items), Decimal(0)) != ass_val:
        errors.append(("2182", "Total taxable value of all items is not equal to the total taxable value"))
    values = document["ValDtls"]
    expected = (
        ass_val
        + sum(
            _amount(values.get(k)) for k in ("CgstVal", "SgstVal", "IgstVal", "CesVal", "StCesVal", "OthChrg")
        )
        - _amount(values.get("Discount"))
        + _amount(values.get("RndOffAmt"))
    )
    if abs(expected - _amount(values["TotInvVal"])) > _TOLERANCE:
        errors.append(("2189", "Invalid total invoice value"))
    if errors:
        raise _IrpError(*errors)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Local IRP (e-invoice) sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--token-ttl-minutes", type=float, default=60.0)
    parser.add_argument("--gstin", default=SandboxAccount.gstin, help="The GSTIN of the sandbox's API user.")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(
            account=SandboxAccount(gstin=args.gstin), token_ttl=timedelta(minutes=args.token_ttl_minutes)
        ),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
