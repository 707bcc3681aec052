"""Invoice commands arriving on the ``ingest.invoice.v1`` topic, applied exactly as the API would.

The message is a CloudEvent in binary mode: ``ce_type`` ``ledgerflow.invoice.issue``,
``content-type`` application/json, ``ce_source`` ``/tenants/<tenant id>`` and ``ce_id`` used as the
idempotency key, so re-delivery of the same message creates nothing new. It is signed with one of
the tenant's ingest keys (``engine/security/ingest_keys.py``): anything not provably sent by the
tenant named in ``ce_source`` is rejected as ``unauthenticated`` before its body is even parsed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from pydantic import ValidationError

from engine import telemetry
from engine.application import (
    InvoiceRequest,
    IssueCommand,
    LedgerService,
    ServiceError,
    TenantNotFound,
    ValidationFailed,
)
from engine.errors import InvalidInput
from engine.fields import field_errors, forbidden_character
from engine.security.ingest_keys import (
    KEY_ID_HEADER,
    MAX_KEY_ID_LENGTH,
    SIGNATURE_HEADER,
    SigningKey,
    SigningKeys,
    signature_matches,
)

ISSUE_TYPE = "ledgerflow.invoice.issue"


class IngestRejected(InvalidInput):
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


# Headers the engine reads. Each may appear once: Kafka allows repeated header names, and letting
# the last (or first) one win would let a message carry one ce_source for a reader upstream and
# another for us. Names are compared case-insensitively so that CE_SOURCE cannot shadow ce_source
# for a consumer that is lenient about case.
SINGLE_HEADERS = frozenset({"content-type", "traceparent", KEY_ID_HEADER, SIGNATURE_HEADER})


def _is_single(name: str) -> bool:
    return name.startswith("ce_") or name in SINGLE_HEADERS


def read_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """The message's headers by name; IngestRejected for a repeated header the engine reads."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in headers:
        lowered = key.lower()
        if _is_single(lowered):
            if lowered in seen:
                raise IngestRejected(
                    "duplicate_header", f"header {key!r} appears more than once; each may be sent once"
                )
            seen.add(lowered)
        try:
            found[key] = (value or b"").decode()
        except UnicodeDecodeError as exc:
            raise IngestRejected("bad_header", f"header {key!r} is not UTF-8") from exc
    return found


def authenticate(
    keys: SigningKeys, headers: dict[str, str], tenant_id: UUID, value: bytes | None
) -> SigningKey:
    """The key that signed the message for ``tenant_id``, or IngestRejected ``unauthenticated``.

    The signature covers ``ce_id`` exactly as sent and the value bytes; the key must be active and
    belong to the tenant named in ``ce_source`` (docs/topics.md, "Signing")."""
    key_id = headers.get(KEY_ID_HEADER, "").strip()
    presented = headers.get(SIGNATURE_HEADER, "")
    if not key_id or not presented:
        raise IngestRejected(
            "unauthenticated",
            f"the message is not signed: headers {KEY_ID_HEADER} and {SIGNATURE_HEADER} are required",
        )
    key = keys.active(key_id) if len(key_id) <= MAX_KEY_ID_LENGTH else None
    if key is None:
        raise IngestRejected(
            "unauthenticated", f"ingest key {key_id[:MAX_KEY_ID_LENGTH]!r} is unknown or revoked"
        )
    if key.tenant_id != tenant_id:
        # The key's own tenant is left out of the message: the DLQ record is not the place to
        # disclose which tenant a key belongs to, and operators can look the key id up.
        raise IngestRejected(
            "unauthenticated", f"ingest key {key_id!r} is not a key of tenant {tenant_id} (ce_source)"
        )
    if not signature_matches(key.secret, headers.get("ce_id", ""), value or b"", presented):
        raise IngestRejected(
            "unauthenticated",
            f"{SIGNATURE_HEADER} does not match: expected v1=<hex HMAC-SHA256 over ce_id, '.' and the"
            f" value> with the secret of key {key_id!r}",
        )
    return key


def tenant_from_source(source: str) -> UUID:
    prefix = "/tenants/"
    if not source.startswith(prefix):
        raise IngestRejected("bad_source", f"ce_source must be /tenants/<tenant id>, got {source!r}")
    try:
        return UUID(source[len(prefix) :])
    except ValueError as exc:
        raise IngestRejected("bad_source", f"ce_source names no valid tenant id: {source!r}") from exc


@dataclass(frozen=True)
class IngestCommand:
    """A message that passed every check of its own: signed by its tenant, well-formed, valid."""

    tenant_id: UUID
    ce_id: str
    command: IssueCommand
    traceparent: str | None
    key_id: str


def read_ingest_message(
    service: LedgerService,
    headers: Iterable[tuple[str, bytes | None]],
    value: bytes | None,
    keys: SigningKeys,
) -> IngestCommand:
    """Authenticate, parse and validate one ingest message; IngestRejected for poison input
    (unauthenticated included)."""
    h = read_headers(headers)
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
    key = authenticate(keys, h, tenant_id, value)
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise IngestRejected("malformed_json", f"body is not valid JSON: {exc}") from exc
    try:
        # The same validation as POST /v1/invoices: by the tenant's country.
        command = service.parse_issue_command(tenant_id, body)
    except TenantNotFound as exc:
        raise IngestRejected("unknown_tenant", f"no tenant {tenant_id}") from exc
    except ValidationError as exc:
        fields = field_errors(exc.errors())
        raise IngestRejected("validation_failed", _fields_message(fields), fields) from exc
    # Stored with the events and sent on as a Kafka header: only a well-formed one is kept.
    traceparent = telemetry.valid_traceparent(h.get("traceparent"))
    return IngestCommand(tenant_id, ce_id, command, traceparent, key.key_id)


def rejection(tenant_id: UUID, exc: ServiceError) -> IngestRejected:
    """The service's refusal of a command as the DLQ records it."""
    if isinstance(exc, TenantNotFound):
        return IngestRejected("unknown_tenant", f"no tenant {tenant_id}")
    if isinstance(exc, ValidationFailed):
        return IngestRejected(exc.code, exc.message, exc.details.get("fields", []))
    return IngestRejected(exc.code, exc.message)


def apply_ingest_message(
    service: LedgerService,
    headers: Iterable[tuple[str, bytes | None]],
    value: bytes | None,
    keys: SigningKeys,
) -> IngestResult:
    """Authenticate, validate and apply one ingest message. Raises IngestRejected for poison
    input (unauthenticated included); lets ``db.DatabaseUnavailable`` through so the caller
    retries instead of dead-lettering."""
    accepted = read_ingest_message(service, headers, value, keys)
    try:
        issued = service.issue_invoice(
            accepted.tenant_id,
            accepted.command,
            idempotency_key=accepted.ce_id,
            source="ingest",
            traceparent=accepted.traceparent,
        )
    except ServiceError as exc:
        raise rejection(accepted.tenant_id, exc) from exc
    keys.used(accepted.key_id)
    return IngestResult(issued.invoice.id, issued.created)


def apply_ingest_batch(
    service: LedgerService,
    messages: Sequence[tuple[Iterable[tuple[str, bytes | None]], bytes | None]],
    keys: SigningKeys,
) -> list[IngestResult | IngestRejected]:
    """Apply a batch of ingest messages (headers, value), in order, with one event-store
    transaction for the accepted ones (``LedgerService.issue_invoices``).

    Each message gets its own outcome, in the order given: its invoice, or the IngestRejected
    that ``apply_ingest_message`` would raise for it alone. ``db.DatabaseUnavailable`` is raised
    for the whole batch; retrying it is safe (idempotent on ce_id)."""
    outcomes: list[IngestResult | IngestRejected | None] = [None] * len(messages)
    accepted: list[tuple[int, IngestCommand]] = []
    for index, (headers, value) in enumerate(messages):
        try:
            accepted.append((index, read_ingest_message(service, headers, value, keys)))
        except IngestRejected as exc:
            outcomes[index] = exc
    issued = service.issue_invoices(
        [
            InvoiceRequest(a.tenant_id, a.command, a.ce_id, source="ingest", traceparent=a.traceparent)
            for _, a in accepted
        ]
    )
    for (index, a), result in zip(accepted, issued, strict=True):
        if isinstance(result, ServiceError):
            outcomes[index] = rejection(a.tenant_id, result)
        else:
            keys.used(a.key_id)
            outcomes[index] = IngestResult(result.invoice.id, result.created)
    done = [outcome for outcome in outcomes if outcome is not None]
    assert len(done) == len(outcomes), "every request gets an outcome"
    return done
