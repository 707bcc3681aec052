"""Logging set-up shared by every process: JSON lines or text, request and trace context, no secrets.

Format: ``LEDGERFLOW_LOG_FORMAT`` = ``json`` or ``text``; unset, a process logs JSON when its stderr
is not a terminal (a log collector reads it) and text when a person watches it. A JSON line carries
``timestamp``, ``level``, ``logger``, ``message`` and, when known, ``request_id``, ``tenant_id``,
``trace_id``, ``span_id``, ``exception`` and any ``extra=`` fields (docs/observability.md).

Context: the API middleware and the stream handlers bind the request id, tenant and trace context
with :func:`log_context`; the trace and span ids come from the current OpenTelemetry span, or from
the bound ``traceparent`` where no span is recorded (telemetry off).

Secrets: every line passes through :func:`redact` after formatting, whatever its source (our code,
a library, an exception's text): bearer tokens, Ledgerflow API keys, sealed credentials, passwords
in URLs and ``password=``-style pairs are replaced by ``[redacted]``.

aiokafka logs an ERROR per reconnect attempt and retries without pause while a broker is down
(thousands of lines a second, seen in the crash tests during a broker restart). The library's
retries are what we want; the flood is not. ``RepeatedMessageFilter`` lets each distinct message
template through once per interval and counts what it held back.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from opentelemetry import trace

from engine.telemetry import ids_of

LogFormat = Literal["json", "text"]
REDACTED = "[redacted]"


# -- context ---------------------------------------------------------------------------------------


@dataclass
class LogContext:
    """What a log line says about the work it was written for."""

    request_id: str | None = None
    tenant_id: str | None = None
    traceparent: str | None = None


_context: ContextVar[LogContext | None] = ContextVar("ledgerflow_log_context", default=None)


@contextmanager
def log_context(
    *, request_id: str | None = None, tenant_id: str | None = None, traceparent: str | None = None
) -> Iterator[LogContext]:
    """Bind fields for every line logged inside the block (fields not given keep their outer values)."""
    outer = _context.get()
    bound = LogContext(
        request_id=request_id or (outer.request_id if outer else None),
        tenant_id=tenant_id or (outer.tenant_id if outer else None),
        traceparent=traceparent or (outer.traceparent if outer else None),
    )
    token = _context.set(bound)
    try:
        yield bound
    finally:
        _context.reset(token)


def bind_tenant(tenant_id: str) -> None:
    """Name the tenant for the rest of the current block.

    Changes the bound context in place rather than setting a new one: FastAPI runs the dependency
    that authenticates the tenant in a worker thread, in a copy of the request's context, and a value
    set there would not reach the endpoint's thread. The object itself is shared by both copies.
    """
    bound = _context.get()
    if bound is not None:
        bound.tenant_id = tenant_id


def current_context() -> LogContext | None:
    return _context.get()


# -- secrets ---------------------------------------------------------------------------------------

_SECRETS = [
    # Authorization headers and bare bearer tokens.
    (re.compile(r"(?i)\b(authorization\s*[:=]\s*)(?:bearer|basic|token)?\s*[^\s,;'\"}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    # Ledgerflow API keys: lf_<key id>_<secret> (engine/security/api_keys.py).
    (re.compile(r"\blf_[A-Za-z0-9]+_[A-Za-z0-9_-]{8,}"), REDACTED),
    # user:password@ in any URL (database_url, broker URLs, provider base URLs).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
    # key=value and "key": "value" pairs whose name says secret (libpq DSNs, JSON dumps, reprs).
    (
        re.compile(
            r"(?i)([\"']?\b(?:password|passwd|pwd|secret|client_secret|app_key|api_key|apikey|"
            r"access_token|auth_token|token|credentials(?:_sealed)?|sek)\b[\"']?\s*[:=]\s*)"
            r"(\"[^\"]*\"|'[^']*'|[^\s,;&)}\]]+)"
        ),
        r"\1" + REDACTED,
    ),
    # Sealed credentials: <key id>:<base64 of nonce + ciphertext> (engine/security/secrets.py).
    (re.compile(r"\b[A-Za-z0-9_-]{1,64}:[A-Za-z0-9+/]{40,}={0,2}"), REDACTED),
]


def redact(text: str) -> str:
    """``text`` with every secret we know the shape of replaced by ``[redacted]``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


_SECRET_FIELDS = re.compile(r"(?i)password|passwd|secret|token|api_?key|authorization|credential|cookie")


# -- formatters ------------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from ``extra=``. uvicorn adds
# ``color_message``, the message again with terminal colour codes.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def _trace_ids() -> tuple[str, str] | None:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
    bound = _context.get()
    return ids_of(bound.traceparent) if bound else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line (orjson), secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        bound = _context.get()
        if bound is not None:
            if bound.request_id:
                line["request_id"] = bound.request_id
            if bound.tenant_id:
                line["tenant_id"] = bound.tenant_id
        ids = _trace_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        for key, value in record.__dict__.items():
            if key in _RECORD_FIELDS or key in line or key.startswith("_"):
                continue
            if _SECRET_FIELDS.search(key):
                line[key] = REDACTED
            elif isinstance(value, str):
                line[key] = redact(value)
            elif value is None or isinstance(value, (bool, int, float)):
                line[key] = value
            else:
                line[key] = redact(repr(value))
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    """The human-readable line, with the request id when there is one, secrets redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        bound = _context.get()
        if bound is not None and bound.request_id:
            first, newline, rest = text.partition("\n")
            text = f"{first} [{bound.request_id}]{newline}{rest}"
        return redact(text)


def chosen_format(stream: Any = None) -> LogFormat:
    """``LEDGERFLOW_LOG_FORMAT`` if set, else text on a terminal and JSON elsewhere."""
    wanted = os.environ.get("LEDGERFLOW_LOG_FORMAT", "").strip().lower()
    if wanted in ("json", "text"):
        return wanted  # type: ignore[return-value]
    if wanted:
        raise ValueError(f"LEDGERFLOW_LOG_FORMAT must be json or text; got {wanted!r}")
    stream = stream or sys.stderr
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


class _LedgerflowHandler(logging.StreamHandler):
    """Marks the handler ``configure`` installed, so that a second call replaces it."""


def configure(level: str = "INFO", fmt: LogFormat | None = None) -> LogFormat:
    """Send every logger's lines to stderr in the chosen format; returns the format. Idempotent."""
    chosen = fmt or chosen_format()
    handler = _LedgerflowHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LedgerflowHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet_kafka_floods()
    return chosen


class RepeatedMessageFilter(logging.Filter):
    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.interval:.0f}s)"
        return True


_kafka_filter = RepeatedMessageFilter()


def quiet_kafka_floods() -> None:
    """Install the repeated-message filter on the Kafka client loggers (whoever set up handlers)."""
    for name in (
        "aiokafka",
        "aiokafka.conn",
        "aiokafka.producer.sender",
        "aiokafka.consumer.fetcher",
        "aiokafka.cluster",
        "aiokafka.consumer.group_coordinator",
        "kafka",
    ):
        logger = logging.getLogger(name)
        if _kafka_filter not in logger.filters:
            logger.addFilter(_kafka_filter)
        if name == "aiokafka":
            logger.setLevel(logging.WARNING)
