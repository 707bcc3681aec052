"""Tax returns on the write side: freezing a generated GSTR-1 as a new version of its TaxReturn,
submitting it, and recording what the GST network answered (the result port of the ``gstn-returns``
connector, connectors/gstn_returns/handler.py).

What goes into a return is decided elsewhere (engine/tax/gstr1.py builds it from the
``gst_outward_supplies`` projection; engine/api/gstr1.py wires the two): this module receives the
built parts and summary, stores each part's exact JSON text (``gstr1.dumps``, the one serialiser:
``GET .../json`` serves these bytes) under its SHA-256 in ``tax_return_parts`` and records the
version in the event store. Hashes: a part's own ``hash`` field is the SHA-256 of the part without it
(the builder's ``gstr1.part_hash``); the version's ``content_hash`` is the SHA-256 of its parts' bytes
in order, equal to the builder's ``Gstr1Return.content_hash``. What a version was built from is kept
as a snapshot (engine/tax_return_snapshots.py): for a filed period, "as filed", which
later amendments are computed against (engine/api/gstr1.py ``changes_since_filing``).

Versions of one (tenant, GSTIN, period) have ids derived from their number
(engine/domain/tax_return.py), so the latest one is found by walking 1, 2, 3... and two generations
racing for the same number cannot both be stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import psycopg
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, OperationalError

from engine import db
from engine.application import LedgerService, ServiceError
from engine.domain.tax_return import (
    FORM_GSTR1,
    ReturnStatus,
    TaxReturn,
    period_key,
    tax_return_id_for,
)
from engine.errors import Conflict, NotFound
from engine.tax import gstr1
from engine.tax_return_snapshots import Baseline, document_from_json

SUBMIT_JOB = "submit_gstr1"
# Generations racing for the same version number: how often one re-reads and tries the next.
GENERATE_ATTEMPTS = 5


class TaxReturnNotFound(ServiceError, NotFound):
    code = "not_found"


class PartNotFound(ServiceError, NotFound):
    code = "part_not_found"


class PeriodFiled(ServiceError, Conflict):
    code = "period_filed"


class ReturnSuperseded(ServiceError, Conflict):
    code = "return_superseded"


class GenerationConflict(ServiceError, Conflict):
    code = "generation_in_progress"


class ReturnChangedConcurrently(ServiceError, Conflict):
    code = "concurrent_update"


def jsonable(value: Any) -> Any:
    """``value`` with only JSON types (Decimals and dates as strings), as events store and publish it."""
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS))


def part_text(part: Mapping[str, Any]) -> bytes:
    """The exact JSON text of one upload part, as stored and as ``GET .../json`` serves it: the
    builder's one serialiser (``gstr1.dumps``: keys in the offline tool's order, Decimal amounts as
    exact JSON numbers), so the part's own ``hash`` field (SHA-256 of the part without it, set by the
    builder) can be checked against the served file."""
    return gstr1.dumps(part)


def part_hash(text: bytes) -> str:
    """The stored part's key: SHA-256 of its exact bytes."""
    return hashlib.sha256(text).hexdigest()


def content_hash_of(texts: Sequence[bytes]) -> str:
    """The whole return's hash: SHA-256 of its parts' bytes in order, which is ``Gstr1Return.content_hash``
    of the builder (engine/tax/gstr1.py ``build_gstr1``) for the same parts."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text)
    return digest.hexdigest()


@dataclass(frozen=True)
class Generation:
    """What a generation gave: the version now current, and whether it is new."""

    tax_return: TaxReturn
    created: bool


@dataclass(frozen=True)
class FiledPeriod:
    period: str
    return_id: UUID
    arn: str


class TaxReturns:
    """Command handling for TaxReturn aggregates, over the ledger's event store and pool."""

    def __init__(self, service: LedgerService) -> None:
        self.service = service
        self.ledger = service.ledger
        self.pool = service.pool

    # -- reads ------------------------------------------------------------------------------------

    def _load(self, return_id: UUID) -> TaxReturn | None:
        try:
            found: object = self.ledger.repository.get(return_id)
        except AggregateNotFoundError:
            return None
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        return found if isinstance(found, TaxReturn) else None

    def get(self, tenant_id: UUID, return_id: UUID) -> TaxReturn:
        """The return, or TaxReturnNotFound (also for another tenant's: ids must not leak)."""
        found = self._load(return_id)
        if found is None or found.tenant_id != tenant_id:
            raise TaxReturnNotFound(f"no return {return_id}")
        return found

    def latest(self, tenant_id: UUID, gstin: str, period: str, form: str = FORM_GSTR1) -> TaxReturn | None:
        """The highest version generated for the period, or None."""
        latest: TaxReturn | None = None
        version = 1
        while (found := self._load(tax_return_id_for(tenant_id, form, gstin, period, version))) is not None:
            latest, version = found, version + 1
        return latest

    def is_latest(self, tax_return: TaxReturn) -> bool:
        successor = tax_return_id_for(
            tax_return.tenant_id, tax_return.form, tax_return.gstin, tax_return.period, tax_return.version + 1
        )
        return self._load(successor) is None

    def part(self, tenant_id: UUID, return_id: UUID, number: int) -> bytes:
        """The exact JSON text of part ``number`` (1-based) of the return."""
        tax_return = self.get(tenant_id, return_id)
        if not 1 <= number <= len(tax_return.parts):
            raise PartNotFound(
                f"the return has {len(tax_return.parts)} part(s); there is no part {number}",
                {"parts": len(tax_return.parts)},
            )
        return self.part_by_hash(tenant_id, tax_return.parts[number - 1])

    def part_by_hash(self, tenant_id: UUID, content_hash: str) -> bytes:
        with db.transaction(self.pool) as conn:
            row = conn.execute(
                "SELECT document FROM tax_return_parts WHERE tenant_id = %s AND content_hash = %s",
                (tenant_id, content_hash),
            ).fetchone()
        if row is None:
            raise PartNotFound(f"no stored part {content_hash}")
        text = _values(row)[0]
        return str(text).encode()

    def filed_periods(self, tenant_id: UUID, gstin: str, form: str = FORM_GSTR1) -> list[FiledPeriod]:
        """Every period of the GSTIN already filed, oldest first."""
        with db.transaction(self.pool) as conn:
            rows = conn.execute(
                "SELECT period, return_id, arn FROM tax_return_filings"
                " WHERE tenant_id = %s AND form = %s AND gstin = %s",
                (tenant_id, form, gstin),
            ).fetchall()
        found = [FiledPeriod(str(r[0]), UUID(str(r[1])), str(r[2])) for r in (_values(row) for row in rows)]
        return sorted(found, key=lambda f: period_key(f.period))

    def filed_snapshots(self, tenant_id: UUID, gstin: str, before: str) -> dict[str, UUID]:
        """Per period filed before ``before`` (MMYYYY), the snapshot of the version that was filed."""
        found: dict[str, UUID] = {}
        for filed in self.filed_periods(tenant_id, gstin):
            if period_key(filed.period) >= period_key(before):
                continue
            content_hash = self.get(tenant_id, filed.return_id).content_hash
            with db.transaction(self.pool) as conn:
                row = conn.execute(
                    "SELECT snapshot_id FROM tax_return_snapshot_heads"
                    " WHERE tenant_id = %s AND gstin = %s AND period = %s AND content_hash = %s",
                    (tenant_id, gstin, filed.period, content_hash),
                ).fetchone()
            if row is not None:
                found[filed.period] = UUID(str(_values(row)[0]))
        return found

    def baselines(
        self, conn: psycopg.Connection, tenant_id: UUID, snapshots: Mapping[str, UUID], origin: str
    ) -> dict[str, Baseline]:
        """The documents of period ``origin`` as last reported in the filed returns ``snapshots``
        (period -> snapshot): per document, the row of the latest filed period holding it."""
        order = {sid: period_key(p) for p, sid in snapshots.items()}
        rows = conn.execute(
            "SELECT document_id, snapshot_id, kind, digest FROM tax_return_snapshots"
            " WHERE tenant_id = %s AND origin_period = %s AND snapshot_id = ANY(%s)",
            (tenant_id, origin, list(snapshots.values())),
        ).fetchall()
        found: dict[str, tuple[tuple[int, int], Baseline]] = {}
        for row in rows:
            document_id, snapshot_id, kind, digest = _values(row)
            sid = UUID(str(snapshot_id))
            rank = order[sid]
            if document_id not in found or found[document_id][0] < rank:
                found[document_id] = (rank, Baseline(sid, str(kind), str(digest)))
        return {k: v for k, (_, v) in found.items()}

    def snapshot_document(
        self, conn: psycopg.Connection, tenant_id: UUID, document_id: str, baseline: Baseline
    ) -> gstr1.SupplyDocument:
        row = conn.execute(
            "SELECT document FROM tax_return_snapshots"
            " WHERE tenant_id = %s AND snapshot_id = %s AND kind = %s AND document_id = %s",
            (tenant_id, baseline.snapshot_id, baseline.kind, document_id),
        ).fetchone()
        assert row is not None
        return document_from_json(str(_values(row)[0]))

    def b2cs_as_filed(self, tenant_id: UUID, gstin: str, origin: str, before: str) -> list[dict[str, Any]]:
        """The b2cs rows of ``origin`` as last filed, amounts as exact Decimals (the builder's B2CSA
        base): the filed return's rows, each replaced by the latest filed B2CSA revision of it (a
        B2CSA row carries the revised values, not a difference) in the returns filed after it and
        before ``before``."""
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}

        def key(row: Mapping[str, Any], rate: Any) -> tuple[Any, ...]:
            return (
                row.get("sply_ty"),
                row.get("pos"),
                row.get("typ"),
                row.get("etin", ""),
                Decimal(str(rate)),
            )

        for filed in self.filed_periods(tenant_id, gstin):  # oldest first
            if not period_key(origin) <= period_key(filed.period) < period_key(before):
                continue
            for content_hash in self.get(tenant_id, filed.return_id).parts:
                part = json.loads(self.part_by_hash(tenant_id, content_hash), parse_float=Decimal)
                if filed.period == origin:
                    for row in part.get("b2cs", []):
                        rows[key(row, row["rt"])] = row
                for row in part.get("b2csa", []):
                    if row.get("omon") != origin:
                        continue
                    head = {k: row[k] for k in ("sply_ty", "pos", "typ", "etin") if k in row}
                    for item in row["itms"]:
                        rows[key(row, item["rt"])] = {**head, **item}
        return list(rows.values())

    # -- commands ---------------------------------------------------------------------------------

    def generate(
        self,
        tenant_id: UUID,
        gstin: str,
        period: str,
        *,
        parts: Sequence[Mapping[str, Any]] | gstr1.Gstr1Return,
        summary: Mapping[str, Any],
        diff: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]],
        generated_by: str,
        form: str = FORM_GSTR1,
    ) -> Generation:
        """Freeze the built return as the period's next version, unless it equals the latest one
        (then that one is the answer: nothing changed). A filed period takes no new version: its
        later changes belong to the amendment sections of an open period. ``parts``: the parts, or
        the builder's return, whose texts are read one part at a time from where the builder wrote
        them (a large month's JSON is never held whole)."""
        texts: Callable[[], Iterable[bytes]]
        if isinstance(parts, gstr1.Gstr1Return):
            hashes, content_hash, texts = parts.part_hashes, parts.content_hash, parts.texts
        else:
            held = [part_text(p) for p in parts]
            hashes, content_hash = [part_hash(t) for t in held], content_hash_of(held)
            texts = held.__iter__
        clean_summary = jsonable(summary)
        for _ in range(GENERATE_ATTEMPTS):
            latest = self.latest(tenant_id, gstin, period, form)
            if latest is not None and latest.status == ReturnStatus.FILED:
                raise PeriodFiled(
                    f"{form} for {period} was filed (ARN {latest.arn}): later changes go to the amendment"
                    " sections of the next open period",
                    {"return_id": str(latest.id), "arn": latest.arn},
                )
            if latest is not None and latest.content_hash == content_hash:
                return Generation(latest, created=False)
            self._store_parts(tenant_id, hashes, texts())
            tax_return = TaxReturn(
                tenant_id=tenant_id,
                form=form,
                gstin=gstin,
                period=period,
                version=1 if latest is None else latest.version + 1,
                content_hash=content_hash,
                parts=hashes,
                summary=clean_summary,
                diff=None if latest is None else jsonable(diff(latest.summary, clean_summary)),
                previous_id=None if latest is None else str(latest.id),
                generated_by=generated_by,
                generated_at=datetime.now(UTC),
            )
            try:
                self._write(tax_return)
            except IntegrityError:
                continue  # another generation took this version number: look again
            return Generation(tax_return, created=True)
        raise GenerationConflict(f"{form} for {period} is being generated by other requests: retry")

    def submit(self, tenant_id: UUID, return_id: UUID, submitted_by: str) -> tuple[TaxReturn, str]:
        """Mark the return submitted and return the id of the job that saves it at the network.
        Submitting a return already on its way gives the same job id (queueing it again is harmless:
        the connector dedupes on the job id and the return's state)."""
        tax_return = self.get(tenant_id, return_id)
        if not self.is_latest(tax_return):
            raise ReturnSuperseded(
                f"version {tax_return.version} was superseded by a newer generation of {tax_return.period}",
                {"version": tax_return.version},
            )
        job_id = f"{return_id}:{SUBMIT_JOB}:{tax_return.submissions + 1}"
        if tax_return.submit(job_id=job_id, submitted_by=submitted_by, submitted_at=datetime.now(UTC)):
            self._save_or_conflict(tax_return)
        assert tax_return.submission is not None
        return tax_return, str(tax_return.submission["job_id"])

    def record_filed(self, tenant_id: UUID, return_id: UUID, *, arn: str, filed_by: str) -> TaxReturn:
        """Record the ARN on the return, then the period as filed (idempotent, so a failure between
        the two is mended by filing again: the network answers the same ARN)."""
        tax_return = self.get(tenant_id, return_id)
        if tax_return.file(arn=arn, filed_by=filed_by, filed_at=datetime.now(UTC)):
            self._save_or_conflict(tax_return)
        assert tax_return.filed_at is not None
        with db.transaction(self.pool) as conn:
            conn.execute(
                "INSERT INTO tax_return_filings (tenant_id, form, gstin, period, return_id, arn, filed_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    tenant_id,
                    tax_return.form,
                    tax_return.gstin,
                    tax_return.period,
                    tax_return.id,
                    tax_return.arn,
                    tax_return.filed_at,
                ),
            )
        return tax_return

    # -- the gstn-returns connector's result port -------------------------------------------------

    def record_saved(
        self, tenant_id: UUID, return_id: UUID, *, part: int, reference_id: str, job_id: str
    ) -> bool:
        return self._change(
            tenant_id,
            return_id,
            lambda r: r.record_saved(part=part, reference_id=reference_id, job_id=job_id),
        )

    def record_processed(self, tenant_id: UUID, return_id: UUID, *, job_id: str) -> bool:
        return self._change(tenant_id, return_id, lambda r: r.record_processed(job_id=job_id))

    def record_rejected_records(
        self, tenant_id: UUID, return_id: UUID, *, job_id: str, status_code: str, errors: list[dict[str, str]]
    ) -> bool:
        return self._change(
            tenant_id,
            return_id,
            lambda r: r.record_rejected_records(job_id=job_id, status_code=status_code, errors=errors),
        )

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
    ) -> bool:
        return self._change(
            tenant_id,
            return_id,
            lambda r: r.record_failure(
                job_id=job_id, error_class=error_class, code=code, message=message, attempts=attempts
            ),
        )

    # -- helpers ----------------------------------------------------------------------------------

    def _change(self, tenant_id: UUID, return_id: UUID, change: Callable[[TaxReturn], bool]) -> bool:
        # A result losing a race with another writer of the same return (its version moved on) is
        # decided again against the fresh return.
        for _ in range(GENERATE_ATTEMPTS):
            tax_return = self.get(tenant_id, return_id)
            if not change(tax_return):
                return False
            try:
                self._write(tax_return)
            except IntegrityError:
                continue
            return True
        raise ReturnChangedConcurrently(f"return {return_id} kept changing under this result: retry")

    def _save_or_conflict(self, tax_return: TaxReturn) -> None:
        try:
            self._write(tax_return)
        except IntegrityError as exc:
            raise ReturnChangedConcurrently(
                "the return was changed by another request at the same time: retry",
                {"return_id": str(tax_return.id)},
            ) from exc

    def _store_parts(self, tenant_id: UUID, hashes: Sequence[str], texts: Iterable[bytes]) -> None:
        # One part at a time (a part is up to 19,000 items, a few MB of JSON), in one transaction.
        with db.transaction(self.pool) as conn, conn.cursor() as cur:
            for content_hash, text in zip(hashes, texts, strict=True):
                cur.execute(
                    "INSERT INTO tax_return_parts (tenant_id, content_hash, document) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (tenant_id, content_hash, text.decode()),
                )

    def _write(self, tax_return: TaxReturn) -> None:
        self.service._save(tax_return)


def _values(row: Any) -> tuple[Any, ...]:
    """A row's values in column order, whichever row factory the pool uses."""
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)
