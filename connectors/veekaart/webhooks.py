"""VeeKaart's order webhooks: verified by ``signature.verify`` (signature or partner API key, and a
well-formed order), stored by the generic receiver, then handled here: find or create the customer,
then a draft invoice through ``LedgerService.create_draft_invoice``, keyed by the shop's order id.

Idempotent twice over: the inbox keeps one delivery per order id (duplicates and concurrent retries
of one order are acknowledged, not stored again), and the draft is created with
``external_ref = order_id``, so handling the same delivery again after a crash finds the same draft.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from connectors.hooks import Delivery, DeliveryMalformed, HookContext, InboundHooks
from connectors.veekaart import signature
from connectors.veekaart.orders import OrderRejected, draft_fields, parse_order
from connectors.veekaart.settings import PARTNER_API_KEY, PROVIDER
from engine import catalogue, db
from engine.commands import DraftInvoice
from engine.fields import field_errors


def handle(delivery: Delivery, context: HookContext) -> None:
    try:
        order = parse_order(delivery.body)
    except OrderRejected as exc:
        raise DeliveryMalformed(str(exc), fields=exc.fields) from exc
    service = context.service
    customer = order.customer
    with db.transaction(service.pool) as conn:
        catalogue.find_or_create_customer(
            conn,
            delivery.tenant_id,
            name=customer.name,
            gstin=customer.gstin,
            phone=customer.phone,
            email=customer.email,
            state=customer.state_code or (customer.gstin[:2] if customer.gstin else None),
            source=PROVIDER,
        )
        rates = catalogue.rates_by_sku(conn, delivery.tenant_id, [item.sku for item in order.items])
    try:
        command = DraftInvoice.model_validate(draft_fields(order, rates))
    except ValidationError as exc:
        raise DeliveryMalformed(str(exc).splitlines()[0], fields=field_errors(exc.errors())) from exc
    # Idempotent on (source, external_ref): handling the delivery again finds the same draft.
    service.create_draft_invoice(
        delivery.tenant_id,
        command,
        source=PROVIDER,
        external_ref=order.order_id,
        traceparent=None,
    )


@dataclass(frozen=True)
class VeeKaartHooks(InboundHooks):
    """The receiver hands a verifier one list of secrets: here the webhook secrets (current, and the
    replaced one within 24 hours) and the partner API key, each tagged with what it is."""

    def secrets(self, credentials: Mapping[str, str], now: datetime) -> list[str]:
        tagged = [signature.HMAC_PREFIX + s for s in super().secrets(credentials, now)]
        if credentials.get(PARTNER_API_KEY):
            tagged.append(signature.KEY_PREFIX + credentials[PARTNER_API_KEY])
        return tagged


HOOKS = VeeKaartHooks(verify=signature.verify, handle=handle)
