"""The alert worker: reads ``ledger.alert.v1``, keeps each alert for ``GET /v1/alerts`` and queues the
email the tenant's policy asks for (docs/integrations.md "Alerts").

For every ``ledgerflow.alert.raised`` record: the alert is stored in ``alert_log`` (once per alert
id), the tenant's policy (engine/alert_policy.py) names the recipients for its severity, and if
there are any and the tenant's ``sendgrid`` integration is enabled, one ``alert.email`` job is
queued for the sendgrid connector (connectors/sendgrid/handler.py), whose id derives from the alert
id: a redelivered alert makes the same job, and the handler sends each alert once. Retries, 429s,
the circuit and the DLQ are the connector runtime's.

Alerts about the sendgrid connector itself are listed but not emailed through it (a broken mail
setup would otherwise mail about itself failing to mail). A record that cannot be decoded is logged
and passed over; PostgreSQL or Kafka being away is waited out without moving the offset.

Run it with ``python -m ops.alert_worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from uuid import UUID

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from connectors.sendgrid.client import PROVIDER as SENDGRID
from connectors.sendgrid.handler import alert_email_job
from engine import alert_policy, db, integrations, kafka
from engine.config import Settings
from schemas import codec, registry
from streams.catalogue import planned_specs
from streams.connectors.jobs import publish_job
from streams.connectors.spec import ensure_connector_topics

log = logging.getLogger("ledgerflow.alerts")

ALERT_TOPIC = "ledger.alert.v1"
ALERT_RAISED = "ledgerflow.alert.raised"
OUTAGE_WAIT_S = 5.0


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}ledgerflow.alerts"


class AlertWorker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def keep(self, alert: dict[str, Any]) -> list[str]:
        """Store the alert; the recipients its email goes to (none: no email)."""
        tenant_id = UUID(str(alert["tenant_id"]))
        with db.connect(self.settings) as conn, conn.transaction():
            alert_policy.record_alert(conn, alert)
            if str((alert.get("details") or {}).get("connector", "")) == SENDGRID:
                return []
            rules = alert_policy.load(conn, tenant_id)["email"]
            recipients = alert_policy.recipients_for(rules, str(alert["severity"]))
            if not recipients or not integrations.enabled_for(conn, tenant_id, SENDGRID):
                return []
            return recipients

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(db.ensure_schema, self.settings)
        specs = [s for s in planned_specs(self.settings) if s.name == SENDGRID]
        await asyncio.to_thread(ensure_connector_topics, self.settings, specs)
        consumer = kafka.consumer(
            self.settings,
            self.settings.topic(ALERT_TOPIC),
            group_id=group_id(self.settings),
            auto_offset_reset="earliest",
        )
        producer = await kafka.start_producer(self.settings, "reliable")
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=100)
                for tp, messages in batches.items():
                    for message in messages:
                        try:
                            await self._handle(message, producer)
                        except (KafkaError, OSError, db.DatabaseUnavailable) as exc:
                            log.warning(
                                "alert at %s@%d not handled (%s); again shortly", tp, message.offset, exc
                            )
                            consumer.seek(tp, message.offset)
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), OUTAGE_WAIT_S)
                            break
                        await consumer.commit({TopicPartition(tp.topic, tp.partition): message.offset + 1})
        finally:
            await consumer.stop()
            await producer.stop()

    async def _handle(self, message: Any, producer: Any) -> None:
        headers = {k: (v or b"").decode(errors="replace") for k, v in (message.headers or [])}
        if headers.get("ce_type") != ALERT_RAISED:
            return
        try:
            alert = registry.decode_event(message.value, ALERT_RAISED)
        except codec.CodecError as exc:
            log.error("undecodable alert at offset %d: %s", message.offset, exc)
            return
        try:
            recipients = await asyncio.to_thread(self.keep, alert)
        except db.DatabaseUnavailable:
            raise
        except Exception as exc:
            if db.is_outage(exc):
                raise db.DatabaseUnavailable(str(exc)) from exc
            log.exception("alert %s could not be kept", alert.get("alert_id"))
            return
        if recipients:
            await publish_job(producer, self.settings, alert_email_job(alert, recipients))
