"""Issue 11, documents: the invoice fields GSTR-1 needs, Indian credit and debit notes (caps, tax,
release on cancellation), their Avro record (issued v5) and their e-invoice (CRN/DBN)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from connectors.gst_irp.mapping import SellerProfile, irn_for, to_einvoice
from engine.application import Ledger, ValidationFailed, build_invoice
from engine.commands import IssueGstNote, IssueInvoice
from engine.domain.invoice import DocumentType, Invoice
from engine.domain.tenant import Tenant
from engine.fields import field_errors
from engine.india_documents import build_gst_note
from engine.publishing import outbound_from_stored, to_outbound
from engine.tax.errors import TaxRuleError
from schemas import codec, registry

TODAY = date(2026, 1, 20)
SELLER_GSTIN = "27AAGCB7383J1Z8"
BUYER_GSTIN = "27AAACR5055K1Z7"


def _tenant() -> Tenant:
    return Tenant(
        name="Acme", legal_name="Acme Pvt Ltd", country="IN", gstin=SELLER_GSTIN, state="27",
        einvoicing_enabled=False, api_key_id="k",
        address={"line1": "4 Mill Lane", "city": "Pune", "pincode": "411002"},
    )  # fmt: skip


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "number": "INV-1",
        "date": "2026-01-19",
        "buyer": {
            "name": "Reliable",
            "gstin": BUYER_GSTIN,
            "state": "27",
            "address": {"line1": "12 Market Road", "city": "Pune", "pincode": "411001"},
        },
        "lines": [
            {"description": "Laptop", "hsn": "8471", "quantity": "10", "unit": "NOS", "unit_price": "100"},
            {"description": "Bar", "hsn": "7214", "quantity": "4", "unit": "KGS", "unit_price": "50"},
        ],
    }
    body.update(changes)
    return body


def _invoice(**changes: Any) -> Invoice:
    return build_invoice(
        _tenant(), IssueInvoice.model_validate(_body(**changes)), None, "h", "api", None, today=TODAY
    )


def _codes(exc: ValidationFailed) -> dict[str, str]:
    return {v.path: v.code for v in exc.violations}


# -- C1: command fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "path", "code"),
    [
        (
            {"export": {"shipping_bill_number": "12A4"}},
            "export.shipping_bill_number",
            "string_pattern_mismatch",
        ),
        ({"export": {"shipping_bill_number": "1" * 21}}, "export.shipping_bill_number", "too_long"),
        ({"export": {"port_code": "INBOM"}}, "export.port_code", "string_pattern_mismatch"),
        ({"export": {"port_code": "IN\u0000OM4"}}, "export.port_code", "control_character"),
        ({"export": {"shipping_bill_date": "2026-02-30"}}, "export.shipping_bill_date", "invalid_date"),
        ({"ecommerce_gstin": "x" * 21}, "ecommerce_gstin", "too_long"),
        ({"ecommerce_gstin": "27AAG\u202eCB7383J1Z8"}, "ecommerce_gstin", "control_character"),
        ({"reverse_charge": "maybe"}, "reverse_charge", "bool_parsing"),
    ],
)
def test_malformed_issue_11_fields_are_refused_with_their_path(
    changes: dict[str, Any], path: str, code: str
) -> None:
    with pytest.raises(ValidationError) as info:
        IssueInvoice.model_validate(_body(**changes))
    found = {e["path"]: e["code"] for e in field_errors(info.value.errors())}
    assert path in found, found
    assert found[path] == code, found


def test_an_unknown_supply_category_is_refused_with_the_line_path() -> None:
    body = _body()
    body["lines"][0]["supply_category"] = "zero"
    with pytest.raises(ValidationError) as info:
        IssueInvoice.model_validate(body)
    assert [e["path"] for e in field_errors(info.value.errors())] == ["lines[0].supply_category"]


@pytest.mark.parametrize(
    ("changes", "path", "code"),
    [
        ({"ecommerce_gstin": "27AAGCB7383J1Z9"}, "ecommerce_gstin", "invalid_gstin"),
        ({"export": {"shipping_bill_number": "1234567"}}, "export", "export_not_applicable"),
    ],
)
def test_issue_11_rules_are_422_violations(changes: dict[str, Any], path: str, code: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        _invoice(**changes)
    assert _codes(info.value) == {path: code}


def test_the_new_fields_reach_the_issued_event_and_its_record() -> None:
    ecommerce = "27AAGCB7383J1Z8"
    invoice = _invoice(
        supply_type="EXPWOP",
        reverse_charge=True,
        ecommerce_gstin=ecommerce.lower(),
        export={"shipping_bill_number": "0012345", "shipping_bill_date": "2026-01-19", "port_code": "inbom4"},
    )
    record = to_outbound(invoice.collect_events()[0]).record
    assert record["reverse_charge"] is True
    assert record["ecommerce_gstin"] == ecommerce
    assert record["export"] == {
        "shipping_bill_number": "0012345",
        "shipping_bill_date": "2026-01-19",
        "port_code": "INBOM4",
    }
    assert record["document_type"] == "invoice" and record["note_reason"] is None
    assert record["totals"]["igst"] == "0.00"  # without payment of tax
    data, used = registry.encode_event("ledgerflow.invoice.issued", record)
    assert used.version == 5 and registry.decode_event(data)["export"]["port_code"] == "INBOM4"


@pytest.mark.parametrize("category", ["nil", "exempt", "non_gst"])
def test_untaxed_lines_carry_rate_zero_and_no_tax_or_cess(category: str) -> None:
    body = _body()
    body["lines"][0]["supply_category"] = category
    body["lines"].append(
        {"description": "Unknown code", "hsn": "0101", "quantity": "1", "unit": "NOS", "unit_price": "10",
         "supply_category": category, "gst_rate": "0"}
    )  # fmt: skip
    invoice = build_invoice(_tenant(), IssueInvoice.model_validate(body), None, "h", "api", None, today=TODAY)
    line = invoice.lines[0]
    assert (line["supply_category"], line["gst_rate"], line["rate_source"]) == (
        category,
        Decimal("0"),
        "supply_category",
    )
    assert line["cgst"] == line["sgst"] == line["igst"] == line["cess"] == Decimal("0")
    assert line["total"] == line["taxable_value"] == Decimal("1000.00")
    # An HSN the master does not know needs no rate on an untaxed line.
    assert (
        invoice.lines[2]["total"] == Decimal("10.00") and invoice.lines[2]["rate_source"] == "supply_category"
    )
    taxed = invoice.lines[1]
    assert taxed["supply_category"] == "taxable" and taxed["cgst"] > 0
    assert invoice.totals["cgst"] == taxed["cgst"] and invoice.totals["taxable"] == Decimal("1210.00")


def test_a_rate_on_an_untaxed_line_is_a_422() -> None:
    body = _body()
    body["lines"][0].update(supply_category="exempt", gst_rate="18")
    with pytest.raises(ValidationFailed) as info:
        build_invoice(_tenant(), IssueInvoice.model_validate(body), None, "h", "api", None, today=TODAY)
    assert _codes(info.value) == {"lines[0].gst_rate": "rate_on_untaxed_supply"}


def test_the_fingerprint_of_a_command_without_the_new_fields_is_unchanged() -> None:
    # A retry across the upgrade must still be recognised as the same request (Idempotency-Key).
    plain = IssueInvoice.model_validate(_body())
    assert plain.fingerprint() == IssueInvoice.model_validate(_body(reverse_charge=False)).fingerprint()
    assert plain.fingerprint() != IssueInvoice.model_validate(_body(reverse_charge=True)).fingerprint()
    data = plain.model_dump(mode="json")
    for name in ("reverse_charge", "ecommerce_gstin", "export"):
        data.pop(name)
    for line in data["lines"]:
        line.pop("supply_category")
    assert plain.fingerprint() == hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


# -- notes ------------------------------------------------------------------------------------------


def _note(
    original: Invoice, kind: str, lines: list[dict[str, Any]], number: str = "CN-1", day: str = "2026-01-20"
) -> Invoice:
    command = IssueGstNote.model_validate(
        {"number": number, "date": day, "reason": "sales_return", "lines": lines}
    )
    built = build_gst_note(
        _tenant(), original, command, kind=kind, day=command.date or TODAY, today=TODAY, max_future_days=1,
        idempotency_key=None, request_hash="h", source="api", traceparent=None,
    )  # fmt: skip
    if kind == DocumentType.CREDIT_NOTE:
        original.record_credit(
            credit_note_id=str(built.note.id), credit_note_number=built.note.number, lines=built.credited
        )
    return built.note


def _exceeds(exc: TaxRuleError) -> list[str]:
    return [v.path for v in exc.violations if v.code == "credit_note_exceeds_original"]


def test_a_credit_note_line_is_taxed_as_its_original_line() -> None:
    original = _invoice()
    note = _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "3"}])
    [line] = note.lines
    assert (line["original_line_no"], line["gst_rate"], line["unit_price"]) == (
        1,
        original.lines[0]["gst_rate"],
        Decimal("100"),
    )
    assert line["taxable_value"] == Decimal("300.00")
    assert (
        line["cgst"] == line["sgst"] == (Decimal("300.00") * line["gst_rate"] / 200).quantize(Decimal("0.01"))
    )
    assert note.intra_state is True and note.place_of_supply == original.place_of_supply
    assert (note.document_type, note.original_number, note.original_invoice_date) == (
        "credit_note",
        "INV-1",
        original.invoice_date,
    )
    record = to_outbound(note.collect_events()[0]).record
    assert record["lines"][0]["original_line_no"] == 1 and record["original_invoice_date"] == "2026-01-19"
    assert record["note_reason"] == "sales_return"


def test_partial_credit_notes_then_one_exceeding_what_remains_is_refused() -> None:
    original = _invoice()
    _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "4"}], "CN-1")
    _note(
        original,
        DocumentType.CREDIT_NOTE,
        [{"line_no": 1, "quantity": "5"}, {"line_no": 2, "quantity": "4"}],
        "CN-2",
    )
    assert original.remaining(1)[0] == Decimal("1") and original.remaining(2)[0] == Decimal("0")
    with pytest.raises(TaxRuleError) as info:
        _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "2"}], "CN-3")
    assert _exceeds(info.value) == ["lines[0]"]
    # The amount is capped too: one unit left, but at a higher price than charged.
    with pytest.raises(TaxRuleError) as info:
        _note(
            original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "1", "unit_price": "150"}], "CN-3"
        )
    assert _exceeds(info.value) == ["lines[0]"]
    _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "1"}], "CN-3")
    assert original.remaining(1) == (Decimal("0"), Decimal("0.00"))


def test_cancelling_a_credit_note_releases_what_it_took() -> None:
    original = _invoice()
    note = _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "10"}])
    assert original.remaining(1)[0] == Decimal("0")
    assert original.release_credit(credit_note_id=str(note.id), credit_note_number=note.number) is True
    assert original.remaining(1) == (Decimal("10"), original.lines[0]["total"])
    # Released once: a retried cancellation gives nothing back twice.
    assert original.release_credit(credit_note_id=str(note.id), credit_note_number=note.number) is False
    released = [e for e in original.collect_events() if isinstance(e, Invoice.CreditReleased)]
    record = to_outbound(released[0]).record
    assert record["credit_note_number"] == "CN-1" and record["lines"][0]["quantity"] == "10"
    assert registry.encode_event("ledgerflow.invoice.credit_released", record)[1].version == 1


def test_a_debit_note_is_not_capped_and_takes_nothing_from_the_original() -> None:
    original = _invoice()
    note = _note(
        original, DocumentType.DEBIT_NOTE, [{"line_no": 1, "quantity": "50", "unit_price": "20"}], "DN-1"
    )
    assert note.document_type == "debit_note" and note.totals["taxable"] == Decimal("1000.00")
    assert original.remaining(1)[0] == Decimal("10")


@pytest.mark.parametrize(
    ("lines", "day", "path", "code"),
    [
        ([{"line_no": 3, "quantity": "1"}], "2026-01-20", "lines[0].line_no", "unknown_line"),
        (
            [{"line_no": 1, "quantity": "1"}, {"line_no": 1, "quantity": "1"}],
            "2026-01-20",
            "lines[1].line_no",
            "duplicate_line",
        ),
        ([{"line_no": 1, "quantity": "0"}], "2026-01-20", "lines[0].quantity", "zero_quantity"),
        ([{"line_no": 1, "quantity": "-1"}], "2026-01-20", "lines[0].quantity", "zero_quantity"),
        (
            [{"line_no": 1, "quantity": "1", "discount": "101"}],
            "2026-01-20",
            "lines[0].discount",
            "discount_exceeds_gross",
        ),
        ([{"line_no": 1, "quantity": "1"}], "2026-01-18", "date", "before_original"),
        ([{"line_no": 1, "quantity": "1"}], "2026-03-01", "date", "date_in_future"),
    ],
)
def test_note_rules(lines: list[dict[str, Any]], day: str, path: str, code: str) -> None:
    with pytest.raises(TaxRuleError) as info:
        _note(_invoice(), DocumentType.DEBIT_NOTE, lines, "DN-1", day)
    assert {v.path: v.code for v in info.value.violations} == {path: code}


def test_a_note_on_a_zero_rated_export_without_payment_carries_no_tax() -> None:
    original = _invoice(supply_type="EXPWOP")
    note = _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "1"}])
    assert note.totals["igst"] == note.totals["cgst"] == Decimal("0") and note.totals["total"] == Decimal(
        "100.00"
    )


# -- issued v5 against older readers ----------------------------------------------------------------


@pytest.mark.parametrize("old", [1, 2, 3, 4])
def test_an_indian_v5_note_is_read_by_every_older_reader(old: int) -> None:
    v5 = registry.current("ledgerflow.invoice.issued")
    sample = json.loads(v5.sample_path.read_text("utf-8"))
    data = codec.encode(v5.parsed, sample)
    reader = registry.versions("ledgerflow.invoice.issued")[old - 1]
    decoded = codec.decode(data, lambda fp: registry.by_fingerprint(fp).parsed, reader.parsed)  # type: ignore[union-attr]
    assert set(decoded) == {f["name"] for f in reader.schema["fields"]}
    assert decoded["number"] == "CN/25-26/0003" and decoded["totals"]["igst"] == "36.00"
    if old == 4:
        assert decoded["document_type"] == "credit_note" and decoded["original_number"] == "INV/25-26/00042"


# -- e-invoice of a note ----------------------------------------------------------------------------

SELLER = SellerProfile(
    gstin=SELLER_GSTIN, legal_name="Acme Pvt Ltd", address_line1="4 Mill Lane", location="Pune",
    pincode="411002", state_code="27",
)  # fmt: skip


def test_a_credit_note_maps_to_crn_with_its_preceding_invoice() -> None:
    original = _invoice(reverse_charge=True, ecommerce_gstin=SELLER_GSTIN)
    note = _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 2, "quantity": "1"}], "CN/25-26/1")
    record = to_outbound(note.collect_events()[0]).record
    document = to_einvoice(record, SELLER)
    assert document["DocDtls"] == {"Typ": "CRN", "No": "CN/25-26/1", "Dt": "20/01/2026"}
    assert document["RefDtls"] == {"PrecDocDtls": [{"InvNo": "INV-1", "InvDt": "19/01/2026"}]}
    assert document["TranDtls"]["RegRev"] == "Y" and document["TranDtls"]["EcmGstin"] == SELLER_GSTIN
    assert irn_for(SELLER_GSTIN, date(2026, 1, 20), "CRN", "CN/25-26/1") != irn_for(
        SELLER_GSTIN, date(2026, 1, 20), "INV", "CN/25-26/1"
    )


def test_a_debit_note_maps_to_dbn_and_an_export_carries_its_shipping_bill() -> None:
    original = _invoice(
        supply_type="EXPWP",
        export={"shipping_bill_number": "7654321", "shipping_bill_date": "2026-01-19", "port_code": "INNSA1"},
    )
    invoice_doc = to_einvoice(to_outbound(original.collect_events()[0]).record, SELLER)
    assert invoice_doc["DocDtls"]["Typ"] == "INV" and "RefDtls" not in invoice_doc
    assert invoice_doc["ExpDtls"] == {"ShipBNo": "7654321", "ShipBDt": "19/01/2026", "Port": "INNSA1"}
    note = _note(original, DocumentType.DEBIT_NOTE, [{"line_no": 1, "quantity": "1"}], "DN-1")
    document = to_einvoice(to_outbound(note.collect_events()[0]).record, SELLER)
    assert document["DocDtls"]["Typ"] == "DBN" and "ExpDtls" not in document


# -- the relay's fast path over stored JSON -----------------------------------------------------------


def _note_events() -> list[Any]:
    original = _invoice(
        supply_type="EXPWP",
        reverse_charge=True,
        ecommerce_gstin=SELLER_GSTIN,
        export={"shipping_bill_number": "7654321", "shipping_bill_date": "2026-01-19", "port_code": "INNSA1"},
    )
    credit = _note(
        original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "2.5", "unit_price": "99.999"}]
    )
    debit = _note(original, DocumentType.DEBIT_NOTE, [{"line_no": 2, "quantity": "1"}], "DN-1")
    credit.cancel(reason="other", remark=None, at=datetime.now(UTC), traceparent=None)
    original.release_credit(credit_note_id=str(credit.id), credit_note_number=credit.number)
    return [*original.collect_events(), *credit.collect_events(), *debit.collect_events()]


@pytest.mark.parametrize("event", _note_events(), ids=lambda e: type(e).__qualname__)
def test_the_relays_fast_path_publishes_notes_as_the_domain_events_say(event: Any) -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    stored = ledger.mapper.to_stored_event(event)
    slow = to_outbound(ledger.mapper.to_domain_event(stored))
    fast = outbound_from_stored(stored.originator_id, stored.originator_version, stored.topic, stored.state)
    assert replace(fast, traceparent="-") == replace(slow, traceparent="-")
    value, schema = registry.encode_event(fast.ce_type, fast.record)
    assert registry.decode_event(value)["event_id"] == fast.ce_id and schema is registry.current(fast.ce_type)


def _one_line_invoice(quantity: str, unit_price: str, rate: str, discount: str = "0") -> Invoice:
    line = {"description": "Coil", "hsn": "8504", "quantity": quantity, "unit": "NOS",
            "unit_price": unit_price, "gst_rate": rate, "discount": discount}  # fmt: skip
    return _invoice(lines=[line])


def test_partial_credit_notes_add_up_to_the_invoice_line_to_the_paisa() -> None:
    # 2 x 10.20 at 5% intra-state: the invoice charges 0.51 CGST; one unit alone rounds to 0.26
    # (0.255 half-up), so two one-unit notes computed alone would credit 0.52 and the second would
    # exceed what remains. The note taking the rest of the line takes exactly what is left.
    original = _one_line_invoice("2", "10.20", "5")
    assert original.lines[0]["cgst"] == Decimal("0.51")
    first = _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "1"}], "CN-1")
    assert first.lines[0]["cgst"] == Decimal("0.26")
    rest = _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "1"}], "CN-2")
    assert (rest.lines[0]["cgst"], rest.lines[0]["sgst"], rest.lines[0]["total"]) == (
        Decimal("0.25"),
        Decimal("0.25"),
        Decimal("10.70"),
    )
    assert original.remaining(1) == (Decimal("0"), Decimal("0.00"))
    assert original.remaining_parts(1) == dict.fromkeys(
        ("taxable_value", "cgst", "sgst", "igst", "cess"), Decimal("0")
    )
    # A cancelled note gives its parts back too: the rest is then that note's again.
    original.release_credit(credit_note_id=str(rest.id), credit_note_number=rest.number)
    assert original.remaining_parts(1)["cgst"] == Decimal("0.25")


def test_the_rest_of_a_discounted_line_keeps_the_e_invoice_arithmetic() -> None:
    original = _one_line_invoice("2", "100", "18", discount="10")
    _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "1", "discount": "5"}], "CN-1")
    rest = _note(original, DocumentType.CREDIT_NOTE, [{"line_no": 1, "quantity": "1"}], "CN-2")
    line = rest.lines[0]
    assert (line["taxable_value"], line["discount"]) == (Decimal("95.00"), Decimal("5.00"))
    assert original.remaining(1) == (Decimal("0"), Decimal("0.00"))
    document = to_einvoice(to_outbound(rest.collect_events()[0]).record, SELLER)
    assert document["ItemList"][0]["AssAmt"] == 95.0 and document["ItemList"][0]["Discount"] == 5.0
