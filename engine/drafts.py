"""Draft invoices and their numbering (issue 13): the service half of ``LedgerService``'s
``create_draft_invoice``, ``update_draft_invoice``, ``discard_draft_invoice``, ``issue_draft_invoice``
and of the invoice number series.

Issuing takes the row of the tenant's counter for the financial year with ``FOR UPDATE`` and holds
it while the invoice and the draft's ``DraftIssued`` are stored (one event-store transaction); the
counter moves only after that store succeeded. So concurrent issues take numbers one after another
and a failed one leaves no gap. A crash between the store and the counter's commit leaves the counter
behind; the next issue then meets the stored number (its invoice id exists), and steps over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, OperationalError

from engine import db
from engine.commands import DraftInvoice
from engine.domain.invoice import Invoice
from engine.domain.invoice_draft import DOCUMENT_FIELDS, DraftNotOpen, DraftStatus, InvoiceDraft, draft_id_for
from engine.invoice_series import Series, SeriesExhausted, check_series
from engine.tax.errors import Violation
from engine.tax.india_gst import financial_year, today_in_india

if TYPE_CHECKING:
    from engine.application import LedgerService

# How long an issue waits for the tenant's counter held by concurrent issues (they are quick: one
# event-store write each); then it answers 409 and may be retried.
COUNTER_WAIT_SECONDS = 30
# How many stored numbers an issue steps over (crash leftovers, numbers given by hand) before it
# gives up: more means something else is writing into the series.
MAX_TAKEN_NUMBERS = 50
# The number build_invoice is given to compute a draft's tax: any valid number; it is never stored.
_PLACEHOLDER_NUMBER = "DRAFT"


@dataclass(frozen=True)
class DraftOutcome:
    draft: InvoiceDraft
    created: bool


@dataclass(frozen=True)
class IssuedDraft:
    invoice: Invoice
    draft: InvoiceDraft
    created: bool  # False: the draft was issued before (a retry), ``invoice`` is that invoice


def _errors() -> Any:
    # The service's error classes live in engine.application, which imports this module lazily.
    from engine import application

    return application


def _document(svc: LedgerService, tenant_id: UUID, command: DraftInvoice, day: Any) -> dict[str, Any]:
    """The draft's invoice fields, computed and checked as an invoice of ``day`` would be."""
    app = _errors()
    tenant = svc._tenant_for_invoicing(tenant_id)
    if tenant.country != "IN":
        raise app.ValidationFailed(
            (Violation("body", "wrong_country", "drafts are Indian GST invoices; this tenant is not Indian"),)
        )
    preview = app.build_invoice(
        tenant,
        command.as_invoice(_PLACEHOLDER_NUMBER, day),
        None,
        command.fingerprint(),
        "draft",
        None,
        today=today_in_india(datetime.now(UTC)),
        max_future_days=svc.settings.max_future_days,
    )
    return {name: getattr(preview, name) for name in DOCUMENT_FIELDS}


def create_draft(
    svc: LedgerService,
    tenant_id: UUID,
    command: DraftInvoice,
    *,
    source: str,
    external_ref: str | None,
    traceparent: str | None,
) -> DraftOutcome:
    if external_ref:
        existing = find_draft(svc, tenant_id, draft_id_for(tenant_id, source, external_ref))
        if existing is not None:
            return DraftOutcome(existing, created=False)
    day = command.date or today_in_india(datetime.now(UTC))
    dated = command.model_copy(update={"date": day})
    document = _document(svc, tenant_id, dated, day)
    draft = InvoiceDraft(
        tenant_id=tenant_id,
        source=source,
        external_ref=external_ref,
        request_hash=command.fingerprint(),
        command=dated.model_dump(mode="json"),
        document=document,
        traceparent=traceparent,
    )
    try:
        svc._save(draft)
    except IntegrityError:
        # The same reference stored concurrently: that draft is the answer.
        return DraftOutcome(get_draft(svc, tenant_id, draft.id), created=False)
    _index(svc, draft)
    return DraftOutcome(draft, created=True)


def update_draft(
    svc: LedgerService, tenant_id: UUID, draft_id: UUID, command: DraftInvoice, traceparent: str | None
) -> InvoiceDraft:
    draft = get_draft(svc, tenant_id, draft_id)
    _check_open(draft, "changed")
    day = command.date or today_in_india(datetime.now(UTC))
    dated = command.model_copy(update={"date": day})
    document = _document(svc, tenant_id, dated, day)
    draft.update(
        request_hash=command.fingerprint(),
        command=dated.model_dump(mode="json"),
        document=document,
        traceparent=traceparent,
    )
    _save_changed(svc, draft)
    return draft


def discard_draft(
    svc: LedgerService, tenant_id: UUID, draft_id: UUID, reason: str | None, traceparent: str | None
) -> InvoiceDraft:
    draft = get_draft(svc, tenant_id, draft_id)
    try:
        changed = draft.discard(reason=reason, traceparent=traceparent)
    except DraftNotOpen as exc:
        raise _errors().InvoiceStateConflict(str(exc), {"status": draft.status}) from exc
    if changed:
        _save_changed(svc, draft)
    return draft


def issue_draft(svc: LedgerService, tenant_id: UUID, draft_id: UUID, traceparent: str | None) -> IssuedDraft:
    app = _errors()
    get_draft(svc, tenant_id, draft_id)  # 404 before any lock
    day = today_in_india(datetime.now(UTC))
    year = financial_year(day)
    with db.transaction(svc.pool) as conn:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{COUNTER_WAIT_SECONDS}s",))
        series = series_of(conn, tenant_id)
        conn.execute(
            "INSERT INTO invoice_series_counters (tenant_id, financial_year, last_number) VALUES (%s, %s, 0)"
            " ON CONFLICT DO NOTHING",
            (tenant_id, year),
        )
        try:
            row = conn.execute(
                "SELECT last_number FROM invoice_series_counters WHERE tenant_id = %s AND financial_year = %s"
                " FOR UPDATE",
                (tenant_id, year),
            ).fetchone()
        except psycopg.errors.LockNotAvailable as exc:
            raise app.InvoiceStateConflict(
                "the invoice series is busy with other issues; retry shortly", {"financial_year": year}
            ) from exc
        assert row is not None
        sequence = int(row["last_number"])  # type: ignore[call-overload]
        # Read under the lock: a concurrent issue of the same draft has committed by now.
        draft = get_draft(svc, tenant_id, draft_id)
        if draft.status == DraftStatus.ISSUED:
            assert draft.issued_invoice is not None
            invoice = svc.get_invoice(tenant_id, UUID(draft.issued_invoice["invoice_id"]))
            return IssuedDraft(invoice, draft, created=False)
        _check_open(draft, "issued")
        command = DraftInvoice.model_validate(draft.command)
        tenant = svc._tenant_for_invoicing(tenant_id)
        for _ in range(MAX_TAKEN_NUMBERS):
            sequence += 1
            try:
                number = series.number(year, sequence)
            except SeriesExhausted as exc:
                raise app.InvoiceStateConflict(
                    f"the series {series.prefix!r} has no number left for {year} within the IRP's 16"
                    " characters: change the prefix or digits (PUT /v1/invoice-series)",
                    {"financial_year": year, "last_number": sequence - 1},
                ) from exc
            issue = command.as_invoice(number, day)
            invoice = app.build_invoice(
                tenant,
                issue,
                None,
                issue.fingerprint(),
                draft.source,
                traceparent,
                today=day,
                max_future_days=svc.settings.max_future_days,
            )
            draft.issue(invoice_id=invoice.id, number=number, financial_year=year, traceparent=traceparent)
            try:
                svc._save(invoice, draft)
            except IntegrityError:
                # Either the number is stored already (a crash before the counter moved, or a
                # number given by hand: step over it, it is used), or the draft changed under us
                # (a PATCH or DELETE between our read and our write: take it as it is now and try
                # the same number again, so no number is lost).
                taken = svc._find_invoice(tenant_id, invoice.id) is not None
                draft = get_draft(svc, tenant_id, draft_id)
                _check_open(draft, "issued")
                command = DraftInvoice.model_validate(draft.command)
                if not taken:
                    sequence -= 1
                continue
            conn.execute(
                "UPDATE invoice_series_counters SET last_number = %s"
                " WHERE tenant_id = %s AND financial_year = %s",
                (sequence, tenant_id, year),
            )
            _index(svc, draft, conn)
            return IssuedDraft(invoice, draft, created=True)
    raise app.InvoiceStateConflict(
        f"{MAX_TAKEN_NUMBERS} numbers of the series after {sequence - MAX_TAKEN_NUMBERS} are taken already",
        {"financial_year": year},
    )


def _check_open(draft: InvoiceDraft, change: str) -> None:
    try:
        draft.check_open(change)
    except DraftNotOpen as exc:
        details: dict[str, Any] = {"status": draft.status}
        if draft.issued_invoice:
            details["invoice_id"] = draft.issued_invoice["invoice_id"]
        raise _errors().InvoiceStateConflict(str(exc), details) from exc


def _save_changed(svc: LedgerService, draft: InvoiceDraft) -> None:
    try:
        svc._save(draft)
    except IntegrityError as exc:
        raise _errors().InvoiceStateConflict(
            "the draft was changed by another request at the same time: retry", {"draft_id": str(draft.id)}
        ) from exc
    _index(svc, draft)


def find_draft(svc: LedgerService, tenant_id: UUID, draft_id: UUID) -> InvoiceDraft | None:
    try:
        draft: object = svc.ledger.repository.get(draft_id)
    except AggregateNotFoundError:
        return None
    except OperationalError as exc:
        raise db.DatabaseUnavailable(str(exc)) from exc
    # Another tenant's draft reads exactly like a missing one: ids must not leak.
    if not isinstance(draft, InvoiceDraft) or draft.tenant_id != tenant_id:
        return None
    return draft


def get_draft(svc: LedgerService, tenant_id: UUID, draft_id: UUID) -> InvoiceDraft:
    draft = find_draft(svc, tenant_id, draft_id)
    if draft is None:
        raise _errors().InvoiceNotFound(f"no draft invoice {draft_id}")
    return draft


def _index(svc: LedgerService, draft: InvoiceDraft, conn: psycopg.Connection[Any] | None = None) -> None:
    """Write the draft's look-up row (newer versions only, so a late writer cannot move it back)."""
    issued = draft.issued_invoice or {}
    params = (
        draft.id,
        draft.tenant_id,
        draft.status,
        draft.source,
        draft.external_ref,
        draft.invoice_date,
        draft.buyer["name"],
        Decimal(draft.totals["total"]),
        issued.get("invoice_id"),
        issued.get("number"),
        draft.version,
    )
    statement = (
        "INSERT INTO invoice_drafts (draft_id, tenant_id, status, source, external_ref, invoice_date,"
        " buyer_name, total, issued_invoice_id, number, version)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (draft_id) DO UPDATE SET status = excluded.status,"
        " invoice_date = excluded.invoice_date,"
        " buyer_name = excluded.buyer_name, total = excluded.total,"
        " issued_invoice_id = excluded.issued_invoice_id, number = excluded.number,"
        " version = excluded.version, updated_at = now()"
        " WHERE invoice_drafts.version < excluded.version"
    )
    if conn is not None:
        conn.execute(statement, params)
        return
    with db.transaction(svc.pool) as own:
        own.execute(statement, params)


def draft_ids(conn: psycopg.Connection[Any], tenant_id: UUID, status: str, limit: int) -> list[UUID]:
    """The ids of the tenant's drafts in ``status``, oldest first (``GET /v1/invoices?status=draft``)."""
    rows = conn.execute(
        "SELECT draft_id FROM invoice_drafts WHERE tenant_id = %s AND status = %s"
        " ORDER BY created_at, draft_id LIMIT %s",
        (tenant_id, status, limit),
    ).fetchall()
    return [UUID(str(r["draft_id"])) for r in rows]


def list_drafts(
    conn: psycopg.Connection[Any], tenant_id: UUID, status: str | None, limit: int
) -> list[dict[str, Any]]:
    clauses = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    if status:
        clauses.append("status = %s")
        params.append(status)
    params.append(limit)
    rows = conn.execute(
        "SELECT draft_id, status, source, external_ref, invoice_date, buyer_name, total, issued_invoice_id,"
        " number, created_at, updated_at FROM invoice_drafts WHERE "
        + " AND ".join(clauses)
        + " ORDER BY created_at, draft_id LIMIT %s",
        params,
    ).fetchall()
    return [
        {
            "id": str(r["draft_id"]),
            "status": r["status"],
            "source": r["source"],
            "external_ref": r["external_ref"],
            "date": r["invoice_date"].isoformat(),
            "buyer_name": r["buyer_name"],
            "total": f"{r['total']:.2f}",
            "invoice_id": str(r["issued_invoice_id"]) if r["issued_invoice_id"] else None,
            "number": r["number"],
            "created_at": r["created_at"].isoformat(),
            "updated_at": r["updated_at"].isoformat(),
        }
        for r in rows
    ]


# -- the series ------------------------------------------------------------------------------------


def series_of(conn: psycopg.Connection[Any], tenant_id: UUID) -> Series:
    row = conn.execute(
        "SELECT prefix, digits FROM invoice_series WHERE tenant_id = %s", (tenant_id,)
    ).fetchone()
    if row is None:
        return Series()
    return Series(prefix=str(row["prefix"]), digits=int(row["digits"]))


def series_view(conn: psycopg.Connection[Any], tenant_id: UUID, series: Series) -> dict[str, Any]:
    year = financial_year(today_in_india(datetime.now(UTC)))
    row = conn.execute(
        "SELECT last_number FROM invoice_series_counters WHERE tenant_id = %s AND financial_year = %s",
        (tenant_id, year),
    ).fetchone()
    last = int(row["last_number"]) if row else 0
    following = series.number(year, last + 1) if last + 1 <= series.capacity(year) else None
    return {
        "prefix": series.prefix,
        "digits": series.digits,
        "financial_year": year,
        "last_number": last,
        "next_number": following,
    }


def save_series(conn: psycopg.Connection[Any], tenant_id: UUID, series: Series) -> None:
    violations = check_series(series)
    if violations:
        raise _errors().ValidationFailed(tuple(violations))
    conn.execute(
        "INSERT INTO invoice_series (tenant_id, prefix, digits) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id) DO UPDATE SET prefix = excluded.prefix, digits = excluded.digits,"
        " updated_at = now()",
        (tenant_id, series.prefix, series.digits),
    )
