"""At-most-once IRN generation and the cancellation window, on top of :class:`IrpClient`.

The IRP itself is the deduplication key store: one document (GSTIN, financial year, type, number) can
have one IRN only. So if an earlier attempt registered the document and its answer was lost (timeout,
502, a crash before we recorded it), the retry gets 2150 "Duplicate IRN". The IRN is then fetched and
adopted, but only after checking that what is registered is what we meant to register: the same total
and the same buyer (india-compliance adopts on the same two checks). Anything else needs a person: the
number may have been used by another system for a different invoice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from connectors.errors import NeedsAttentionError
from connectors.gst_irp.client import DuplicateIrn, IrnResult
from connectors.gst_irp.mapping import UNREGISTERED

CANCEL_WINDOW = timedelta(hours=24)
"""An IRN can be cancelled within 24 hours of its acknowledgement only (india-gst.md section 1; 2270)."""
_CENT = Decimal("0.01")


class IrnRegistry(Protocol):
    """The part of :class:`IrpClient` this service needs; tests may pass a fake."""

    async def generate_irn(self, payload: Mapping[str, Any]) -> IrnResult: ...

    async def get_irn_by_document(self, doc_type: str, doc_no: str, doc_date: date) -> IrnResult | None: ...


async def generate_or_adopt(
    client: IrnRegistry, payload: Mapping[str, Any], *, expected_total: Decimal, buyer_gstin: str | None
) -> IrnResult:
    """Generate the IRN for ``payload``, or adopt the one already registered for it if it matches.

    ``buyer_gstin`` ``None`` means an export (the IRP records "URP"). Retryable failures propagate
    unchanged: retrying this function is safe, since the next attempt adopts what this one created.
    """
    try:
        return await client.generate_irn(payload)
    except DuplicateIrn as duplicate:
        document = payload["DocDtls"]
        doc_date = datetime.strptime(str(document["Dt"]), "%d/%m/%Y").date()
        existing = await client.get_irn_by_document(str(document["Typ"]), str(document["No"]), doc_date)
        if existing is None:
            raise NeedsAttentionError(
                "duplicate_irn_not_found",
                f"2150 for {document['No']} but the IRP returns no IRN for it",
                details={"reported": _reported(duplicate)},
            ) from duplicate
        mismatches = _mismatches(existing, duplicate, expected_total, buyer_gstin)
        if mismatches:
            raise NeedsAttentionError(
                "duplicate_irn_mismatch",
                f"{document['No']} is registered with different data: {', '.join(sorted(mismatches))}",
                details={"irn": existing.irn, "mismatches": mismatches},
            ) from duplicate
        return existing


def cancellable(ack_dt: datetime, now: datetime) -> bool:
    """Whether an IRN acknowledged at ``ack_dt`` can still be cancelled at ``now`` (both aware)."""
    return now - ack_dt < CANCEL_WINDOW


def _mismatches(
    existing: IrnResult, duplicate: DuplicateIrn, expected_total: Decimal, buyer_gstin: str | None
) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    reported = duplicate.existing
    if reported is not None and reported.irn and reported.irn != existing.irn:
        found["irn"] = {"reported": reported.irn, "fetched": existing.irn}
    if existing.status != "ACT":
        found["status"] = {"expected": "ACT", "registered": existing.status}
    qr = existing.qr_data()
    try:
        total = Decimal(str(qr.get("TotInvVal"))).quantize(_CENT)
    except InvalidOperation:
        total = None
    if total != expected_total.quantize(_CENT):
        found["TotInvVal"] = {"expected": str(expected_total), "registered": str(qr.get("TotInvVal"))}
    expected_buyer = buyer_gstin or UNREGISTERED
    if qr.get("BuyerGstin") != expected_buyer:
        found["BuyerGstin"] = {"expected": expected_buyer, "registered": str(qr.get("BuyerGstin"))}
    return found


def _reported(duplicate: DuplicateIrn) -> dict[str, str | None]:
    info = duplicate.existing
    return {"irn": info.irn, "ack_no": info.ack_no} if info is not None else {}
