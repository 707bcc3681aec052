"""Kenyan invoices as events: the relay's two paths agree, every record fits its schema, issued v4
stays readable by v1-v3 readers for Indian invoices, and the eTIMS results are idempotent."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from engine.application import Ledger, build_invoice
from engine.commands import IssueCreditNote, IssueInvoice, IssueKenyanInvoice
from engine.domain.invoice import EtimsAlreadySigned, Invoice, NotAKenyanSale
from engine.domain.tenant import Tenant
from engine.kenya_invoicing import EtimsPlace, build_credit_note, build_kenyan_invoice, kenya_financial_year
from engine.publishing import OutboundEvent, outbound_from_stored, to_outbound
from engine.tax.errors import TaxRuleError
from schemas import codec, registry

TODAY = date(2026, 12, 2)
PLACE = EtimsPlace(environment="sandbox", bhf_id="01")
SALE = {
    "number": "KE-1",
    "date": "2026-12-01",
    "buyer": {"name": "Mombasa Grocers", "kra_pin": "P052345678Y"},
    "lines": [
        {"item_code": "KE2NTBA0000001", "description": "Flour", "quantity": "10", "unit_price": "200",
         "discount": "100", "tax_type": "B"},
        {"item_code": "KE2NTBA0000002", "description": "Oil", "quantity": "3", "unit_price": "350.5",
         "tax_type": "E"},
    ],
}  # fmt: skip
RECEIPT = {
    "invc_no": 7,
    "receipt_no": 3,
    "total_receipt_no": 7,
    "internal_data": "INTRL",
    "receipt_signature": "SIGN",
    "sdc_id": "KRACU01",
    "mrc_no": "WIS01",
    "sdc_datetime": "20261201114500",
    "qr_url": "https://etims-sbx.kra.go.ke/x",
    "device_type": "oscu",
    "adopted_existing": True,
}


def kenyan_tenant() -> Tenant:
    return Tenant(
        kra_pin="P051234567X",
        name="Savanna",
        legal_name="Savanna Retail Limited",
        country="KE",
        gstin=None,
        state=None,
        einvoicing_enabled=False,
        api_key_id="k1",
        address=None,
    )


def kenyan_sale(tenant: Tenant, number: str = "KE-1") -> Invoice:
    command = IssueKenyanInvoice.model_validate({**SALE, "number": number})
    return build_kenyan_invoice(
        tenant,
        command,
        place=PLACE,
        rates={},
        idempotency_key=None,
        request_hash=command.fingerprint(),
        source="api",
        traceparent=None,
        today=TODAY,
    )


def all_kenyan_events() -> list[Any]:
    tenant = kenyan_tenant()
    sale = kenyan_sale(tenant)
    note = build_credit_note(
        tenant,
        sale,
        IssueCreditNote.model_validate(
            {"number": "CN-1", "refund_reason_code": "03", "lines": [{"line_no": 1, "quantity": "2"}]}
        ),
        environment="sandbox",
        request_hash="h",
        traceparent=None,
        today=TODAY,
    )
    sale.record_credit(credit_note_id=str(note.note.id), credit_note_number="CN-1", lines=note.credited)
    place = {"environment": "sandbox", "branch_id": "01"}
    sale.record_etims_numbered(job_id="j", invc_no=7, device_type="oscu", **place)
    sale.record_etims_failed(job_id="j", invc_no=7, result_code="894", error_class="needs_attention",
                             message="comms", **place)  # fmt: skip
    sale.record_etims_signed(job_id="j", receipt=RECEIPT, **place)
    adopted = kenyan_sale(tenant, "KE-3")
    # A 994 resolved without KRA's lost answer: only what could be recovered.
    recovered = {
        **RECEIPT,
        "internal_data": None,
        "receipt_signature": None,
        "qr_url": None,
        "sdc_datetime": None,
    }
    adopted.record_etims_signed(job_id="j4", receipt=recovered, **place)
    other = kenyan_sale(tenant, "KE-2")
    other.record_etims_voided(invc_no=8, reason="typo", voided_by="operator:api", **place)
    return [
        *tenant.collect_events(),
        *sale.collect_events(),
        *note.note.collect_events(),
        *adopted.collect_events(),
        *other.collect_events(),
    ]


EVENTS = all_kenyan_events()


def comparable(message: OutboundEvent) -> OutboundEvent:
    return replace(message, traceparent="-")


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__qualname__)
def test_the_fast_path_publishes_the_same_kenyan_message_as_the_domain_event(event: Any) -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    stored = ledger.mapper.to_stored_event(event)
    slow = to_outbound(ledger.mapper.to_domain_event(stored))
    fast = outbound_from_stored(stored.originator_id, stored.originator_version, stored.topic, stored.state)
    assert comparable(fast) == comparable(slow)
    data, used = registry.encode_event(fast.ce_type, fast.record)
    assert used is registry.current(fast.ce_type)
    decoded = registry.decode_event(data, fast.ce_type)
    assert decoded["tenant_id"] == str(EVENTS[0].originator_id)


def test_the_kenyan_issued_record_carries_the_spec_fields() -> None:
    issued = to_outbound(EVENTS[1]).record
    assert (issued["country"], issued["currency"], issued["environment"], issued["branch_id"]) == (
        "KE",
        "KES",
        "sandbox",
        "01",
    )
    assert issued["financial_year"] == "2026-27" == kenya_financial_year(date(2026, 12, 1))
    assert issued["payment_type"] == "01" and issued["supply_type"] == "B2B"
    assert issued["seller"]["kra_pin"] == "P051234567X" and issued["buyer"]["kra_pin"] == "P052345678Y"
    # The GST totals are written as null (every field named, for the compiled Avro writer).
    assert {k: v for k, v in issued["totals"].items() if v is not None} == {
        "taxable": "2951.50",
        "vat": "388.12",
        "total": "3339.62",
    }
    assert {issued["totals"][k] for k in ("cgst", "sgst", "igst", "cess")} == {None}
    line = issued["lines"][1]
    assert (line["unit_price"], line["supply_amount"], line["tax_rate"], line["tax_amount"]) == (
        "350.50",
        "1051.50",
        "8",
        "84.12",
    )
    assert [b["tax_type"] for b in issued["tax_breakdown"]] == ["A", "B", "C", "D", "E"]
    note = next(e for e in EVENTS if type(e).__name__ == "Issued" and e.document_type == "credit_note")
    record = to_outbound(note).record
    assert (
        record["original_number"],
        record["refund_reason_code"],
        record["lines"][0]["original_line_no"],
    ) == (
        "KE-1",
        "03",
        1,
    )
    assert {k: v for k, v in record["totals"].items() if v is not None} == {
        "taxable": "400.00",
        "vat": "64.00",
        "total": "464.00",
    }


# -- issued v4 against older readers -----------------------------------------------------------------


def _indian_v4_record() -> dict[str, Any]:
    tenant = Tenant(
        name="Acme", legal_name="Acme Pvt Ltd", country="IN", gstin="27AAGCB7383J1Z8", state="27",
        einvoicing_enabled=False, api_key_id="k", address=None,
    )  # fmt: skip
    body = {
        "number": "INV-9",
        "date": "2026-01-19",
        "buyer": {"name": "Reliable", "gstin": "27AAACR5055K1Z7", "state": "27"},
        "lines": [
            {"description": "Coil", "hsn": "8471", "quantity": "10", "unit": "NOS", "unit_price": "100"}
        ],
    }
    command = IssueInvoice.model_validate(body)
    invoice = build_invoice(tenant, command, None, "h", "api", None, today=date(2026, 1, 20))
    return to_outbound(invoice.collect_events()[0]).record


@pytest.mark.parametrize("old", [1, 2, 3])
def test_an_indian_invoice_written_with_v4_is_read_by_a_v1_to_v3_reader(old: int) -> None:
    record = _indian_v4_record()
    data, used = registry.encode_event("ledgerflow.invoice.issued", record)
    assert used is registry.current("ledgerflow.invoice.issued")  # v4 or later: readers still decode it
    reader = registry.versions("ledgerflow.invoice.issued")[old - 1]
    decoded = codec.decode(data, lambda fp: registry.by_fingerprint(fp).parsed, reader.parsed)  # type: ignore[union-attr]
    assert decoded["totals"]["cgst"] == "90.00" and decoded["place_of_supply"] == "27"
    assert decoded["lines"][0]["hsn"] == "8471"
    assert "country" not in decoded and "tax_breakdown" not in decoded
    assert set(decoded) == {f["name"] for f in reader.schema["fields"]}


def test_older_issued_records_read_as_indian_invoices_with_v4() -> None:
    v3 = registry.versions("ledgerflow.invoice.issued")[2]
    sample = json.loads(v3.sample_path.read_text("utf-8"))
    decoded = registry.decode_event(codec.encode(v3.parsed, sample))
    assert (decoded["country"], decoded["document_type"], decoded["tax_breakdown"]) == ("IN", "invoice", [])
    assert decoded["environment"] is None and decoded["totals"]["vat"] is None
    assert decoded["buyer"]["kra_pin"] is None and decoded["lines"][0]["item_code"] is None


def test_a_v3_reader_cannot_mistake_a_kenyan_invoice_for_a_gst_one() -> None:
    data, _ = registry.encode_event("ledgerflow.invoice.issued", to_outbound(EVENTS[1]).record)
    v3 = registry.versions("ledgerflow.invoice.issued")[2]
    with pytest.raises(codec.CodecError):
        codec.decode(data, lambda fp: registry.by_fingerprint(fp).parsed, v3.parsed)  # type: ignore[union-attr]


# -- the aggregate's eTIMS rules -----------------------------------------------------------------------


def test_etims_results_are_idempotent_and_a_signed_sale_stays_signed() -> None:
    sale = kenyan_sale(kenyan_tenant())
    place = {"environment": "sandbox", "branch_id": "01"}
    assert sale.etims == {"status": "pending", "environment": "sandbox", "branch_id": "01"}
    assert sale.record_etims_numbered(job_id="j", invc_no=7, device_type="oscu", **place)
    assert not sale.record_etims_numbered(job_id="j", invc_no=7, device_type="oscu", **place)
    failure = {
        "job_id": "j",
        "invc_no": 7,
        "result_code": "910",
        "error_class": "permanent",
        "message": "bad",
    }
    assert sale.record_etims_failed(**failure, **place)
    assert not sale.record_etims_failed(**failure, **place)
    assert sale.etims is not None and sale.etims["status"] == "failed"
    assert sale.record_etims_signed(job_id="j", receipt=RECEIPT, **place)
    assert not sale.record_etims_signed(job_id="j", receipt={**RECEIPT, "receipt_no": 99}, **place)
    assert not sale.record_etims_failed(**{**failure, "job_id": "j9"}, **place)
    assert not sale.record_etims_numbered(job_id="j2", invc_no=8, device_type="oscu", **place)
    assert sale.etims["status"] == "signed" and sale.etims["receipt_no"] == 3
    with pytest.raises(EtimsAlreadySigned):
        sale.record_etims_voided(invc_no=7, reason="x", voided_by="y", **place)
    # issued, numbered, failed, signed
    assert len(sale.collect_events()) == 4


def test_an_indian_invoice_takes_no_etims_result() -> None:
    invoice = Invoice(
        tenant_id=UUID(int=1), number="I-1", financial_year="2025-26", invoice_date=date(2026, 1, 1),
        currency="INR", supply_type="B2C", seller={}, buyer={}, place_of_supply="27", intra_state=True,
        lines=[], totals={}, idempotency_key=None, request_hash="h", source="api", traceparent=None,
    )  # fmt: skip
    assert invoice.etims is None
    with pytest.raises(NotAKenyanSale):
        invoice.record_etims_numbered(
            job_id="j", environment="sandbox", branch_id="00", invc_no=1, device_type="oscu"
        )


def test_credit_notes_keep_the_originals_rate_and_count_what_earlier_ones_took() -> None:
    tenant = kenyan_tenant()
    sale = kenyan_sale(tenant)
    command = IssueCreditNote.model_validate(
        {"number": "CN-1", "refund_reason_code": "03", "lines": [{"line_no": 2, "quantity": "3"}]}
    )
    first = build_credit_note(
        tenant, sale, command, environment="sandbox", request_hash="h", traceparent=None, today=TODAY
    )
    assert first.credited == [{"line_no": 2, "quantity": Decimal("3"), "amount": Decimal("1135.62")}]
    sale.record_credit(credit_note_id="x", credit_note_number="CN-1", lines=first.credited)
    assert sale.remaining(2) == (Decimal("0"), Decimal("0.00"))
    with pytest.raises(TaxRuleError) as caught:
        build_credit_note(
            tenant,
            sale,
            command.model_copy(update={"number": "CN-2"}),
            environment="sandbox",
            request_hash="h",
            traceparent=None,
            today=TODAY,
        )
    assert [(v.path, v.code) for v in caught.value.violations] == [
        ("lines[0]", "credit_note_exceeds_original")
    ]
