"""The InboundWebhook aggregate: one verified delivery from a provider (Razorpay, Stripe, a bank).

A delivery is stored before the provider gets its 200 and processed afterwards, so a crash between
the two loses nothing (the processor finds it in the store). Its id derives from (tenant, provider,
the provider's event id): providers retry and duplicate deliveries (Razorpay for 24 hours), and the
second save of the same id is refused by the event store's optimistic concurrency, so a duplicate,
even one arriving concurrently, is acknowledged and changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

_DELIVERY_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/inbound-webhook")


def delivery_id_for(tenant_id: UUID, provider: str, provider_event_id: str) -> UUID:
    """Stable for the same provider event of the same tenant: its duplicates share the id."""
    return uuid5(_DELIVERY_NAMESPACE, f"{tenant_id}/{provider}/{provider_event_id}")


class InboundWebhook(Aggregate):
    """A verified delivery, exactly as it arrived (the raw body, for re-processing)."""

    class Received(Aggregate.Created):
        tenant_id: UUID
        provider: str
        provider_event_id: str
        event_type: str
        body: str
        received_at: datetime

    @event(Received)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        provider: str,
        provider_event_id: str,
        event_type: str,
        body: str,
        received_at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.provider = provider
        self.provider_event_id = provider_event_id
        self.event_type = event_type
        self.body = body
        self.received_at = received_at

    @staticmethod
    def create_id(*, tenant_id: UUID, provider: str, provider_event_id: str, **_: Any) -> UUID:
        return delivery_id_for(tenant_id, provider, provider_event_id)
