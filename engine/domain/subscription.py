"""The Subscription aggregate: a tenant's recurring plan for a customer at Razorpay (seed "SmartKhata").

Its life: requested here, created at Razorpay (``ProviderLinked``, with Razorpay's ``sub_...`` id), then
driven by Razorpay's ``subscription.*`` webhooks. Razorpay's statuses are ``STATUSES``; ``activated``,
``charged`` and the like are events, not statuses: each delivery carries the subscription entity with
its status at that moment, and that status is what is recorded.

Statuses are not monotonic (active -> pending -> active, paused -> active), so deliveries that arrive
out of order are judged by the time Razorpay says they happened: an older report never overwrites a
newer one, and a subscription that ended (cancelled, completed, expired) stays ended, even when a
report stamped later than the ending arrives (Razorpay sends nothing after an ending but retries).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from engine.errors import InvalidInput

STATUSES = (
    "created",
    "authenticated",
    "active",
    "pending",
    "halted",
    "cancelled",
    "completed",
    "expired",
    "paused",
)
ENDED = frozenset({"cancelled", "completed", "expired"})
_SUBSCRIPTION_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/subscription")


def subscription_id_for(tenant_id: UUID, request_key: str) -> UUID:
    """Stable for one tenant's request key (its Idempotency-Key): a retried request is the same one."""
    return uuid5(_SUBSCRIPTION_NAMESPACE, f"{tenant_id}/{request_key}")


def supersedes(current: str, current_at: datetime | None, reported: str, reported_at: datetime) -> bool:
    """Whether a report of ``reported`` at ``reported_at`` replaces the recorded status. An ending
    always wins and is never replaced, whatever the times say, so the final state does not depend
    on the order in which the deliveries arrived."""
    if current in ENDED:
        return False
    if reported in ENDED:
        return True
    return current_at is None or reported_at > current_at


class Subscription(Aggregate):
    class Requested(Aggregate.Created):
        tenant_id: UUID
        provider: str
        plan_id: str
        customer_id: str | None
        total_count: int
        request_key: str

    @event(Requested)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        provider: str,
        plan_id: str,
        customer_id: str | None,
        total_count: int,
        request_key: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.provider = provider
        self.plan_id = plan_id
        self.customer_id = customer_id
        self.total_count = total_count
        self.request_key = request_key
        self.provider_subscription_id: str | None = None
        self.short_url: str | None = None
        self.status = "requested"
        self.status_at: datetime | None = None
        self.paid_count = 0

    @staticmethod
    def create_id(*, tenant_id: UUID, request_key: str, **_: Any) -> UUID:
        return subscription_id_for(tenant_id, request_key)

    def link(self, provider_subscription_id: str, status: str, short_url: str | None, at: datetime) -> bool:
        """Razorpay created it (or had created it: an adopted one); True when that was news."""
        check_status(status)
        if self.provider_subscription_id is not None:
            return False
        self._trigger_linked(
            tenant_id=self.tenant_id,
            provider_subscription_id=provider_subscription_id,
            status=status,
            short_url=short_url,
            linked_at=at,
        )
        return True

    class ProviderLinked(Aggregate.Event):
        tenant_id: UUID
        provider_subscription_id: str
        status: str
        short_url: str | None
        linked_at: datetime

    @event(ProviderLinked)
    def _trigger_linked(
        self,
        tenant_id: UUID,
        provider_subscription_id: str,
        status: str,
        short_url: str | None,
        linked_at: datetime,
    ) -> None:
        self.provider_subscription_id = provider_subscription_id
        self.short_url = short_url
        if self.status_at is None:
            self.status = status

    def report_status(
        self, status: str, *, provider_event: str, provider_event_id: str, at: datetime, paid_count: int
    ) -> bool:
        """A ``subscription.*`` delivery says the subscription was ``status`` at ``at``."""
        check_status(status)
        if not supersedes(self.status if self.status_at else "created", self.status_at, status, at):
            return False
        self._trigger_status_changed(
            tenant_id=self.tenant_id,
            status=status,
            provider_event=provider_event,
            provider_event_id=provider_event_id,
            reported_at=at,
            paid_count=paid_count,
        )
        return True

    class StatusChanged(Aggregate.Event):
        tenant_id: UUID
        status: str
        provider_event: str
        provider_event_id: str
        reported_at: datetime
        paid_count: int

    @event(StatusChanged)
    def _trigger_status_changed(
        self,
        tenant_id: UUID,
        status: str,
        provider_event: str,
        provider_event_id: str,
        reported_at: datetime,
        paid_count: int,
    ) -> None:
        self.status = status
        self.status_at = reported_at
        self.paid_count = max(self.paid_count, paid_count)


class InvalidSubscriptionStatus(InvalidInput):
    """Razorpay reported a status it does not document."""


def check_status(status: str) -> None:
    if status not in STATUSES:
        raise InvalidSubscriptionStatus(
            f"subscription status {status!r}: expected one of {', '.join(STATUSES)}"
        )
