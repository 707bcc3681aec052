"""Dead-letter records: the original message untouched plus headers that say what went wrong.

Modelled on Kafka Connect's ``errors.deadletterqueue.context.headers.enable``: the original
topic, partition and offset, an error code and message, so an operator can see why a record was
rejected and redrive it once the cause is fixed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

ERROR_HEADERS = (
    "error-code",
    "error-message",
    "original-topic",
    "original-partition",
    "original-offset",
    "failed-at",
)


def dead_letter_headers(
    original: Iterable[tuple[str, bytes | None]],
    *,
    topic: str,
    partition: int,
    offset: int,
    code: str,
    message: str,
    extra: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, bytes]]:
    """The original headers (minus stale error headers from an earlier failure) plus the context."""
    kept = [(k, v or b"") for k, v in original if k not in ERROR_HEADERS]
    context = [
        ("error-code", code),
        # Headers are bytes; cap the message so a huge validation report cannot bloat the record.
        ("error-message", message[:4000]),
        ("original-topic", topic),
        ("original-partition", str(partition)),
        ("original-offset", str(offset)),
        ("failed-at", datetime.now(UTC).isoformat()),
        *extra,
    ]
    return kept + [(k, v.encode()) for k, v in context]
