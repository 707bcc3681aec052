"""The consolidating accountant's answers -> our error classes (connectors/errors.py).

Its errors use the seed's shape ``{"error": {"code", "message", "details", "timestamp",
"request_id"}}`` with the seed's statuses (section 5.1): 400/413/422 are the payload itself
(permanent: dead-letter it, retrying cannot help), 401/403 are credentials or permissions (a person),
429 and 5xx are retried (honouring Retry-After). A 409 ``duplicate_batch`` or ``duplicate_submission``
is not an error at all: the work was done before (the client turns it into a receipt). Only the
provider's code and our own words travel on; never its message, which may echo what it was sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from connectors.errors import (
    ConnectorError,
    NeedsAttentionError,
    PermanentError,
    RetryableError,
    retry_after_seconds,
)

_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def provider_code(body: Any) -> str | None:
    """The seed-shaped error's code, when it looks like one."""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and _CODE.fullmatch(code) else None


def provider_details(body: Any) -> dict[str, Any]:
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return dict(details) if isinstance(details, dict) else {}


def classify(status: int, body: Any, headers: Mapping[str, str]) -> ConnectorError:
    code = provider_code(body)
    details = {"status": status, "provider_code": code}
    if status == 429 or status >= 500:
        wait = retry_after_seconds(headers.get("retry-after"))
        return RetryableError(
            code or f"http_{status}",
            f"the accountant's API answered {status}",
            retry_after=wait,
            details=details,
        )
    if status in (401, 403):
        return NeedsAttentionError(
            code or f"http_{status}",
            f"the accountant's API refused the credentials or signature ({status}): check the integration",
            details=details,
        )
    if status in (400, 413, 422):
        return PermanentError(
            code or f"http_{status}", f"the accountant's API refused the payload ({status})", details=details
        )
    return NeedsAttentionError(
        code or f"http_{status}", f"unexpected answer {status} from the accountant's API", details=details
    )
