"""The ``bank`` connector's jobs: a ``payout`` job submits a payout and follows it to its end.

One attempt of a payout job:

1. Load the payout. Completed, failed or on hold: nothing to do (a stale or repeated job).
2. Status ``requested``: initiate with the idempotency key ``<payout id>:<round>``. The bank answers
   a repeated key with the payment it already made, so a retry after a timeout or a lost answer
   (the sandbox's after-effect faults) never pays twice. A refusal applies its code's rule
   (errors.py): invalid_account fails the payout; insufficient_funds (or a code we do not know) holds
   it for a person with an alert; bank_offline and daily_limit_exceeded raise a retryable error whose
   per-code schedule waits 30 minutes or a day in the retry tiers.
3. Ask the status (right after an acceptance, or on later attempts): completed records UTR and
   charges; failed applies its code's rule (a bounce starts a new round for the retry); still
   processing raises :class:`NotYet`, which waits on the poll schedule (errors.POLL_DELAYS) and is no
   failure for the circuit breaker.

The bank's callbacks (webhook.py) record the same facts; whichever arrives first records them and
the other changes nothing (PayoutBook.apply_status).

A ``statements`` job is the tenant's scheduled statement poll (seed 002: every 6 hours;
``LEDGERFLOW_BANK_STATEMENT_POLL_S``): it reads the last week's statement and the balance from the
bank API, imports them (statements.py: nothing twice), and raises :class:`NotYet` so that the retry
tiers bring it back after the interval, durably, without end. Each save of an enabled integration
routes a new such job; the newest claims the tenant (``bank_statement_polls``) and older ones stop.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

import orjson

from connectors.bank import errors
from connectors.bank.client import BankClient, PaymentStatus, payout_body
from connectors.bank.payouts import PayoutBook, PayoutChangedConcurrently, PayoutNotFound
from connectors.bank.routes import PAYOUT, STATEMENTS
from connectors.bank.settings import validate_credentials
from connectors.bank.statements import poll_account
from connectors.errors import ConnectorError, NeedsAttentionError, NotYet, PermanentError, RetryableError
from engine import db
from engine.domain.payout import FINAL, Payout, PayoutStatus, to_paise
from streams.connectors.context import HandlerContext
from streams.connectors.jobs import Job, JobResult

T = TypeVar("T")


class BankHandler:
    def __init__(self, context: HandlerContext) -> None:
        self.context = context
        self.book = PayoutBook(context.service)

    async def __call__(self, job: Job, attempt: int) -> JobResult:
        if job.kind == STATEMENTS:
            return await self.statements(job, attempt)
        if job.kind != PAYOUT:
            raise PermanentError("unknown_job_kind", f"the bank connector has no job kind {job.kind!r}")
        try:
            tenant_id = UUID(job.tenant_id)
            payout_id = UUID(str(job.payload["payout_id"]))
        except (KeyError, ValueError) as exc:
            raise PermanentError("invalid_job", f"payout job without a valid payout id: {exc}") from exc
        return await self.payout(tenant_id, payout_id)

    async def payout(self, tenant_id: UUID, payout_id: UUID) -> JobResult:
        payout = await self._get(tenant_id, payout_id)
        if payout.status in FINAL or payout.status == PayoutStatus.ON_HOLD:
            return JobResult({"status": payout.status})
        loaded = await self.context.integration(tenant_id)
        creds = validate_credentials(loaded.credentials)
        transport = await self.context.transport(loaded)
        async with BankClient(loaded.base_url, creds.api_key, transport=transport) as bank:
            if payout.status == PayoutStatus.REQUESTED:
                body = payout_body(
                    amount_paise=to_paise(payout.amount),
                    beneficiary={
                        "name": payout.beneficiary_name,
                        "account_number": payout.beneficiary_account,
                        "ifsc": payout.beneficiary_ifsc,
                    },
                    remitter_account=creds.account_number,
                    remitter_ifsc=creds.ifsc,
                    purpose=payout.purpose,
                    reference=payout.reference,
                )
                try:
                    accepted = await bank.initiate(
                        mode=payout.mode, idempotency_key=payout.idempotency_key, body=body
                    )
                except ConnectorError as exc:
                    return await self._refused(tenant_id, payout_id, exc)
                await self._book(
                    lambda: self.book.record_submitted(tenant_id, payout_id, accepted.payment_id)
                )
                status = (
                    accepted if accepted.status != "processing" else await bank.status(accepted.payment_id)
                )
            else:
                assert payout.provider_payment_id is not None
                status = await bank.status(payout.provider_payment_id)
        return await self._follow(tenant_id, payout_id, status)

    async def _refused(self, tenant_id: UUID, payout_id: UUID, exc: ConnectorError) -> JobResult:
        if exc.code not in errors.RULES:
            raise exc  # an outage (timeout, 5xx) or ours to look at: the kit's retry or DLQ
        await self._book(lambda: self.book.apply_refusal(tenant_id, payout_id, exc.code, exc.message))
        if errors.retry_after(exc.code) is not None:
            raise exc  # retryable with its per-code schedule: the same round is initiated again
        payout = await self._get(tenant_id, payout_id)
        return JobResult({"status": payout.status, "code": exc.code})

    async def _follow(self, tenant_id: UUID, payout_id: UUID, status: PaymentStatus) -> JobResult:
        await self._book(lambda: self.book.apply_status(tenant_id, payout_id, status))
        payout = await self._get(tenant_id, payout_id)
        if payout.status == PayoutStatus.PROCESSING:
            raise NotYet(errors.PAYOUT_PROCESSING, f"payment {status.payment_id} is still processing")
        if payout.status == PayoutStatus.REQUESTED:
            code = payout.failure_code or "failed"
            # Bounced: the bank failed the accepted payment; the next attempt starts a new round.
            raise RetryableError(code, payout.failure_message or code, retry_after=errors.retry_after(code))
        return JobResult({"status": payout.status, "utr": payout.utr})

    async def _book(self, work: Callable[[], T]) -> T:
        """Run a payout command off the loop; losing every race to a concurrent callback is an
        outcome to try again shortly, not a bug for a person."""
        try:
            return await self.context.blocking(work)
        except PayoutChangedConcurrently as exc:
            raise RetryableError("changed_concurrently", str(exc)) from exc

    async def _get(self, tenant_id: UUID, payout_id: UUID) -> Payout:
        try:
            return await self._book(lambda: self.book.get(tenant_id, payout_id))
        except PayoutNotFound as exc:
            raise PermanentError("payout_not_found", str(exc)) from exc

    async def statements(self, job: Job, attempt: int) -> JobResult:
        tenant_id = UUID(job.tenant_id)
        if not await self._book(lambda: self._claim(tenant_id, job, attempt)):
            return JobResult({"superseded": True})
        try:
            loaded = await self.context.integration(tenant_id)
        except NeedsAttentionError as exc:
            if exc.code == "integration_disabled":
                # Switched off: the poll ends quietly; enabling the integration again starts a new one.
                return JobResult({"stopped": exc.code})
            raise
        creds = validate_credentials(loaded.credentials)
        transport = await self.context.transport(loaded)
        async with BankClient(loaded.base_url, creds.api_key, transport=transport) as bank:
            result = await poll_account(
                self.context.service,
                tenant_id,
                bank,
                creds.account_number,
                today=datetime.now(errors.IST).date(),
            )
        summary = result.document()
        await self._book(lambda: self._polled(tenant_id, summary))
        raise NotYet(
            errors.STATEMENT_POLL_DUE,
            f"statement polled: {summary['imported']} new line(s); next poll after the interval",
        )

    def _claim(self, tenant_id: UUID, job: Job, attempt: int) -> bool:
        """Whether ``job`` is the tenant's newest statements job (claiming the tenant on its first
        attempt if no newer job did)."""
        with db.transaction(self.context.service.pool) as conn:
            if attempt == 1:
                conn.execute(
                    """INSERT INTO bank_statement_polls (tenant_id, job_id, job_created_at)
                       VALUES (%s, %s, %s)
                       ON CONFLICT (tenant_id) DO UPDATE SET job_id = EXCLUDED.job_id,
                           job_created_at = EXCLUDED.job_created_at
                       WHERE bank_statement_polls.job_created_at <= EXCLUDED.job_created_at""",
                    (tenant_id, job.job_id, job.created_at),
                )
            row = conn.execute(
                "SELECT job_id FROM bank_statement_polls WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
        return row is not None and dict(row)["job_id"] == job.job_id

    def _polled(self, tenant_id: UUID, summary: dict[str, object]) -> None:
        with db.transaction(self.context.service.pool) as conn:
            conn.execute(
                """UPDATE bank_statement_polls SET last_polled_at = %s, last_result = %s::jsonb
                   WHERE tenant_id = %s""",
                (datetime.now(UTC), orjson.dumps(summary).decode(), tenant_id),
            )

    def record_failure(self, job: Job, error: ConnectorError, attempts: int) -> None:
        """Dead-lettered (credentials refused, the integration switched off, a bug): the payout waits
        for a person with an alert, and the retry endpoint sends it again once mended."""
        if job.kind != PAYOUT:
            return  # a statements poll given up: the DLQ holds it; saving the integration starts anew
        try:
            tenant_id, payout_id = UUID(job.tenant_id), UUID(str(job.payload["payout_id"]))
            self.book.apply_refusal(tenant_id, payout_id, error.code, error.message)
        except (KeyError, ValueError, PayoutNotFound):
            pass

    async def close(self) -> None:
        await self.context.close()


def build(context: HandlerContext) -> BankHandler:
    return BankHandler(context)
