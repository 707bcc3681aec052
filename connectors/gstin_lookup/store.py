"""What the GST network said about GSTINs, per tenant, kept for a while (``taxpayers.sql``).

Both callers of the taxpayer search use it: ``POST /v1/gst/validate`` (engine/api/gst_parties.py)
and the ``verify_buyer`` job (handler.py). A fresh answer is reused, so a buyer on a hundred
invoices costs one billed search per expiry period. The time to live is
``LEDGERFLOW_GSTIN_LOOKUP_TTL_S`` seconds (default one day: a registration is cancelled or
suspended by an officer's order, an event of days, not minutes; a tenant who wants a fresher answer
sets it lower and pays for more searches).

Every function takes the tenant: nothing here reads another tenant's rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from connectors.gstin_lookup.client import Taxpayer

TTL_ENV = "LEDGERFLOW_GSTIN_LOOKUP_TTL_S"
DEFAULT_TTL = timedelta(days=1)

Outcome = Literal["active", "not_active", "not_registered"]


def ttl_from_env(environ: dict[str, str] | None = None) -> timedelta:
    """The cache's time to live; a value that is not a positive number of seconds is ignored."""
    raw = (environ if environ is not None else os.environ).get(TTL_ENV, "")
    try:
        seconds = float(raw)
    except ValueError:
        return DEFAULT_TTL
    return timedelta(seconds=seconds) if 0 < seconds < 10 * 365 * 86400 else DEFAULT_TTL


@dataclass(frozen=True)
class Registration:
    """One cached answer: ``found`` False when the network has no such registration."""

    gstin: str
    found: bool
    legal_name: str | None
    trade_name: str | None
    status: str | None
    """Lower case: active, cancelled, suspended, inactive ... (the portal's word, lowered)."""
    taxpayer_type: str | None
    business_type: str | None
    registration_date: date | None
    cancellation_date: date | None
    address: str | None
    checked_at: datetime
    expires_at: datetime

    @property
    def outcome(self) -> Outcome:
        if not self.found:
            return "not_registered"
        return "active" if self.status == "active" else "not_active"

    def view(self) -> dict[str, Any]:
        """The seed's response shape (College Accounts, ``POST /api/v1/gst/validate``) and what we add."""
        return {
            "gstin": self.gstin,
            "registered": self.found,
            "legal_name": self.legal_name,
            "trade_name": self.trade_name,
            "status": self.status,
            "registration_date": _iso(self.registration_date),
            "cancellation_date": _iso(self.cancellation_date),
            "address": self.address,
            "business_type": self.business_type,
            "taxpayer_type": self.taxpayer_type,
            "checked_at": self.checked_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


def from_search(gstin: str, found: Taxpayer | None, now: datetime, ttl: timedelta) -> Registration:
    if found is None:
        return Registration(gstin, False, None, None, None, None, None, None, None, None, now, now + ttl)
    return Registration(
        gstin=gstin,
        found=True,
        legal_name=found.legal_name,
        trade_name=found.trade_name,
        status=found.status.strip().lower(),
        taxpayer_type=found.taxpayer_type,
        business_type=found.business_type,
        registration_date=found.registered_on,
        cancellation_date=found.cancelled_on,
        address=found.address,
        checked_at=now,
        expires_at=now + ttl,
    )


_COLUMNS = (
    "gstin, found, legal_name, trade_name, status, taxpayer_type, business_type, registration_date,"
    " cancellation_date, address, checked_at, expires_at"
)


def cached(conn: psycopg.Connection[Any], tenant_id: UUID, gstin: str, now: datetime) -> Registration | None:
    """The tenant's answer for ``gstin`` if it has not expired at ``now``."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            f"SELECT {_COLUMNS} FROM gstin_lookup_taxpayers"
            " WHERE tenant_id = %s AND gstin = %s AND expires_at > %s",
            (tenant_id, gstin, now),
        )
        .fetchone()
    )
    return Registration(**row) if row else None


def latest(conn: psycopg.Connection[Any], tenant_id: UUID, gstin: str) -> Registration | None:
    """The tenant's last answer for ``gstin``, expired or not (what the party view shows)."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            f"SELECT {_COLUMNS} FROM gstin_lookup_taxpayers WHERE tenant_id = %s AND gstin = %s",
            (tenant_id, gstin),
        )
        .fetchone()
    )
    return Registration(**row) if row else None


def remember(conn: psycopg.Connection[Any], tenant_id: UUID, found: Registration) -> None:
    """Keep an answer; a newer answer replaces an older one, never the other way round (two
    searches of the same GSTIN racing each other)."""
    conn.execute(
        f"INSERT INTO gstin_lookup_taxpayers (tenant_id, {_COLUMNS})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, gstin) DO UPDATE SET"
        " found = EXCLUDED.found, legal_name = EXCLUDED.legal_name, trade_name = EXCLUDED.trade_name,"
        " status = EXCLUDED.status, taxpayer_type = EXCLUDED.taxpayer_type,"
        " business_type = EXCLUDED.business_type, registration_date = EXCLUDED.registration_date,"
        " cancellation_date = EXCLUDED.cancellation_date, address = EXCLUDED.address,"
        " checked_at = EXCLUDED.checked_at, expires_at = EXCLUDED.expires_at"
        " WHERE gstin_lookup_taxpayers.checked_at <= EXCLUDED.checked_at",
        (
            tenant_id,
            found.gstin,
            found.found,
            found.legal_name,
            found.trade_name,
            found.status,
            found.taxpayer_type,
            found.business_type,
            found.registration_date,
            found.cancellation_date,
            found.address,
            found.checked_at,
            found.expires_at,
        ),
    )


def record_invoice_check(
    conn: psycopg.Connection[Any],
    tenant_id: UUID,
    invoice_id: UUID,
    invoice_number: str,
    found: Registration,
    *,
    alerted: bool,
) -> None:
    """What the network said about the invoice's buyer; replaces an earlier failure (a redrive)."""
    conn.execute(
        "INSERT INTO gstin_lookup_invoice_checks"
        " (tenant_id, invoice_id, invoice_number, gstin, outcome, status, alerted, checked_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, invoice_id) DO UPDATE SET gstin = EXCLUDED.gstin,"
        " outcome = EXCLUDED.outcome, status = EXCLUDED.status,"
        " alerted = gstin_lookup_invoice_checks.alerted OR EXCLUDED.alerted,"
        " failure_code = NULL, failure_class = NULL, failure_attempts = NULL,"
        " checked_at = EXCLUDED.checked_at",
        (
            tenant_id,
            invoice_id,
            invoice_number,
            found.gstin,
            found.outcome,
            found.status,
            alerted,
            found.checked_at,
        ),
    )


def record_invoice_failure(
    conn: psycopg.Connection[Any],
    tenant_id: UUID,
    invoice_id: UUID,
    invoice_number: str,
    gstin: str,
    *,
    code: str,
    error_class: str,
    attempts: int,
    at: datetime,
) -> None:
    """The buyer could not be verified (the job was dead-lettered). Never replaces a check that
    succeeded: what the network said stands."""
    conn.execute(
        "INSERT INTO gstin_lookup_invoice_checks (tenant_id, invoice_id, invoice_number, gstin, outcome,"
        " failure_code, failure_class, failure_attempts, checked_at)"
        " VALUES (%s, %s, %s, %s, 'unverified', %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, invoice_id) DO UPDATE SET failure_code = EXCLUDED.failure_code,"
        " failure_class = EXCLUDED.failure_class, failure_attempts = EXCLUDED.failure_attempts,"
        " checked_at = EXCLUDED.checked_at"
        " WHERE gstin_lookup_invoice_checks.outcome = 'unverified'",
        (tenant_id, invoice_id, invoice_number, gstin, code, error_class, attempts, at),
    )


_CHECK_COLUMNS = (
    "invoice_id, invoice_number AS number, gstin, outcome, status, alerted, failure_code, failure_class,"
    " failure_attempts, checked_at"
)


def _check_view(row: dict[str, Any]) -> dict[str, Any]:
    failure = None
    if row["outcome"] == "unverified":
        failure = {
            "code": row["failure_code"],
            "error_class": row["failure_class"],
            "attempts": row["failure_attempts"],
        }
    shown = {k: v for k, v in row.items() if not k.startswith("failure_")}
    return {
        **shown,
        "invoice_id": str(row["invoice_id"]),
        "checked_at": row["checked_at"].isoformat(),
        "failure": failure,
    }


def invoice_check(conn: psycopg.Connection[Any], tenant_id: UUID, invoice_id: UUID) -> dict[str, Any] | None:
    """The buyer verification of one invoice, as the invoice view shows it; None if not checked yet."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            f"SELECT {_CHECK_COLUMNS} FROM gstin_lookup_invoice_checks"
            " WHERE tenant_id = %s AND invoice_id = %s",
            (tenant_id, invoice_id),
        )
        .fetchone()
    )
    return _check_view(row) if row is not None else None


def invoices_of(
    conn: psycopg.Connection[Any], tenant_id: UUID, gstin: str, limit: int = 100
) -> list[dict[str, Any]]:
    """The tenant's invoices to ``gstin`` that were checked, newest check first."""
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            f"SELECT {_CHECK_COLUMNS} FROM gstin_lookup_invoice_checks WHERE tenant_id = %s AND gstin = %s"
            " ORDER BY checked_at DESC, invoice_number LIMIT %s",
            (tenant_id, gstin, limit),
        )
        .fetchall()
    )
    return [_check_view(r) for r in rows]
