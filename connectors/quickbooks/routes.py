"""Which ledger events become ``quickbooks`` jobs (pure).

Every issued invoice is pushed and every cancelled one voided; every payment is pushed when the
gateway reports it captured (money taken: a created, authorised or failed payment is not income), linked
to the invoice it names (``reference.invoice_number`` or ``invoice_id``; the handler reads the
payment). The router keeps only tenants whose integration is enabled; the handler then skips tenants
that never connected and holds back those whose connection needs re-authorisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.quickbooks.settings import PROVIDER
from streams.connectors.jobs import Job

ISSUED = "ledgerflow.invoice.issued"
CANCELLED = "ledgerflow.invoice.cancelled"
PAYMENT_STATUS_CHANGED = "ledgerflow.payment.status_changed"
EVENT_TYPES = frozenset({ISSUED, CANCELLED, PAYMENT_STATUS_CHANGED})
PUSH_INVOICE = "push_invoice"
VOID_INVOICE = "void_invoice"
PUSH_PAYMENT = "push_payment"


def routes(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Sequence[Job]:
    tenant = str(record["tenant_id"])
    if ce_type == ISSUED and record.get("document_type", "invoice") in (None, "invoice"):
        return [
            Job.for_event(
                PROVIDER,
                PUSH_INVOICE,
                ce_id=ce_id,
                tenant_id=tenant,
                subject=str(record["invoice_id"]),
                payload={"invoice": dict(record)},
            )
        ]
    if ce_type == CANCELLED:
        return [
            Job.for_event(
                PROVIDER,
                VOID_INVOICE,
                ce_id=ce_id,
                tenant_id=tenant,
                subject=str(record["invoice_id"]),
                payload={"invoice_id": str(record["invoice_id"])},
            )
        ]
    if ce_type == PAYMENT_STATUS_CHANGED and record.get("status") == "captured":
        return [
            Job.for_event(
                PROVIDER,
                PUSH_PAYMENT,
                ce_id=ce_id,
                tenant_id=tenant,
                subject=str(record["payment_id"]),
                payload={"payment_id": str(record["payment_id"])},
            )
        ]
    return []
