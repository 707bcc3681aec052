"""docs/webhooks.md is what receivers code against: its Python verifier accepts a real delivery (also
during a rotation) and refuses a forged one, and it lists every route of the webhooks API."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from engine.webhook_signing import LedgerEvent, body, new_secret, signature_headers

DOC = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()


def documented_verifier() -> Any:
    (code,) = re.findall(r"```python\n(.*?)```", DOC, re.S)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    return namespace["verify"]


def test_the_documented_python_verifier_accepts_both_secrets_during_a_rotation_and_refuses_forgeries() -> (
    None
):
    verify = documented_verifier()
    new, old = new_secret(), new_secret()
    event = LedgerEvent(
        "e-1",
        "ledgerflow.invoice.issued",
        "/tenants/t",
        "s",
        "2026-12-02T12:00:00Z",
        {
            "total": Decimal("1180.00"),
            "buyer": "Zoë \u2028 Traders",
        },
    )
    raw, _ = body(event, "cloudevents")
    headers = signature_headers("e-1", raw, [new, old], datetime.now(UTC))
    for secret in (new, old):
        assert verify(secret, headers, raw)["data"] == {"total": "1180.00", "buyer": "Zoë \u2028 Traders"}
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), headers, raw)
    with pytest.raises(WebhookVerificationError):
        verify(new, headers, raw.replace(b"1180.00", b"1.00"))
    with pytest.raises(WebhookVerificationError):
        verify(new, {**headers, "webhook-timestamp": "1700000000"}, raw)


def test_the_doc_lists_every_route_of_the_webhooks_api() -> None:
    from engine.api.webhooks import build_router

    async def nothing() -> Any:
        return None

    router = build_router(None, nothing, nothing, lambda: None)  # type: ignore[arg-type,return-value]
    for route in router.routes:
        methods = sorted(getattr(route, "methods", set()))
        documented = getattr(route, "path", "").replace("{endpoint_id}", "{id}")
        assert f"`{methods[0]} {documented}" in DOC, (methods, documented)
