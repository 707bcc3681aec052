"""A local SendGrid: ``POST /v3/mail/send`` and ``GET /v3/scopes`` of the v3 API, recording each mail.

It accepts one API key (``SandboxAccount.api_key``, Bearer), checks a mail the way SendGrid's Mail
Send documents its 400s (at least one personalization, each ``to`` an address, ``from.email``,
``subject``, ``content`` with a value; ``from`` must be the verified sender, else 403), answers 202
with an ``X-Message-Id`` and keeps the mail. Errors use SendGrid's shape ``{"errors": [{"message",
"field", "help"}]}``. ``GET /_sandbox/mails`` lists what was accepted; faults (429 with Retry-After,
5xx, outage, latency) come from :mod:`connectors.sandbox_kit`.

Run it: ``python -m connectors.sendgrid.sandbox --port 9121``.
"""

from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from connectors.sandbox_kit import SANDBOX_PREFIX, SandboxKit
from connectors.sendgrid.client import MAIL_SEND_PATH, SCOPES_PATH

EFFECTS = ("mail_accepted",)


@dataclass(frozen=True)
class SandboxAccount:
    api_key: str = "SG.sandbox-key.ledgerflow-local"
    from_email: str = "alerts@ledgerflow.test"
    scopes: tuple[str, ...] = ("mail.send", "scopes.read")

    def credentials(self) -> dict[str, str]:
        return {"api_key": self.api_key, "from_email": self.from_email}


@dataclass
class _State:
    mails: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.mails.clear()


def _error(status: int, message: str, field_name: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "field": field_name, "help": None}]}, status_code=status
    )


def _problems(mail: Any, account: SandboxAccount) -> tuple[int, str, str | None] | None:
    if not isinstance(mail, dict):
        return 400, "Bad Request", None
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return 400, "You must have at least one personalization.", "personalizations"
    for i, p in enumerate(personalizations):
        to = p.get("to") if isinstance(p, dict) else None
        if not isinstance(to, list) or not to:
            return (
                400,
                "The to array is required for all personalization objects.",
                f"personalizations.{i}.to",
            )
        if any(not isinstance(r, dict) or "@" not in str(r.get("email", "")) for r in to):
            return 400, "Does not contain a valid address.", f"personalizations.{i}.to"
    sender = mail.get("from")
    if not isinstance(sender, dict) or not sender.get("email"):
        return 400, "The from object must be provided for every email send.", "from"
    if not mail.get("subject"):
        return 400, "The subject is required.", "subject"
    content = mail.get("content")
    if (
        not isinstance(content, list)
        or not content
        or not all(isinstance(c, dict) and c.get("value") for c in content)
    ):
        return 400, "Unless a valid template_id is provided, the content parameter is required.", "content"
    if sender["email"] != account.from_email:
        return 403, "The from address does not match a verified Sender Identity.", None
    return None


def create_app(account: SandboxAccount | None = None) -> FastAPI:
    account = account or SandboxAccount()
    kit = SandboxKit(effects=EFFECTS)
    state = _State()
    kit.on_reset(state.reset)
    app = FastAPI(title="SendGrid sandbox (v3 Mail Send)", docs_url=None, redoc_url=None)
    kit.install(app)

    def authorised(request: Request) -> bool:
        return secrets.compare_digest(request.headers.get("authorization", ""), f"Bearer {account.api_key}")

    @app.post(MAIL_SEND_PATH)
    async def mail_send(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "The provided authorization grant is invalid, expired, or revoked")
        try:
            mail = await request.json()
        except ValueError:
            return _error(400, "Bad Request")
        problem = _problems(mail, account)
        if problem is not None:
            return _error(*problem)
        message_id = secrets.token_urlsafe(16)
        state.mails.append(
            {"message_id": message_id, "received_at": kit.clock.now().isoformat(), "mail": mail}
        )
        kit.record_effect("mail_accepted")
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    @app.get(SCOPES_PATH)
    async def scopes(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "The provided authorization grant is invalid, expired, or revoked")
        return JSONResponse({"scopes": list(account.scopes)})

    @app.get(f"{SANDBOX_PREFIX}/mails")
    async def mails() -> dict[str, Any]:
        return {"mails": list(state.mails)}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Local SendGrid v3 Mail Send sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9121)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
