"""QuickBooks Online's failures, classified (connectors/errors.py).

The Accounting API answers a failure with ``{"Fault": {"Error": [{"Message", "Detail", "code"}],
"type": "ValidationFault" | "AuthenticationFault" | "SystemFault" | ...}}``. Codes seen in Intuit's
error-code reference and SDK issue trackers:

* ``5010`` stale object: the SyncToken sent is not the latest (someone edited it meanwhile) -> retry,
  which re-reads the entity and its SyncToken;
* ``6240`` duplicate name, ``6140`` duplicate document number -> retry, whose look-up finds the
  existing entity (a create whose answer was lost);
* ``610`` object not found (an account or item made inactive) and other validation faults -> the
  tenant's account mapping or data must change: needs a person;
* ``3200``/``401`` authentication -> the handler refreshes once; still refused, a person reconnects;
* HTTP 429 (throttled, with Retry-After) and 5xx -> retry.
"""

from __future__ import annotations

from connectors.errors import ErrorClass

RETRYABLE_CODES = frozenset({"5010", "6240", "6140"})


def classify(status: int, code: str | None, fault_type: str | None) -> ErrorClass:
    if status == 429 or status >= 500 or (fault_type or "") == "SystemFault":
        return ErrorClass.RETRYABLE
    if code in RETRYABLE_CODES:
        return ErrorClass.RETRYABLE
    if status in (401, 403):
        return ErrorClass.NEEDS_ATTENTION
    if status == 400 and code is None:
        return ErrorClass.PERMANENT
    return ErrorClass.NEEDS_ATTENTION
