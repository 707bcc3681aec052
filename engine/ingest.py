"""Invoice commands arriving on the ``ingest.invoice.v1`` topic, applied exactly as the API would.

The message is a CloudEvent in binary mode: ``ce_type`` ``ledgerflow.invoice.issue``,
``content-type`` application/json, ``ce_source`` ``/tenants/<tenant id>`` and ``ce_id`` used as the
idempotency key, so re-delivery of the same message creates nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from pydantic import ValidationError

from engine import telemetry
from engine.application import LedgerService, ServiceError, TenantNotFound, ValidationFailed
from engine.commands import IssueInvoice
from engine.fields import field_errors, forbidden_character

ISSUE_TYPE = "ledgerflow.invoice.issue"


class IngestRejected(Exception):
    """A message that can never succeed as sent: it goes to the DLQ with this code and message."""

    def __init__(self, code: str, message: str, fields: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # The field errors exactly as POST /v1/invoices answers them (path, code, message, ...).
        self.fields = fields or []


def _fields_message(fields: list[dict[str, Any]]) -> str:
    return "; ".join(f"{f['path']} ({f['code']}): {f['message']}" for f in fields)


@dataclass(frozen=True)
class IngestResult:
    invoice_id: UUID
    created: bool


def _header_map(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in headers:
        try:
            found[key] = (value or b"").decode()
        except UnicodeDecodeError as exc:
            raise IngestRejected("bad_header", f"header {key!r} is not UTF-8") from exc
    return found


def tenant_from_source(source: str) -> UUID:
    prefix = "/tenants/"
    if not source.startswith(prefix):
        raise IngestRejected("bad_source", f"ce_source must be /tenants/<tenant id>, got {source!r}")
    try:
        return UUID(source[len(prefix) :])
    except ValueError as exc:
        raise IngestRejected("bad_source", f"ce_source names no valid tenant id: {source!r}") from exc


def apply_ingest_message(
    service: LedgerService, headers: Iterable[tuple[str, bytes | None]], value: bytes | None
) -> IngestResult:
    """Validate and apply one ingest message. Raises IngestRejected for poison input; lets
    ``db.DatabaseUnavailable`` through so the caller retries instead of dead-lettering."""
    h = _header_map(headers)
    if h.get("ce_type") != ISSUE_TYPE:
        raise IngestRejected("unsupported_type", f"ce_type must be {ISSUE_TYPE!r}, got {h.get('ce_type')!r}")
    ce_id = h.get("ce_id", "").strip()
    if not ce_id or len(ce_id) > 200:
        raise IngestRejected("missing_id", "ce_id (the idempotency key) is required, at most 200 characters")
    if forbidden_character(ce_id) is not None:
        # It is stored as the idempotency key, in a text column that cannot hold NUL.
        raise IngestRejected("bad_header", "ce_id may not contain control characters or line breaks")
    content_type = h.get("content-type", "application/json").split(";")[0].strip()
    if content_type != "application/json":
        raise IngestRejected(
            "unsupported_content_type", f"content-type must be application/json, got {content_type!r}"
        )
    tenant_id = tenant_from_source(h.get("ce_source", ""))
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise IngestRejected("malformed_json", f"body is not valid JSON: {exc}") from exc
    try:
        command = IssueInvoice.model_validate(body)
    except ValidationError as exc:
        fields = field_errors(exc.errors())
        raise IngestRejected("validation_failed", _fields_message(fields), fields) from exc
    try:
        issued = service.issue_invoice(
            tenant_id,
            command,
            idempotency_key=ce_id,
            source="ingest",
            # Stored with the events and sent on as a Kafka header: only a well-formed one is kept.
            traceparent=telemetry.valid_traceparent(h.get("traceparent")),
        )
    except TenantNotFound as exc:
        raise IngestRejected("unknown_tenant", f"no tenant {tenant_id}") from exc
    except ValidationFailed as exc:
        fields = exc.details.get("fields", [])
        raise IngestRejected(exc.code, exc.message, fields) from exc
    except ServiceError as exc:
        raise IngestRejected(exc.code, exc.message) from exc
    return IngestResult(issued.invoice.id, issued.created)
