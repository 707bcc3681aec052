"""What a taxpayer-search failure means for the caller: retry, fix the request, or a person looks.

The search answers with HTTP statuses (the GSP wrappers of the GST network's common API do); a
body that carries a provider code we have not classified needs a person, never a silent retry
(connectors/errors.py, "unclassified").
"""

from __future__ import annotations

from connectors.errors import ErrorClass

NOT_FOUND = 404
"""No taxpayer has that GSTIN: an answer, not an error (the client returns None)."""


def classify(status: int) -> ErrorClass:
    """The class of a failed answer with HTTP ``status``."""
    if status in (408, 429) or status >= 500:
        return ErrorClass.RETRYABLE
    if status in (400, 422):
        # The request itself is wrong (a GSTIN the portal will not search): sending it again fails again.
        return ErrorClass.PERMANENT
    # 401/403 (credentials, the GSP account's subscription) and anything unexpected: a person.
    return ErrorClass.NEEDS_ATTENTION
