"""The Payment aggregate's rules: webhooks arrive late, twice and out of order, and the final state
depends only on which events arrived, never on their order."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from connectors.hooks import DeliveryMalformed
from connectors.razorpay import events as razorpay_events
from connectors.stripe import events as stripe_events
from engine.domain.payment import InvalidPaymentFact, Payment, derived_status, later_status
from engine.payments import PaymentFact, ageing_bucket, apply_fact, payment_status_of

TENANT = UUID("5b2e9d7a-3c41-4e8f-a6b0-1d2c3e4f5a6b")
AT = datetime(2026, 6, 2, 10, 0, tzinfo=UTC)
BASE = PaymentFact(
    tenant_id=TENANT,
    provider="razorpay",
    provider_payment_id="pay_1",
    provider_event_id="evt_0",
    occurred_at=AT,
    amount=Decimal("1180.00"),
    currency="INR",
    paid_at=AT,
)


def status(name: str, event_id: str) -> PaymentFact:
    return replace(BASE, status=name, provider_event_id=event_id)


def refund(refund_id: str, amount: str, event_id: str) -> PaymentFact:
    return replace(BASE, refund_id=refund_id, refund_amount=Decimal(amount), provider_event_id=event_id)


def final(facts: list[PaymentFact]) -> tuple[str, Decimal, Decimal]:
    payment: Payment | None = None
    for fact in facts:
        payment = apply_fact(payment, fact)
    assert payment is not None
    return payment.status, payment.amount_refunded, payment.amount_applicable


@pytest.mark.parametrize(
    ("current", "reported", "moves"),
    [
        ("created", "authorized", True),
        ("created", "failed", True),
        ("authorized", "captured", True),
        ("failed", "authorized", True),  # Razorpay's late authorisation
        ("captured", "authorized", False),
        ("captured", "failed", False),
        ("authorized", "failed", False),
        ("captured", "captured", False),
    ],
)
def test_a_status_only_moves_up_the_ranking(current: str, reported: str, moves: bool) -> None:
    assert later_status(current, reported) is moves


@pytest.mark.parametrize(
    ("gateway", "amount", "refunded", "shown"),
    [
        ("captured", "100", "0", "captured"),
        ("captured", "100", "40", "partially_refunded"),
        ("captured", "100", "100", "refunded"),
        ("authorized", "100", "100", "refunded"),  # the refund arrived before the capture
        ("failed", "100", "0", "failed"),
    ],
)
def test_the_shown_status_is_derived_from_the_gateway_status_and_the_refunds(
    gateway: str, amount: str, refunded: str, shown: str
) -> None:
    assert derived_status(gateway, Decimal(amount), Decimal(refunded)) == shown


SCENARIOS = [
    (
        [status("authorized", "e1"), status("captured", "e2")],
        ("captured", Decimal("0"), Decimal("1180.00")),
    ),
    (
        [status("authorized", "e1"), status("captured", "e2"), refund("rf1", "180.00", "e3")],
        ("partially_refunded", Decimal("180.00"), Decimal("1000.00")),
    ),
    (
        [
            status("captured", "e2"),
            refund("rf1", "180.00", "e3"),
            refund("rf2", "1000.00", "e4"),
            status("authorized", "e1"),
        ],
        ("refunded", Decimal("1180.00"), Decimal("0")),
    ),
    (
        [status("failed", "e1"), status("authorized", "e2")],
        ("authorized", Decimal("0"), Decimal("0")),
    ),
]


@pytest.mark.parametrize(("facts", "expected"), SCENARIOS)
def test_every_order_of_the_same_events_ends_in_the_same_state(
    facts: list[PaymentFact], expected: tuple[str, Decimal, Decimal]
) -> None:
    for order in itertools.permutations(facts):
        assert final(list(order)) == expected, [f.provider_event_id for f in order]
        # Every event delivered twice changes nothing.
        assert final([*order, *order]) == expected


def test_a_late_event_records_no_new_event_on_the_aggregate() -> None:
    payment = apply_fact(None, status("captured", "e2"))
    payment.collect_events()
    apply_fact(payment, status("authorized", "e1"))
    apply_fact(payment, refund("rf1", "1.00", "e3"))
    apply_fact(payment, refund("rf1", "1.00", "e3-retry"))
    assert [type(e).__name__ for e in payment.collect_events()] == ["Refunded"]


def test_impossible_amounts_and_statuses_are_refused() -> None:
    with pytest.raises(InvalidPaymentFact):
        apply_fact(None, refund("rf1", "-1", "e1"))
    with pytest.raises(InvalidPaymentFact):
        apply_fact(None, refund("rf1", "NaN", "e1"))
    with pytest.raises(InvalidPaymentFact):
        apply_fact(None, status("settled", "e1"))


@pytest.mark.parametrize(
    ("total", "paid", "expected"),
    [
        ("100", "0", "unpaid"),
        ("100", "40", "partially_paid"),
        ("100", "100", "paid"),
        ("100", "100.01", "overpaid"),
    ],
)
def test_an_invoice_payment_status(total: str, paid: str, expected: str) -> None:
    assert payment_status_of(Decimal(total), Decimal(paid)) == expected


@pytest.mark.parametrize(
    ("days", "bucket"),
    [(0, "0_30"), (30, "0_30"), (31, "31_60"), (60, "31_60"), (61, "61_90"), (90, "61_90"), (91, "over_90")],
)
def test_ageing_buckets(days: int, bucket: str) -> None:
    assert ageing_bucket(days) == bucket


def razorpay_payload(event: str, **payment: object) -> dict[str, object]:
    entity = {
        "id": "pay_1",
        "amount": 118000,
        "currency": "INR",
        "method": "upi",
        "email": "a@b.example",
        "notes": {"invoice_number": "INV-1"},
        "created_at": 1780394000,
        **payment,
    }
    return {"event": event, "payload": {"payment": {"entity": entity}}, "created_at": 1780394400}


def test_razorpay_payment_events_map_to_facts_in_exact_decimals() -> None:
    [fact] = razorpay_events.facts(TENANT, "payment.captured", "evt_1", razorpay_payload("payment.captured"))
    assert fact.status == "captured" and fact.amount == Decimal("1180.00") and fact.currency == "INR"
    assert fact.reference == {"invoice_number": "INV-1"} and fact.customer == {"email": "a@b.example"}
    refund_payload = razorpay_payload("refund.processed")
    refund_payload["payload"]["refund"] = {  # type: ignore[index]
        "entity": {"id": "rfnd_1", "payment_id": "pay_1", "amount": 18000, "currency": "INR"}
    }
    [fact] = razorpay_events.facts(TENANT, "refund.processed", "evt_2", refund_payload)
    assert (fact.status, fact.refund_id, fact.refund_amount) == (None, "rfnd_1", Decimal("180.00"))
    assert razorpay_events.facts(TENANT, "order.paid", "evt_3", razorpay_payload("order.paid")) == []


@pytest.mark.parametrize(
    "payment",
    [
        {"amount": -1},
        {"amount": 10**16},
        {"amount": 1.5},
        {"amount": "100"},
        {"amount": True},
        {"currency": "RUPEES"},
        {"id": "pay\x00\n1"},
        {"id": "p" * 500},
    ],
)
def test_hostile_razorpay_payment_fields_are_malformed(payment: dict[str, object]) -> None:
    with pytest.raises(DeliveryMalformed):
        razorpay_events.facts(
            TENANT, "payment.captured", "evt_1", razorpay_payload("payment.captured", **payment)
        )


def test_stripe_intent_and_refund_events_map_to_the_same_payment_facts() -> None:
    intent = {
        "id": "pi_1",
        "amount": 50000,
        "currency": "inr",
        "metadata": {"invoice_id": "5b2e9d7a-3c41-4e8f-a6b0-1d2c3e4f5a6b"},
        "created": 1780394000,
    }
    payload = {"id": "evt_1", "created": 1780394400, "data": {"object": intent}}
    [fact] = stripe_events.facts(TENANT, "payment_intent.succeeded", "evt_1", payload)
    assert (fact.provider_payment_id, fact.status, fact.amount, fact.currency) == (
        "pi_1",
        "captured",
        Decimal("500.00"),
        "INR",
    )
    charge = {
        "id": "ch_1",
        "payment_intent": "pi_1",
        "amount": 50000,
        "currency": "inr",
        "refunds": {"data": [{"id": "re_1", "amount": 10000}, {"id": "re_2", "amount": 5000}]},
    }
    refunds = stripe_events.facts(
        TENANT, "charge.refunded", "evt_2", {"created": 1780394500, "data": {"object": charge}}
    )
    assert [(f.provider_payment_id, f.refund_id, f.refund_amount) for f in refunds] == [
        ("pi_1", "re_1", Decimal("100.00")),
        ("pi_1", "re_2", Decimal("50.00")),
    ]
