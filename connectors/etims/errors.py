"""eTIMS result codes, classified for the retry policy (connectors.errors.ErrorClass).

Every eTIMS answer carries ``resultCd`` (three characters) and ``resultMsg`` (kenya-etims.md,
"Envelope"). ``000`` is success and ``001`` "no search result" is an empty answer, not a failure.
Every other code is a failure, classified by what fixes it:

* RETRYABLE: the same request can succeed later (communication trouble, KRA busy or failing);
* PERMANENT: the request itself is wrong (parameters, body, method, sales-data order); retrying the
  same bytes cannot help, so the sale goes to the dead-letter queue and onto the invoice;
* NEEDS_ATTENTION: a person must act (headers/device key, a device already installed, a duplicate
  that still has to be verified, a code nobody classified).

There is no official retry table: the split below is the one the reference notes infer from
navariltd/kenya-compliance, Odoo ``l10n_ke_edi_oscu`` and the Linkd-TaxID error catalogue ("retry
with backoff on timeouts, 894, 896, 990, 991-993, 999; do not retry 900-903, 910-913, 921, 922").
``confirmed=False`` marks a meaning we have from one secondary source only.

The exceptions at the bottom are the classified failures callers handle by type::

    ConnectorError (connectors.errors)
     ├── NeedsAttentionError
     │    ├── DuplicateSale            994 (OSCU), 899 (VSCU, unverified): KRA may already hold it
     │    ├── DeviceAlreadyInstalled   902: the one-time CMC key was handed out before
     │    └── SaleLookupUnavailable    the host offers no sales look-up (find_sale)
     └── ... every other code via error_for(): RetryableError / PermanentError / NeedsAttentionError
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.errors import ConnectorError, ErrorClass, NeedsAttentionError

RETRYABLE = ErrorClass.RETRYABLE
PERMANENT = ErrorClass.PERMANENT
NEEDS_ATTENTION = ErrorClass.NEEDS_ATTENTION

SUCCESS = "000"
NO_SEARCH_RESULT = "001"
COMMUNICATION_ERROR = "894"
VSCU_CLIENT_ERROR = "899"
NO_HEADER = "900"
INVALID_DEVICE = "901"
DEVICE_ALREADY_INSTALLED = "902"
ONLY_OSCU_VERIFIABLE = "903"
PARAMETER_ERROR = "910"
DUPLICATE = "994"
UNKNOWN_ERROR = "999"


@dataclass(frozen=True)
class ResultCode:
    code: str
    error_class: ErrorClass | None
    """None for the two answers that are not failures (000, 001)."""
    meaning: str
    action: str
    """What an operator does about it (docs/etims.md's troubleshooting table is built from these)."""
    confirmed: bool = True


CODES: dict[str, ResultCode] = {
    entry.code: entry
    for entry in (
        ResultCode(SUCCESS, None, "It is succeeded", "nothing"),
        ResultCode(NO_SEARCH_RESULT, None, "There is no search result", "nothing: an empty answer"),
        # 891-899: errors the VSCU side reports about the request it was building (kenya-etims.md).
        ResultCode(
            "891", NEEDS_ATTENTION, "Error while creating the request URL", "check base_url", confirmed=False
        ),
        ResultCode(
            "892", NEEDS_ATTENTION, "Error while creating the request header", "check the device", False
        ),
        ResultCode("893", NEEDS_ATTENTION, "Error while creating the request body", "report it", False),
        ResultCode(COMMUNICATION_ERROR, RETRYABLE, "Server communication error", "none: retried"),
        ResultCode("895", NEEDS_ATTENTION, "Request method error", "report it", confirmed=False),
        ResultCode("896", RETRYABLE, "Request status error", "none: retried", confirmed=False),
        ResultCode("897", NEEDS_ATTENTION, "Client-side error", "report it", confirmed=False),
        ResultCode("898", NEEDS_ATTENTION, "Client-side error", "report it", confirmed=False),
        # VSCU reportedly answers a duplicate with 899; on OSCU it is an unexplained client error.
        ResultCode(
            VSCU_CLIENT_ERROR,
            NEEDS_ATTENTION,
            "Client error (VSCU: reportedly a duplicate)",
            "verify what KRA holds for the invcNo before adopting or resending",
            confirmed=False,
        ),
        ResultCode(
            NO_HEADER,
            NEEDS_ATTENTION,
            "There is no header information",
            "the device key is missing: initialise the device (or restore its key)",
        ),
        ResultCode(
            INVALID_DEVICE,
            NEEDS_ATTENTION,
            "It is not valid device",
            "check tin, bhf_id and device_serial against the KRA portal; re-initialise if the key is stale",
        ),
        ResultCode(
            DEVICE_ALREADY_INSTALLED,
            NEEDS_ATTENTION,
            "This device is installed",
            "the CMC key was issued before and is not stored here: ask KRA to reset the device "
            "(or register a new serial), then initialise again",
        ),
        ResultCode(
            ONLY_OSCU_VERIFIABLE,
            NEEDS_ATTENTION,
            "Only OSCU device can be verified",
            "the device_type does not match the device KRA registered: fix device_type",
        ),
        ResultCode(
            PARAMETER_ERROR, PERMANENT, "Request parameter error", "fix the invoice or item and resend"
        ),
        ResultCode("911", PERMANENT, "There is no request full text", "report it (empty body)"),
        ResultCode("912", PERMANENT, "Request method error", "report it"),
        ResultCode("913", PERMANENT, "Request error", "report it", confirmed=False),
        ResultCode("921", PERMANENT, "Sales data declared cannot be received", "check the sale, then resend"),
        ResultCode(
            "922", PERMANENT, "Sales invoice data can be received after sales data", "send the sale first"
        ),
        ResultCode("990", RETRYABLE, "Maximum number of views exceeded", "none: retried later"),
        ResultCode("991", RETRYABLE, "Error while registering", "none: retried; report if it persists"),
        ResultCode("992", RETRYABLE, "Error while modifying", "none: retried; report if it persists"),
        ResultCode("993", RETRYABLE, "Error while deleting", "none: retried; report if it persists"),
        ResultCode(
            DUPLICATE,
            NEEDS_ATTENTION,
            "Overlapped data (duplicate)",
            "for a sale: KRA already holds this invcNo; it is verified and adopted, never renumbered",
        ),
        ResultCode(
            "995", NEEDS_ATTENTION, "There is no downloaded file", "check what was requested", confirmed=False
        ),
        ResultCode(UNKNOWN_ERROR, RETRYABLE, "Unknown error", "none: retried; report if it persists"),
    )
}


def is_success(result_code: str) -> bool:
    """000 and 001 are answers, not failures."""
    return result_code in (SUCCESS, NO_SEARCH_RESULT)


def classify(result_code: str, message: str = "") -> ErrorClass:
    """The class of a failed eTIMS answer; a code nobody classified needs a person.

    ``message`` is KRA's ``resultMsg``; it is not used to decide (KRA's wording varies between
    hosts), only carried by :func:`error_for`. Raises ``ValueError`` for 000/001, which are not failures.
    """
    known = CODES.get(result_code.strip())
    if known is None:
        return NEEDS_ATTENTION
    if known.error_class is None:
        raise ValueError(f"result code {result_code} is not a failure")
    return known.error_class


def error_for(
    result_code: str,
    message: str,
    *,
    endpoint: str,
    device_type: str,
    details: dict[str, Any] | None = None,
) -> ConnectorError:
    """The exception for a failed answer to ``endpoint``: a typed one where callers act on the type."""
    code = result_code.strip()
    text = f"{endpoint}: {message or CODES.get(code, ResultCode(code, None, 'unknown code', '')).meaning}"
    info = {"provider": "etims", "endpoint": endpoint, "result_code": code, **(details or {})}
    if code == DEVICE_ALREADY_INSTALLED:
        return DeviceAlreadyInstalled(text, details=info)
    if code == DUPLICATE and _is_sale(endpoint):
        return DuplicateSale(code, text, verified_duplicate=True, details=info)
    if code == VSCU_CLIENT_ERROR and device_type == "vscu" and _is_sale(endpoint):
        return DuplicateSale(code, text, verified_duplicate=False, details=info)
    if code not in CODES:
        info["unclassified"] = True
    return ConnectorError.of(classify(code), code, text, details=info)


def _is_sale(endpoint: str) -> bool:
    return endpoint.endswith(("saveTrnsSalesOsdc", "saveSales"))


class DuplicateSale(NeedsAttentionError):
    """KRA refused a sale as a duplicate of one it holds.

    OSCU answers 994 for an ``invcNo`` it already accepted: after a send that timed out, that usually
    means the first send got through (kenya-etims.md). VSCU reportedly answers 899, which is also its
    generic client error, so ``verified_duplicate`` is False there: treat it as "needs verification",
    never as success without a check. Either way the number is never reused for another sale: ask
    ``EtimsClient.find_sale`` what KRA holds, and adopt it.
    """

    def __init__(
        self, code: str, message: str, *, verified_duplicate: bool, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(code, message, details=details)
        self.verified_duplicate = verified_duplicate
        """True for OSCU's 994 (KRA said "duplicate"); False for VSCU's 899 (it may be another error)."""


DEVICE_ALREADY_INSTALLED_MESSAGE = (
    "KRA says this device is already installed (902) and does not hand out its CMC key twice. Unless "
    "the key from the first initialisation is still stored, ask KRA (eTIMS portal service request) to "
    "reset the device serial, or register a new device serial for this branch, then initialise again."
)


class DeviceAlreadyInstalled(NeedsAttentionError):
    """902: the device was initialised before; KRA does not return its CMC key again."""

    operator_message = DEVICE_ALREADY_INSTALLED_MESSAGE

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None) -> None:
        text = (
            f"{message}: {DEVICE_ALREADY_INSTALLED_MESSAGE}" if message else DEVICE_ALREADY_INSTALLED_MESSAGE
        )
        super().__init__(DEVICE_ALREADY_INSTALLED, text, details=details)


class SaleLookupUnavailable(NeedsAttentionError):
    """The host answered the sales look-up with "no such endpoint" (HTTP 404/405, a gateway fault):
    it cannot say what it holds for an invcNo. KRA documents no sales look-up for OSCU; see
    ``EtimsClient.find_sale``."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__("sale_lookup_unavailable", message, details=details)
