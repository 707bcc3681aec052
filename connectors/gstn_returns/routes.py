"""The ``gstn-returns`` jobs (pure, apart from :func:`queue`).

No ledger event makes a job here: a return is sent when the taxpayer asks (``POST
/v1/gst/gstr1/{id}/submit``), which records ``ledgerflow.tax_return.submitted`` and then queues
:func:`submit_job` with the job id the return recorded, so asking again queues the same job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from connectors.gstn_returns.client import PROVIDER
from engine.domain.tax_return import TaxReturn
from engine.tax_returns import SUBMIT_JOB

if TYPE_CHECKING:
    from engine.config import Settings
    from streams.connectors.jobs import Job


def submit_job(tax_return: TaxReturn, job_id: str) -> Job:
    """The job that saves ``tax_return`` at the network, keyed by the return (its jobs stay in order)."""
    from streams.connectors.jobs import Job

    payload: dict[str, Any] = {
        "return_id": str(tax_return.id),
        "gstin": tax_return.gstin,
        "period": tax_return.period,
        "version": tax_return.version,
    }
    return Job(job_id, PROVIDER, SUBMIT_JOB, str(tax_return.tenant_id), str(tax_return.id), payload)


async def queue(settings: Settings, jobs: Sequence[Job]) -> None:
    """Put jobs on ``connector.gstn-returns.jobs.v1`` and wait for Kafka's acknowledgement. One
    short-lived producer per call: submitting a return is a rare, deliberate action."""
    from engine import kafka
    from streams.connectors.jobs import publish_job

    producer = await kafka.start_producer(settings, "reliable")
    try:
        for job in jobs:
            await publish_job(producer, settings, job)
    finally:
        await producer.stop()
