"""QuickBooks Online mapping, error classes and routes: pure rules, table-driven."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from connectors.errors import ErrorClass
from connectors.quickbooks import errors, mapping, routes
from connectors.quickbooks.client import encode, request_token
from connectors.quickbooks.settings import tax_code_map

ISSUED: dict[str, Any] = {
    "tenant_id": "5b2e9d7a-3c41-4e8f-a6b0-1d2c3e4f5a6b",
    "invoice_id": "5d7f9b1d-3f5a-4c7e-9a1c-5e7a9c1e3f52",
    "number": "INV-2026-001",
    "date": "2026-01-19",
    "currency": "INR",
    "document_type": "invoice",
    "buyer": {"name": "Reliable Traders Pvt Ltd", "gstin": "27AAACR5055K1Z7", "address": {"city": "Pune"}},
    "lines": [
        {
            "line_no": 1,
            "description": "Transformer coil",
            "hsn": "8504",
            "quantity": "10",
            "unit_price": "100.00",
            "taxable_value": "1000.00",
            "gst_rate": "18",
        },
        {
            "line_no": 2,
            "description": "Catalogue",
            "hsn": "4901",
            "quantity": "1",
            "unit_price": "50.00",
            "taxable_value": "50.00",
            "gst_rate": "0",
        },
    ],
}
CODES = tax_code_map("0=NON, 18=14")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0=NON,18=14", {Decimal("0"): "NON", Decimal("18"): "14"}),
        (" 5 = 12 , 12.0=13 ", {Decimal("5"): "12", Decimal("12"): "13"}),
        ("", {}),
    ],
)
def test_tax_codes_map_gst_rates_to_quickbooks_codes(text: str, expected: dict[Decimal, str]) -> None:
    assert tax_code_map(text) == expected


@pytest.mark.parametrize("text", ["18", "18=", "x=14", "18=1 4", "NaN=1", "18=14;DROP"])
def test_a_malformed_tax_code_pair_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="tax_codes"):
        tax_code_map(text)


def test_an_invoice_becomes_one_sales_line_per_line_with_our_id_in_the_private_note() -> None:
    body = mapping.invoice_body(ISSUED, "58", {"HSN 8504": "7", "HSN 4901": "8"}, CODES)

    assert body["DocNumber"] == "INV-2026-001"
    assert body["PrivateNote"] == "ledgerflow:5d7f9b1d-3f5a-4c7e-9a1c-5e7a9c1e3f52"
    assert body["CustomerRef"] == {"value": "58"}
    assert [
        (line["Amount"], line["SalesItemLineDetail"]["TaxCodeRef"]["value"]) for line in body["Line"]
    ] == [
        (Decimal("1000.00"), "14"),
        (Decimal("50.00"), "NON"),
    ]
    assert mapping.lines_total(body) == Decimal("1050.00")


def test_a_rate_without_a_tax_code_is_a_mapping_error() -> None:
    with pytest.raises(mapping.MappingError) as caught:
        mapping.invoice_body(ISSUED, "58", {"HSN 8504": "7", "HSN 4901": "8"}, tax_code_map("18=14"))
    assert caught.value.code == "unmapped_tax_rate"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("O'Brien & Sons", "select * from Customer where DisplayName = 'O\\'Brien & Sons'"),
        ("back\\slash", "select * from Customer where DisplayName = 'back\\\\slash'"),
        ("x' or 1=1 --", "select * from Customer where DisplayName = 'x\\' or 1=1 --'"),
    ],
)
def test_query_strings_are_quoted_so_input_cannot_change_the_query(value: str, expected: str) -> None:
    assert mapping.select("Customer", "DisplayName", value) == expected


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Kaveri\x00 Foods\u200b LLP", "Kaveri Foods LLP"),
        ("  spaced   out  ", "spaced out"),
        ("Café", "Café"),
        ("a" * 300, "a" * 100),
    ],
)
def test_text_loses_control_and_format_characters(raw: str, clean: str) -> None:
    assert mapping.clean_text(raw) == clean


@pytest.mark.parametrize(
    ("number", "ok"), [("INV-2026-001", True), ("X" * 21, True), ("X" * 22, False), ("\x00", False)]
)
def test_document_numbers_fit_quickbooks_21_characters(number: str, ok: bool) -> None:
    if ok:
        assert mapping.doc_number(number) == number
    else:
        with pytest.raises(mapping.MappingError):
            mapping.doc_number(number)


@pytest.mark.parametrize("amount", ["1" * 16, "1e400", "1e13", "0.0000001", "NaN", "-Infinity", "12abc"])
def test_amounts_quickbooks_cannot_hold_exactly_are_refused(amount: str) -> None:
    with pytest.raises(mapping.MappingError):
        mapping.amount(amount)


def test_amounts_are_sent_as_json_numbers_with_their_exact_digits() -> None:
    sent = encode({"Amount": Decimal("999999999999.99"), "Note": "Decimal 1.10", "Small": Decimal("0.10")})

    assert sent == b'{"Amount":999999999999.99,"Note":"Decimal 1.10","Small":0.10}'
    assert orjson.loads(sent)["Note"] == "Decimal 1.10"


def test_a_payment_links_the_invoice_and_deposits_to_the_mapped_account() -> None:
    record = {
        "payment_id": "8d6b5c4d-3e2f-5a1b-8c9d-0e1f2a3b4c5d",
        "provider_payment_id": "pay_29QQoUBi66xm2f",
        "amount": "1180.00",
        "paid_at": 1780387100000,
        "reference": {"invoice_number": "INV-2026-001"},
    }

    body = mapping.payment_body(record, {"Id": "130", "CustomerRef": {"value": "58"}}, "4")

    assert body["Line"] == [
        {"Amount": Decimal("1180.00"), "LinkedTxn": [{"TxnId": "130", "TxnType": "Invoice"}]}
    ]
    assert (body["TotalAmt"], body["DepositToAccountRef"], body["PaymentRefNum"]) == (
        Decimal("1180.00"),
        {"value": "4"},
        "pay_29QQoUBi66xm2f",
    )
    assert body["TxnDate"] == "2026-06-02"


@pytest.mark.parametrize(
    ("status", "code", "fault", "expected"),
    [
        (429, None, None, ErrorClass.RETRYABLE),
        (503, None, None, ErrorClass.RETRYABLE),
        (500, "10000", "SystemFault", ErrorClass.RETRYABLE),
        (400, "5010", "ValidationFault", ErrorClass.RETRYABLE),
        (400, "6240", "ValidationFault", ErrorClass.RETRYABLE),
        (400, "6140", "ValidationFault", ErrorClass.RETRYABLE),
        (400, "610", "ValidationFault", ErrorClass.NEEDS_ATTENTION),
        (400, "2500", "ValidationFault", ErrorClass.NEEDS_ATTENTION),
        (401, "3200", "AUTHENTICATION", ErrorClass.NEEDS_ATTENTION),
        (403, "3100", "AuthorizationFault", ErrorClass.NEEDS_ATTENTION),
        (400, None, None, ErrorClass.PERMANENT),
    ],
)
def test_faults_are_classified(
    status: int, code: str | None, fault: str | None, expected: ErrorClass
) -> None:
    assert errors.classify(status, code, fault) is expected


@pytest.mark.parametrize(
    ("ce_type", "record", "kinds"),
    [
        (routes.ISSUED, ISSUED, [routes.PUSH_INVOICE]),
        (routes.ISSUED, {**ISSUED, "document_type": "credit_note"}, []),
        (routes.CANCELLED, {"tenant_id": "t", "invoice_id": "i"}, [routes.VOID_INVOICE]),
        (
            routes.PAYMENT_STATUS_CHANGED,
            {"tenant_id": "t", "payment_id": "p", "status": "captured"},
            [routes.PUSH_PAYMENT],
        ),
        (routes.PAYMENT_STATUS_CHANGED, {"tenant_id": "t", "payment_id": "p", "status": "failed"}, []),
        (routes.PAYMENT_STATUS_CHANGED, {"tenant_id": "t", "payment_id": "p", "status": "authorized"}, []),
        ("ledgerflow.payment.recorded", {"tenant_id": "t", "payment_id": "p", "reference": {}}, []),
        ("ledgerflow.invoice.irn_generated", ISSUED, []),
    ],
)
def test_which_events_become_jobs(ce_type: str, record: dict[str, Any], kinds: list[str]) -> None:
    jobs = routes.routes(ce_type, "ce-1", record)

    assert [j.kind for j in jobs] == kinds
    assert all(j.job_id == f"ce-1:{j.kind}" and j.connector == "quickbooks" for j in jobs)


def test_request_ids_of_two_steps_of_one_job_differ_and_repeat_for_the_same_step() -> None:
    job = "ce-c9e7d79d-de4f-4f97-a81f-1108a1083a35:push_invoice"

    customer, item = request_token(f"{job}:customer"), request_token(f"{job}:item:HSN 8504")

    assert customer != item
    assert customer == request_token(f"{job}:customer")
    assert len(customer) == 36
