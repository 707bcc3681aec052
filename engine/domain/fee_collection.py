"""The FeeCollection aggregate: one fee a student paid the college, as the college's fee portal
receipted it (seed "College Accounts", section 1.4).

A collection is recorded once and never changes: the portal's receipt number is its identity, so the
id derives from the tenant and the receipt number and the same receipt sent twice, even concurrently,
is one aggregate (the event store refuses the second ``Recorded``). A reversal or correction would be
a new event on the same aggregate; none is recorded yet. Published on ``ledger.fee_collection.v1``;
engine/fees.py keeps the ``fee_collections`` read model and reconciles against bank deposits.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

_FEE_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/fee-collection")

PAYMENT_MODES = ("upi", "card", "netbanking", "neft", "rtgs", "imps", "cash", "cheque", "demand_draft")


def collection_id_for(tenant_id: UUID, receipt_number: str) -> UUID:
    """Stable for the same tenant and receipt: a retried or duplicated receipt is one collection."""
    return uuid5(_FEE_NAMESPACE, f"{tenant_id}/{receipt_number}")


class FeeCollection(Aggregate):
    """One receipted fee payment."""

    class Recorded(Aggregate.Created):
        tenant_id: UUID
        receipt_number: str
        student_id: str
        student_name: str
        amount: Decimal
        currency: str
        payment_mode: str
        payment_date: date
        payment_reference: str | None
        fee_type: str
        academic_year: str
        semester: int | None
        source: str
        recorded_by: str

    @event(Recorded)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        receipt_number: str,
        student_id: str,
        student_name: str,
        amount: Decimal,
        currency: str,
        payment_mode: str,
        payment_date: date,
        payment_reference: str | None,
        fee_type: str,
        academic_year: str,
        semester: int | None,
        source: str,
        recorded_by: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.receipt_number = receipt_number
        self.student_id = student_id
        self.student_name = student_name
        self.amount = amount
        self.currency = currency
        self.payment_mode = payment_mode
        self.payment_date = payment_date
        self.payment_reference = payment_reference
        self.fee_type = fee_type
        self.academic_year = academic_year
        self.semester = semester
        self.source = source
        self.recorded_by = recorded_by

    @staticmethod
    def create_id(*, tenant_id: UUID, receipt_number: str, **_: Any) -> UUID:
        return collection_id_for(tenant_id, receipt_number)
