"""The TaxReturn aggregate: one frozen version of a GSTR-1 return and its way through the GST network.

A version's id derives from (tenant, GSTIN, return period, version), so the event store's optimistic
concurrency is what keeps two generations racing for the same period from both becoming "version 2":
the second ``Generated`` for the same id cannot be stored. Regenerating a period after late documents
makes the next version (its own aggregate) with what changed since the previous one (``diff``).

Its life::

    generated -> submitted -> saved -> ready_to_file -> filed
                                    \\-> rejected_records (the network refused some documents)
               (any step after submitted) -> failed (the job was given up: see ``failure``)

The return's JSON is frozen elsewhere (``tax_return_parts``, keyed by content hash); the events carry
the hash and the summary, never megabytes of JSON. The GST network's side of this (save, status,
file) is the ``gstn-returns`` connector; this module knows nothing of HTTP or Kafka.

GSTN's own flow (GSP returns API: RETSAVE, then the status of the save by its reference id until it
is processed "P", processed with errors "PE" or in error "ER", then RETFILE with an EVC OTP giving an
acknowledgement number, the ARN) is what the states follow.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from engine.errors import Conflict, InvalidInput

TAX_RETURN_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/tax-return")
FORM_GSTR1 = "GSTR1"
# GSTN's return period: month and year, "MMYYYY" (the offline tool's "fp").
PERIOD = re.compile(r"^(0[1-9]|1[0-2])(20[1-9][0-9])$")


def tax_return_id_for(tenant_id: UUID, form: str, gstin: str, period: str, version: int) -> UUID:
    """The stable id of ``version`` of ``form`` for (tenant, GSTIN, period)."""
    return uuid5(TAX_RETURN_NAMESPACE, f"{tenant_id}/{form}/{gstin.upper()}/{period}/{version}")


def period_key(period: str) -> tuple[int, int]:
    """(year, month) of an "MMYYYY" period, for ordering periods."""
    return int(period[2:]), int(period[:2])


class ReturnStatus:
    GENERATED = "generated"
    SUBMITTED = "submitted"
    SAVED = "saved"
    READY_TO_FILE = "ready_to_file"  # saved and validated by the network, waiting for the taxpayer's OTP
    REJECTED_RECORDS = "rejected_records"
    FILED = "filed"
    FAILED = "failed"


# Where a later step may start from. A failed submission may be submitted again (after the cause was
# fixed); a rejected one needs a new version (the documents change), so it cannot be resubmitted.
SUBMITTABLE = frozenset({ReturnStatus.GENERATED, ReturnStatus.FAILED})


class TaxReturn(Aggregate):
    """One version of one tenant's return for one GSTIN and period."""

    class Generated(Aggregate.Created):
        tenant_id: UUID
        form: str
        gstin: str
        period: str
        version: int
        content_hash: str
        parts: list[str]  # content hash of each part, in upload order
        summary: dict[str, Any]
        diff: dict[str, Any] | None
        previous_id: str | None
        generated_by: str
        generated_at: datetime

    class Submitted(Aggregate.Event):
        job_id: str
        submitted_by: str
        submitted_at: datetime
        tenant_id: UUID | None = None

    class Saved(Aggregate.Event):
        """The network accepted one part for processing under ``reference_id`` (RETSAVE)."""

        part: int
        reference_id: str
        job_id: str
        tenant_id: UUID | None = None

    class Processed(Aggregate.Event):
        """Every part was processed without errors: saved and validated, ready to file."""

        job_id: str
        reference_ids: list[str]
        tenant_id: UUID | None = None

    class RejectedRecords(Aggregate.Event):
        """The network processed the save and refused some documents, each with its error."""

        job_id: str
        reference_ids: list[str]
        status_code: str  # "PE" processed with errors, "ER" in error
        errors: list[dict[str, str]]
        tenant_id: UUID | None = None

    class Filed(Aggregate.Event):
        arn: str
        filed_by: str
        filed_at: datetime
        tenant_id: UUID | None = None

    class Failed(Aggregate.Event):
        """The submission job was given up (dead-lettered): why, for a person."""

        job_id: str
        error_class: str
        code: str
        message: str
        attempts: int
        tenant_id: UUID | None = None

    @event(Generated)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        form: str,
        gstin: str,
        period: str,
        version: int,
        content_hash: str,
        parts: list[str],
        summary: dict[str, Any],
        diff: dict[str, Any] | None,
        previous_id: str | None,
        generated_by: str,
        generated_at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.form = form
        self.gstin = gstin
        self.period = period
        self.version = version
        self.content_hash = content_hash
        self.parts = list(parts)
        self.summary = summary
        self.diff = diff
        self.previous_id = previous_id
        self.generated_by = generated_by
        self.generated_at = generated_at
        self.status = ReturnStatus.GENERATED
        self.submission: dict[str, Any] | None = None
        self.submissions = 0
        self.reference_ids: dict[int, str] = {}
        self.errors: list[dict[str, str]] = []
        self.arn: str | None = None
        self.filed_at: datetime | None = None
        self.failure: dict[str, Any] | None = None

    @staticmethod
    def create_id(*, tenant_id: UUID, form: str, gstin: str, period: str, version: int, **_: Any) -> UUID:
        return tax_return_id_for(tenant_id, form, gstin, period, version)

    # -- commands ---------------------------------------------------------------------------------

    def submit(self, *, job_id: str, submitted_by: str, submitted_at: datetime) -> bool:
        """Ask for the return to be saved at the network. Submitting a return already on its way
        changes nothing (False), so a repeated request queues the same job again, never a second."""
        if self.status in (ReturnStatus.SUBMITTED, ReturnStatus.SAVED):
            return False
        if self.status not in SUBMITTABLE:
            raise ReturnStateConflict(self, "submit")
        self._submitted(
            job_id=job_id, submitted_by=submitted_by, submitted_at=submitted_at, tenant_id=self.tenant_id
        )
        return True

    @event(Submitted)
    def _submitted(
        self, *, job_id: str, submitted_by: str, submitted_at: datetime, tenant_id: UUID | None
    ) -> None:
        self.status = ReturnStatus.SUBMITTED
        self.submissions += 1
        self.submission = {"job_id": job_id, "submitted_by": submitted_by, "submitted_at": submitted_at}
        self.failure = None

    def record_saved(self, *, part: int, reference_id: str, job_id: str) -> bool:
        """The reference id the network gave a saved part; the same one again changes nothing."""
        self.check_in_flight("record a save")
        if not 1 <= part <= len(self.parts):
            raise InvalidReturnResult(f"part {part} of a return with {len(self.parts)} parts")
        known = self.reference_ids.get(part)
        if known == reference_id:
            return False
        self._saved(part=part, reference_id=reference_id, job_id=job_id, tenant_id=self.tenant_id)
        return True

    @event(Saved)
    def _saved(self, *, part: int, reference_id: str, job_id: str, tenant_id: UUID | None) -> None:
        self.reference_ids[part] = reference_id
        self.status = ReturnStatus.SAVED

    def record_processed(self, *, job_id: str) -> bool:
        """Every part processed without errors; once only."""
        if self.status == ReturnStatus.READY_TO_FILE or self.status == ReturnStatus.FILED:
            return False
        self.check_in_flight("record processing")
        self._check_all_saved()
        self._processed(job_id=job_id, reference_ids=self._references(), tenant_id=self.tenant_id)
        return True

    @event(Processed)
    def _processed(self, *, job_id: str, reference_ids: list[str], tenant_id: UUID | None) -> None:
        self.status = ReturnStatus.READY_TO_FILE
        self.errors = []

    def record_rejected_records(self, *, job_id: str, status_code: str, errors: list[dict[str, str]]) -> bool:
        """The documents the network refused, each with its error code and message; once only."""
        if self.status == ReturnStatus.REJECTED_RECORDS:
            return False
        self.check_in_flight("record rejected documents")
        self._check_all_saved()
        clean = [{str(k): "" if v is None else str(v) for k, v in e.items()} for e in errors]
        self._rejected_records(
            job_id=job_id,
            reference_ids=self._references(),
            status_code=status_code,
            errors=clean,
            tenant_id=self.tenant_id,
        )
        return True

    @event(RejectedRecords)
    def _rejected_records(
        self,
        *,
        job_id: str,
        reference_ids: list[str],
        status_code: str,
        errors: list[dict[str, str]],
        tenant_id: UUID | None,
    ) -> None:
        self.status = ReturnStatus.REJECTED_RECORDS
        self.errors = list(errors)

    def file(self, *, arn: str, filed_by: str, filed_at: datetime) -> bool:
        """Record the ARN of the filing (EVC). The same ARN again changes nothing."""
        if self.status == ReturnStatus.FILED:
            if self.arn == arn:
                return False
            raise ReturnStateConflict(self, "file")
        if self.status != ReturnStatus.READY_TO_FILE:
            raise ReturnStateConflict(self, "file")
        self._filed(arn=arn, filed_by=filed_by, filed_at=filed_at, tenant_id=self.tenant_id)
        return True

    @event(Filed)
    def _filed(self, *, arn: str, filed_by: str, filed_at: datetime, tenant_id: UUID | None) -> None:
        self.status = ReturnStatus.FILED
        self.arn = arn
        self.filed_at = filed_at

    def record_failure(
        self, *, job_id: str, error_class: str, code: str, message: str, attempts: int
    ) -> bool:
        """The submission was given up. Ignored once the network's answer is recorded (a late
        dead letter must not hide a return that is ready or filed)."""
        if self.status not in (ReturnStatus.SUBMITTED, ReturnStatus.SAVED):
            return False
        self._failed(
            job_id=job_id,
            error_class=error_class,
            code=code,
            message=message,
            attempts=attempts,
            tenant_id=self.tenant_id,
        )
        return True

    @event(Failed)
    def _failed(
        self,
        *,
        job_id: str,
        error_class: str,
        code: str,
        message: str,
        attempts: int,
        tenant_id: UUID | None,
    ) -> None:
        self.status = ReturnStatus.FAILED
        self.failure = {
            "job_id": job_id,
            "error_class": error_class,
            "code": code,
            "message": message,
            "attempts": attempts,
        }

    # -- checks -----------------------------------------------------------------------------------

    def check_in_flight(self, action: str) -> None:
        if self.status not in (ReturnStatus.SUBMITTED, ReturnStatus.SAVED):
            raise ReturnStateConflict(self, action)

    def _check_all_saved(self) -> None:
        missing = [p for p in range(1, len(self.parts) + 1) if p not in self.reference_ids]
        if missing:
            raise InvalidReturnResult(f"parts {missing} have no reference id yet")

    def _references(self) -> list[str]:
        return [self.reference_ids[p] for p in sorted(self.reference_ids)]


class ReturnStateConflict(Conflict):
    """The return's state forbids the action (file before it is ready, submit a filed one)."""

    code = "return_state_conflict"

    def __init__(self, tax_return: TaxReturn, action: str) -> None:
        super().__init__(f"cannot {action}: the return is {tax_return.status}")
        self.status = tax_return.status


class InvalidReturnResult(InvalidInput):
    """A result that does not fit the return (a part it does not have): a connector bug."""
