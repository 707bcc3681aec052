"""Reconciliation catch-up: ``python -m bench --only reconciliation``.

A month of one tenant's bank lines with the payouts, payments and invoices they settle goes through
the ``reconciliation`` projection's own ``apply`` (projections/reconciliation.py), in batches of
about the runner's size, each in one transaction, as the projector does when it catches up; the
figure is bank lines judged per second over the whole month (facts stored and lines matched). The
Kafka read is not in it: the projection stages of the bench measure that part.

Beside it, in the same run, a bare SQL join of the same rows (lines to open targets by a shared
reference, or by the same amount within the date window) is the floor: it finds candidates only,
without the rules' direction, currency, counterparty, single use and ambiguity checks.

The month: 40 % debits paying completed payouts (their UTR in the narration), 30 % gateway
settlements naming a captured payment, 20 % customer transfers paying an invoice in full without a
reference (the buyer named, a day or two after the invoice), 10 % bank charges and interest that
match nothing. Every amount is distinct, so the expected counts are exact: 90 % matched.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from projections.events import ProjectedEvent
from projections.reconciliation import Reconciliation

MONTH = date(2026, 5, 1)
ACCOUNT = "50100123456789"
# Lines per transaction: with their targets' events, about the runner's 2,500 events a batch.
CHUNK = 1_000


def _event(topic: str, ce_type: str, record: dict[str, Any], offset: int) -> ProjectedEvent:
    record = {"event_id": str(uuid.uuid4()), "occurred_at": datetime(2026, 5, 1, tzinfo=UTC), **record}
    return ProjectedEvent(topic, 0, offset, ce_type, record["event_id"], record)


def _line(tenant: str, i: int, day: date, amount: Decimal, text: str) -> list[ProjectedEvent]:
    record = {
        "tenant_id": tenant,
        "transaction_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/line/{i}")),
        "account": ACCOUNT,
        "value_date": day.isoformat(),
        "amount": f"{amount:.2f}",
        "currency": "INR",
        "reference": "NONREF",
        "description": text,
    }
    return [_event("ledger.bank_transaction.v1", "ledgerflow.bank_transaction.recorded", record, i)]


def _month_chunk(tenant: str, start: int, stop: int, rng: random.Random) -> tuple[list[ProjectedEvent], int]:
    """The events of lines ``start`` to ``stop`` and of what they settle, shuffled across
    aggregates (in order within each, as Kafka keeps them); and how many lines should match."""
    streams: list[list[ProjectedEvent]] = []
    expected = 0
    for i in range(start, stop):
        day = MONTH + timedelta(days=i % 31)
        amount = Decimal(100_000 + i * 13) / 100  # distinct for every line
        kind = i % 10
        if kind < 4:
            payout = {
                "tenant_id": tenant,
                "payout_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/po/{i}")),
            }
            utr = f"HDFCR5{i:010d}"
            requested = {**payout, "reference": f"PO-{i}", "currency": "INR", "amount": f"{amount:.2f}"}
            requested["beneficiary_name"] = "Vendor"
            completed_at = datetime.combine(day, datetime.min.time(), UTC)
            done = {
                **payout,
                "utr": utr,
                "transaction_id": None,
                "charges": "0.00",
                "completed_at": completed_at,
            }
            streams.append(
                [
                    _event("ledger.payout.v1", "ledgerflow.payout.requested", requested, i),
                    _event("ledger.payout.v1", "ledgerflow.payout.completed", done, i),
                ]
            )
            streams.append(_line(tenant, i, day, -amount, f"NEFT DR {utr} VENDOR"))
            expected += 1
        elif kind < 7:
            base = {
                "tenant_id": tenant,
                "payment_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/pay/{i}")),
            }
            recorded = {
                **base,
                "provider": "razorpay",
                "provider_payment_id": f"pay_B{i:012d}",
                "amount": f"{amount:.2f}",
                "currency": "INR",
                "customer": {},
                "paid_at": datetime.combine(day, datetime.min.time(), UTC),
            }
            streams.append(
                [
                    _event("ledger.payment.v1", "ledgerflow.payment.recorded", recorded, i),
                    _event(
                        "ledger.payment.v1",
                        "ledgerflow.payment.status_changed",
                        {**base, "status": "captured"},
                        i,
                    ),
                ]
            )
            streams.append(_line(tenant, i, day, amount, f"RAZORPAY SETTLEMENT pay_B{i:012d}"))
            expected += 1
        elif kind < 9:
            buyer = f"Buyer {i:07d} Traders"
            issued = {
                "tenant_id": tenant,
                "invoice_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/inv/{i}")),
                "number": f"INV/26-27/{i:06d}",
                "date": day.isoformat(),
                "currency": "INR",
                "buyer": {"name": buyer},
                "totals": {"total": f"{amount:.2f}"},
                "document_type": "invoice",
            }
            streams.append([_event("ledger.invoice.v1", "ledgerflow.invoice.issued", issued, i)])
            later = day + timedelta(days=1 + i % 2)
            streams.append(_line(tenant, i, later, amount, f"NEFT CR {buyer.upper()}"))
            expected += 1
        else:
            streams.append(_line(tenant, i, day, -amount if i % 2 else amount, "SMS CHARGES"))
    events: list[ProjectedEvent] = []
    while streams:
        chosen = rng.randrange(len(streams))
        events.append(streams[chosen].pop(0))
        if not streams[chosen]:
            streams[chosen] = streams[-1]
            streams.pop()
    return events, expected


def chunks(tenant: UUID, n: int, seed: int = 12) -> Iterator[tuple[list[ProjectedEvent], int, int]]:
    """(events, lines, lines expected to match) per transaction of the month."""
    rng = random.Random(seed)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        events, expected = _month_chunk(str(tenant), start, stop, rng)
        yield events, stop - start, expected


def catch_up(
    conn: psycopg.Connection, tenant: UUID, n: int, advance: Callable[[int], None]
) -> tuple[float, int, int]:
    """Apply the month through the projection; returns (seconds, events, lines expected to match).
    Generating the events is not timed."""
    projection = Reconciliation()
    seconds = 0.0
    events_total = expected_total = 0
    for events, lines, expected in chunks(tenant, n):
        started = time.perf_counter()
        with conn.transaction():
            projection.apply(conn, events)
        seconds += time.perf_counter() - started
        events_total += len(events)
        expected_total += expected
        advance(lines)
    return seconds, events_total, expected_total


def counts(conn: psycopg.Connection, tenant: UUID) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) FROM reconciliation WHERE tenant_id = %s AND kind = 'line' GROUP BY status",
        (tenant,),
    ).fetchall()
    return {str(status): int(count) for status, count in rows}


BARE_JOIN = """
WITH line_refs AS (
    SELECT row_id, unnest(refs) AS ref FROM reconciliation WHERE tenant_id = %(t)s AND kind = 'line'
), target_refs AS (
    SELECT unnest(refs) AS ref FROM reconciliation
    WHERE tenant_id = %(t)s AND kind IN ('payment', 'payout', 'invoice') AND eligible
), by_reference AS (
    SELECT l.row_id FROM line_refs l JOIN target_refs t USING (ref)
), by_amount AS (
    SELECT l.row_id FROM reconciliation l
    JOIN reconciliation t ON t.tenant_id = l.tenant_id AND t.magnitude = l.magnitude
     AND t.kind IN ('payment', 'payout', 'invoice') AND t.eligible AND abs(t.day - l.day) <= 3
    WHERE l.tenant_id = %(t)s AND l.kind = 'line'
)
SELECT count(*) FROM (SELECT row_id FROM by_reference UNION SELECT row_id FROM by_amount) AS found
"""


def bare_sql(conn: psycopg.Connection, tenant: UUID) -> tuple[float, int]:
    """The bare join over the same rows: (seconds, lines with a candidate)."""
    started = time.perf_counter()
    row = conn.execute(BARE_JOIN, {"t": tenant}).fetchone()
    seconds = time.perf_counter() - started
    return seconds, int(row[0]) if row else 0
