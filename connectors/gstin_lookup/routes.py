"""Which ledger events become ``gstin-lookup`` jobs (pure): one ``verify_buyer`` per issued Indian
document with a buyer GSTIN (issue 11, "GSTIN verification": parties are verified asynchronously,
after the invoice is issued, so the write path never waits for the GST network).

Tenant policy: only tenants whose ``gstin-lookup`` integration is enabled (the router applies it);
a tenant without a GSP account for the search gets no job, and its invoices are unaffected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.gstin_lookup.client import PROVIDER
from streams.connectors.jobs import Job

ISSUED = "ledgerflow.invoice.issued"
EVENT_TYPES = frozenset({ISSUED})
VERIFY_BUYER = "verify_buyer"


def job_for(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Job | None:
    """The job an invoice event asks for, before tenant policy."""
    if ce_type != ISSUED or (record.get("country") or "IN") != "IN":
        return None
    buyer = record.get("buyer")
    gstin = buyer.get("gstin") if isinstance(buyer, Mapping) else None
    if not gstin:
        return None  # B2C, an export to an unregistered buyer, or a Kenyan invoice
    return Job.for_event(
        PROVIDER,
        VERIFY_BUYER,
        ce_id=ce_id,
        tenant_id=record["tenant_id"],
        subject=record["invoice_id"],
        payload={"invoice_id": record["invoice_id"], "number": record["number"], "gstin": gstin},
    )


def routes(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Sequence[Job]:
    job = job_for(ce_type, ce_id, record)
    return [job] if job is not None else []
