"""IRP error codes, classified for the retry policy (connectors.errors.ErrorClass).

The IRP answers a failure with ``Status 0`` and ``ErrorDetails[{ErrorCode, ErrorMessage}]``
(india-gst.md section 1). Each code below is classified by what fixes it:

* RETRYABLE: the same request can succeed later (the IRP says "try after some time", or our token
  expired and re-authenticating fixes it);
* PERMANENT: the document itself is wrong (schema, arithmetic, GSTIN, time limits); it goes to the
  dead-letter queue, and retrying the same bytes cannot help;
* NEEDS_ATTENTION: a person must act (credentials, an e-way bill blocking a cancellation, a duplicate
  that still has to be verified before it is adopted).

Sources: india-gst.md (2150, 2270, 2230), NIC's published error list as restated by several GSPs and
ERP vendors (2140-2148, 2172, 2176, 2182, 2189, 2193, 1004-1019), and resilient-tech/india-compliance,
which special-cases 1005 (re-authenticate and retry once), 2150, 2148, 2283, 3028, 3029, 4002 and 9999.
``confirmed=False`` marks a code whose meaning we have from one secondary source only.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.errors import ErrorClass

RETRYABLE = ErrorClass.RETRYABLE
PERMANENT = ErrorClass.PERMANENT
NEEDS_ATTENTION = ErrorClass.NEEDS_ATTENTION

INVALID_TOKEN = "1005"
DUPLICATE_IRN = "2150"
IRN_NOT_AVAILABLE = "2148"
CANCEL_WINDOW_PASSED = "2270"
EWAY_BILL_ACTIVE = "2230"
INVOICE_NOT_ACTIVE = "9999"
SCHEMA_INVALID = "2140"
CANCELLED_DOCUMENT_REUSED = "2278"


@dataclass(frozen=True)
class IrpCode:
    code: str
    error_class: ErrorClass
    meaning: str
    confirmed: bool = True


CODES: dict[str, IrpCode] = {
    entry.code: entry
    for entry in (
        # Authentication ("vital") errors.
        IrpCode("1004", NEEDS_ATTENTION, "Header GSTIN is required"),
        IrpCode(INVALID_TOKEN, RETRYABLE, "Invalid token: expired or wrong GSTIN/user; re-authenticate"),
        IrpCode("1006", NEEDS_ATTENTION, "User name is required"),
        IrpCode("1007", NEEDS_ATTENTION, "Authentication failed (malformed auth request)"),
        IrpCode("1008", NEEDS_ATTENTION, "Invalid login credentials"),
        IrpCode("1010", NEEDS_ATTENTION, "Invalid client id / client secret"),
        IrpCode("1011", NEEDS_ATTENTION, "Client id is required"),
        IrpCode("1012", NEEDS_ATTENTION, "Client secret is required"),
        IrpCode("1013", NEEDS_ATTENTION, "Decryption of password failed"),
        IrpCode("1014", NEEDS_ATTENTION, "Inactive user / GSTIN not enabled for e-invoicing"),
        IrpCode("1015", NEEDS_ATTENTION, "Invalid GSTIN for this user"),
        IrpCode("1016", NEEDS_ATTENTION, "Decryption of app key failed"),
        IrpCode("1017", NEEDS_ATTENTION, "Incorrect user id / user does not exist"),
        IrpCode("1018", NEEDS_ATTENTION, "Client id is not mapped to this user"),
        IrpCode("1019", NEEDS_ATTENTION, "Incorrect password"),
        # IRN generation and look-up.
        IrpCode("2139", RETRYABLE, "Unexpected error while creating the invoice; try again", confirmed=False),
        IrpCode(SCHEMA_INVALID, PERMANENT, "Payload is not as per the e-invoice request schema"),
        IrpCode("2141", RETRYABLE, "Unexpected error while cancelling; try again", confirmed=False),
        IrpCode("2142", PERMANENT, "Incomplete request parameters"),
        IrpCode("2143", PERMANENT, "Document does not belong to the user GSTIN"),
        IrpCode("2144", PERMANENT, "Invalid date format (dd/mm/yyyy expected)"),
        IrpCode("2145", PERMANENT, "Invalid IRN"),
        IrpCode("2146", RETRYABLE, "Unable to create IRN, try after some time"),
        IrpCode("2147", RETRYABLE, "Unable to sign invoice, try after some time"),
        IrpCode(IRN_NOT_AVAILABLE, PERMANENT, "Requested IRN data is not available"),
        # Not a failure to give up on: the document is registered. Adopt it once TotInvVal and the buyer
        # GSTIN are verified (india-compliance practice); until then a person may need to look.
        IrpCode(DUPLICATE_IRN, NEEDS_ATTENTION, "Duplicate IRN: already registered; verify and adopt"),
        IrpCode("2172", PERMANENT, "IGST amounts on an intra-state item"),
        IrpCode("2176", PERMANENT, "Invalid HSN code"),
        IrpCode("2182", PERMANENT, "Sum of item taxable values differs from the total taxable value"),
        IrpCode("2189", PERMANENT, "Invalid total invoice value (items do not add up, +/-1 tolerance)"),
        IrpCode("2193", PERMANENT, "AssAmt is not TotAmt - Discount for an item"),
        IrpCode(
            CANCELLED_DOCUMENT_REUSED,
            PERMANENT,
            "IRN already generated and cancelled for this document number; issue a new number",
            confirmed=False,
        ),
        IrpCode("2283", NEEDS_ATTENTION, "IRN details not provided: generated more than 2 days ago"),
        # Cancellation.
        IrpCode(CANCEL_WINDOW_PASSED, PERMANENT, "Cancellation time limit (24 hours) crossed"),
        IrpCode(EWAY_BILL_ACTIVE, NEEDS_ATTENTION, "Cannot cancel: an e-way bill is active for this IRN"),
        IrpCode("4002", NEEDS_ATTENTION, "E-way bill already generated for this IRN", confirmed=False),
        IrpCode(INVOICE_NOT_ACTIVE, PERMANENT, "Invoice is not active (already cancelled)", confirmed=False),
        # GSTIN master.
        IrpCode("3001", PERMANENT, "Requested data is not available"),
        IrpCode("3028", PERMANENT, "GSTIN is invalid / not present", confirmed=False),
        IrpCode("3029", PERMANENT, "GSTIN is not active (inactive or cancelled)"),
        IrpCode("3074", PERMANENT, "GSTIN cancelled; document date after de-registration"),
        IrpCode("3076", PERMANENT, "GSTIN is inactive"),
        IrpCode("3077", PERMANENT, "GSTIN cancelled; document date before registration"),
        IrpCode("3079", PERMANENT, "Document date earlier than the GSTIN's registration date"),
    )
}

_SEVERITY = {RETRYABLE: 0, NEEDS_ATTENTION: 1, PERMANENT: 2}


def classify(status: int | None, codes: list[str]) -> ErrorClass:
    """Classify an IRP answer from its HTTP status (``None``: no answer at all) and error codes.

    Transport trouble wins: no answer, 408, 429 or any 5xx is retryable whatever the body says (platform.md:
    "destination down" is not "bad data"). Otherwise the most severe code decides (PERMANENT over
    NEEDS_ATTENTION over RETRYABLE: one bad field makes the whole document bad). A code not in
    :data:`CODES` needs attention rather than a guess, and so does a failure without any code.
    """
    if status is None or status in (408, 429) or status >= 500:
        return RETRYABLE
    if codes:
        classes = [CODES[code].error_class if code in CODES else NEEDS_ATTENTION for code in codes]
        return max(classes, key=_SEVERITY.__getitem__)
    if status in (400, 404, 413, 415, 422):
        return PERMANENT
    return NEEDS_ATTENTION
