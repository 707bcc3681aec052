"""Kenyan sales and credit notes on the real PostgreSQL, Kafka and API (issue 10): POST /v1/invoices
validated by the tenant's country, Kenya VAT, the etims integration's environment and branch on every
sale, credit note limits (also under concurrency), the eTIMS results round-tripping to GET, and
hostile input answered 422, never 500."""

from __future__ import annotations

import copy
import threading
import uuid
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest

from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import (
    client_for,
    create_ingest_key,
    ingest_command,
    invoice_body,
    register_tenant,
)

pytestmark = pytest.mark.integration

SELLER_PIN = "P051234567X"
BUYER_PIN = "P052345678Y"
BRANCH = "01"  # KRA assigned 01: never assume 00

SALE: dict[str, Any] = {
    "number": "KE-2026-0001",
    "date": "2026-12-01",
    "buyer": {"name": "Mombasa Grocers Ltd", "kra_pin": BUYER_PIN.lower(), "phone": "+254712345678"},
    "payment_type": "06",
    "lines": [
        {
            "item_code": "KE2NTBA0000001",
            "description": "Maize flour 2kg",
            "quantity": "10",
            "unit_price": "200.00",
            "discount": "100.00",
            "tax_type": "B",
        },
        {
            "item_code": "KE2NTBA0000002",
            "description": "Cooking oil 1l",
            "quantity": "3",
            "unit_price": "350",
            "tax_type": "E",
        },
        {
            "item_code": "KE3NTXU0000003",
            "description": "Delivery",
            "quantity": "1",
            "unit_price": "250.00",
            "tax_type": "A",
        },
    ],
}


def sale(number: str = "KE-2026-0001", **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SALE)
    body["number"] = number
    body.update(changes)
    return body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def kenyan_tenant(service: LedgerService) -> tuple[str, str]:
    registered = service.register_tenant(
        name="Savanna Retail",
        legal_name="Savanna Retail Limited",
        country="KE",
        gstin=None,
        state=None,
        kra_pin=SELLER_PIN,
    )
    return str(registered.tenant_id), registered.api_key


def save_etims(client: Any, api_key: str, *, environment: str = "sandbox", branch: str = BRANCH) -> None:
    answer = client.put(
        "/v1/integrations/etims",
        json={
            "enabled": True,
            "environment": environment,
            "base_url": "http://127.0.0.1:9103",
            "credentials": {
                "tin": SELLER_PIN,
                "bhf_id": branch,
                "device_serial": "KRACU0100000001",
                "device_type": "oscu",
            },
        },
        headers=bearer(api_key),
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture
def kenya(service: LedgerService, settings: Settings) -> tuple[str, str, Any]:
    tenant_id, api_key = kenyan_tenant(service)
    client = client_for(settings)
    save_etims(client, api_key)
    return tenant_id, api_key, client


def test_a_kenyan_sale_gets_vat_per_tax_type_and_the_integrations_environment_and_branch(
    kenya: tuple[str, str, Any],
) -> None:
    _, api_key, client = kenya
    created = client.post("/v1/invoices", json=sale(), headers=bearer(api_key))
    assert created.status_code == 201, created.text
    invoice = created.json()
    # B: 2000 - 100 discount = 1900 taxable, 16% = 304; E: 1050 at 8% = 84; A: 250 exempt.
    assert invoice["totals"] == {"taxable": "3200.00", "vat": "388.00", "total": "3588.00"}
    assert invoice["tax_breakdown"] == [
        {"tax_type": "A", "rate": "0", "taxable": "250.00", "tax": "0.00"},
        {"tax_type": "B", "rate": "16", "taxable": "1900.00", "tax": "304.00"},
        {"tax_type": "C", "rate": "0", "taxable": "0.00", "tax": "0.00"},
        {"tax_type": "D", "rate": "0", "taxable": "0.00", "tax": "0.00"},
        {"tax_type": "E", "rate": "8", "taxable": "1050.00", "tax": "84.00"},
    ]
    first = invoice["lines"][0]
    assert {k: first[k] for k in ("supply_amount", "discount", "taxable_amount", "tax_amount", "total")} == {
        "supply_amount": "2000.00",
        "discount": "100.00",
        "taxable_amount": "1900.00",
        "tax_amount": "304.00",
        "total": "2204.00",
    }
    assert "hsn" not in first and "cgst" not in first
    assert (invoice["country"], invoice["currency"], invoice["document_type"]) == ("KE", "KES", "invoice")
    assert (invoice["environment"], invoice["branch_id"], invoice["payment_type"]) == (
        "sandbox",
        BRANCH,
        "06",
    )
    assert invoice["seller"]["kra_pin"] == SELLER_PIN
    assert invoice["buyer"] == {"name": "Mombasa Grocers Ltd", "kra_pin": BUYER_PIN, "phone": "+254712345678"}
    assert invoice["supply_type"] == "B2B"
    assert "place_of_supply" not in invoice and "einvoice" in invoice
    assert invoice["etims"]["status"] == "pending"
    assert invoice["etims"]["environment"] == "sandbox"
    assert invoice["etims"]["invc_no"] is None and invoice["etims"]["failure"] is None
    # Before the projection has it, GET answers from the event store with the same document.
    fetched = client.get(f"/v1/invoices/{invoice['id']}", headers=bearer(api_key))
    assert fetched.status_code == 200
    assert fetched.headers["X-Ledgerflow-Read-Source"] == "event-store"
    # GET adds where the invoice stands with payments (docs/payments.md): nothing paid yet.
    unpaid = {"payment_status": "unpaid", "amount_paid": "0.00", "outstanding": "3588.00"}
    assert fetched.json() == {**invoice, **unpaid}

    # The Idempotency-Key works as for Indian invoices.
    keyed = {**bearer(api_key), "Idempotency-Key": "ke-key-1"}
    once = client.post("/v1/invoices", json=sale("KE-2026-0003"), headers=keyed)
    twice = client.post("/v1/invoices", json=sale("KE-2026-0003"), headers=keyed)
    assert (once.status_code, twice.status_code, twice.headers.get("Idempotent-Replayed")) == (
        201,
        201,
        "true",
    )
    assert once.json()["id"] == twice.json()["id"]
    reused = client.post("/v1/invoices", json=sale("KE-2026-0004"), headers=keyed)
    assert reused.json()["error"]["code"] == "idempotency_key_reused"

    # A branch per invoice overrides the integration's.
    other = client.post("/v1/invoices", json=sale("KE-2026-0002", branch_id="02"), headers=bearer(api_key))
    assert other.status_code == 201, other.text
    assert other.json()["branch_id"] == "02"


def test_synced_class_04_rates_are_used_and_tax_inclusive_prices_are_backed_out(
    kenya: tuple[str, str, Any], settings: Settings
) -> None:
    _, api_key, client = kenya
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        conn.execute(
            "INSERT INTO etims_tax_rates (environment, tax_type, rate, name) VALUES ('sandbox', 'E', 10, 'E')"
        )
        # Another environment's rates are not this tenant's.
        conn.execute(
            "INSERT INTO etims_tax_rates (environment, tax_type, rate, name)"
            " VALUES ('production', 'B', 20, 'B')"
        )
    body = sale(lines=[{**SALE["lines"][1]}, {**SALE["lines"][0], "discount": "0"}])
    created = client.post("/v1/invoices", json=body, headers=bearer(api_key))
    assert created.status_code == 201, created.text
    assert [(x["tax_type"], x["tax_rate"], x["tax_amount"]) for x in created.json()["lines"]] == [
        ("E", "10", "105.00"),
        ("B", "16", "320.00"),
    ]
    inclusive = sale("KE-2026-0009", prices_include_tax=True, lines=[{**SALE["lines"][0], "discount": "0"}])
    answer = client.post("/v1/invoices", json=inclusive, headers=bearer(api_key)).json()
    # 10 x 200 = 2000 gross at 16%: taxable 1724.14, VAT 275.86, and the total stays 2000.
    assert answer["totals"] == {"taxable": "1724.14", "vat": "275.86", "total": "2000.00"}


def test_a_kenyan_sale_without_the_etims_integration_is_409_and_indian_invoices_are_unchanged(
    service: LedgerService, settings: Settings
) -> None:
    _, ke_key = kenyan_tenant(service)
    client = client_for(settings)
    refused = client.post("/v1/invoices", json=sale(), headers=bearer(ke_key))
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "etims_not_configured"
    assert client.get("/v1/invoices", headers=bearer(ke_key)).json()["items"] == []

    # An Indian tenant: the same endpoint, the GST body, exactly the GST answer (no Kenyan fields).
    _, in_key = register_tenant(service)
    indian = client.post("/v1/invoices", json=invoice_body(), headers=bearer(in_key))
    assert indian.status_code == 201, indian.text
    body = indian.json()
    assert "etims" not in body and "country" not in body and "tax_breakdown" not in body
    assert set(body["totals"]) == {"taxable", "cgst", "sgst", "igst", "cess", "total"}
    assert "kra_pin" not in body["seller"] and "kra_pin" not in body["buyer"]
    assert "item_code" not in body["lines"][0]
    # A Kenyan body from an Indian tenant is refused by the GST rules, and the reverse too.
    assert client.post("/v1/invoices", json=sale(), headers=bearer(in_key)).status_code == 422
    save_etims(client, ke_key)
    gst_from_kenya = client.post("/v1/invoices", json=invoice_body(), headers=bearer(ke_key))
    assert gst_from_kenya.status_code == 422
    paths = {f["path"] for f in gst_from_kenya.json()["error"]["details"]["fields"]}
    assert "lines[0].item_code" in paths and "lines[0].tax_type" in paths


@pytest.mark.parametrize(
    ("change", "path", "code"),
    [
        ({"lines": [{**SALE["lines"][0], "tax_type": "F"}]}, "lines[0].tax_type", "literal_error"),
        ({"lines": [{**SALE["lines"][0], "tax_type": "b"}]}, "lines[0].tax_type", "literal_error"),
        ({"lines": [{**SALE["lines"][0], "tax_type": None}]}, "lines[0].tax_type", "literal_error"),
        (
            {"lines": [{**SALE["lines"][0], "item_code": "KE2\x00NT"}]},
            "lines[0].item_code",
            "control_character",
        ),
        ({"lines": [{**SALE["lines"][0], "description": "flour\u202e"}]}, "lines[0].description", None),
        ({"lines": [{**SALE["lines"][0], "quantity": "1e999999"}]}, "lines[0].quantity", "invalid_number"),
        (
            {"lines": [{**SALE["lines"][0], "quantity": "99999999999999999999"}]},
            "lines[0].quantity",
            "too_large",
        ),
        ({"lines": [{**SALE["lines"][0], "unit_price": 1e300}]}, "lines[0].unit_price", None),
        (
            {"lines": [{**SALE["lines"][0], "discount": "5000"}]},
            "lines[0].discount",
            "discount_exceeds_amount",
        ),
        ({"lines": [{**SALE["lines"][0], "quantity": "0"}]}, "lines[0].quantity", "not_positive"),
        (
            {
                "lines": [
                    {
                        **SALE["lines"][0],
                        "quantity": "9999999999.999",
                        "unit_price": "999999999999.999",
                        "discount": "0",
                    }
                ]
            },
            "lines[0]",
            "too_large",
        ),
        ({"buyer": {"name": "X", "kra_pin": "P05123456"}}, "buyer.kra_pin", "invalid_kra_pin"),
        ({"buyer": {"name": "X", "kra_pin": "P051234567X\n"}}, "buyer.kra_pin", "control_character"),
        ({"currency": "USD"}, "currency", "literal_error"),
        ({"payment_type": "08"}, "payment_type", "literal_error"),
        ({"branch_id": "0"}, "branch_id", None),
        ({"lines": []}, "lines", "too_short"),
        ({"date": "2099-01-01"}, "date", "date_in_future"),
    ],
)
def test_hostile_or_wrong_kenyan_input_is_422_naming_the_field_never_500(
    kenya: tuple[str, str, Any], change: dict[str, Any], path: str, code: str | None
) -> None:
    _, api_key, client = kenya
    answer = client.post("/v1/invoices", json=sale(**change), headers=bearer(api_key))
    assert answer.status_code == 422, answer.text
    fields = answer.json()["error"]["details"]["fields"]
    assert path in [f["path"] for f in fields], fields
    if code is not None:
        assert code in [f["code"] for f in fields if f["path"] == path], fields


def test_a_kenyan_command_on_the_ingest_topic_is_validated_and_issued_like_over_http(
    kenya: tuple[str, str, Any], service: LedgerService, settings: Settings
) -> None:
    from engine.ingest import IngestRejected, apply_ingest_message
    from tests.integration.test_input_validation import signing_keys

    tenant_id, api_key, client = kenya
    key = create_ingest_key(settings, tenant_id)
    keys = signing_keys(service, settings)
    headers, value = ingest_command(tenant_id, "ce-ke-1", sale("KE-ING-1"), key)
    result = apply_ingest_message(service, headers, value, keys)
    fetched = client.get(f"/v1/invoices/{result.invoice_id}", headers=bearer(api_key)).json()
    assert fetched["totals"] == {"taxable": "3200.00", "vat": "388.00", "total": "3588.00"}
    assert fetched["source"] == "ingest" and fetched["branch_id"] == BRANCH
    bad = sale("KE-ING-2")
    bad["lines"][0]["tax_type"] = "Z"
    headers, value = ingest_command(tenant_id, "ce-ke-2", bad, key)
    with pytest.raises(IngestRejected) as rejected:
        apply_ingest_message(service, headers, value, keys)
    assert rejected.value.code == "validation_failed"
    assert any(f["path"] == "lines[0].tax_type" for f in rejected.value.fields)


# -- credit notes -----------------------------------------------------------------------------------


def credit(number: str, *lines: tuple[int, str], reason: str = "03") -> dict[str, Any]:
    return {
        "number": number,
        "refund_reason_code": reason,
        "lines": [{"line_no": n, "quantity": q} for n, q in lines],
    }


def test_credit_notes_take_back_at_most_what_remains_of_each_line(kenya: tuple[str, str, Any]) -> None:
    _, api_key, client = kenya
    original = client.post("/v1/invoices", json=sale(), headers=bearer(api_key)).json()
    url = f"/v1/invoices/{original['id']}/credit-notes"

    first = client.post(url, json=credit("CN-1", (1, "4")), headers=bearer(api_key))
    assert first.status_code == 201, first.text
    note = first.json()
    assert (note["document_type"], note["original_invoice_id"], note["original_number"]) == (
        "credit_note",
        original["id"],
        "KE-2026-0001",
    )
    assert note["refund_reason_code"] == "03" and note["branch_id"] == BRANCH
    # 4 x 200 at the original's 16%: 800 + 128.
    assert note["totals"] == {"taxable": "800.00", "vat": "128.00", "total": "928.00"}
    assert note["lines"][0]["original_line_no"] == 1
    assert note["etims"]["status"] == "pending"

    # 6 of 10 remain on line 1: 7 is too many, and the error names the line.
    over = client.post(url, json=credit("CN-2", (2, "1"), (1, "7")), headers=bearer(api_key))
    assert over.status_code == 422, over.text
    error = over.json()["error"]
    assert error["code"] == "credit_note_exceeds_original"
    (field,) = error["details"]["fields"]
    assert (field["path"], field["line_no"], field["remaining_quantity"]) == ("lines[1]", 1, "6")
    # The amount counts too: 6 units at a higher price than charged exceed what remains in value.
    pricier = credit("CN-3", (1, "6"))
    pricier["lines"][0]["unit_price"] = "250"
    assert client.post(url, json=pricier, headers=bearer(api_key)).json()["error"]["code"] == (
        "credit_note_exceeds_original"
    )
    # The rest of line 1 (the discount of 100 was not credited, so 6 x 200 - 100 matches what is left).
    rest = credit("CN-4", (1, "6"))
    rest["lines"][0]["discount"] = "100"
    assert client.post(url, json=rest, headers=bearer(api_key)).status_code == 201
    nothing_left = client.post(url, json=credit("CN-5", (1, "0.001")), headers=bearer(api_key))
    assert nothing_left.json()["error"]["code"] == "credit_note_exceeds_original"

    for body, path, code in [
        (credit("CN-6", (9, "1")), "lines[0].line_no", "unknown_line"),
        (credit("CN-7", (2, "1"), (2, "1")), "lines[1].line_no", "duplicate_line"),
        ({**credit("CN-8", (2, "1")), "refund_reason_code": ""}, "refund_reason_code", None),
        (
            {k: v for k, v in credit("CN-9", (2, "1")).items() if k != "refund_reason_code"},
            "refund_reason_code",
            None,
        ),
        ({**credit("CN-10", (2, "1")), "refund_reason_code": "0\x01"}, "refund_reason_code", None),
    ]:
        refused = client.post(url, json=body, headers=bearer(api_key))
        assert refused.status_code == 422, refused.text
        fields = refused.json()["error"]["details"]["fields"]
        assert path in [f["path"] for f in fields]
        if code:
            assert code in [f["code"] for f in fields]
    # The same credit note again is a replay, not a second credit; another body under its number a 409.
    again = client.post(url, json=credit("CN-1", (1, "4")), headers=bearer(api_key))
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == note["id"]
    clash = client.post(url, json=credit("CN-1", (2, "1")), headers=bearer(api_key))
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "duplicate_invoice_number"


def test_concurrent_credit_notes_on_one_invoice_never_exceed_it_together(
    kenya: tuple[str, str, Any], settings: Settings
) -> None:
    _, api_key, client = kenya
    original = client.post("/v1/invoices", json=sale(), headers=bearer(api_key)).json()
    url = f"/v1/invoices/{original['id']}/credit-notes"
    # Eight clients, each its own API process state, each crediting 3 of line 1's 10 units at once:
    # at most three can succeed.
    clients = [client_for(settings) for _ in range(8)]
    start = threading.Barrier(len(clients))
    answers: list[Any] = [None] * len(clients)

    def send(i: int) -> None:
        start.wait()
        answers[i] = clients[i].post(url, json=credit(f"CN-C{i}", (1, "3")), headers=bearer(api_key))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 201, 201, 422, 422, 422, 422, 422], [a.text for a in answers]
    refused = [a.json()["error"]["code"] for a in answers if a.status_code == 422]
    assert set(refused) == {"credit_note_exceeds_original"}
    credited = sum(Decimal(a.json()["lines"][0]["quantity"]) for a in answers if a.status_code == 201)
    assert credited == Decimal("9")


# -- eTIMS results ----------------------------------------------------------------------------------

RECEIPT = {
    "invc_no": 7,
    "receipt_no": 3,
    "total_receipt_no": 7,
    "internal_data": "VUVJTVNJTlRFUk5BTERBVEE",
    "receipt_signature": "ABCD1234EFGH5678",
    "sdc_id": "KRACU0100000001",
    "mrc_no": "WIS00000001",
    "sdc_datetime": "20261201114500",
    "qr_url": "https://etims-sbx.kra.go.ke/common/link/etims/receipt/indexEtimsReceiptData?Data=P051234567X01ABCD",
    "device_type": "oscu",
    "adopted_existing": False,
}


def test_etims_results_round_trip_to_get_through_kafka_and_the_register(
    kenya: tuple[str, str, Any],
    service: LedgerService,
    settings: Settings,
    topics: list[str],
    background: BackgroundLoop,
) -> None:
    tenant_id, api_key, client = kenya
    signed_id = client.post("/v1/invoices", json=sale("KE-R-1"), headers=bearer(api_key)).json()["id"]
    failed_id = client.post("/v1/invoices", json=sale("KE-R-2"), headers=bearer(api_key)).json()["id"]
    voided_id = client.post("/v1/invoices", json=sale("KE-R-3"), headers=bearer(api_key)).json()["id"]
    tenant, place = UUID(tenant_id), {"environment": "sandbox", "branch_id": BRANCH}

    for _ in range(2):  # every result twice: a redelivered job changes nothing
        service.record_etims_numbered(
            tenant, UUID(signed_id), job_id="j1", invc_no=7, device_type="oscu", **place
        )
        service.record_etims_failed(
            tenant,
            UUID(signed_id),
            job_id="j1",
            invc_no=7,
            result_code="894",
            error_class="needs_attention",
            message="communication error",
            **place,
        )
        service.record_etims_signed(tenant, UUID(signed_id), job_id="j1", receipt=RECEIPT, **place)
        # A late failure of an earlier attempt never hides the receipt.
        service.record_etims_failed(
            tenant,
            UUID(signed_id),
            job_id="j0",
            invc_no=7,
            result_code="999",
            error_class="permanent",
            message="late",
            **place,
        )
        service.record_etims_numbered(
            tenant, UUID(failed_id), job_id="j2", invc_no=8, device_type="oscu", **place
        )
        service.record_etims_failed(
            tenant,
            UUID(failed_id),
            job_id="j2",
            invc_no=8,
            result_code="910",
            error_class="permanent",
            message="Request parameter error",
            **place,
        )
        service.record_etims_numbered(
            tenant, UUID(voided_id), job_id="j3", invc_no=9, device_type="oscu", **place
        )
        service.record_etims_voided(
            tenant,
            UUID(voided_id),
            invc_no=9,
            reason="sold twice by mistake",
            voided_by="operator:api",
            **place,
        )
    stored = service.get_invoice(tenant, UUID(signed_id))
    # issued, numbered, failed, signed: the repeats stored nothing.
    assert stored.version == 4

    background.start(Relay(settings).run)
    background.start(ProjectionRunner(settings, InvoiceRegister()).run)

    def projected(invoice_id: str, status: str) -> dict[str, Any] | None:
        answer = client.get(f"/v1/invoices/{invoice_id}", headers=bearer(api_key))
        body: dict[str, Any] = answer.json()
        if "X-Ledgerflow-Read-Source" in answer.headers or body["etims"]["status"] != status:
            return None
        return body

    signed = wait_for(
        lambda: projected(signed_id, "signed"), timeout=120, what="the signed sale in the register"
    )
    etims = signed["etims"]
    assert {
        k: etims[k] for k in ("invc_no", "receipt_no", "internal_data", "receipt_signature", "sdc_id")
    } == {k: RECEIPT[k] for k in ("invc_no", "receipt_no", "internal_data", "receipt_signature", "sdc_id")}
    assert etims["qr_url"] == RECEIPT["qr_url"]
    assert (etims["environment"], etims["branch_id"], etims["failure"]) == ("sandbox", BRANCH, None)
    failed = wait_for(
        lambda: projected(failed_id, "failed"), timeout=120, what="the failed sale in the register"
    )
    assert failed["etims"]["failure"] == {"code": "910", "message": "Request parameter error"}
    assert failed["etims"]["invc_no"] == 8
    voided = wait_for(
        lambda: projected(voided_id, "voided"), timeout=120, what="the voided sale in the register"
    )
    assert voided["etims"]["void"] == {"reason": "sold twice by mistake", "voided_by": "operator:api"}
    # The event store's view (before projection) says the same as the register's.
    from engine.api.app import invoice_view

    assert invoice_view(service.get_invoice(tenant, UUID(signed_id)))["etims"] == etims
    # The register's whole document is the event store's (plus when it was issued).
    from_store = invoice_view(service.get_invoice(tenant, UUID(signed_id)))
    # The register's answer adds the payment position (docs/payments.md), which the event store does not hold.
    payment_fields = ("issued_at", "payment_status", "amount_paid", "outstanding")
    assert {k: v for k, v in signed.items() if k not in payment_fields} == from_store
    listed = client.get("/v1/invoices", headers=bearer(api_key)).json()["items"]
    assert {i["id"]: i["etims"]["status"] for i in listed} == {
        signed_id: "signed",
        failed_id: "failed",
        voided_id: "voided",
    }
    # A signed sale cannot be voided (KRA holds it: a credit note takes it back).
    from engine.application import InvoiceStateConflict

    with pytest.raises(InvoiceStateConflict):
        service.record_etims_voided(tenant, UUID(signed_id), invc_no=7, reason="x", voided_by="y", **place)
    # Nor cancelled: KRA has no cancellation, a credit note reverses a signed sale.
    cancel = client.post(
        f"/v1/invoices/{signed_id}/cancel", json={"reason": "other"}, headers=bearer(api_key)
    )
    assert cancel.status_code == 409, cancel.text
    assert "credit note" in cancel.json()["error"]["message"]


def test_etims_results_for_an_indian_invoice_are_a_conflict(
    service: LedgerService, settings: Settings
) -> None:
    from engine.application import InvoiceStateConflict

    tenant_id, api_key = register_tenant(service)
    invoice = client_for(settings).post("/v1/invoices", json=invoice_body(), headers=bearer(api_key)).json()
    with pytest.raises(InvoiceStateConflict):
        service.record_etims_numbered(
            UUID(tenant_id),
            UUID(invoice["id"]),
            job_id="j",
            environment="sandbox",
            branch_id="00",
            invc_no=1,
            device_type="oscu",
        )
    assert uuid.UUID(invoice["id"])


@pytest.mark.parametrize(
    ("line", "path"),
    [
        ({"line_no": 1, "quantity": "1e999999"}, "lines[0].quantity"),
        ({"line_no": 1, "quantity": "99999999999999999999"}, "lines[0].quantity"),
        ({"line_no": 1, "quantity": "-1"}, "lines[0].quantity"),
        ({"line_no": 1, "quantity": "1", "unit_price": "NaN"}, "lines[0].unit_price"),
        ({"line_no": 1, "quantity": "1", "discount": "1" * 40}, "lines[0].discount"),
        ({"line_no": "1; DROP TABLE", "quantity": "1"}, "lines[0].line_no"),
        ({"line_no": 2**63, "quantity": "1"}, "lines[0].line_no"),
        ({"line_no": 0, "quantity": "1"}, "lines[0].line_no"),
    ],
)
def test_hostile_credit_note_lines_are_422_never_500(
    kenya: tuple[str, str, Any], line: dict[str, Any], path: str
) -> None:
    _, api_key, client = kenya
    original = client.post("/v1/invoices", json=sale(), headers=bearer(api_key)).json()
    body = {"number": "CN-H", "refund_reason_code": "03", "lines": [line]}
    answer = client.post(f"/v1/invoices/{original['id']}/credit-notes", json=body, headers=bearer(api_key))
    assert answer.status_code == 422, answer.text
    assert path in [f["path"] for f in answer.json()["error"]["details"]["fields"]]


def test_credit_notes_are_refused_for_an_indian_invoice_and_an_unknown_one(
    kenya: tuple[str, str, Any], service: LedgerService, settings: Settings
) -> None:
    _, ke_key, client = kenya
    _, in_key = register_tenant(service)
    indian = client.post("/v1/invoices", json=invoice_body(), headers=bearer(in_key)).json()
    body = credit("CN-X", (1, "1"))
    # An Indian tenant's credit-note body is an Indian note (issue 11): a Kenyan one lacks its reason.
    refused = client.post(f"/v1/invoices/{indian['id']}/credit-notes", json=body, headers=bearer(in_key))
    assert refused.status_code == 422 and "reason" in [
        f["path"] for f in refused.json()["error"]["details"]["fields"]
    ]
    # Another tenant's invoice is answered like a missing one.
    foreign = client.post(f"/v1/invoices/{indian['id']}/credit-notes", json=body, headers=bearer(ke_key))
    assert foreign.status_code == 404
    missing = client.post("/v1/invoices/not-a-uuid/credit-notes", json=body, headers=bearer(ke_key))
    assert missing.status_code == 404
