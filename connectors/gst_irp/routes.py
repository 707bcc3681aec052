"""Which ledger events become ``gst-irp`` jobs (pure).

Tenant policy: a tenant whose ``gst-irp`` integration is enabled gets an IRN for every invoice that
the IRP accepts (B2B, SEZ and exports; there are no B2C e-invoices, india-gst.md section 1), and a
cancellation job when such an invoice is cancelled. The router (streams/router.py) applies the
"enabled" part; this module only says what an event asks for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.gst_irp.client import PROVIDER
from engine.application import CANCELLATION_REASON_CODES
from streams.connectors.jobs import Job

ISSUED = "ledgerflow.invoice.issued"
CANCELLED = "ledgerflow.invoice.cancelled"
EVENT_TYPES = frozenset({ISSUED, CANCELLED})
GENERATE = "generate_irn"
CANCEL = "cancel_irn"
EINVOICE_SUPPLY_TYPES = frozenset({"B2B", "SEZWP", "SEZWOP", "EXPWP", "EXPWOP", "DEXP"})


def job_for(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Job | None:
    """The job an invoice event asks for, before tenant policy."""
    if ce_type == ISSUED and record["supply_type"] in EINVOICE_SUPPLY_TYPES:
        return Job.for_event(
            PROVIDER,
            GENERATE,
            ce_id=ce_id,
            tenant_id=record["tenant_id"],
            subject=record["invoice_id"],
            # The issued record as published: the handler maps it, so what the IRP registers is
            # what every other consumer of the topic saw, without rebuilding it from the store.
            payload={"invoice_id": record["invoice_id"], "number": record["number"], "invoice": dict(record)},
        )
    if ce_type == CANCELLED:
        return Job.for_event(
            PROVIDER,
            CANCEL,
            ce_id=ce_id,
            tenant_id=record["tenant_id"],
            subject=record["invoice_id"],
            payload={
                "invoice_id": record["invoice_id"],
                "reason_code": CANCELLATION_REASON_CODES.get(record["reason"], 4),
                "remark": record.get("remark") or record["reason"].replace("_", " "),
            },
        )
    return None


def routes(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Sequence[Job]:
    job = job_for(ce_type, ce_id, record)
    return [job] if job is not None else []
