"""Which ledger events become ``bank`` jobs (pure).

A requested payout, and one a person released from hold, ask for a ``payout`` job: submit the
current round to the bank, then follow its status until completed or failed. The subject (the Kafka
key) is the payout id, so one payout's jobs stay in order on one partition. The router drops jobs of
tenants whose ``bank`` integration is not enabled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.bank.client import PROVIDER
from streams.connectors.jobs import Job

PAYOUT = "payout"
REQUESTED = "ledgerflow.payout.requested"
RELEASED = "ledgerflow.payout.released"
EVENT_TYPES = frozenset({REQUESTED, RELEASED})


def payout_job(ce_id: str, tenant_id: str, payout_id: str) -> Job:
    return Job.for_event(
        PROVIDER,
        PAYOUT,
        ce_id=ce_id,
        tenant_id=tenant_id,
        subject=payout_id,
        payload={"payout_id": payout_id},
    )


def routes(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Sequence[Job]:
    if ce_type not in EVENT_TYPES:
        return ()
    return (payout_job(ce_id, str(record["tenant_id"]), str(record["payout_id"])),)
