"""The hook processor: acts on stored webhook deliveries, after the provider got its 200.

It tails the inbox's notification log (engine/payments.py) from the position it recorded, hands each
delivery to its connector's handler (``Connector.hooks.handle``) and records the new position. Handlers
are idempotent, so a crash between a handler and the position write only repeats harmless work. One
processor works at a time per schema (a PostgreSQL advisory lock), so two started together cannot
interleave. A delivery a handler can never use (``DeliveryMalformed`` or another refused input) is
logged and passed over; an outage (database down) stops the pass without moving the position.

Run it with ``python -m ops.hook_processor`` (polls until interrupted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from connectors import registry as connector_registry
from connectors.hooks import Delivery, HookContext
from engine import db
from engine.application import LedgerService
from engine.domain.inbound_webhook import InboundWebhook
from engine.errors import RequestRefused
from engine.payments import PaymentBook

log = logging.getLogger(__name__)

CONSUMER = "hooks"
PAGE = 200
# One processor per schema (deployments, and tests, may share a database).
LOCK_KEY = "hashtext('ledgerflow.hook_processor.' || current_schema())"


@dataclass
class PassResult:
    handled: int = 0
    skipped: int = 0


class HookProcessor:
    def __init__(self, service: LedgerService, book: PaymentBook) -> None:
        self.service = service
        self.book = book
        self.context = HookContext(service=service, payments=book)

    def run_once(self) -> PassResult:
        """Process every delivery stored after the recorded position; returns what it did."""
        result = PassResult()
        # A connection of its own (autocommit, a session lock), not one of the pool's.
        with db.connect(self.service.settings, autocommit=True) as conn:
            row = conn.execute(f"SELECT pg_try_advisory_lock({LOCK_KEY})").fetchone()
            if not (row and row[0]):
                return result  # another processor is at work
            try:
                found = conn.execute(
                    "SELECT position FROM inbound_webhook_position WHERE consumer = %s", (CONSUMER,)
                ).fetchone()
                position = int(found[0]) if found else 0
                while True:
                    notifications = self.book.inbox.recorder.select_notifications(
                        start=position, limit=PAGE, inclusive_of_start=False
                    )
                    if not notifications:
                        break
                    for notification in notifications:
                        event = self.book.inbox.mapper.to_domain_event(notification)
                        if isinstance(event, InboundWebhook.Received):
                            if self._handle(event):
                                result.handled += 1
                            else:
                                result.skipped += 1
                        position = notification.id
                        # After each delivery: a crash repeats at most the one being handled.
                        conn.execute(
                            "INSERT INTO inbound_webhook_position (consumer, position) VALUES (%s, %s)"
                            " ON CONFLICT (consumer) DO UPDATE SET position = EXCLUDED.position,"
                            " updated_at = now()",
                            (CONSUMER, position),
                        )
            finally:
                conn.execute(f"SELECT pg_advisory_unlock({LOCK_KEY})")
        return result

    def _handle(self, event: InboundWebhook.Received) -> bool:
        connector = connector_registry.BY_NAME.get(event.provider)
        if connector is None or connector.hooks is None:
            log.warning("delivery %s: no handler for provider %s", event.originator_id, event.provider)
            return False
        delivery = Delivery(
            tenant_id=event.tenant_id,
            provider=event.provider,
            provider_event_id=event.provider_event_id,
            event_type=event.event_type,
            body=event.body,
            received_at=event.received_at,
        )
        try:
            connector.hooks.handle(delivery, self.context)
        except RequestRefused as exc:
            # Verified but unusable (a field out of range, an unknown shape): kept in the inbox for a
            # person to read, never retried forever.
            log.warning(
                "delivery %s (%s %s) refused by its handler: %s",
                event.originator_id,
                event.provider,
                event.event_type,
                exc,
            )
            return False
        return True
