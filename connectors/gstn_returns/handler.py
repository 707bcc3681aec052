"""The ``gstn-returns`` handler: one attempt of a ``submit_gstr1`` job, results through a port.

A job names a TaxReturn version (engine/domain/tax_return.py) that was submitted. An attempt:

1. asks the port where the return stands; one no longer in flight (processed, rejected, filed or
   given up meanwhile) needs nothing more;
2. saves each part that has no reference id yet (RETSAVE) and records the reference id at once, so a
   later attempt polls instead of saving again (and a save repeated after a lost answer is the same
   save at the network, which dedupes on the content);
3. asks the status of every save (RETSTATUS). While any is in progress (``IP``) the attempt ends with
   a retryable ``return_in_progress``: the job comes back through the retry tiers, never a sleep in
   the worker. Once all are processed it records "ready to file" or the refused documents.

Filing (EVC OTP) is not a job: the taxpayer does it through ``POST /v1/gst/gstr1/{id}/file``.
"""

from __future__ import annotations

import hashlib
import logging
from functools import partial
from typing import Protocol
from uuid import UUID

import orjson

from connectors.errors import ConnectorError, NeedsAttentionError, PermanentError, RetryableError
from connectors.gstn_returns import errors
from connectors.gstn_returns.client import PROVIDER, ReturnsClient
from connectors.gstn_returns.settings import credentials_of
from engine import integrations
from engine.domain.tax_return import ReturnStatus, TaxReturn
from engine.tax_returns import SUBMIT_JOB, TaxReturnNotFound, TaxReturns
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult

log = logging.getLogger("ledgerflow.gstn_returns")

IN_PROGRESS_RETRY_S = 1.0
"""Asked of the retry policy while a save is processed (the schedule's own delay applies if longer)."""


class ReturnResults(Protocol):
    """The result port (``engine.tax_returns.TaxReturns``; a unit test can fake it)."""

    def get(self, tenant_id: UUID, return_id: UUID) -> TaxReturn: ...

    def part_by_hash(self, tenant_id: UUID, content_hash: str) -> bytes: ...

    def record_saved(
        self, tenant_id: UUID, return_id: UUID, *, part: int, reference_id: str, job_id: str
    ) -> bool: ...

    def record_processed(self, tenant_id: UUID, return_id: UUID, *, job_id: str) -> bool: ...

    def record_rejected_records(
        self, tenant_id: UUID, return_id: UUID, *, job_id: str, status_code: str, errors: list[dict[str, str]]
    ) -> bool: ...

    def record_failure(
        self,
        tenant_id: UUID,
        return_id: UUID,
        *,
        job_id: str,
        error_class: str,
        code: str,
        message: str,
        attempts: int,
    ) -> bool: ...


class ReturnJobs:
    """Handler and failure sink of the ``gstn-returns`` connector."""

    def __init__(self, context: HandlerContext, results: ReturnResults | None = None) -> None:
        self.context = context
        self.results: ReturnResults = results if results is not None else TaxReturns(context.service)
        self._clients: dict[tuple[str, str, str], ReturnsClient] = {}

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self.context.close()

    async def _client(self, loaded: integrations.IntegrationSettings, gstin: str) -> ReturnsClient:
        credentials, configured = credentials_of(dict(loaded.credentials))
        if configured.upper() != gstin.upper():
            raise NeedsAttentionError(
                "gstin_not_configured",
                f"the tenant's {PROVIDER} integration is for GSTIN {configured}, not {gstin}",
            )
        fingerprint = hashlib.sha256(
            orjson.dumps(loaded.credentials, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        key = (str(loaded.tenant_id), f"{loaded.environment} {loaded.base_url}", fingerprint)
        if key not in self._clients:
            transport = await self.context.transport(loaded)
            self._clients[key] = ReturnsClient(loaded.base_url, credentials, configured, transport=transport)
        return self._clients[key]

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        if job.kind != SUBMIT_JOB:
            raise PermanentError("unknown_job_kind", f"{PROVIDER} has no job kind {job.kind!r}")
        tenant_id, return_id = UUID(job.tenant_id), UUID(job.subject)
        try:
            tax_return = await self.context.blocking(lambda: self.results.get(tenant_id, return_id))
        except TaxReturnNotFound as exc:
            raise PermanentError("return_not_found", str(exc)) from exc
        if tax_return.status not in (ReturnStatus.SUBMITTED, ReturnStatus.SAVED):
            return JobResult({"skipped": f"the return is {tax_return.status}"})
        if tax_return.submission is None or tax_return.submission.get("job_id") != job.job_id:
            # An older submission's job redelivered after the return was submitted again.
            return JobResult({"skipped": "superseded by a later submission"})
        loaded = await self.context.integration(tenant_id)
        client = await self._client(loaded, tax_return.gstin)

        references = dict(tax_return.reference_ids)
        for number, content_hash in enumerate(tax_return.parts, start=1):
            if number in references:
                continue
            part = await self.context.blocking(partial(self.results.part_by_hash, tenant_id, content_hash))
            reference_id = await client.save(tax_return.period, part)
            await self.context.blocking(
                partial(
                    self.results.record_saved,
                    tenant_id,
                    return_id,
                    part=number,
                    reference_id=reference_id,
                    job_id=job.job_id,
                )
            )
            references[number] = reference_id

        refused: list[dict[str, str]] = []
        worst = errors.PROCESSED
        for number in sorted(references):
            status = await client.status(tax_return.period, references[number])
            if status.in_progress:
                raise RetryableError(
                    errors.IN_PROGRESS,
                    f"part {number} ({references[number]}) is still being processed",
                    retry_after=IN_PROGRESS_RETRY_S,
                )
            if status.status_cd != errors.PROCESSED:
                worst = errors.ERROR if status.status_cd == errors.ERROR else errors.PROCESSED_WITH_ERRORS
                refused += [{"part": str(number), **row} for row in status.errors]
        if worst == errors.PROCESSED:
            await self.context.blocking(
                lambda: self.results.record_processed(tenant_id, return_id, job_id=job.job_id)
            )
            return JobResult(
                {"status": ReturnStatus.READY_TO_FILE, "reference_ids": list(references.values())}
            )
        await self.context.blocking(
            lambda: self.results.record_rejected_records(
                tenant_id, return_id, job_id=job.job_id, status_code=worst, errors=refused
            )
        )
        return JobResult({"status": ReturnStatus.REJECTED_RECORDS, "refused": len(refused)})

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        """Give the return the reason it was never saved (called once the job is dead-lettered)."""
        try:
            self.results.record_failure(
                UUID(job.tenant_id),
                UUID(job.subject),
                job_id=job.job_id,
                error_class=str(error.error_class),
                code=error.code,
                message=error.message,
                attempts=attempts,
            )
        except TaxReturnNotFound:
            log.warning("job %s failed for a return that does not exist", job.job_id)


def build(context: HandlerContext) -> ReturnJobs:
    """The handler factory the connector declaration names (connectors/gstn_returns/__init__.py)."""
    return ReturnJobs(context)
