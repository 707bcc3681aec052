"""A recorded TDS deduction is published on ledger.tds.v1: the relay's fast path over stored JSON gives
the same message as the domain event, and the record encodes with its Avro schema."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import uuid4

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Mapper, UUIDAsHex

from engine.application import DateAsISO
from engine.domain.tds_deduction import TdsDeduction, deduction_id_for
from engine.publishing import outbound_from_stored, to_outbound
from schemas import registry


def recorded() -> TdsDeduction:
    return TdsDeduction(
        tenant_id=uuid4(),
        reference="PAY-1",
        vendor_pan=None,
        vendor_name="Cash Vendor",
        pan_status="missing",
        payment_nature="rent_building",
        payment_date=date(2026, 7, 15),
        financial_year="2026-27",
        quarter=2,
        amount=Decimal("60000.50"),
        act="Income-tax Act, 2025",
        section="393(1) Table Sl. No. 2(ii)(b)",
        section_code=None,
        tds_rate=Decimal("20"),
        tds_amount=Decimal("12000"),
        computed_tds=Decimal("12000"),
        higher_rate=True,
        recorded_by="api_key:k1",
    )


def test_a_deduction_is_published_on_ledger_tds_keyed_by_its_id() -> None:
    deduction = recorded()
    assert deduction.id == deduction_id_for(deduction.tenant_id, "PAY-1")
    (event,) = deduction.collect_events()
    message = to_outbound(event)
    assert (message.topic, message.key, message.ce_type) == (
        "ledger.tds.v1",
        str(deduction.id),
        "ledgerflow.tds_deduction.recorded",
    )
    record = message.record
    assert (record["amount"], record["tds_amount"], record["tds_rate"], record["payment_date"]) == (
        "60000.50",
        "12000.00",
        "20",
        "2026-07-15",
    )
    value, schema = registry.encode_event(message.ce_type, record)
    decoded = registry.decode_event(value, message.ce_type)
    assert {k: v for k, v in decoded.items() if k != "occurred_at"} == {
        k: v for k, v in record.items() if k != "occurred_at"
    }
    assert schema.ce_type == "ledgerflow.tds_deduction.recorded"

    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), DateAsISO()):
        transcoder.register(transcoding)
    stored = Mapper(transcoder=transcoder).to_stored_event(event)  # type: ignore[arg-type]
    fast = outbound_from_stored(stored.originator_id, stored.originator_version, stored.topic, stored.state)
    assert fast.record == record
