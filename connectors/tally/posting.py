"""Vouchers posted through ``POST /v1/tally/vouchers``: stored (``tally_vouchers``, tally.sql), queued
as one ``post_voucher`` job each, and finished by the handler (posted with Tally's answer, or failed
with Tally's LINEERROR). Every read and write is scoped by tenant.

Once per voucher number: the row's id is derived from the tenant and the voucher number, so a second
request with the same number finds the first (the same body: the same voucher, answered again; another
body: refused). The Idempotency-Key, when given, is unique per tenant likewise. Two requests racing
with the same number or key insert one row (``ON CONFLICT DO NOTHING``); the loser reads the winner's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from connectors.tally import journal
from connectors.tally.client import PROVIDER
from connectors.tally.routes import POST_VOUCHER
from engine.config import Settings
from streams.connectors.jobs import Job

STATUSES = ("queued", "posted", "failed")
# A voucher stored but not acknowledged by Kafka for this long is queued again by the scheduler.
UNPUBLISHED_AFTER = timedelta(minutes=2)


class VoucherConflict(ValueError):
    """The voucher number or the Idempotency-Key was used before with another body."""

    def __init__(self, code: str, message: str, details: dict[str, str]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def job(tenant_id: UUID, voucher_id: UUID) -> Job:
    # Keyed (and identified) by the voucher: a queued-again job is the same job for the same voucher.
    return Job(f"tally-voucher:{voucher_id}", PROVIDER, POST_VOUCHER, str(tenant_id), str(voucher_id), {})


def _one(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(sql, params).fetchone()
    return dict(row) if row else None


def _same(row: dict[str, Any], request: journal.Request, what: str) -> dict[str, Any]:
    if row["fingerprint"] == request.fingerprint():
        return row
    if what == "key":
        raise VoucherConflict(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different voucher",
            {"voucher_id": str(row["voucher_id"])},
        )
    raise VoucherConflict(
        "duplicate_voucher_number",
        f"voucher number {request.voucher_number!r} was already posted with different contents",
        {"voucher_id": str(row["voucher_id"]), "voucher_number": request.voucher_number},
    )


def store(
    conn: psycopg.Connection[Any],
    tenant_id: UUID,
    request: journal.Request,
    idempotency_key: str | None,
    actor: str,
) -> tuple[dict[str, Any], bool]:
    """The voucher's row and True when stored now; the earlier row and False for a repeat."""
    if idempotency_key is not None:
        earlier = _one(
            conn,
            "SELECT * FROM tally_vouchers WHERE tenant_id = %s AND idempotency_key = %s",
            (tenant_id, idempotency_key),
        )
        if earlier is not None:
            return _same(earlier, request, "key"), False
    voucher_id = journal.voucher_id(tenant_id, request.voucher_number)
    remote = journal.voucher_of(str(tenant_id), request).remote_id
    inserted = _one(
        conn,
        "INSERT INTO tally_vouchers (voucher_id, tenant_id, voucher_number, voucher_type, document,"
        " fingerprint, idempotency_key, remote_id, status, created_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'queued', %s) ON CONFLICT DO NOTHING RETURNING *",
        (
            voucher_id,
            tenant_id,
            request.voucher_number,
            request.voucher_type,
            Jsonb(request.document()),
            request.fingerprint(),
            idempotency_key,
            remote,
            actor,
        ),
    )
    if inserted is not None:
        return inserted, True
    earlier = get(conn, tenant_id, voucher_id)
    if earlier is not None:
        return _same(earlier, request, "number"), False
    # The conflict was on the Idempotency-Key, with a request stored meanwhile under another number.
    by_key = _one(
        conn,
        "SELECT * FROM tally_vouchers WHERE tenant_id = %s AND idempotency_key = %s",
        (tenant_id, idempotency_key),
    )
    if by_key is None:  # pragma: no cover - a conflict leaves one of the two rows
        raise VoucherConflict("conflict", "the voucher could not be stored: try again", {})
    return _same(by_key, request, "key"), False


def get(conn: psycopg.Connection[Any], tenant_id: UUID, voucher_id: UUID) -> dict[str, Any] | None:
    return _one(
        conn, "SELECT * FROM tally_vouchers WHERE voucher_id = %s AND tenant_id = %s", (voucher_id, tenant_id)
    )


def listed(
    conn: psycopg.Connection[Any], tenant_id: UUID, status: str | None, limit: int
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM tally_vouchers WHERE tenant_id = %s AND (%s::text IS NULL OR status = %s)"
            " ORDER BY created_at DESC, voucher_number LIMIT %s",
            (tenant_id, status, status, limit),
        ).fetchall()
    return [dict(r) for r in rows]


def mark_published(conn: psycopg.Connection[Any], voucher_ids: Sequence[UUID]) -> None:
    conn.execute(
        "UPDATE tally_vouchers SET published_at = now() WHERE voucher_id = ANY(%s) AND published_at IS NULL",
        (list(voucher_ids),),
    )


def unpublished(conn: psycopg.Connection[Any], now: datetime) -> list[Job]:
    """The jobs of vouchers stored but never acknowledged by Kafka (a crash, Kafka away), oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT tenant_id, voucher_id FROM tally_vouchers WHERE status = 'queued'"
            " AND published_at IS NULL AND created_at < %s ORDER BY created_at LIMIT 1000",
            (now - UNPUBLISHED_AFTER,),
        ).fetchall()
    return [job(r["tenant_id"], r["voucher_id"]) for r in rows]


def mark_posted(conn: psycopg.Connection[Any], voucher_id: UUID, answer: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE tally_vouchers SET status = 'posted', tally_answer = %s, error = NULL,"
        " posted_at = now(), finished_at = now() WHERE voucher_id = %s",
        (Jsonb(answer), voucher_id),
    )


def mark_failed(conn: psycopg.Connection[Any], voucher_id: UUID, error: dict[str, Any]) -> None:
    # A voucher Tally already holds stays posted: a late failure of a redelivered job changes nothing.
    conn.execute(
        "UPDATE tally_vouchers SET status = 'failed', error = %s, finished_at = now()"
        " WHERE voucher_id = %s AND status <> 'posted'",
        (Jsonb(error), voucher_id),
    )


def view(row: dict[str, Any]) -> dict[str, Any]:
    document = dict(row["document"])
    return {
        "voucher_id": str(row["voucher_id"]),
        "status": row["status"],
        **document,
        "remote_id": row["remote_id"],
        "tally": row["tally_answer"],
        "error": row["error"],
        "created_by": row["created_by"],
        "created_at": row["created_at"].isoformat(),
        "posted_at": row["posted_at"].isoformat() if row["posted_at"] else None,
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


async def queue(settings: Settings, jobs: Sequence[Job]) -> None:
    """Put jobs on the tally jobs topic and wait for Kafka's acknowledgement."""
    from engine import kafka
    from streams.connectors.jobs import publish_job

    if not jobs:
        return
    producer = await kafka.start_producer(settings, "reliable")
    try:
        for item in jobs:
            await publish_job(producer, settings, item)
    finally:
        await producer.stop()
