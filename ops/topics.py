"""Every Kafka topic the engine uses, and creating the missing ones."""

from __future__ import annotations

from engine import kafka_admin
from engine.config import Settings

# The engine's own topics; connectors add theirs (jobs, retry tiers, DLQ) from their declarations.
TOPICS = [
    "ledger.invoice.v1",
    "ledger.tenant.v1",
    "ledger.alert.v1",
    "ledger.payment.v1",
    "ledger.subscription.v1",
    "ledger.tax_return.v1",
    "ledger.payout.v1",
    "ledger.bank_transaction.v1",
    "ledger.tds.v1",
    "ledger.reconciliation_match.v1",
    "ingest.invoice.v1",
    "ingest.invoice.dlq.v1",
    "projection.invoice_register.dlq.v1",
    "projection.etims_compliance.dlq.v1",
    "projection.gst_outward_supplies.dlq.v1",
    "projection.reconciliation.dlq.v1",
    "router.einvoicing.dlq.v1",
    "ledger.product.v1",
    "ledger.expense.v1",
    "ledger.budget.v1",
    "ledger.fee_collection.v1",
]


def ensure_all(settings: Settings, partitions: int | None = None) -> tuple[list[str], list[str]]:
    """Create what is missing; returns (every full topic name, the ones created now)."""
    from streams.catalogue import planned_specs
    from streams.connectors.spec import ensure_connector_topics, topics_for

    partitions = partitions or settings.partitions
    names = [settings.topic(t) for t in TOPICS]
    created = kafka_admin.ensure_topics(settings, names, partitions)
    specs = planned_specs(settings)
    created += ensure_connector_topics(settings, specs, partitions)
    names += [settings.topic(t) for spec in specs for t in topics_for(spec)]
    return names, created
