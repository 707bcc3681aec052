"""The ``reconciliation`` projection on the real PostgreSQL: a month of bank lines against payments,
payouts and invoices, each fact arriving in any order and batch, reconciles to the counts the month
was built with; replayed, it changes nothing; a poison event is set aside alone."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from engine import db
from engine.config import Settings
from projections import reconciliation as read_model
from projections.dead_letters import apply_isolating
from projections.events import ProjectedEvent
from projections.reconciliation import Reconciliation

pytestmark = pytest.mark.integration

MAY = date(2026, 5, 1)
ACCOUNT = "50100123456789"


def event(topic: str, ce_type: str, record: dict[str, Any], offset: int = 0) -> ProjectedEvent:
    record = {"event_id": str(uuid.uuid4()), "occurred_at": datetime(2026, 5, 1, tzinfo=UTC), **record}
    headers = (("ce_id", record["event_id"].encode()), ("ce_type", ce_type.encode()))
    return ProjectedEvent(topic, 0, offset, ce_type, record["event_id"], record, b"", b"", headers)


def bank_line(
    tenant: UUID, day: date, amount: Decimal, description: str, reference: str = "NONREF"
) -> ProjectedEvent:
    return event(
        "ledger.bank_transaction.v1",
        "ledgerflow.bank_transaction.recorded",
        {
            "tenant_id": str(tenant),
            "transaction_id": str(uuid.uuid4()),
            "account": ACCOUNT,
            "value_date": day.isoformat(),
            "booking_date": day.isoformat(),
            "amount": f"{amount:.2f}",
            "currency": "INR",
            "reference": reference,
            "description": description,
        },
    )


def invoice(tenant: UUID, number: str, day: date, total: Decimal, buyer: str) -> tuple[str, ProjectedEvent]:
    invoice_id = str(uuid.uuid4())
    return invoice_id, event(
        "ledger.invoice.v1",
        "ledgerflow.invoice.issued",
        {
            "tenant_id": str(tenant),
            "invoice_id": invoice_id,
            "number": number,
            "date": day.isoformat(),
            "currency": "INR",
            "buyer": {"name": buyer},
            "totals": {"total": f"{total:.2f}"},
            "document_type": "invoice",
        },
    )


def invoice_cancelled(tenant: UUID, invoice_id: str) -> ProjectedEvent:
    return event(
        "ledger.invoice.v1",
        "ledgerflow.invoice.cancelled",
        {"tenant_id": str(tenant), "invoice_id": invoice_id, "reason": "other", "remark": None},
    )


def payment(
    tenant: UUID, provider_id: str, day: date, amount: Decimal, *, captured: bool
) -> list[ProjectedEvent]:
    payment_id = str(uuid.uuid4())
    base = {"tenant_id": str(tenant), "payment_id": payment_id}
    paid_at = datetime.combine(day, datetime.min.time(), UTC)
    found = [
        event(
            "ledger.payment.v1",
            "ledgerflow.payment.recorded",
            {
                **base,
                "provider": "razorpay",
                "provider_payment_id": provider_id,
                "amount": f"{amount:.2f}",
                "currency": "INR",
                "method": "upi",
                "customer": {},
                "reference": {},
                "paid_at": paid_at,
                "provider_event_id": "evt_" + provider_id,
            },
        )
    ]
    if captured and provider_id.endswith("0"):
        # A refund implies the capture, even when the capture's delivery never came.
        refund = {**base, "refund_id": "rfnd_" + provider_id, "amount": "1.00", "provider_event_id": "evt_r"}
        found.append(event("ledger.payment.v1", "ledgerflow.payment.refunded", refund))
    elif captured:
        found.append(
            event("ledger.payment.v1", "ledgerflow.payment.status_changed", {**base, "status": "captured"})
        )
    return found


def payout(
    tenant: UUID, reference: str, utr: str, day: date, amount: Decimal, who: str, *, completed: bool
) -> list[ProjectedEvent]:
    base = {"tenant_id": str(tenant), "payout_id": str(uuid.uuid4())}
    found = [
        event(
            "ledger.payout.v1",
            "ledgerflow.payout.requested",
            {
                **base,
                "reference": reference,
                "currency": "INR",
                "mode": "NEFT",
                "amount": f"{amount:.2f}",
                "beneficiary_name": who,
            },
        ),
        event(
            "ledger.payout.v1",
            "ledgerflow.payout.submitted",
            {**base, "provider_payment_id": "PAY" + reference},
        ),
    ]
    if completed:
        completed_at = datetime.combine(day, datetime.min.time(), UTC)
        found.append(
            event(
                "ledger.payout.v1",
                "ledgerflow.payout.completed",
                {**base, "utr": utr, "transaction_id": None, "charges": "0.00", "completed_at": completed_at},
            )
        )
    else:
        found.append(
            event("ledger.payout.v1", "ledgerflow.payout.failed", {**base, "code": "invalid_account"})
        )
    return found


@dataclass
class Month:
    """A month of one tenant's facts, with the status each line was built to end in."""

    tenant: UUID
    streams: list[list[ProjectedEvent]] = field(default_factory=list)
    expected: Counter[str] = field(default_factory=Counter)
    amounts: set[Decimal] = field(default_factory=set)

    def amount(self, rng: random.Random) -> Decimal:
        # Distinct amounts, so that no line matches by amount what it was not built to match.
        while True:
            value = Decimal(rng.randrange(10_000, 5_000_000)) / 100
            if value not in self.amounts:
                self.amounts.add(value)
                return value


def build_month(tenant: UUID, seed: int, per_kind: int) -> Month:
    rng = random.Random(seed)
    month = Month(tenant)
    streams = month.streams

    def day() -> date:
        return MAY + timedelta(days=rng.randrange(0, 31))

    for i in range(per_kind):
        # A completed payout, its debit naming the UTR: matched.
        amount, when = month.amount(rng), day()
        utr = f"SBIN{seed:02d}{i:08d}"
        streams.append(payout(tenant, f"PO-{seed}-{i}", utr, when, amount, "Vendor Ltd", completed=True))
        streams.append([bank_line(tenant, when, -amount, f"NEFT DR {utr} VENDOR")])
        month.expected["matched"] += 1
        # A captured payment, settled with the gateway's id: matched; settled short: discrepancy.
        amount, when = month.amount(rng), day()
        streams.append(payment(tenant, f"pay_{seed}x{i:06d}", when, amount, captured=True))
        short = rng.random() < 0.25
        settled = amount - Decimal("2.36") if short else amount
        streams.append([bank_line(tenant, when, settled, f"RAZORPAY SETTLEMENT pay_{seed}x{i:06d}")])
        month.expected["discrepancy" if short else "matched"] += 1
        # An invoice paid in part, naming its number: partially matched.
        amount, when = month.amount(rng), day()
        _, issued = invoice(tenant, f"INV/{seed}/{i:05d}", when, amount, "Reliable Traders")
        streams.append([issued])
        streams.append(
            [bank_line(tenant, when + timedelta(days=20), amount / 2, f"NEFT CR INV/{seed}/{i:05d}")]
        )
        month.expected["partially_matched"] += 1
        # An invoice paid in full without a reference, its buyer named, two days later: matched.
        amount, when = month.amount(rng), day()
        buyer = f"Kaveri Foods {chr(65 + i % 26)}{chr(65 + (i // 26) % 26)}{chr(65 + (i // 676) % 26)}"
        _, issued = invoice(tenant, f"K/{seed}/{i:05d}", when, amount, buyer)
        streams.append([issued])
        streams.append([bank_line(tenant, when + timedelta(days=2), amount, f"NEFT CR {buyer.upper()}")])
        month.expected["matched"] += 1
        # The bank's own entries: unmatched.
        streams.append([bank_line(tenant, day(), -month.amount(rng), "SMS CHARGES")])
        month.expected["unmatched"] += 1
        # A failed payout and a payment never captured, both named: unmatched.
        amount, when = month.amount(rng), day()
        streams.append(
            payout(tenant, f"PF-{seed}-{i}", f"UTRF{seed}{i:08d}", when, amount, "X", completed=False)
        )
        streams.append([bank_line(tenant, when, -amount, f"PF-{seed}-{i}")])
        amount, when = month.amount(rng), day()
        streams.append(payment(tenant, f"pay_{seed}u{i:06d}", when, amount, captured=False))
        streams.append([bank_line(tenant, when, amount, f"pay_{seed}u{i:06d}")])
        month.expected["unmatched"] += 2
        # A cancelled invoice named in full: unmatched.
        amount, when = month.amount(rng), day()
        invoice_id, issued = invoice(tenant, f"C/{seed}/{i:05d}", when, amount, "Gone Pvt Ltd")
        streams.append([issued, invoice_cancelled(tenant, invoice_id)])
        streams.append([bank_line(tenant, when + timedelta(days=1), amount, f"C/{seed}/{i:05d}")])
        month.expected["unmatched"] += 1
    return month


def interleave(streams: list[list[ProjectedEvent]], rng: random.Random) -> list[ProjectedEvent]:
    """All events, shuffled across aggregates but in order within each (as Kafka keeps them)."""
    pending = [list(s) for s in streams]
    out: list[ProjectedEvent] = []
    while pending:
        chosen = rng.randrange(len(pending))
        out.append(pending[chosen].pop(0))
        if not pending[chosen]:
            pending.pop(chosen)
    return [
        ProjectedEvent(e.topic, 0, i, e.ce_type, e.ce_id, e.record, b"", b"", e.headers)
        for i, e in enumerate(out)
    ]


def apply_all(settings: Settings, events: list[ProjectedEvent], batch: int) -> None:
    for start in range(0, len(events), batch):
        with db.connect(settings) as conn, conn.transaction():
            apply_isolating(
                conn, Reconciliation(), events[start : start + batch], dead_letters_of="reconciliation"
            )


def counts(settings: Settings, tenant: UUID) -> dict[str, int]:
    with db.connect(settings) as conn:
        found = read_model.summary(conn, tenant, read_model.Filter())
    return {s: v["count"] for s, v in found["by_status"].items() if v["count"]}


def test_a_month_of_bank_lines_reconciles_to_the_counts_it_was_built_with(settings: Settings) -> None:
    db.ensure_schema(settings)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    month = build_month(tenant, seed=7, per_kind=40)
    # Another tenant with the very same references and amounts: never matched across tenants.
    twin = build_month(other, seed=7, per_kind=40)
    rng = random.Random(11)
    events = interleave(month.streams + twin.streams[: len(twin.streams) // 2], rng)
    apply_all(settings, events, batch=97)

    assert counts(settings, tenant) == dict(month.expected)
    assert sum(month.expected.values()) == 40 * 8

    # Delivered again (at-least-once), in other batches: nothing changes.
    apply_all(settings, events, batch=31)
    assert counts(settings, tenant) == dict(month.expected)
    with db.connect(settings) as conn:
        items, _ = read_model.lines(conn, tenant, read_model.Filter(status="discrepancy"), limit=5)
    assert all(Decimal(x["difference"]) == Decimal("-2.36") for x in items)
    assert all(x["targets"][0]["type"] == "payment" for x in items)


def test_a_poison_event_is_set_aside_alone(settings: Settings) -> None:
    db.ensure_schema(settings)
    tenant = uuid.uuid4()
    good = bank_line(tenant, MAY, Decimal("10.00"), "INTEREST")
    poison = bank_line(tenant, MAY, Decimal("10.00"), "BROKEN")
    poison.record["amount"] = "1e400"  # beyond numeric(20, 4)
    nul = bank_line(tenant, MAY, Decimal("11.00"), "NUL\x00BYTE")
    with db.connect(settings) as conn, conn.transaction():
        failures = apply_isolating(
            conn, Reconciliation(), [good, poison, nul], dead_letters_of="reconciliation"
        )
    assert len(failures) == 2
    assert counts(settings, tenant) == {"unmatched": 1}


def test_each_kind_of_row_is_inserted_with_the_column_defaults_a_plain_insert_gives(
    settings: Settings,
) -> None:
    """The rows go in through projections.batch, which writes NULL for a column left out: the
    projection names the defaulted columns itself (charges, refs, eligible, updated_at)."""
    db.ensure_schema(settings)
    tenant = uuid.uuid4()
    line = bank_line(tenant, MAY, Decimal("-250.50"), "NEFT INV-77 ACME", reference="UTR123456")
    invoice_id, issued = invoice(tenant, "INV-77", MAY, Decimal("250.50"), "Acme")
    made = event(
        "ledger.reconciliation_match.v1",
        "ledgerflow.reconciliation_match.made",
        {
            "tenant_id": str(tenant),
            "match_id": str(uuid.uuid4()),
            "bank_line_id": line.record["transaction_id"],
            "target_type": "invoice",
            "target_id": invoice_id,
            "made_by": "accountant@example.com",
        },
    )
    with db.connect(settings) as conn, conn.transaction():
        Reconciliation().apply(
            conn, [line, issued, *payment(tenant, "pay_1", MAY, Decimal("9"), captured=False)]
        )
        Reconciliation().apply(conn, [made])
        started = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        found = {
            kind: rest
            for kind, *rest in conn.execute(
                "SELECT kind, charges, refs, eligible, magnitude, amount, updated_at = now(), status"
                " FROM reconciliation WHERE tenant_id = %s",
                (tenant,),
            ).fetchall()
        }
    assert started is not None
    assert found["line"][:5] == [
        Decimal("0"),
        ["ACME", "INV-77", "NEFT", "UTR123456"],
        True,
        Decimal("250.5"),
        Decimal("-250.5"),
    ]
    assert found["invoice"][:5] == [Decimal("0"), ["INV-77"], True, Decimal("250.5"), Decimal("250.5")]
    assert found["payment"][:5] == [Decimal("0"), ["PAY_1"], False, Decimal("9"), Decimal("9")]
    assert found["manual"][:5] == [Decimal("0"), [], False, None, None]
    # updated_at is the transaction's start, as now() in the plain INSERT's DEFAULT.
    assert all(row[5] for row in found.values())
    assert found["payment"][6] is None and found["manual"][6] is None


@pytest.mark.parametrize("values", [[], ["INV-1"], ["NULL", "null", 'a"b', "c\\d", " x,{}", ""]])
def test_the_refs_literal_reads_back_as_the_list(settings: Settings, values: list[str]) -> None:
    with db.connect(settings) as conn:
        found = conn.execute("SELECT %s::text[]", (read_model._text_array(values),)).fetchone()
    assert found is not None and found[0] == values
