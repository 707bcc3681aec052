"""Which ledger events become ``bank`` jobs (pure).

A requested payout, and one a person released from hold, ask for a ``payout`` job: submit the
current round to the bank, then follow its status until completed or failed. The subject (the Kafka
key) is the payout id, so one payout's jobs stay in order on one partition.

A saved and enabled ``bank`` integration asks for a ``statements`` job: the tenant's scheduled
statement and balance poll, which runs now and then again every poll interval for as long as it is
the tenant's newest such job (handler.py). The router drops jobs of tenants whose ``bank``
integration is not enabled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from connectors.bank.client import PROVIDER
from streams.connectors.jobs import Job

PAYOUT = "payout"
STATEMENTS = "statements"
REQUESTED = "ledgerflow.payout.requested"
RELEASED = "ledgerflow.payout.released"
INTEGRATION_CHANGED = "ledgerflow.tenant.integration_settings_changed"
EVENT_TYPES = frozenset({REQUESTED, RELEASED, INTEGRATION_CHANGED})
STATEMENTS_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/bank-statement-poll")


def payout_job(ce_id: str, tenant_id: str, payout_id: str) -> Job:
    return Job.for_event(
        PROVIDER,
        PAYOUT,
        ce_id=ce_id,
        tenant_id=tenant_id,
        subject=payout_id,
        payload={"payout_id": payout_id},
    )


def statements_job(ce_id: str, tenant_id: str) -> Job:
    return Job.for_event(
        PROVIDER,
        STATEMENTS,
        ce_id=ce_id,
        tenant_id=tenant_id,
        # The router wants a UUID subject (the Kafka key): one per tenant's statement poll.
        subject=str(uuid5(STATEMENTS_NAMESPACE, tenant_id)),
        payload={},
    )


def routes(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Sequence[Job]:
    if ce_type == INTEGRATION_CHANGED:
        if record.get("provider") == PROVIDER and record.get("enabled"):
            return (statements_job(ce_id, str(record["tenant_id"])),)
        return ()
    if ce_type not in EVENT_TYPES:
        return ()
    return (payout_job(ce_id, str(record["tenant_id"]), str(record["payout_id"])),)
