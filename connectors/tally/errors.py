"""Tally's failures, classified (connectors/errors.py).

Tally answers almost everything with HTTP 200 and says in the XML body what became of the request:

* ``LINEERROR`` / ``ERRORS`` > 0: Tally refused the voucher itself (a ledger that does not exist in the
  company, debits and credits that differ, a company that is not loaded) -> PERMANENT: the job is
  dead-lettered with Tally's own words, for the accountant to fix the ledger map or Tally and redrive;
* ``EXCEPTIONS`` > 0: Tally could not import it for a reason it does not spell out -> NEEDS_ATTENTION;
* an answer that is not Tally's XML (a proxy's error page) -> NEEDS_ATTENTION;
* no answer in time, a refused connection, HTTP 429 or 5xx -> RETRYABLE. Tally Prime answers one
  request at a time and users report ~10 s stalls under load (platform.md): a timeout is the common
  case, and a retry is safe because the REMOTEID makes a second import alter, not duplicate.
"""

from __future__ import annotations

import httpx

from connectors.errors import ConnectorError, ErrorClass, retry_after_seconds
from connectors.tally.vouchers import ImportResult


def classify_http(response: httpx.Response) -> ConnectorError:
    """A non-200 answer."""
    status = response.status_code
    code = f"http_{status}"
    if status == 429 or status >= 500:
        return ConnectorError.of(
            ErrorClass.RETRYABLE,
            code,
            f"Tally answered HTTP {status}",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
    return ConnectorError.of(ErrorClass.NEEDS_ATTENTION, code, f"Tally answered HTTP {status}")


def classify_import(result: ImportResult) -> ConnectorError | None:
    """None when Tally holds the voucher (created, or altered: it knew the REMOTEID)."""
    if result.line_errors or result.count("ERRORS"):
        message = "; ".join(result.line_errors) or "Tally counted an error and gave no LINEERROR"
        return ConnectorError.of(
            ErrorClass.PERMANENT, "tally_rejected", message, details={"line_errors": list(result.line_errors)}
        )
    if result.count("EXCEPTIONS"):
        return ConnectorError.of(
            ErrorClass.NEEDS_ATTENTION, "tally_exception", "Tally counted an exception importing the voucher"
        )
    if result.accepted < 1:
        return ConnectorError.of(
            ErrorClass.NEEDS_ATTENTION,
            "tally_not_imported",
            f"Tally neither created nor altered the voucher ({dict(result.counts)})",
        )
    return None
