"""Log lines: the JSON and text formatters, the request and trace context they carry, and redaction."""

from __future__ import annotations

import contextvars
import io
import logging
import sys
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from engine.logs import JsonFormatter, TextFormatter, bind_tenant, chosen_format, log_context, redact

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def record(msg: str, *args: Any, exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("ledgerflow.test", logging.INFO, __file__, 1, msg, args, exc_info)
    made.__dict__.update(extra)
    return made


def json_line(made: logging.LogRecord) -> dict[str, Any]:
    text = JsonFormatter().format(made)
    assert "\n" not in text, "one record must be one line"
    parsed: dict[str, Any] = orjson.loads(text)
    return parsed


def test_a_json_line_has_time_level_logger_and_the_formatted_message() -> None:
    line = json_line(record("relay %s starting after notification %d", "ledger", 42))
    assert line["level"] == "INFO"
    assert line["logger"] == "ledgerflow.test"
    assert line["message"] == "relay ledger starting after notification 42"
    assert line["timestamp"].endswith("+00:00") and "T" in line["timestamp"]
    assert not {"request_id", "tenant_id", "trace_id", "span_id"} & set(line)


def test_request_tenant_and_trace_ids_come_from_the_bound_context() -> None:
    with log_context(request_id="req_1", tenant_id="tenant-7", traceparent=TRACEPARENT):
        line = json_line(record("queued"))
    assert line["request_id"] == "req_1"
    assert line["tenant_id"] == "tenant-7"
    assert (line["trace_id"], line["span_id"]) == (f"{TRACE_ID:032x}", f"{SPAN_ID:016x}")
    assert "request_id" not in json_line(record("after the block"))


def test_the_current_span_gives_the_trace_and_span_ids() -> None:
    span = NonRecordingSpan(SpanContext(TRACE_ID, 0x1111, is_remote=False, trace_flags=TraceFlags(1)))
    with log_context(traceparent=TRACEPARENT), trace.use_span(span):
        line = json_line(record("inside a span"))
    assert (line["trace_id"], line["span_id"]) == (f"{TRACE_ID:032x}", f"{0x1111:016x}")


def test_a_tenant_named_in_a_copied_context_reaches_the_request_it_belongs_to() -> None:
    # FastAPI resolves the authenticating dependency in a worker thread, in a copy of the context.
    with log_context(request_id="req_2"):
        contextvars.copy_context().run(bind_tenant, "tenant-9")
        assert json_line(record("endpoint"))["tenant_id"] == "tenant-9"


def test_inner_blocks_keep_what_they_do_not_rebind() -> None:
    with log_context(request_id="req_3", tenant_id="t"), log_context(traceparent=TRACEPARENT):
        line = json_line(record("nested"))
    assert (line["request_id"], line["tenant_id"]) == ("req_3", "t")


SEALED = "k20260101:" + "A" * 30 + "b+/9" * 6 + "=="


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer lf_1a2b3c4d5e6f_Zm9vYmFyYmF6cXV4", "Zm9vYmFyYmF6cXV4"),
        ("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("retrying with bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("bad key lf_0a1b2c3d4e5f_kP3-x_Qz9LmN0pRsTuVw", "kP3-x_Qz9LmN0pRsTuVw"),
        ("connecting to postgresql://ledgerflow:s3cr3t@127.0.0.1:5432/ledgerflow", "s3cr3t"),
        ("broker kafka://admin:hunter2@broker:9092 down", "hunter2"),
        ("dsn host=db user=lf password=pa55word dbname=x", "pa55word"),
        ('{"username": "u", "password": "p@ss word", "gstin": "29AAGCB7383J1Z4"}', "p@ss word"),
        ("IrpCredentials(client_id='c', client_secret='topsecret-1', username='u')", "topsecret-1"),
        ("{'access_token': 'tok-123', 'expires': 3600}", "tok-123"),
        (f"credentials_sealed={SEALED}", SEALED[12:]),
        (f"stored value {SEALED} could not be opened", SEALED[12:]),
    ],
)
def test_secrets_are_redacted(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned, cleaned
    assert "[redacted]" in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "queued generate_irn for invoice 62642eca-05af-5246-9460-41573509d425",
        "GSTIN 29AAGCB7383J1Z4 state 29 total 1180.00",
        "calling http://127.0.0.1:9101/eivital/v1.04/auth",
        f"trace {TRACEPARENT}",
        "job 9c1f3e4a-8d2b-5e6f-a1b2-c3d4e5f6a7b8:generate_irn dead-lettered after 3 attempt(s)",
        "tokens per second: 12",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_secrets_in_arguments_extras_and_tracebacks_are_redacted() -> None:
    try:
        raise ValueError("could not connect to postgresql://lf:topsecret@db:5432/lf")
    except ValueError:
        failure = sys.exc_info()
    made = record(
        "auth failed for %s",
        "Authorization: Bearer lf_abc123_secretsecretsecret",
        exc_info=failure,
        api_key="lf_abc123_secretsecretsecret",
        base_url="https://user:pw123@gsp.example/api",
        attempt=2,
    )
    line = json_line(made)
    text = orjson.dumps(line).decode()
    for secret in ("secretsecretsecret", "topsecret", "pw123"):
        assert secret not in text, text
    assert line["api_key"] == "[redacted]"
    assert line["base_url"] == "https://user:[redacted]@gsp.example/api"
    assert line["attempt"] == 2
    assert "ValueError" in line["exception"]


def test_the_text_format_is_readable_names_the_request_and_is_redacted_too() -> None:
    with log_context(request_id="req_9"):
        text = TextFormatter().format(record("db at postgresql://lf:topsecret@db/lf is down"))
    assert "INFO    ledgerflow.test: db at postgresql://lf:[redacted]@db/lf is down [req_9]" in text
    assert "topsecret" not in text


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_format_is_json_off_a_terminal_text_on_one_and_the_variable_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LEDGERFLOW_LOG_FORMAT", raising=False)
    assert chosen_format(_Stream(tty=False)) == "json"
    assert chosen_format(_Stream(tty=True)) == "text"
    monkeypatch.setenv("LEDGERFLOW_LOG_FORMAT", "json")
    assert chosen_format(_Stream(tty=True)) == "json"
    monkeypatch.setenv("LEDGERFLOW_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="LEDGERFLOW_LOG_FORMAT must be json or text; got 'xml'"):
        chosen_format(_Stream(tty=True))
