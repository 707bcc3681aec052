"""The relay fills Kafka record batches per partition itself (issue 15): every stored event still
arrives once, byte for byte as encoded one at a time, on the partition the default partitioner
picks for its aggregate, and an aggregate's events in the order they were stored, across pages."""

from __future__ import annotations

from uuid import UUID

import pytest

from engine.application import LedgerService, open_ledger
from engine.commands import CancelInvoice, IssueInvoice
from engine.config import Settings
from engine.kafka import partition_for
from engine.publishing import headers_for, outbound_from_stored
from engine.relay import Relay
from schemas import registry
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import invoice_body, register_tenant
from tests.integration.test_projection_poison import read_topic
from tests.integration.test_relay_unencodable import relay_position

pytestmark = pytest.mark.integration


# In process, and by two encoder processes in chunks of 3 (engine/relay_encoders.py): the chunks of a
# page come back from both in turn and must be appended in page order.
@pytest.mark.parametrize("encoders", [0, 2], ids=["in-process", "encoder-processes"])
def test_pages_of_batches_publish_each_event_once_in_aggregate_order_where_the_partitioner_puts_it(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop, encoders: int
) -> None:
    tenant_id, _ = register_tenant(service)
    invoices = [
        service.issue_invoice(
            UUID(tenant_id), IssueInvoice.model_validate(invoice_body(f"PAGE-{i}"))
        ).invoice.id
        for i in range(24)
    ]
    # The same aggregate twice within a page, and across a page boundary.
    for invoice in invoices[::3]:
        service.cancel_invoice(UUID(tenant_id), invoice, CancelInvoice(reason="other", remark="page test"))

    ledger = open_ledger(settings)
    try:
        stored = ledger.recorder.select_notifications(start=1, limit=10_000)
    finally:
        ledger.close()
    last = stored[-1].id

    # Pages of 7: several pages, batches of every size, the last one partly filled.
    relay = Relay(
        settings, batch_size=7, idle_wait=0.02, encoders=encoders, encoder_chunk=3, encoder_min_page=1
    )
    background.start(relay.run)
    wait_for(lambda: relay_position(settings) == last, timeout=120, what=f"the relay reaching {last}")
    # The encoders did the work when there are any (every page is at least encoder_min_page long).
    assert (relay.stats.pooled_pages > 0) == bool(encoders), relay.stats
    # ... and built the record batches once the relay had listed the topic's partitions.
    assert (relay.stats.built_batches > 0) == bool(encoders), relay.stats

    published = read_topic(settings, "ledger.invoice.v1")
    expected = {}
    for n in stored:
        outbound = outbound_from_stored(n.originator_id, n.originator_version, n.topic, n.state)
        if outbound.topic == "ledger.invoice.v1":
            value, schema = registry.encode_event(outbound.ce_type, outbound.record)
            headers = headers_for(outbound, schema.fingerprint_hex)
            # An event stored without a trace context gets a fresh random one at each encoding.
            if not outbound.stored_trace:
                headers = headers[:-1]
            expected[outbound.ce_id] = (n.originator_version, outbound.key.encode(), value, headers)
    ids = [dict(m.headers())["ce_id"].decode() for m in published]
    assert sorted(ids) == sorted(expected), "each stored invoice event exactly once"
    assert len(ids) == len(invoices) + len(invoices[::3])

    partitions = sorted({m.partition() for m in published} | set(range(settings.partitions)))
    versions: dict[bytes, list[int]] = {}
    for message, ce_id in zip(published, ids, strict=True):
        version, key, value, headers = expected[ce_id]
        assert (message.key(), message.value()) == (key, value)
        got = [(name, bytes(data)) for name, data in message.headers()]
        assert got[: len(headers)] == headers and len(got) == 9 and got[-1][0] == "traceparent"
        assert message.partition() == partition_for(key, partitions)
        versions.setdefault(key, []).append(version)  # read_topic reads each partition in offset order
    assert all(seen == sorted(seen) for seen in versions.values()), versions
    assert sum(len(seen) == 2 for seen in versions.values()) == len(invoices[::3])


def test_a_relay_started_over_existing_topics_has_its_encoders_batch_the_first_page(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    # The whole log in one page: the first page after the start. Its topics exist (the fixture
    # creates them), so the encoders build every record batch; before, a relay knew no topic's
    # partitions until its first page came back message by message, to be batched here.
    tenant_id, _ = register_tenant(service)
    for i in range(6):
        service.issue_invoice(UUID(tenant_id), IssueInvoice.model_validate(invoice_body(f"FIRST-{i}")))
    ledger = open_ledger(settings)
    try:
        stored = ledger.recorder.select_notifications(start=1, limit=10_000)
    finally:
        ledger.close()
    last = stored[-1].id

    relay = Relay(settings, batch_size=1000, idle_wait=0.02, encoders=2, encoder_chunk=3, encoder_min_page=1)
    background.start(relay.run)
    wait_for(lambda: relay_position(settings) == last, timeout=120, what=f"the relay reaching {last}")
    assert relay.stats.pooled_pages == 1 and relay.stats.built_batches > 0, relay.stats
    assert relay.stats.appended_here == 0, relay.stats
    published = read_topic(settings, "ledger.invoice.v1")
    assert len(published) == len(stored) - 1  # every invoice; the tenant's event has its own topic
