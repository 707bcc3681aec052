"""The error vocabulary every connector speaks.

A connector never lets the errors of the libraries underneath (httpx, a provider SDK) escape: it maps them
at its boundary, with ``raise ... from exc``, to one of these. What the caller does next depends only on
:class:`ErrorClass`, the same split Kafka Connect makes between retriable and non-retriable failures,
plus a third class for what neither a retry nor the dead-letter queue can fix (platform.md, "Kafka
Connect error handling": keep "destination down" apart from "bad data")::

    Exception
     └── ConnectorError            error_class, code, message, retry_after, details
          ├── RetryableError       RETRYABLE: try again later (timeouts, 429, 5xx, connection refused)
          │    └── NotYet          the provider answered fine, the work is not finished: look again
          │                        later (a payout still processing); no failure for the breaker
          ├── PermanentError       PERMANENT: the input itself is wrong; retrying cannot help (dead-letter)
          └── NeedsAttentionError  NEEDS_ATTENTION: a person must look (credentials, an unverified
                                   duplicate, an active e-way bill blocking a cancellation)

``code`` is the provider's own error code when there is one (``"2150"``) and ours otherwise
(``"timeout"``, ``"http_503"``), so operators can search for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, ClassVar


class ErrorClass(StrEnum):
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    NEEDS_ATTENTION = "needs_attention"


class ConnectorError(Exception):
    """A failure talking to a provider, classified for the retry policy."""

    default_class: ClassVar[ErrorClass] = ErrorClass.NEEDS_ATTENTION
    """Used when no class is given: an error nobody classified deserves a person's look."""

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        error_class: ErrorClass | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.error_class = error_class if error_class is not None else self.default_class
        self.code = code
        self.message = message or code
        self.retry_after = retry_after
        """Seconds the provider asked us to wait (its Retry-After), or ``None``."""
        self.details: dict[str, Any] = details if details is not None else {}
        super().__init__(f"{code}: {self.message}" if message else code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, error_class={self.error_class.value!r})"

    @staticmethod
    def of(
        error_class: ErrorClass,
        code: str,
        message: str = "",
        *,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> ConnectorError:
        """The subclass matching ``error_class``, for code that classifies first and raises second."""
        kind = _BY_CLASS[error_class]
        return kind(code, message, retry_after=retry_after, details=details)


class RetryableError(ConnectorError):
    default_class = ErrorClass.RETRYABLE


class NotYet(RetryableError):
    """The provider answered, and what the job waits for has not happened yet (a bank payout still
    processing): the job is looked at again on its retry schedule. The call succeeded, so the
    circuit breaker counts it as a success, never as the provider failing."""


class PermanentError(ConnectorError):
    default_class = ErrorClass.PERMANENT


class NeedsAttentionError(ConnectorError):
    default_class = ErrorClass.NEEDS_ATTENTION


_BY_CLASS: dict[ErrorClass, type[ConnectorError]] = {
    ErrorClass.RETRYABLE: RetryableError,
    ErrorClass.PERMANENT: PermanentError,
    ErrorClass.NEEDS_ATTENTION: NeedsAttentionError,
}


REDACTED = "[redacted]"


def without_secrets(error: ConnectorError, secrets: Iterable[str]) -> ConnectorError:
    """``error`` itself, with every occurrence of ``secrets`` in its code, message, details and
    text replaced by ``[redacted]``.

    Why: a provider's error message is worth keeping (it is the provider's answer about our own
    data, and the tenant needs it), but it is remote text, and a server that was sent the
    credentials can put them in it. Everything downstream of a connector (job failure events, DLQ
    headers, logs, spans) records ``message``/``details``, so they are cleaned once, here.
    """
    values = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not values:
        return error

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for secret in values:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(clean(v) for v in value)
        return value

    error.code = clean(error.code)  # a provider's own code is remote text too
    error.message = clean(error.message)
    error.details = clean(error.details)
    error.args = tuple(clean(arg) for arg in error.args)
    return error


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header, or ``None`` when absent or unreadable.

    RFC 9110 section 10.2.3 allows either delay-seconds or an HTTP-date; a date in the past means "now"
    (0 seconds). Garbage is ignored rather than trusted: the caller's own backoff then applies.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; email.utils returns naive for "-0000"
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())
