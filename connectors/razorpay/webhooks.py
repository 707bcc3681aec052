"""Razorpay's inbound webhooks: verified by ``signature.verify``, handled here after being stored."""

from __future__ import annotations

import logging

import orjson

from connectors.hooks import Delivery, DeliveryMalformed, HookContext, InboundHooks
from connectors.razorpay import events, signature, subscriptions

log = logging.getLogger(__name__)


def handle(delivery: Delivery, context: HookContext) -> None:
    """Apply a stored delivery's payment facts (idempotent: the Payment aggregate ignores what it
    already knows), and ``subscription.*`` statuses to their Subscription. Events we do not model yet
    (payout.*, order.*) are kept in the inbox only."""
    try:
        payload = orjson.loads(delivery.body)
    except orjson.JSONDecodeError as exc:
        raise DeliveryMalformed("the stored body is not JSON") from exc
    if not isinstance(payload, dict):
        raise DeliveryMalformed("the stored body is not a JSON object")
    if delivery.event_type.startswith("subscription."):
        subscriptions.apply_event(
            context.service, delivery.tenant_id, delivery.event_type, delivery.provider_event_id, payload
        )
        return
    for fact in events.facts(delivery.tenant_id, delivery.event_type, delivery.provider_event_id, payload):
        context.payments.apply(fact)


HOOKS = InboundHooks(verify=signature.verify, handle=handle)
