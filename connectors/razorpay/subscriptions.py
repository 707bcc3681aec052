"""Razorpay subscriptions (seed "SmartKhata"): open one for a tenant's customer, at most once, and
follow its status from the ``subscription.*`` webhooks.

At most once: the subscription is recorded (``Subscription.Requested``, id from the tenant's request
key) before Razorpay is called, and carries its own id in Razorpay's ``notes``. A retry of the same
request finds the recorded subscription; if it has no Razorpay id yet (the earlier call failed, or
its answer was lost), the plan's subscriptions are searched for that note before anything is created,
so a lost answer never becomes a second subscription.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from connectors.errors import PermanentError
from connectors.hooks import DeliveryMalformed
from connectors.razorpay.client import RazorpayClient
from connectors.razorpay.events import text, unix_time
from engine.application import LedgerService
from engine.domain.subscription import STATUSES, Subscription, subscription_id_for
from engine.integrations import IntegrationSettings

NOTE = "ledgerflow_subscription_id"
PROVIDER = "razorpay"


def load(service: LedgerService, subscription_id: UUID) -> Subscription | None:
    try:
        found: Any = service.ledger.repository.get(subscription_id)
    except AggregateNotFoundError:
        return None
    return found if isinstance(found, Subscription) else None


def request(
    service: LedgerService,
    tenant_id: UUID,
    *,
    plan_id: str,
    customer_id: str | None,
    total_count: int,
    key: str,
) -> Subscription:
    """The recorded subscription of this request key (recorded now if new)."""
    subscription_id = subscription_id_for(tenant_id, key)
    found = load(service, subscription_id)
    if found is not None:
        return found
    subscription = Subscription(
        tenant_id=tenant_id,
        provider=PROVIDER,
        plan_id=plan_id,
        customer_id=customer_id,
        total_count=total_count,
        request_key=key,
    )
    try:
        service._save(subscription)
    except IntegrityError:  # the same request, concurrently: that one is the subscription
        again = load(service, subscription_id)
        assert again is not None
        return again
    return subscription


async def open_at_provider(
    service: LedgerService,
    subscription: Subscription,
    settings: IntegrationSettings,
    transport: httpx.AsyncBaseTransport,
) -> Subscription:
    """Create the subscription at Razorpay unless it exists there already; record the link."""
    if subscription.provider_subscription_id is not None:
        return subscription
    credentials = settings.credentials
    async with RazorpayClient(
        settings.base_url, credentials["key_id"], credentials["key_secret"], transport=transport
    ) as client:
        created = await client.find_subscription(subscription.plan_id, NOTE, str(subscription.id))
        if created is None:
            created = await client.create_subscription(
                subscription.plan_id,
                customer_id=subscription.customer_id,
                total_count=subscription.total_count,
                notes={NOTE: str(subscription.id)},
            )
    provider_id = created.get("id")
    status = created.get("status")
    if not isinstance(provider_id, str) or status not in STATUSES:
        raise PermanentError("bad_response", "Razorpay's subscription has no id or an unknown status")
    short_url = created.get("short_url") if isinstance(created.get("short_url"), str) else None
    for _ in range(5):
        current = load(service, subscription.id)
        assert current is not None
        if not current.link(provider_id, status, short_url, datetime.now(UTC)):
            return current
        try:
            service._save(current)
        except IntegrityError:
            continue
        return current
    raise PermanentError("concurrent_change", "the subscription kept changing; retry")


def apply_event(
    service: LedgerService, tenant_id: UUID, event_type: str, event_id: str, payload: Mapping[str, Any]
) -> None:
    """Record the status a ``subscription.*`` delivery reports, on the subscription it names."""
    entity = payload.get("payload", {})
    entity = entity.get("subscription") if isinstance(entity, dict) else None
    entity = entity.get("entity") if isinstance(entity, dict) else None
    if not isinstance(entity, dict):
        raise DeliveryMalformed("payload.subscription.entity is missing")
    notes = entity.get("notes")
    ours = notes.get(NOTE) if isinstance(notes, dict) else None
    if not isinstance(ours, str):
        return  # a subscription not opened through Ledgerflow
    try:
        subscription_id = UUID(ours)
    except ValueError as exc:
        raise DeliveryMalformed(f"notes.{NOTE} is not an id") from exc
    status = text(entity.get("status"), "subscription.status", limit=20)
    if status not in STATUSES:
        raise DeliveryMalformed(f"subscription.status {status!r} is not one of Razorpay's")
    at = unix_time(payload.get("created_at"), "created_at")
    paid = entity.get("paid_count", 0)
    paid_count = paid if type(paid) is int and 0 <= paid < 10**6 else 0
    for _ in range(5):
        subscription = load(service, subscription_id)
        # Another tenant's subscription id in the notes is as good as none.
        if subscription is None or subscription.tenant_id != tenant_id:
            return
        changed = subscription.report_status(
            status, provider_event=event_type, provider_event_id=event_id, at=at, paid_count=paid_count
        )
        if not changed:
            return
        try:
            service._save(subscription)
        except IntegrityError:
            continue
        return


def view(subscription: Subscription) -> dict[str, Any]:
    return {
        "id": str(subscription.id),
        "provider": subscription.provider,
        "plan_id": subscription.plan_id,
        "customer": subscription.customer_id,
        "total_count": subscription.total_count,
        "provider_subscription_id": subscription.provider_subscription_id,
        "short_url": subscription.short_url,
        "status": subscription.status,
        "status_at": subscription.status_at.isoformat() if subscription.status_at else None,
        "paid_count": subscription.paid_count,
    }
