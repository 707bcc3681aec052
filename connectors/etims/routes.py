"""Which ledger events become ``etims`` jobs (pure).

* A Kenyan ``ledgerflow.invoice.issued`` (country KE, an invoice or a credit note) asks for a
  ``sale`` job. Its subject is the branch key (sales.branch_key: environment + tenant + branch), so
  the router's record key puts every sale of one branch on one partition of the jobs topic, in
  issue order; the invoice travels in the payload. Order is not left to Kafka alone (a retry waits
  in a delay topic): the queue in PostgreSQL sends a branch's sales in invcNo order (sales.py).
* Device events (a saved ``etims`` integration) are etims-devices' (devices.device_routes).

The router (streams/router.py) drops jobs of tenants whose ``etims`` integration is not enabled.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from connectors.etims.client import PROVIDER
from connectors.etims.devices import DEVICE_EVENT_TYPES, device_routes
from connectors.etims.sales import CREDIT_NOTE, DRAIN, INVOICE, SALE, branch_key
from streams.connectors.jobs import Job

ISSUED = "ledgerflow.invoice.issued"
SALE_EVENT_TYPES = frozenset({ISSUED})
EVENT_TYPES = SALE_EVENT_TYPES | DEVICE_EVENT_TYPES


def is_kenyan_sale(record: Mapping[str, Any]) -> bool:
    return record.get("country") == "KE" and (record.get("document_type") or INVOICE) in (
        INVOICE,
        CREDIT_NOTE,
    )


def sale_job(ce_id: str, record: Mapping[str, Any]) -> Job:
    """The sale job of an issued Kenyan invoice or credit note."""
    tenant_id = str(record["tenant_id"])
    environment = str(record.get("environment") or "")
    bhf_id = str(record.get("branch_id") or "")
    # The record as published, as JSON (decimals and dates as text): what the sale is mapped from.
    document = orjson.loads(orjson.dumps(dict(record), default=str))
    return Job.for_event(
        PROVIDER,
        SALE,
        ce_id=ce_id,
        tenant_id=tenant_id,
        subject=str(branch_key(tenant_id, environment, bhf_id)),
        payload={"invoice_id": str(record["invoice_id"]), "invoice": document},
    )


def drain_job(tenant_id: str, environment: str, bhf_id: str, *, reason: str) -> Job:
    """Send a branch's queue again, after an operator resent or voided its blocked sale (the jobs
    waiting behind it finished: waiting for a person is no provider failure to retry)."""
    return Job(
        f"{reason}:{uuid.uuid4()}:{DRAIN}",
        PROVIDER,
        DRAIN,
        str(tenant_id),
        str(branch_key(tenant_id, environment, bhf_id)),
        {"environment": environment, "bhf_id": bhf_id},
    )


def routes(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Sequence[Job]:
    if ce_type == ISSUED:
        return [sale_job(ce_id, record)] if is_kenyan_sale(record) else []
    if ce_type in DEVICE_EVENT_TYPES:
        return device_routes(ce_type, ce_id, record)
    return []
