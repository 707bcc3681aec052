"""The ``gst_outward_supplies`` projection on the real stack: invoices issued through the write side,
relayed to Kafka, projected by the live runner, read back per tenant / GSTIN / period, built into a
GSTR-1, and rebuilt by replay to the same rows."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from engine import db
from engine.application import LedgerService
from engine.commands import CancelInvoice, IssueInvoice
from engine.config import Settings
from engine.relay import Relay
from engine.tax.gstr1 import ExportDetails, SupplyDocument, build_gstr1
from projections.dead_letters import apply_isolating
from projections.events import ProjectedEvent
from projections.gst_outward_supplies import GstOutwardSupplies, iter_supplies, supplies_for
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import invoice_body, register_tenant

pytestmark = pytest.mark.integration

SELLER = "27AAGCB7383J1Z8"  # Maharashtra (register_tenant's default)
OTHER_SELLER = "29AAGCB7383J1Z4"
KARNATAKA_BUYER = {
    "name": "Karnataka Buyer Pvt Ltd",
    "gstin": "29AAACR5055K1Z3",
    "state": "29",
    "address": {"line1": "1 MG Road", "city": "Bengaluru", "pincode": "560001"},
}
CONSUMER = {"name": "Walk-in customer", "state": "27"}
DELHI_CONSUMER = {"name": "Delhi consumer", "state": "07"}


def body(
    number: str, day: str, buyer: dict[str, Any], pos: str, price: str, rate: str = "18"
) -> IssueInvoice:
    raw = invoice_body(number, date=day, buyer=buyer, place_of_supply=pos)
    raw["lines"][0] |= {"unit_price": price, "quantity": "1", "gst_rate": rate}
    return IssueInvoice.model_validate(raw)


def supplies(settings: Settings, tenant_id: UUID, gstin: str, period: str) -> list[SupplyDocument]:
    with db.connect(settings) as conn:
        return supplies_for(conn, tenant_id, gstin, period)


def test_issued_and_cancelled_invoices_become_the_period_return(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    tenant_id = UUID(register_tenant(service)[0])
    other_id = UUID(register_tenant(service, state="29", gstin=OTHER_SELLER)[0])
    issue = service.issue_invoice
    ids = {
        "b2b_inter": issue(tenant_id, body("OCT-1", "2025-10-03", KARNATAKA_BUYER, "29", "1000")).invoice.id,
        "b2b_intra": issue(
            tenant_id, body("OCT-2", "2025-10-04", invoice_body()["buyer"], "27", "500")
        ).invoice.id,
        "b2cs": issue(tenant_id, body("OCT-3", "2025-10-05", CONSUMER, "27", "200", "5")).invoice.id,
        "b2cl": issue(tenant_id, body("OCT-4", "2025-10-06", DELHI_CONSUMER, "07", "150000")).invoice.id,
        "cancelled": issue(tenant_id, body("OCT-6", "2025-10-07", KARNATAKA_BUYER, "29", "99")).invoice.id,
        "november": issue(tenant_id, body("NOV-1", "2025-11-01", KARNATAKA_BUYER, "29", "10")).invoice.id,
    }
    service.cancel_invoice(tenant_id, ids["cancelled"], CancelInvoice(reason="other", remark="test"))
    # Another tenant's sale in the same month: never in this tenant's return, nor the other way round.
    issue(other_id, body("OCT-1", "2025-10-03", invoice_body()["buyer"], "27", "700"))

    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, GstOutwardSupplies(), max_records=50).run)

    def october() -> list[SupplyDocument] | None:
        background.check()
        found = supplies(settings, tenant_id, SELLER, "102025")
        return found if len(found) == 5 and any(d.cancelled for d in found) else None

    docs = wait_for(october, what="October's five documents, one cancelled")
    assert docs is not None
    assert [d.number for d in docs] == ["OCT-1", "OCT-2", "OCT-3", "OCT-4", "OCT-6"]
    by_number = {d.number: d for d in docs}
    assert by_number["OCT-6"].cancelled and not by_number["OCT-1"].cancelled
    first = by_number["OCT-1"]
    assert (first.supply_type, first.buyer_gstin, first.place_of_supply, first.intra_state) == (
        "B2B",
        "29AAACR5055K1Z3",
        "29",
        False,
    )
    assert first.total == Decimal("1180.00") and first.lines[0].igst == Decimal("180.00")
    assert first.lines[0].supply_category == "taxable" and not first.reverse_charge  # older event: defaults
    assert by_number["OCT-3"].buyer_gstin is None and by_number["OCT-3"].supply_type == "B2C"

    wait_for(lambda: len(supplies(settings, tenant_id, SELLER, "112025")) == 1, what="November's invoice")
    wait_for(
        lambda: len(supplies(settings, other_id, OTHER_SELLER, "102025")) == 1, what="the other tenant's"
    )
    assert supplies(settings, other_id, SELLER, "102025") == []
    assert supplies(settings, tenant_id, OTHER_SELLER, "102025") == []

    result = build_gstr1(SELLER, "102025", docs)
    part = result.parts[0]
    assert [i["inum"] for g in part["b2b"] for i in g["inv"]] == ["OCT-1", "OCT-2"]
    assert part["b2cl"][0]["pos"] == "07" and part["b2cl"][0]["inv"][0]["inum"] == "OCT-4"
    assert part["b2cs"] == [
        {
            "sply_ty": "INTRA",
            "pos": "27",
            "typ": "OE",
            "rt": Decimal(5),
            "txval": Decimal("200.00"),
            "camt": Decimal("5.00"),
            "samt": Decimal("5.00"),
            "csamt": Decimal("0.00"),
        }
    ]
    runs = part["doc_issue"]["doc_det"][0]["docs"]
    assert [(r["from"], r["to"], r["totnum"], r["cancel"], r["net_issue"]) for r in runs] == [
        ("OCT-1", "OCT-4", 4, 0, 4),
        ("OCT-6", "OCT-6", 1, 1, 0),  # OCT-5 was never issued: a gap, not a cancellation
    ]
    assert result.summary["documents"] == 5 and result.summary["cancelled"] == 1
    with db.connect(settings) as conn:  # streamed from the projection, the same return
        streamed = build_gstr1(SELLER, "102025", iter_supplies(conn, tenant_id, SELLER, "102025"))
    assert streamed.content_hash == result.content_hash and streamed.summary == result.summary

    # Rebuilt by replay from Kafka, the table holds the same documents.
    before = {p: supplies(settings, tenant_id, SELLER, p) for p in ("102025", "112025")}
    report = rebuild(settings, "gst_outward_supplies", batch=3, workers=1)
    assert report.undecodable == 0
    assert {p: supplies(settings, tenant_id, SELLER, p) for p in before} == before


def _issued_record(tenant_id: UUID, invoice_id: UUID, **changes: Any) -> dict[str, Any]:
    """An issued record of an Indian invoice as the codec hands it to projections, with the issue-11
    fields (C2) that gst-documents adds to the event."""
    line = {
        "line_no": 1,
        "description": "Rice",
        "hsn": "1006",
        "quantity": "10",
        "unit": "KGS",
        "unit_price": "50.00",
        "discount": "0.00",
        "taxable_value": "500.00",
        "gst_rate": "0",
        "cgst": "0.00",
        "sgst": "0.00",
        "igst": "0.00",
        "cess_rate": "0",
        "cess": "0.00",
        "total": "500.00",
        "supply_category": "nil",
    }
    record: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "tenant_id": str(tenant_id),
        "invoice_id": str(invoice_id),
        "occurred_at": datetime(2025, 10, 9, 6, 0, tzinfo=UTC),
        "number": "EXP-1",
        "financial_year": "2025-26",
        "date": "2025-10-09",
        "currency": "INR",
        "supply_type": "EXPWOP",
        "seller": {"gstin": SELLER, "legal_name": "Test", "state": "27"},
        "buyer": {"name": "Overseas Buyer", "gstin": None, "state": "96"},
        "place_of_supply": "96",
        "intra_state": False,
        "lines": [line],
        "totals": {
            "taxable": "500.00",
            "cgst": "0.00",
            "sgst": "0.00",
            "igst": "0.00",
            "cess": "0.00",
            "total": "500.00",
        },
        "country": "IN",
        "document_type": "invoice",
        "reverse_charge": False,
        "ecommerce_gstin": None,
        "export": {
            "shipping_bill_number": "7654321",
            "shipping_bill_date": "2025-10-10",
            "port_code": "INNSA1",
        },
        "note_reason": None,
        "original_invoice_date": None,
    }
    record.update(changes)
    return record


def _event(record: dict[str, Any], offset: int, ce_type: str = "ledgerflow.invoice.issued") -> ProjectedEvent:
    headers = (
        ("ce_id", record["event_id"].encode()),
        ("ce_type", ce_type.encode()),
        ("ce_source", f"/tenants/{record['tenant_id']}".encode()),
        ("ce_subject", record["invoice_id"].encode()),
    )
    return ProjectedEvent(
        "ledger.invoice.v1", 0, offset, ce_type, record["event_id"], record, b"", b"", headers
    )


def test_issue_11_fields_are_read_and_a_poison_event_is_set_aside(settings: Settings) -> None:
    db.ensure_schema(settings)
    tenant_id = uuid.uuid4()
    export_id, note_id, poison_id, kenyan_id = (uuid.uuid4() for _ in range(4))
    export = _issued_record(tenant_id, export_id)
    note = _issued_record(
        tenant_id,
        note_id,
        number="CN-1",
        date="2025-10-20",
        document_type="credit_note",
        original_invoice_id=str(export_id),
        original_number="EXP-1",
        original_invoice_date="2025-10-09",
        note_reason="sales_return",
        reverse_charge=True,
    )
    # No seller GSTIN: the row cannot be stored (NOT NULL); it alone goes to the dead letters.
    poison = _issued_record(tenant_id, poison_id, number="BAD-1", seller={"gstin": None, "legal_name": "X"})
    kenyan = _issued_record(tenant_id, kenyan_id, number="KE-1", country="KE")
    events = [_event(r, i) for i, r in enumerate((export, poison, note, kenyan))]
    with db.connect(settings) as conn, conn.transaction():
        failures = apply_isolating(conn, GstOutwardSupplies(), events, dead_letters_of="gst_outward_supplies")
    assert [f.offset for f in failures] == [1]  # the poison event alone
    with db.connect(settings) as conn:
        docs = supplies_for(conn, tenant_id, SELLER, "102025")
        pending = conn.execute(
            "SELECT count(*) FROM projection_dead_letters WHERE projection = 'gst_outward_supplies'"
        ).fetchone()
    assert pending is not None and pending[0] == 1
    assert [d.number for d in docs] == ["EXP-1", "CN-1"]  # the Kenyan sale is no GST supply
    exp, cn = docs
    assert exp.export == ExportDetails("7654321", date(2025, 10, 10), "INNSA1")
    assert exp.lines[0].supply_category == "nil" and exp.lines[0].unit == "KGS"
    assert cn.document_type == "credit_note" and cn.reverse_charge and cn.note_reason == "sales_return"
    assert (cn.original_number, cn.original_date, cn.original_value) == (
        "EXP-1",
        date(2025, 10, 9),
        Decimal("500.00"),
    )

    part = build_gstr1(SELLER, "102025", docs).parts[0]
    assert part["exp"][0]["exp_typ"] == "WOPAY" and part["exp"][0]["inv"][0]["sbnum"] == "7654321"
    assert part["cdnur"][0]["typ"] == "EXPWOP" and part["cdnur"][0]["ntty"] == "C"


def test_lines_and_export_are_sent_in_jsonb_key_order(settings: Settings) -> None:
    """The row's jsonb values are sent with their keys in the order jsonb keeps them, so that
    jsonb_in's key sort finds them sorted (the projection's dearest server-side step, gst-register
    in docs/performance.md): what PostgreSQL stores and gives back reads exactly as sent."""
    db.ensure_schema(settings)
    tenant_id, invoice_id = uuid.uuid4(), uuid.uuid4()
    record = _issued_record(tenant_id, invoice_id)
    change = GstOutwardSupplies().change(_event(record, 0))
    assert change is not None and change.insert is not None
    sent = {column: change.insert[column] for column in ("lines", "export")}
    with db.connect(settings) as conn, conn.transaction():
        GstOutwardSupplies().apply(conn, [_event(record, 0)])
        stored = conn.execute(
            "SELECT lines::text, export::text FROM gst_outward_supplies WHERE document_id = %s",
            (invoice_id,),
        ).fetchone()
    assert stored is not None
    # jsonb's text output puts a space after each ':' and ',', and none inside these values.
    assert [s.replace(": ", ":").replace(", ", ",") for s in stored] == [sent["lines"], sent["export"]]
