"""Stripe's inbound webhooks: ``signature.verify`` at the receiver, ``handle`` once stored."""

from __future__ import annotations

import orjson

from connectors.hooks import Delivery, DeliveryMalformed, HookContext, InboundHooks
from connectors.stripe import events, signature


def handle(delivery: Delivery, context: HookContext) -> None:
    try:
        payload = orjson.loads(delivery.body)
    except orjson.JSONDecodeError as exc:
        raise DeliveryMalformed("the stored body is not JSON") from exc
    if not isinstance(payload, dict):
        raise DeliveryMalformed("the stored body is not a JSON object")
    for fact in events.facts(delivery.tenant_id, delivery.event_type, delivery.provider_event_id, payload):
        context.payments.apply(fact)


HOOKS = InboundHooks(verify=signature.verify, handle=handle)
