"""What a GST returns API failure means: retry, fix the return, or a person looks.

The GSP returns API answers failures with an HTTP status and a body ``{"status_cd": "0", "error":
{"error_cd", "message"}}``. Codes starting ``RET`` are about the return itself (its JSON, a period, an
OTP): sending the same again fails again. ``AUTH`` codes are about the credentials: a person fixes
them. 429 and 5xx are the network being busy or away.

Codes named here that GSTN's public GSP documentation shows: ``RET191106`` (error in JSON structure)
and ``RET191114`` (invalid POS, in a save's error report). The others are this connector's own names
for conditions GSTN reports under codes we have not confirmed (``RET_OTP_INVALID``,
``RET_NOT_PROCESSED``, ``RET_CTIN_INVALID``); a real GSP's codes map onto them here when known.
"""

from __future__ import annotations

from connectors.errors import ErrorClass

JSON_STRUCTURE = "RET191106"
INVALID_POS = "RET191114"
INVALID_CTIN = "RET_CTIN_INVALID"
INVALID_OTP = "RET_OTP_INVALID"
NOT_PROCESSED = "RET_NOT_PROCESSED"
"""Filing with nothing saved for the period, or while a save is still being processed."""
IN_PROGRESS = "return_in_progress"
"""Ours: the network is still processing a save (status ``IP``); asked again after a delay."""

# Status codes of a save (RETSTATUS): processed, processed with errors, error, in progress.
PROCESSED = "P"
PROCESSED_WITH_ERRORS = "PE"
ERROR = "ER"
IN_PROGRESS_STATUS = "IP"


def classify(status: int, code: str | None) -> ErrorClass:
    """The class of a failed answer with HTTP ``status`` and the provider's ``code``."""
    if status in (408, 429) or status >= 500:
        return ErrorClass.RETRYABLE
    if status in (401, 403) or (code or "").startswith("AUTH"):
        return ErrorClass.NEEDS_ATTENTION
    if status in (400, 404, 409, 422) and (code or "").startswith("RET"):
        return ErrorClass.PERMANENT
    # Anything unexpected (a 400 without a return code, another status): a person looks.
    return ErrorClass.NEEDS_ATTENTION
