"""The TdsDeduction aggregate: one payment to a vendor on which the tenant deducted (or, below a
threshold, did not deduct) income tax at source, as the tenant's books record it.

A deduction is recorded once and never changes: a correction is a new deduction with its own
reference. The id derives from the tenant and the caller's ``reference`` (its voucher number), so the
same deduction sent twice, even concurrently, is one aggregate: the second save is refused by the
event store's optimistic concurrency. Thresholds, the quarterly summary, the Form 26Q data and the
certificate statements are all derived from these events (engine/tds.py), published on ``ledger.tds.v1``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

_TDS_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/tds-deduction")


def deduction_id_for(tenant_id: UUID, reference: str) -> UUID:
    """Stable for the same tenant and reference: a retried or duplicated recording is one deduction."""
    return uuid5(_TDS_NAMESPACE, f"{tenant_id}/{reference}")


class TdsDeduction(Aggregate):
    """One deduction (or non-deduction below a threshold) on one payment to one vendor."""

    class Recorded(Aggregate.Created):
        tenant_id: UUID
        reference: str
        vendor_pan: str | None
        vendor_name: str
        pan_status: str
        payment_nature: str
        payment_date: date
        financial_year: str
        quarter: int
        amount: Decimal
        act: str
        section: str
        section_code: str | None
        tds_rate: Decimal
        tds_amount: Decimal
        computed_tds: Decimal
        higher_rate: bool
        recorded_by: str

    @event(Recorded)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        reference: str,
        vendor_pan: str | None,
        vendor_name: str,
        pan_status: str,
        payment_nature: str,
        payment_date: date,
        financial_year: str,
        quarter: int,
        amount: Decimal,
        act: str,
        section: str,
        section_code: str | None,
        tds_rate: Decimal,
        tds_amount: Decimal,
        computed_tds: Decimal,
        higher_rate: bool,
        recorded_by: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.reference = reference
        self.vendor_pan = vendor_pan
        self.vendor_name = vendor_name
        self.pan_status = pan_status
        self.payment_nature = payment_nature
        self.payment_date = payment_date
        self.financial_year = financial_year
        self.quarter = quarter
        self.amount = amount
        self.act = act
        self.section = section
        self.section_code = section_code
        self.tds_rate = tds_rate
        self.tds_amount = tds_amount
        self.computed_tds = computed_tds
        self.higher_rate = higher_rate
        self.recorded_by = recorded_by

    @staticmethod
    def create_id(*, tenant_id: UUID, reference: str, **_: Any) -> UUID:
        return deduction_id_for(tenant_id, reference)
