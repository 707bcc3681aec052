"""The FeeCollection aggregate and its Kafka record: one id per receipt, and the relay's fast path over
stored JSON publishes exactly what the domain event says, in the current schema."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import uuid4

import pytest

from engine.application import Ledger
from engine.domain.fee_collection import FeeCollection, collection_id_for
from engine.publishing import outbound_from_stored, to_outbound
from schemas import registry


def collection(semester: int | None = 1, reference: str | None = "401012345678") -> FeeCollection:
    return FeeCollection(
        tenant_id=uuid4(),
        receipt_number="FEE-2024-001234",
        student_id="5678",
        student_name="Jane Stüdent ☃",
        amount=Decimal("50000.5"),
        currency="INR",
        payment_mode="upi",
        payment_date=date(2024, 1, 10),
        payment_reference=reference,
        fee_type="tuition",
        academic_year="2023-24",
        semester=semester,
        source="api",
        recorded_by="api_key:k1",
    )


def test_a_receipt_is_one_collection_per_tenant_and_another_tenants_is_another() -> None:
    c = collection()
    assert c.id == collection_id_for(c.tenant_id, "FEE-2024-001234")
    assert collection_id_for(uuid4(), "FEE-2024-001234") != c.id


@pytest.mark.parametrize(("semester", "reference"), [(1, "401012345678"), (None, None)])
def test_the_fast_path_publishes_the_domain_events_record_in_its_schema(
    semester: int | None, reference: str | None
) -> None:
    c = collection(semester, reference)
    [event] = c.collect_events()
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    stored = ledger.mapper.to_stored_event(event)
    slow = to_outbound(ledger.mapper.to_domain_event(stored))
    fast = outbound_from_stored(stored.originator_id, stored.originator_version, stored.topic, stored.state)

    assert fast.record == slow.record
    assert (fast.topic, fast.ce_type, fast.key) == (
        "ledger.fee_collection.v1",
        "ledgerflow.fee_collection.recorded",
        str(c.id),
    )
    assert fast.tenant_id == str(c.tenant_id)
    assert fast.record["amount"] == "50000.50" and fast.record["semester"] == semester
    assert fast.record["payment_reference"] == reference
    registry.encode_event(fast.ce_type, fast.record)
