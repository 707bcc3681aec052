"""Subscription statuses from Razorpay's subscription.* deliveries, whatever their order."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from engine.domain.subscription import InvalidSubscriptionStatus, Subscription, supersedes

T0 = datetime(2026, 6, 2, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("current", "current_at", "reported", "reported_at", "replaces"),
    [
        ("created", None, "authenticated", T0, True),
        ("active", T0, "pending", T0 + timedelta(minutes=1), True),
        ("pending", T0 + timedelta(minutes=1), "active", T0, False),  # older report
        ("active", T0, "cancelled", T0 - timedelta(hours=1), True),  # an ending always wins
        ("cancelled", T0, "active", T0 + timedelta(days=1), False),  # and stays
        ("completed", T0, "expired", T0 + timedelta(days=1), False),
    ],
)
def test_which_report_replaces_the_recorded_status(
    current: str, current_at: datetime | None, reported: str, reported_at: datetime, replaces: bool
) -> None:
    assert supersedes(current, current_at, reported, reported_at) is replaces


def fresh() -> Subscription:
    return Subscription(
        tenant_id=UUID(int=1),
        provider="razorpay",
        plan_id="plan_1",
        customer_id=None,
        total_count=12,
        request_key="k",
    )


REPORTS = [
    ("authenticated", T0, 0),
    ("active", T0 + timedelta(minutes=1), 1),
    ("pending", T0 + timedelta(days=30), 1),
    ("active", T0 + timedelta(days=31), 2),
]


def test_every_order_of_the_same_reports_ends_in_the_latest_status() -> None:
    for order in itertools.permutations(REPORTS):
        subscription = fresh()
        for i, (status, at, paid) in enumerate(order):
            subscription.report_status(
                status, provider_event="e", provider_event_id=str(i), at=at, paid_count=paid
            )
        assert (subscription.status, subscription.paid_count) == ("active", 2)


def test_a_cancellation_ends_it_in_every_order() -> None:
    reports = [*REPORTS, ("cancelled", T0 + timedelta(days=5), 1)]
    for order in itertools.permutations(reports):
        subscription = fresh()
        for i, (status, at, paid) in enumerate(order):
            subscription.report_status(
                status, provider_event="e", provider_event_id=str(i), at=at, paid_count=paid
            )
        assert subscription.status == "cancelled"


def test_a_link_is_recorded_once_and_unknown_statuses_are_refused() -> None:
    subscription = fresh()
    assert subscription.link("sub_1", "created", None, T0)
    assert not subscription.link("sub_2", "created", None, T0)
    assert subscription.provider_subscription_id == "sub_1"
    with pytest.raises(InvalidSubscriptionStatus):
        subscription.report_status(
            "activated", provider_event="e", provider_event_id="x", at=T0, paid_count=0
        )
