"""SendGrid's answers -> our error classes (connectors/errors.py).

SendGrid publishes no machine error codes: a failed v3 call answers ``{"errors": [{"message", "field",
"help"}]}`` and the status says what kind of failure it is (SendGrid docs, "v3 API errors" and "Mail
Send errors"). So the code is ``http_<status>``, the connectors' shared vocabulary (connectors/
catalogue.py reads it for connection tests): 400 and 413 are the message itself (permanent);
401 and 403 (a revoked key, a sender identity not verified, a temporary block) need a person; 429 and
5xx are retried, honouring Retry-After, else ``X-RateLimit-Reset`` (epoch seconds). The error text
keeps only the ``field`` names, never a message body: SendGrid echoes what it was sent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from connectors.errors import (
    ConnectorError,
    NeedsAttentionError,
    PermanentError,
    RetryableError,
    retry_after_seconds,
)

_FIELD = re.compile(r"[A-Za-z0-9_.\[\]-]{1,64}")


def classify(
    status: int, body: Any, headers: Mapping[str, str], *, now: float | None = None
) -> ConnectorError:
    # Field names only, and only ones shaped like SendGrid's ("personalizations.0.to"): the answer
    # comes from wherever the tenant's base URL points, and anything else in it could be an echo.
    fields = sorted(
        {
            str(e["field"])
            for e in _errors(body)
            if isinstance(e, dict) and isinstance(e.get("field"), str) and _FIELD.fullmatch(e["field"])
        }
    )
    details = {"status": status, "fields": fields}
    if status == 429 or status >= 500:
        wait = retry_after_seconds(headers.get("retry-after"))
        reset = headers.get("x-ratelimit-reset", "")
        if wait is None and reset.isdigit():
            wait = max(0.0, int(reset) - (time.time() if now is None else now))
        return RetryableError(
            f"http_{status}", f"SendGrid answered {status}", retry_after=wait, details=details
        )
    if status in (401, 403):
        return NeedsAttentionError(
            f"http_{status}",
            f"SendGrid refused the API key or sender ({status}); check the key and the verified sender",
            details=details,
        )
    if status in (400, 413):
        return PermanentError(
            f"http_{status}",
            f"SendGrid refused the message ({status}) on {fields or 'the body'}",
            details=details,
        )
    return NeedsAttentionError(f"http_{status}", f"unexpected answer {status} from SendGrid", details=details)


def _errors(body: Any) -> list[Any]:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return list(body["errors"])
    return []
