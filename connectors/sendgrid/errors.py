"""SendGrid's answers -> our error classes (connectors/errors.py).

SendGrid publishes no machine error codes: a failed v3 call answers ``{"errors": [{"message", "field",
"help"}]}`` and the status says what kind of failure it is (SendGrid docs, "v3 API errors" and "Mail
Send errors"). So the code is ours, from the status: 400 and 413 are the message itself (permanent);
401 and 403 (a revoked key, a sender identity not verified, a temporary block) need a person; 429 and
5xx are retried, honouring Retry-After, else ``X-RateLimit-Reset`` (epoch seconds). The error text
keeps only the ``field`` names, never a message body: SendGrid echoes what it was sent.
"""

from __future__ import annotations

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


def classify(
    status: int, body: Any, headers: Mapping[str, str], *, now: float | None = None
) -> ConnectorError:
    fields = sorted({str(e.get("field")) for e in _errors(body) if isinstance(e, dict) and e.get("field")})
    details = {"status": status, "fields": fields}
    if status == 429 or status >= 500:
        wait = retry_after_seconds(headers.get("retry-after"))
        reset = headers.get("x-ratelimit-reset", "")
        if wait is None and reset.isdigit():
            wait = max(0.0, int(reset) - (time.time() if now is None else now))
        code = "rate_limited" if status == 429 else f"http_{status}"
        return RetryableError(code, f"SendGrid answered {status}", retry_after=wait, details=details)
    if status in (401, 403):
        code = "unauthorized" if status == 401 else "forbidden"
        return NeedsAttentionError(
            code,
            f"SendGrid refused the API key or sender ({status}); check the key and the verified sender",
            details=details,
        )
    if status in (400, 413):
        code = "invalid_message" if status == 400 else "message_too_large"
        return PermanentError(
            code, f"SendGrid refused the message ({status}) on {fields or 'the body'}", details=details
        )
    return NeedsAttentionError(f"http_{status}", f"unexpected answer {status} from SendGrid", details=details)


def _errors(body: Any) -> list[Any]:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return list(body["errors"])
    return []
