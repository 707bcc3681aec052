"""eTIMS sales: invcNo allocation and the per-branch queue, sent in order, one sale in flight.

KRA wants ``invcNo`` "sequential per TIN + branch, never reused" (kenya-etims.md, saveTrnsSalesOsdc)
and OSCU has no offline mode: store-and-forward is the integrator's job. So every Kenyan sale goes
through a queue in PostgreSQL (``etims_sales``, sales.sql), one queue per environment + tenant +
branch:

* **Allocation** (:func:`enqueue`): the first delivery of a sale's job takes the branch's next
  number from ``etims_sale_sequences`` and inserts the queue row in the same transaction, so a
  number exists exactly when its sale is queued: a crash before the commit leaves neither, a
  redelivered job finds the row and gets the same number. Two workers allocating for one branch
  serialise on the sequence row's lock; numbers are never skipped and never reused.
* **Order** (:class:`SaleQueue.drain`): whoever runs a sale job takes the branch's advisory lock
  and sends the branch's open sales from the head, lowest ``invcNo`` first, until the queue is
  empty or the head cannot go. A job redelivered late, or a retry that runs before an earlier
  sale's, cannot overtake: it only ever sends the head. One sale of a branch is in flight at a time.
* **Transient failures** (timeouts, 5xx, retryable result codes, KRA unreachable) leave the head
  queued; the job fails retryably and the connector's retry policy (endless, capped: see
  ``connectors/etims/__init__.py``) brings it back. After :data:`STALE_AFTER` of failing a
  needs-attention alert is raised once, and the sale keeps waiting: it is never given up.
* **Refusals** (a permanent or unknown result code) block the branch: the sale is ``blocked``,
  ``etims_failed`` is recorded on the invoice and ``etims.sale_refused`` alerted. An operator fixes
  the cause and resends it under the same number (:func:`resend`) or voids it with a reason
  (:func:`void`), the only way a number stays unused; then the queue moves on.
* **994 (duplicate) after a lost answer** means KRA already holds this number: the sale is looked
  up (:meth:`SaleChannel.find_sale`) and its receipt adopted (``adopted_existing``); never renumbered.
* **Credit notes** carry the original's number (``orgInvcNo``) and wait until the original is signed.

Results go to the invoice through the ``EtimsResults`` port (``LedgerService``); each is recorded
after the row says what happened and marked as recorded after, so a crash in between records it
again (the port is idempotent). KRA is reached only through :class:`SaleChannel` (handler.py
builds the real one from the branch's device), so this module holds the rules and the SQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from connectors.errors import ConnectorError, ErrorClass, NeedsAttentionError, PermanentError, RetryableError

log = logging.getLogger("ledgerflow.etims.sales")

SALE = "sale"
DRAIN = "drain"
INVOICE = "invoice"
CREDIT_NOTE = "credit_note"
QUEUED, SENT, SIGNED, BLOCKED, VOIDED = "queued", "sent", "signed", "blocked", "voided"
STATES = (QUEUED, SENT, SIGNED, BLOCKED, VOIDED)
OPEN = (QUEUED, SENT, BLOCKED)
FINAL = (SIGNED, VOIDED)

# A sale failing transiently this long gets one needs-attention alert (the issue: "every 15 minutes
# for up to 7 days"); it keeps retrying after that, because giving up would leave a hole in invcNo.
STALE_AFTER = timedelta(days=7)
# How long a job waits for another worker draining the same branch before it retries later.
LOCK_WAIT_S = 60.0
LOCK_POLL_S = 0.25
# After its own sale is done, a drain sends at most this many more before it hands back its
# partition (a branch with a steady stream of sales must not keep one job running for ever).
DRAIN_AFTER_OWN = 200

# uuid5 namespace of branch keys: the job key (and so the partition) of every sale of one branch.
_BRANCH_NAMESPACE = UUID("3f0b6c9e-5d9a-4c8e-9f4e-7f8b1a2c3d4e")


def branch_key(tenant_id: str | UUID, environment: str, bhf_id: str) -> UUID:
    """The subject of a branch's sale jobs: one Kafka key per environment + tenant + branch, so the
    router queues a branch's jobs on one partition, in the order the invoices were issued."""
    return uuid.uuid5(_BRANCH_NAMESPACE, f"{tenant_id}|{environment}|{bhf_id}")


def advisory_key(schema: str, tenant_id: UUID, environment: str, bhf_id: str) -> str:
    """The branch's lock name; advisory locks are per database, so the schema is part of it."""
    return f"etims-sales|{schema}|{tenant_id}|{environment}|{bhf_id}"


# -- what a sale job carries ------------------------------------------------------------------------


@dataclass(frozen=True)
class SaleDocument:
    """A Kenyan invoice or credit note as issued (the ``ledgerflow.invoice.issued`` record, v4)."""

    invoice_id: UUID
    tenant_id: UUID
    environment: str
    bhf_id: str
    document_type: str
    number: str
    original_invoice_id: UUID | None
    record: Mapping[str, Any]

    @staticmethod
    def from_record(record: Mapping[str, Any]) -> SaleDocument:
        """Raises PermanentError for a record that cannot be a Kenyan sale (no environment or branch:
        the invoice was issued without the etims integration, which the API refuses)."""
        missing = [f for f in ("invoice_id", "tenant_id", "environment", "branch_id") if not record.get(f)]
        if missing:
            raise PermanentError("invalid_sale", f"the issued record has no {', '.join(missing)}")
        document_type = str(record.get("document_type") or INVOICE)
        if document_type not in (INVOICE, CREDIT_NOTE):
            raise PermanentError("invalid_sale", f"unknown document_type {document_type!r}")
        original = record.get("original_invoice_id")
        if document_type == CREDIT_NOTE and not original:
            raise PermanentError("invalid_sale", "a credit note without original_invoice_id")
        return SaleDocument(
            invoice_id=UUID(str(record["invoice_id"])),
            tenant_id=UUID(str(record["tenant_id"])),
            environment=str(record["environment"]),
            bhf_id=str(record["branch_id"]),
            document_type=document_type,
            number=str(record.get("number") or ""),
            original_invoice_id=UUID(str(original)) if original else None,
            record=record,
        )


@dataclass(frozen=True)
class QueuedSale:
    """One row of ``etims_sales``."""

    invoice_id: UUID
    tenant_id: UUID
    environment: str
    bhf_id: str
    invc_no: int
    document_type: str
    number: str
    original_invoice_id: UUID | None
    job_id: str
    record: Mapping[str, Any]
    state: str
    device_type: str | None = None
    attempts: int = 0
    numbered_recorded: bool = False
    receipt: Mapping[str, Any] | None = None
    signed_recorded: bool = False
    adopted_existing: bool = False
    first_failure_at: datetime | None = None
    last_failure: Mapping[str, Any] | None = None
    stale_alerted: bool = False
    void_reason: str | None = None
    voided_by: str | None = None
    queued_at: datetime | None = None
    sent_at: datetime | None = None
    signed_at: datetime | None = None

    @property
    def is_credit_note(self) -> bool:
        return self.document_type == CREDIT_NOTE

    def summary(self) -> dict[str, Any]:
        """What operators see (``GET /v1/etims/sales``): no record, no receipt signature secrets
        (there are none: the receipt is public, printed on the customer's receipt)."""
        receipt = self.receipt or {}
        return {
            "invoice_id": str(self.invoice_id),
            "number": self.number,
            "document_type": self.document_type,
            "original_invoice_id": str(self.original_invoice_id) if self.original_invoice_id else None,
            "environment": self.environment,
            "bhf_id": self.bhf_id,
            "invc_no": self.invc_no,
            "state": self.state,
            "attempts": self.attempts,
            "receipt_no": receipt.get("receipt_no"),
            "adopted_existing": self.adopted_existing,
            "failure": dict(self.last_failure) if self.last_failure else None,
            "void_reason": self.void_reason,
            "voided_by": self.voided_by,
            "queued_at": _iso(self.queued_at),
            "sent_at": _iso(self.sent_at),
            "signed_at": _iso(self.signed_at),
        }


def _result(sale: QueuedSale) -> dict[str, Any]:
    return {"invoice_id": str(sale.invoice_id), "invc_no": sale.invc_no, "state": sale.state}


def _done(sale: QueuedSale) -> bool:
    """Nothing left to do for this sale: voided, or signed with its receipt on the invoice."""
    return sale.state == VOIDED or (sale.state == SIGNED and sale.signed_recorded)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@dataclass(frozen=True)
class Receipt:
    """What KRA signed (OSCU: curRcptNo, totRcptNo, intrlData, rcptSign, sdcDateTime; sdcId and
    mrcNo come from the device's init), with the receipt's QR link: the ``etims_signed`` fields."""

    receipt_no: int
    total_receipt_no: int
    internal_data: str | None
    receipt_signature: str | None
    sdc_id: str | None
    mrc_no: str | None
    sdc_datetime: str | None
    qr_url: str | None
    device_type: str
    adopted_existing: bool = False

    def fields(self) -> dict[str, Any]:
        return {
            "receipt_no": self.receipt_no,
            "total_receipt_no": self.total_receipt_no,
            "internal_data": self.internal_data,
            "receipt_signature": self.receipt_signature,
            "sdc_id": self.sdc_id,
            "mrc_no": self.mrc_no,
            "sdc_datetime": self.sdc_datetime,
            "qr_url": self.qr_url,
            "device_type": self.device_type,
            "adopted_existing": self.adopted_existing,
        }

    @staticmethod
    def from_fields(data: Mapping[str, Any]) -> Receipt:
        return Receipt(
            receipt_no=int(data["receipt_no"]),
            total_receipt_no=int(data["total_receipt_no"]),
            internal_data=data.get("internal_data"),
            receipt_signature=data.get("receipt_signature"),
            sdc_id=data.get("sdc_id"),
            mrc_no=data.get("mrc_no"),
            sdc_datetime=data.get("sdc_datetime"),
            qr_url=data.get("qr_url"),
            device_type=str(data.get("device_type") or ""),
            adopted_existing=bool(data.get("adopted_existing")),
        )


# -- ports ------------------------------------------------------------------------------------------


class EtimsResults(Protocol):
    """What the sales queue records on the invoice and tells people (``LedgerService``); every
    method is idempotent (the same call again changes nothing; a signed invoice ignores a failure)."""

    def record_etims_numbered(
        self,
        tenant_id: UUID,
        invoice_id: UUID,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        invc_no: int,
        device_type: str,
    ) -> None: ...

    def record_etims_signed(
        self,
        tenant_id: UUID,
        invoice_id: UUID,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        receipt: Mapping[str, Any],
    ) -> None: ...

    def record_etims_failed(
        self,
        tenant_id: UUID,
        invoice_id: UUID,
        *,
        job_id: str,
        environment: str,
        branch_id: str,
        invc_no: int,
        result_code: str,
        error_class: str,
        message: str,
    ) -> None: ...

    def record_etims_voided(
        self,
        tenant_id: UUID,
        invoice_id: UUID,
        *,
        environment: str,
        branch_id: str,
        invc_no: int,
        reason: str,
        voided_by: str,
    ) -> None: ...

    def raise_alert(
        self,
        tenant_id: UUID,
        *,
        severity: str,
        cause: str,
        subject: str,
        message: str,
        details: Mapping[str, str],
    ) -> None: ...


class DuplicateAnswer(Exception):
    """KRA answered 994 (duplicate) for the number sent: it already holds a sale under it."""


class SaleChannel(Protocol):
    """The branch's device, as far as sales need it (handler.py: the real one over EtimsClient)."""

    device_type: str

    async def save_sale(self, sale: QueuedSale, *, org_invc_no: int | None) -> Receipt:
        """Send the sale under ``sale.invc_no``; raises DuplicateAnswer for a 994, ConnectorError
        (classified) for every other failure."""
        ...

    async def find_sale(self, sale: QueuedSale) -> Receipt | None:
        """What KRA holds under ``sale.invc_no`` (adopted_existing set), None when it cannot say."""
        ...


ChannelFor = Callable[[QueuedSale], Awaitable[SaleChannel]]
Run = Callable[[Callable[[], Any]], Awaitable[Any]]


# -- the queue in SQL -------------------------------------------------------------------------------

_COLUMNS = """invoice_id, tenant_id, environment, bhf_id, invc_no, document_type, number,
    original_invoice_id, job_id, record, state, device_type, attempts, numbered_recorded, receipt,
    signed_recorded, adopted_existing, first_failure_at, last_failure, stale_alerted, void_reason,
    voided_by, queued_at, sent_at, signed_at"""


def _sale(row: Mapping[str, Any]) -> QueuedSale:
    return QueuedSale(**{k: row[k] for k in row})


def _json(value: Mapping[str, Any]) -> Jsonb:
    # The issued record holds decimals and dates as the Avro decoder gives them: keep them as text.
    return Jsonb(value, dumps=lambda v: orjson.dumps(v, default=str).decode())


class OriginalNotQueued(RetryableError):
    """A credit note arrived before its original's sale job (different keys on the invoice topic):
    it gets no number until the original has one, so it can never sit ahead of it."""


async def enqueue(conn: AsyncConnection[Any], doc: SaleDocument, *, job_id: str) -> QueuedSale:
    """The sale's queue row, allocating its invcNo on first sight (idempotent per invoice)."""
    found = await get(conn, doc.invoice_id)
    if found is not None:
        return found
    if doc.original_invoice_id is not None and await get(conn, doc.original_invoice_id) is None:
        raise OriginalNotQueued(
            "original_not_queued",
            f"credit note {doc.number}: its original {doc.original_invoice_id} has no eTIMS sale yet",
        )
    async with conn.transaction():
        # The sequence row's lock serialises allocation per branch; the insert below decides
        # whether this transaction's number is used. If another delivery queued the same invoice
        # meanwhile, the insert does nothing and the whole transaction (increment included) is
        # rolled back: no gap.
        row = await (
            await conn.execute(
                """INSERT INTO etims_sale_sequences (tenant_id, environment, bhf_id, last_invc_no)
                   VALUES (%s, %s, %s, 1)
                   ON CONFLICT (tenant_id, environment, bhf_id)
                   DO UPDATE SET last_invc_no = etims_sale_sequences.last_invc_no + 1
                   RETURNING last_invc_no""",
                (doc.tenant_id, doc.environment, doc.bhf_id),
            )
        ).fetchone()
        assert row is not None
        inserted = await (
            await conn.execute(
                """INSERT INTO etims_sales (invoice_id, tenant_id, environment, bhf_id, invc_no,
                       document_type, number, original_invoice_id, job_id, record)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (invoice_id) DO NOTHING RETURNING invoice_id""",
                (
                    doc.invoice_id,
                    doc.tenant_id,
                    doc.environment,
                    doc.bhf_id,
                    row[0],
                    doc.document_type,
                    doc.number,
                    doc.original_invoice_id,
                    job_id,
                    _json(doc.record),
                ),
            )
        ).fetchone()
        if inserted is None:
            raise _AlreadyQueued
    found = await get(conn, doc.invoice_id)
    assert found is not None
    return found


class _AlreadyQueued(Exception):
    pass


async def enqueue_once(conn: AsyncConnection[Any], doc: SaleDocument, *, job_id: str) -> QueuedSale:
    try:
        return await enqueue(conn, doc, job_id=job_id)
    except _AlreadyQueued:
        found = await get(conn, doc.invoice_id)
        assert found is not None
        return found


async def get(conn: AsyncConnection[Any], invoice_id: UUID) -> QueuedSale | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM etims_sales WHERE invoice_id = %s", (invoice_id,))
        row = await cur.fetchone()
    return _sale(row) if row else None


async def head(
    conn: AsyncConnection[Any], tenant_id: UUID, environment: str, bhf_id: str
) -> QueuedSale | None:
    """The branch's open sale with the lowest number: the only one that may be sent."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM etims_sales
                 WHERE tenant_id = %s AND environment = %s AND bhf_id = %s
                   AND state IN ('queued', 'sent', 'blocked')
                 ORDER BY invc_no LIMIT 1""",
            (tenant_id, environment, bhf_id),
        )
        row = await cur.fetchone()
    return _sale(row) if row else None


async def unrecorded(
    conn: AsyncConnection[Any], tenant_id: UUID, environment: str, bhf_id: str
) -> list[QueuedSale]:
    """Signed sales whose receipt is not on the invoice yet (a crash between the two writes)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM etims_sales
                 WHERE tenant_id = %s AND environment = %s AND bhf_id = %s AND state = 'signed'
                   AND NOT signed_recorded ORDER BY invc_no""",
            (tenant_id, environment, bhf_id),
        )
        return [_sale(r) for r in await cur.fetchall()]


async def _update(conn: AsyncConnection[Any], invoice_id: UUID, sets: str, params: Sequence[Any]) -> None:
    await conn.execute(
        f"UPDATE etims_sales SET {sets}, updated_at = now() WHERE invoice_id = %s", (*params, invoice_id)
    )


# -- the drain --------------------------------------------------------------------------------------


@dataclass
class DrainOutcome:
    """Why a drain stopped (None: the queue is empty)."""

    sent: int = 0
    stopped: ConnectorError | None = None
    blocked_at: int | None = None


@dataclass
class SaleQueue:
    """Sends a branch's queue in order. ``pool_connection`` gives autocommit async connections."""

    connection: Callable[[], Any]
    results: EtimsResults
    channel_for: ChannelFor
    run: Run
    schema: str
    lock_wait_s: float = LOCK_WAIT_S
    stale_after: timedelta = STALE_AFTER
    clock: Callable[[], float] = field(default=time.monotonic)

    async def sale_job(self, doc: SaleDocument, *, job_id: str) -> Mapping[str, Any]:
        """One attempt of a sale job: queue the sale (number allocated), send the branch's queue up
        to and past it. Returns once the sale is signed or voided, or once it waits for a person
        (the branch is blocked: the operator's resend or void queues a drain job, :meth:`drain_job`);
        raises a retryable error while it waits for KRA (or its original, or a busy branch)."""
        async with self.connection() as conn:
            own = await enqueue_once(conn, doc, job_id=job_id)
        if not _done(own):
            outcome = await self.drain(own.tenant_id, own.environment, own.bhf_id, own=own.invoice_id)
            async with self.connection() as conn:
                own = await get(conn, doc.invoice_id) or own
            if not _done(own):
                if own.state == BLOCKED or outcome.blocked_at is not None:
                    # Waiting for a person, not for KRA: retrying would only count as the
                    # provider failing (the tenant's circuit) until the operator acts.
                    blocked_at = own.invc_no if own.state == BLOCKED else outcome.blocked_at
                    return {**_result(own), "waiting_behind": blocked_at}
                raise self._waiting(own, outcome)
        return _result(own)

    async def drain_job(self, tenant_id: UUID, environment: str, bhf_id: str) -> Mapping[str, Any]:
        """One attempt of a drain job (queued by a resend or void): send the branch's queue until it
        is empty or blocked again; raises a retryable error while KRA keeps it from getting there."""
        outcome = await self.drain(tenant_id, environment, bhf_id)
        if outcome.stopped is not None:
            raise outcome.stopped
        return {"sent": outcome.sent, "blocked_at": outcome.blocked_at}

    def _waiting(self, own: QueuedSale, outcome: DrainOutcome) -> ConnectorError:
        if outcome.stopped is not None:
            return outcome.stopped
        if own.state == SIGNED:
            return RetryableError(
                "not_recorded", f"invcNo {own.invc_no} is signed; its receipt is not recorded yet"
            )
        return RetryableError("not_sent", f"invcNo {own.invc_no} of branch {own.bhf_id} is still queued")

    async def drain(
        self, tenant_id: UUID, environment: str, bhf_id: str, *, own: UUID | None = None
    ) -> DrainOutcome:
        """Send the branch's open sales in invcNo order under the branch's advisory lock."""
        lock = advisory_key(self.schema, tenant_id, environment, bhf_id)
        async with self.connection() as conn:
            deadline = self.clock() + self.lock_wait_s
            while True:
                got = await (
                    await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock,))
                ).fetchone()
                if got and got[0]:
                    break
                # Someone else is sending this branch: our sale may go out in their drain.
                if own is not None:
                    mine = await get(conn, own)
                    if mine is not None and _done(mine):
                        return DrainOutcome()
                if self.clock() >= deadline:
                    return DrainOutcome(
                        stopped=RetryableError(
                            "branch_busy", f"branch {bhf_id} is being sent by another worker"
                        )
                    )
                await asyncio.sleep(LOCK_POLL_S)
            try:
                return await self._drain_locked(conn, tenant_id, environment, bhf_id, own)
            finally:
                # Shielded: a drain cancelled mid-way (shutdown, rebalance) must not hand a pooled
                # connection back still holding the branch's lock.
                await asyncio.shield(_unlock(conn, lock))

    async def _drain_locked(
        self, conn: AsyncConnection[Any], tenant_id: UUID, environment: str, bhf_id: str, own: UUID | None
    ) -> DrainOutcome:
        outcome = DrainOutcome()
        for sale in await unrecorded(conn, tenant_id, environment, bhf_id):
            await self._record_signed(conn, sale)
        after_own = 0
        channels: list[SaleChannel] = []
        while True:
            current = await head(conn, tenant_id, environment, bhf_id)
            if current is None:
                return outcome
            if current.state == BLOCKED:
                outcome.blocked_at = current.invc_no
                return outcome
            if own is not None and (own_row := await get(conn, own)) is not None and own_row.state in FINAL:
                after_own += 1
                if after_own > DRAIN_AFTER_OWN:
                    return outcome
            org_invc_no: int | None = None
            if current.is_credit_note:
                assert current.original_invoice_id is not None
                original = await get(conn, current.original_invoice_id)
                if original is None or original.state == VOIDED:
                    await self._block(
                        conn,
                        current,
                        PermanentError(
                            "original_not_signed",
                            "the credit note's original was voided: it can never be signed",
                        ),
                    )
                    outcome.blocked_at = current.invc_no
                    return outcome
                if original.state != SIGNED:
                    # Its original has a lower number in the same branch (so it is sent first) or
                    # waits in another branch's queue; either way this one waits.
                    outcome.stopped = RetryableError(
                        "original_not_signed", f"credit note invcNo {current.invc_no} waits for its original"
                    )
                    return outcome
                org_invc_no = original.invc_no
            # Only what KRA (or the device, or the mapping) says decides between waiting and
            # blocking; an error writing our own result escapes, and the next drain writes it again.
            refused = await self._send(conn, current, org_invc_no, channels)
            if refused is None:
                outcome.sent += 1
                continue
            if refused.error_class is ErrorClass.RETRYABLE:
                await self._transient(conn, current, refused)
                outcome.stopped = refused
            else:
                await self._block(conn, current, refused)
                outcome.blocked_at = current.invc_no
            return outcome

    async def _send(
        self,
        conn: AsyncConnection[Any],
        sale: QueuedSale,
        org_invc_no: int | None,
        channels: list[SaleChannel],
    ) -> ConnectorError | None:
        """Send one sale and record its receipt; returns why it did not go (None: signed)."""
        # One channel per drain (the branch's device, its key opened once), not one per sale.
        if not channels:
            try:
                channels.append(await self.channel_for(sale))
            except ConnectorError as exc:
                return exc
        channel = channels[0]
        if not sale.numbered_recorded:
            await self.run(
                lambda: self.results.record_etims_numbered(
                    sale.tenant_id,
                    sale.invoice_id,
                    job_id=sale.job_id,
                    environment=sale.environment,
                    branch_id=sale.bhf_id,
                    invc_no=sale.invc_no,
                    device_type=channel.device_type,
                )
            )
            await _update(
                conn, sale.invoice_id, "numbered_recorded = true, device_type = %s", (channel.device_type,)
            )
        # "sent" before the call: if the answer is lost (timeout, crash) the next attempt knows KRA
        # may hold this number already, and a 994 for it is ours.
        await _update(
            conn,
            sale.invoice_id,
            "state = 'sent', attempts = attempts + 1, sent_at = coalesce(sent_at, now())",
            (),
        )
        try:
            receipt = await self._signed(channel, sale, org_invc_no)
        except ConnectorError as exc:
            return exc
        await _update(
            conn,
            sale.invoice_id,
            "state = 'signed', receipt = %s, adopted_existing = %s, signed_at = now(),"
            " first_failure_at = NULL, last_failure = NULL",
            (_json(receipt.fields()), receipt.adopted_existing),
        )
        signed = await get(conn, sale.invoice_id)
        assert signed is not None
        await self._record_signed(conn, signed)
        return None

    async def _signed(self, channel: SaleChannel, sale: QueuedSale, org_invc_no: int | None) -> Receipt:
        try:
            return await channel.save_sale(sale, org_invc_no=org_invc_no)
        except DuplicateAnswer:
            found = await channel.find_sale(sale)
            if found is None:
                raise NeedsAttentionError(
                    "duplicate_unverified",
                    f"KRA answered 994 (duplicate) for invcNo {sale.invc_no} and the sale could not be looked"
                    " up: check it on the eTIMS portal, then resend (to look again) or void it",
                ) from None
            return found

    async def _record_signed(self, conn: AsyncConnection[Any], sale: QueuedSale) -> None:
        assert sale.receipt is not None
        receipt = {"job_id": sale.job_id, "invc_no": sale.invc_no, **sale.receipt}
        await self.run(
            lambda: self.results.record_etims_signed(
                sale.tenant_id,
                sale.invoice_id,
                job_id=sale.job_id,
                environment=sale.environment,
                branch_id=sale.bhf_id,
                receipt=receipt,
            )
        )
        await _update(conn, sale.invoice_id, "signed_recorded = true", ())

    async def _transient(self, conn: AsyncConnection[Any], sale: QueuedSale, exc: ConnectorError) -> None:
        await _update(
            conn,
            sale.invoice_id,
            "first_failure_at = coalesce(first_failure_at, now()), last_failure = %s",
            (_json(_failure(exc)),),
        )
        current = await get(conn, sale.invoice_id)
        assert current is not None and current.first_failure_at is not None
        failing_for = datetime.now(current.first_failure_at.tzinfo) - current.first_failure_at
        if failing_for >= self.stale_after and not current.stale_alerted:
            await self.run(
                lambda: self.results.raise_alert(
                    sale.tenant_id,
                    severity="warning",
                    cause="etims.sale_failed",
                    subject=f"etims sale {sale.environment}/{sale.bhf_id}/{sale.invc_no}",
                    message=(
                        f"invoice {sale.number} (invcNo {sale.invc_no}) has not reached KRA for"
                        f" {failing_for.days} days ({exc.code}); it keeps retrying"
                    ),
                    details={"invoice_id": str(sale.invoice_id), "code": exc.code, "bhf_id": sale.bhf_id},
                )
            )
            await _update(conn, sale.invoice_id, "stale_alerted = true", ())

    async def _block(self, conn: AsyncConnection[Any], sale: QueuedSale, exc: ConnectorError) -> None:
        """A refusal: the branch waits for a person. The failure goes on the invoice and out as an alert."""
        await _update(conn, sale.invoice_id, "state = 'blocked', last_failure = %s", (_json(_failure(exc)),))
        error_class = "permanent" if exc.error_class is ErrorClass.PERMANENT else "needs_attention"
        await self.run(
            lambda: self.results.record_etims_failed(
                sale.tenant_id,
                sale.invoice_id,
                job_id=sale.job_id,
                environment=sale.environment,
                branch_id=sale.bhf_id,
                invc_no=sale.invc_no,
                result_code=exc.code,
                error_class=error_class,
                message=exc.message,
            )
        )
        await self.run(
            lambda: self.results.raise_alert(
                sale.tenant_id,
                severity="critical",
                cause="etims.sale_refused",
                subject=f"etims branch {sale.environment}/{sale.bhf_id}",
                message=(
                    f"KRA refused invoice {sale.number} (invcNo {sale.invc_no}, {exc.code}): {exc.message}."
                    f" Branch {sale.bhf_id}'s later sales wait until it is resent or voided."
                ),
                details={
                    "invoice_id": str(sale.invoice_id),
                    "invc_no": str(sale.invc_no),
                    "bhf_id": sale.bhf_id,
                    "environment": sale.environment,
                    "code": exc.code,
                },
            )
        )
        log.warning(
            "etims branch %s/%s blocked at invcNo %d: %s",
            sale.environment,
            sale.bhf_id,
            sale.invc_no,
            exc.code,
        )


async def _unlock(conn: AsyncConnection[Any], lock: str) -> None:
    """Release the branch's lock; if that fails, close the connection, which releases it too (and
    the pool discards a closed connection)."""
    try:
        await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (lock,))
    except Exception:
        await conn.close()
        raise


def _failure(exc: ConnectorError) -> dict[str, str]:
    return {"code": exc.code, "message": exc.message, "error_class": exc.error_class.value}


# -- operator actions (sync: the API's connections) -------------------------------------------------


class SaleNotFound(LookupError):
    pass


class SaleNotBlocked(Exception):
    """Void applies to a blocked sale only (a queued or sent one may be at KRA right now), resend
    to one that is not signed or voided."""

    def __init__(self, sale: QueuedSale) -> None:
        super().__init__(
            f"invcNo {sale.invc_no} is {sale.state}: only a blocked sale can be resent or voided"
        )
        self.sale = sale


def _sync_get(conn: Any, tenant_id: UUID, invoice_id: UUID, *, lock: bool = False) -> QueuedSale:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM etims_sales WHERE tenant_id = %s AND invoice_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (tenant_id, invoice_id),
        )
        row = cur.fetchone()
    if row is None:
        raise SaleNotFound(f"no eTIMS sale for invoice {invoice_id}")
    return _sale(row)


def resend(conn: Any, tenant_id: UUID, invoice_id: UUID) -> QueuedSale:
    """Put a blocked sale back at its branch's head under the same invcNo (after the operator fixed
    the cause: an item registered, a buyer PIN corrected at KRA). The caller then queues a drain
    job for the branch (routes.drain_job). A queued or sent sale is returned as it is."""
    with conn.transaction():
        sale = _sync_get(conn, tenant_id, invoice_id, lock=True)
        if sale.state in (QUEUED, SENT):
            return sale  # already back in the queue: the caller queues a drain again, harmless
        if sale.state != BLOCKED:
            raise SaleNotBlocked(sale)
        conn.execute(
            "UPDATE etims_sales SET state = 'queued', updated_at = now() WHERE invoice_id = %s", (invoice_id,)
        )
    return _sync_get(conn, tenant_id, invoice_id)


def void(conn: Any, tenant_id: UUID, invoice_id: UUID, *, reason: str, voided_by: str) -> QueuedSale:
    """Give up a blocked sale's invcNo with a recorded reason: the only way a number stays unused.
    The caller records ``etims_voided`` on the invoice afterwards, from the row (idempotent): a
    voided sale is returned as it is, so calling again mends a recording that failed."""
    with conn.transaction():
        sale = _sync_get(conn, tenant_id, invoice_id, lock=True)
        if sale.state == VOIDED:
            return sale  # already: the caller records the event again, which changes nothing
        if sale.state != BLOCKED:
            raise SaleNotBlocked(sale)
        conn.execute(
            "UPDATE etims_sales SET state = 'voided', void_reason = %s, voided_by = %s, updated_at = now()"
            " WHERE invoice_id = %s",
            (reason, voided_by, invoice_id),
        )
    return _sync_get(conn, tenant_id, invoice_id)


def list_sales(
    conn: Any, tenant_id: UUID, *, bhf_id: str | None = None, state: str | None = None, limit: int = 100
) -> list[QueuedSale]:
    where: list[str] = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    if bhf_id:
        where.append("bhf_id = %s")
        params.append(bhf_id)
    if state:
        where.append("state = %s")
        params.append(state)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM etims_sales WHERE {' AND '.join(where)}"
            " ORDER BY environment, bhf_id, invc_no LIMIT %s",
            (*params, limit),
        )
        return [_sale(r) for r in cur.fetchall()]
