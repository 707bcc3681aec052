"""The relay never drops a stored event: one it cannot encode stops it, loudly and precisely, after
publishing everything before it, and a restart stops at the same event."""

from __future__ import annotations

import json
import logging
import uuid
from uuid import UUID

import pytest

from engine import db
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.relay import Relay, UnencodableEvent
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import invoice_body, register_tenant
from tests.integration.test_projection_poison import read_topic


def store_broken_invoice_event(settings: Settings, template: UUID) -> tuple[int, str]:
    """A copy of ``template``'s stored ``Issued`` event for a new invoice, without its buyer: a stored
    event no Kafka record can be made of. (notification id, originator id)."""
    originator = str(uuid.uuid4())
    with db.connect(settings) as conn, conn.transaction():
        topic, state = conn.execute(
            "SELECT topic, state FROM ledger_events WHERE originator_id = %s AND originator_version = 1",
            (template,),
        ).fetchone()  # type: ignore[misc]
        broken = json.loads(bytes(state))
        del broken["buyer"]
        row = conn.execute(
            "INSERT INTO ledger_events (originator_id, originator_version, topic, state)"
            " VALUES (%s, 1, %s, %s) RETURNING notification_id",
            (originator, topic, json.dumps(broken).encode()),
        ).fetchone()
    assert row is not None
    return int(row[0]), originator


def relay_position(settings: Settings) -> int | None:
    with db.connect(settings) as conn:
        row = conn.execute("SELECT notification_id FROM relay_position WHERE relay = 'ledger'").fetchone()
    return None if row is None else int(row[0])


# Also with the page encoded by encoder processes (engine/relay_encoders.py), in chunks of 2 so the
# broken event sits in the second chunk, after a chunk that is published.
@pytest.mark.parametrize("encoders", [0, 1], ids=["in-process", "encoder-process"])
def test_an_event_the_relay_cannot_encode_stops_it_with_an_alert_naming_the_event(
    service: LedgerService,
    settings: Settings,
    topics: list[str],
    background: BackgroundLoop,
    caplog: pytest.LogCaptureFixture,
    encoders: int,
) -> None:
    tenant_id, _ = register_tenant(service)

    def issue(number: str) -> UUID:
        body = IssueInvoice.model_validate(invoice_body(number))
        return service.issue_invoice(UUID(tenant_id), body).invoice.id

    first, second = issue("BEFORE-1"), issue("BEFORE-2")
    broken_id, originator = store_broken_invoice_event(settings, first)
    issue("AFTER-1")

    caplog.set_level(logging.CRITICAL, logger="ledgerflow.relay")
    for attempt in (1, 2):  # a restart stops at the same event again
        relay = Relay(settings, encoders=encoders, encoder_chunk=2, encoder_min_page=1)
        background.start(relay.run)
        task = background.tasks[-1][1]
        wait_for(task.done, timeout=60, what=f"the relay stopping (start {attempt})")
        error = task.exception()
        assert isinstance(error, UnencodableEvent), error
        assert (error.notification_id, error.originator_id, error.originator_version) == (
            broken_id,
            originator,
            1,
        )
        assert error.stored_topic.endswith("Invoice.Issued") and "buyer" in str(error)
        alerts = [r for r in caplog.records if r.levelno == logging.CRITICAL and getattr(r, "alert", False)]
        assert len(alerts) == attempt
        message = alerts[-1].getMessage()
        assert f"notification {broken_id}" in message and originator in message and "version 1" in message
        assert relay_position(settings) == broken_id - 1
        background.tasks.pop()

    published = read_topic(settings, "ledger.invoice.v1")
    assert sorted(m.key().decode() for m in published) == sorted([str(first), str(second)])
