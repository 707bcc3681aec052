"""Tally vouchers (connectors/tally/vouchers.py, mapping.py, routes.py, errors.py): pure, table-driven."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from lxml import etree

from connectors.errors import ErrorClass
from connectors.tally import mapping, routes
from connectors.tally.errors import classify_import
from connectors.tally.vouchers import (
    Leg,
    Voucher,
    VoucherRefused,
    build_import,
    build_ledger_export,
    check_name,
    clean_text,
    parse_import_response,
    parse_ledgers,
    remote_id,
    signed_amount,
    tally_date,
)

COMPANY = "St. Xavier's College"
LEDGERS = mapping.LedgerMap(
    {
        "bank": "ICICI Bank",
        "sales": "Sales",
        "output_cgst": "Output CGST",
        "output_sgst": "Output SGST",
        "output_igst": "Output IGST",
        "output_cess": "Output Cess",
        "debtors": "Sundry Customers",
        "party:Acme Traders": "Acme Traders",
    }
)


def voucher(*legs: tuple[str, str, str], kind: str = "Journal", **extra: Any) -> Voucher:
    return Voucher(
        voucher_type=kind,  # type: ignore[arg-type]
        remote_id=remote_id("tenant", "doc"),
        day=date(2026, 6, 2),
        legs=tuple(Leg(name, side, Decimal(amount)) for name, side, amount in legs),  # type: ignore[arg-type]
        **extra,
    )


def parsed(body: bytes) -> Any:
    return etree.fromstring(body)


@pytest.mark.parametrize(
    ("side", "amount", "deemed_positive", "signed"),
    [
        ("debit", "50000.00", "Yes", "-50000.00"),
        ("credit", "50000.00", "No", "50000.00"),
        ("debit", "0.01", "Yes", "-0.01"),
        ("credit", "99999999999999.98", "No", "99999999999999.98"),
    ],
)
def test_a_debit_is_deemed_positive_with_a_negative_amount_and_a_credit_the_reverse(
    side: str, amount: str, deemed_positive: str, signed: str
) -> None:
    other = "credit" if side == "debit" else "debit"
    body = build_import(COMPANY, [voucher(("A", side, amount), ("B", other, amount))])
    first = parsed(body).find(".//VOUCHER/ALLLEDGERENTRIES.LIST")

    assert first.findtext("LEDGERNAME") == "A"
    assert first.findtext("ISDEEMEDPOSITIVE") == deemed_positive
    assert first.findtext("AMOUNT") == signed
    assert signed_amount(Leg("A", side, Decimal(amount))) == Decimal(signed)  # type: ignore[arg-type]


def test_the_envelope_is_an_import_of_vouchers_into_the_company_keyed_by_remote_id() -> None:
    v = voucher(
        ("ICICI Bank", "debit", "1180.00"), ("Acme", "credit", "1180.00"), kind="Receipt", number="R-1"
    )
    root = parsed(build_import(COMPANY, [v]))

    assert root.tag == "ENVELOPE"
    assert root.findtext("HEADER/TALLYREQUEST") == "Import Data"
    assert root.findtext("BODY/IMPORTDATA/REQUESTDESC/REPORTNAME") == "Vouchers"
    assert root.findtext("BODY/IMPORTDATA/REQUESTDESC/STATICVARIABLES/SVCURRENTCOMPANY") == COMPANY
    node = root.find("BODY/IMPORTDATA/REQUESTDATA/TALLYMESSAGE/VOUCHER")
    assert (node.get("VCHTYPE"), node.get("ACTION"), node.get("REMOTEID")) == (
        "Receipt",
        "Create",
        v.remote_id,
    )
    assert node.findtext("GUID") == v.remote_id
    assert (node.findtext("DATE"), node.findtext("VOUCHERTYPENAME"), node.findtext("VOUCHERNUMBER")) == (
        "20260602",
        "Receipt",
        "R-1",
    )
    amounts = [Decimal(e.findtext("AMOUNT")) for e in node.findall("ALLLEDGERENTRIES.LIST")]
    assert sum(amounts) == 0


@pytest.mark.parametrize(
    ("legs", "code"),
    [
        ((("A", "debit", "100.00"), ("B", "credit", "99.99")), "unbalanced"),
        ((("A", "debit", "100.00"),), "unbalanced"),
        ((("A", "debit", "100.00"), ("B", "debit", "100.00")), "unbalanced"),
        ((("A", "debit", "0"), ("B", "credit", "0")), "bad_amount"),
        ((("A", "debit", "-5.00"), ("B", "credit", "-5.00")), "bad_amount"),
        ((("A", "debit", "1.005"), ("B", "credit", "1.005")), "bad_amount"),
        ((("A", "debit", "1E+20"), ("B", "credit", "1E+20")), "bad_amount"),
        ((("A", "debit", "NaN"), ("B", "credit", "NaN")), "bad_amount"),
        ((("A", "debit", "Infinity"), ("B", "credit", "Infinity")), "bad_amount"),
        ((("A\x00", "debit", "1.00"), ("B", "credit", "1.00")), "bad_name"),
        ((("A\u202e", "debit", "1.00"), ("B", "credit", "1.00")), "bad_name"),
        ((("  ", "debit", "1.00"), ("B", "credit", "1.00")), "bad_name"),
        ((("x" * 201, "debit", "1.00"), ("B", "credit", "1.00")), "bad_name"),
    ],
    ids=[
        "off-by-a-paisa",
        "one-leg",
        "debits-only",
        "zero",
        "negative",
        "fractional-paisa",
        "huge",
        "nan",
        "infinity",
        "nul-in-name",
        "bidi-in-name",
        "blank-name",
        "long-name",
    ],
)
def test_a_voucher_tally_would_refuse_or_misread_is_refused_before_sending(
    legs: tuple[tuple[str, str, str], ...], code: str
) -> None:
    with pytest.raises(VoucherRefused) as refused:
        build_import(COMPANY, [voucher(*legs)])
    assert refused.value.code == code


def test_an_unknown_voucher_type_and_a_bad_company_are_refused() -> None:
    balanced = (("A", "debit", "1.00"), ("B", "credit", "1.00"))
    with pytest.raises(VoucherRefused) as kind:
        build_import(COMPANY, [voucher(*balanced, kind="Stock Journal")])
    with pytest.raises(VoucherRefused) as company:
        build_import("Acme\x07", [voucher(*balanced)])
    assert (kind.value.code, company.value.code) == ("bad_voucher_type", "bad_name")


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("Fees <Q1> & \"hostel\" 'mess'", "Fees <Q1> & \"hostel\" 'mess'"),
        ("bell\x07 nul\x00 esc\x1b", "bell nul esc"),
        ("tab\tline\nreturn\r", "tab\tline\nreturn\r"),
        ("lone \ud800 surrogate", "lone  surrogate"),
        ("non\ufffechar\uffff", "nonchar"),
        ("देवनागरी 😀 ünï", "देवनागरी 😀 ünï"),
        ("x" * 1200, "x" * 1000),
    ],
)
def test_free_text_loses_what_xml_cannot_carry_and_round_trips_the_rest(text: str, cleaned: str) -> None:
    assert clean_text(text) == cleaned
    v = voucher(("A", "debit", "1.00"), ("B", "credit", "1.00"), narration=text)
    assert parsed(build_import(COMPANY, [v])).findtext(".//NARRATION") == cleaned


def test_a_name_with_markup_characters_is_escaped_not_refused() -> None:
    name = 'Sharma & Sons <Pvt> "Ltd"'
    assert check_name(name) == name
    v = voucher((name, "debit", "1.00"), ("B", "credit", "1.00"))
    assert parsed(build_import(COMPANY, [v])).findtext(".//LEDGERNAME") == name


def test_the_remote_id_depends_only_on_tenant_and_document() -> None:
    first = remote_id("t1", "receipt:p1")
    assert first == remote_id("t1", "receipt:p1")
    assert len({first, remote_id("t2", "receipt:p1"), remote_id("t1", "receipt:p2")}) == 3


@pytest.mark.parametrize(
    ("day", "text"),
    [(date(2026, 4, 1), "20260401"), (date(2025, 12, 31), "20251231"), (date(999, 1, 2), "09990102")],
)
def test_dates_are_yyyymmdd(day: date, text: str) -> None:
    assert tally_date(day) == text


def test_the_ledger_export_asks_for_the_list_of_accounts_of_the_company() -> None:
    root = parsed(build_ledger_export(COMPANY))
    assert root.findtext("HEADER/TALLYREQUEST") == "Export Data"
    desc = root.find("BODY/EXPORTDATA/REQUESTDESC")
    assert desc.findtext("REPORTNAME") == "List of Accounts"
    assert desc.findtext("STATICVARIABLES/SVCURRENTCOMPANY") == COMPANY
    assert desc.findtext("STATICVARIABLES/ACCOUNTTYPE") == "Ledgers"


COUNTS = (
    "<CREATED>{c}</CREATED><ALTERED>{a}</ALTERED><DELETED>0</DELETED>"
    "<LASTVCHID>{v}</LASTVCHID><ERRORS>{e}</ERRORS>"
)


@pytest.mark.parametrize(
    ("answer", "error_class", "code", "messages"),
    [
        (f"<RESPONSE>{COUNTS.format(c=1, a=0, v=7, e=0)}</RESPONSE>", None, None, ()),
        (f"<RESPONSE>{COUNTS.format(c=0, a=1, v=7, e=0)}</RESPONSE>", None, None, ()),
        (
            "<RESPONSE><LINEERROR>Ledger 'Bank X' does not exist!</LINEERROR>"
            f"{COUNTS.format(c=0, a=0, v=0, e=1)}</RESPONSE>",
            ErrorClass.PERMANENT,
            "tally_rejected",
            ("Ledger 'Bank X' does not exist!",),
        ),
        (
            f"<RESPONSE>{COUNTS.format(c=0, a=0, v=0, e=1)}</RESPONSE>",
            ErrorClass.PERMANENT,
            "tally_rejected",
            (),
        ),
        (
            "<ENVELOPE><HEADER><VERSION>1</VERSION><STATUS>1</STATUS></HEADER><BODY><DATA><IMPORTRESULT>"
            "<CREATED>0</CREATED><ALTERED>0</ALTERED><EXCEPTIONS>1</EXCEPTIONS></IMPORTRESULT></DATA></BODY></ENVELOPE>",
            ErrorClass.NEEDS_ATTENTION,
            "tally_exception",
            (),
        ),
        (
            "<RESPONSE><CREATED>0</CREATED><ALTERED>0</ALTERED><IGNORED>1</IGNORED></RESPONSE>",
            ErrorClass.NEEDS_ATTENTION,
            "tally_not_imported",
            (),
        ),
    ],
    ids=["created", "altered", "lineerror", "errors-only", "prime-importresult-exception", "ignored"],
)
def test_tallys_answers_are_read_and_classified(
    answer: str, error_class: ErrorClass | None, code: str | None, messages: tuple[str, ...]
) -> None:
    result = parse_import_response(answer.encode())
    error = classify_import(result)
    assert result.line_errors == messages
    if error_class is None:
        assert error is None and result.accepted == 1 and result.last_voucher_id == "7"
    else:
        assert error is not None and (error.error_class, error.code) == (error_class, code)
        if messages:
            assert error.message == "; ".join(messages)


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b"<RESPONSE><CREATED>lots</CREATED></RESPONSE>",
        b"not xml at all",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><RESPONSE>&x;</RESPONSE>',
    ],
    ids=["empty", "html", "non-numeric-counter", "text", "external-entity"],
)
def test_an_answer_that_is_not_an_import_result_is_unreadable(answer: bytes) -> None:
    from connectors.tally.vouchers import ResponseUnreadable

    with pytest.raises(ResponseUnreadable):
        parse_import_response(answer)


def test_ledgers_are_read_from_the_list_of_accounts() -> None:
    answer = (
        b"<ENVELOPE><BODY><IMPORTDATA><REQUESTDATA>"
        b'<TALLYMESSAGE><LEDGER NAME="ICICI Bank"><PARENT>Bank Accounts</PARENT>'
        b"<OPENINGBALANCE>-1000.50</OPENINGBALANCE><CLOSINGBALANCE>-2180.50</CLOSINGBALANCE></LEDGER></TALLYMESSAGE>"
        b"<TALLYMESSAGE><LEDGER><NAME.LIST><NAME>Tech Supplies Ltd</NAME></NAME.LIST>"
        b"<PARENT>Sundry Creditors</PARENT></LEDGER></TALLYMESSAGE>"
        b'<TALLYMESSAGE><LEDGER NAME="Bad&#x1b;Name"><PARENT>Suspense A/c</PARENT></LEDGER></TALLYMESSAGE>'
        b"</REQUESTDATA></IMPORTDATA></BODY></ENVELOPE>"
    )
    ledgers = parse_ledgers(answer)
    assert [(le.name, le.parent, le.opening_balance, le.closing_balance) for le in ledgers] == [
        ("ICICI Bank", "Bank Accounts", Decimal("-1000.50"), Decimal("-2180.50")),
        ("Tech Supplies Ltd", "Sundry Creditors", None, None),
    ]
    with pytest.raises(VoucherRefused):
        parse_ledgers(b"<RESPONSE><LINEERROR>Could not set 'SVCurrentCompany' to 'X'</LINEERROR></RESPONSE>")


def invoice(**change: Any) -> dict[str, Any]:
    return {
        "tenant_id": "t1",
        "invoice_id": "inv-1",
        "number": "INV-2026-001",
        "date": "2026-06-02",
        "country": "IN",
        "document_type": "invoice",
        "buyer": {"name": "Acme Traders"},
        "totals": {
            "taxable": "1000.00",
            "cgst": "90.00",
            "sgst": "90.00",
            "igst": None,
            "cess": "0.00",
            "total": "1180.00",
        },
        **change,
    }


def legs(v: Voucher) -> list[tuple[str, str, str]]:
    return [(leg.ledger, leg.side, str(leg.amount)) for leg in v.legs]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            invoice(),
            [
                ("Acme Traders", "debit", "1180.00"),
                ("Sales", "credit", "1000.00"),
                ("Output CGST", "credit", "90.00"),
                ("Output SGST", "credit", "90.00"),
            ],
        ),
        (
            invoice(
                buyer={"name": "Walk-in"},
                totals={"taxable": "1000.00", "igst": "180.00", "cess": "12.00", "total": "1192.00"},
            ),
            [
                ("Sundry Customers", "debit", "1192.00"),
                ("Sales", "credit", "1000.00"),
                ("Output IGST", "credit", "180.00"),
                ("Output Cess", "credit", "12.00"),
            ],
        ),
    ],
    ids=["intra-state-mapped-party", "inter-state-with-cess-default-debtors"],
)
def test_an_invoice_is_a_balanced_sales_voucher(
    record: dict[str, Any], expected: list[tuple[str, str, str]]
) -> None:
    sales = mapping.sales_voucher("t1", record, LEDGERS)
    assert (sales.voucher_type, sales.number, sales.day) == ("Sales", "INV-2026-001", date(2026, 6, 2))
    assert legs(sales) == expected
    assert sales.remote_id == remote_id("t1", "invoice:inv-1")
    build_import(COMPANY, [sales])  # balanced: not refused


def test_a_credit_note_mirrors_the_sales_voucher() -> None:
    note = mapping.credit_note_voucher(
        "t1", invoice(document_type="credit_note", original_number="INV-1"), LEDGERS
    )
    assert note.voucher_type == "Credit Note" and note.reference == "INV-1"
    assert legs(note) == [
        ("Sales", "debit", "1000.00"),
        ("Output CGST", "debit", "90.00"),
        ("Output SGST", "debit", "90.00"),
        ("Acme Traders", "credit", "1180.00"),
    ]
    build_import(COMPANY, [note])


def test_a_captured_payment_is_a_receipt_debiting_the_bank() -> None:
    paid_at = datetime(2026, 6, 2, 23, 30, tzinfo=UTC)
    payment = {
        "payment_id": "p1",
        "amount": Decimal("1180.00"),
        "paid_at": paid_at,
        "provider_payment_id": "pay_1",
        "invoice_number": "INV-1",
        "party_name": "Acme Traders",
    }
    receipt = mapping.receipt_voucher("t1", payment, LEDGERS)
    assert receipt.voucher_type == "Receipt" and receipt.day == date(2026, 6, 2)
    assert legs(receipt) == [("ICICI Bank", "debit", "1180.00"), ("Acme Traders", "credit", "1180.00")]
    assert receipt.remote_id == remote_id("t1", "receipt:p1") != remote_id("t2", "receipt:p1")


def test_a_ledger_the_map_lacks_stops_the_voucher_rather_than_guessing() -> None:
    with pytest.raises(mapping.LedgerNotMapped) as missing:
        mapping.sales_voucher("t1", invoice(buyer={"name": "Walk-in"}), mapping.LedgerMap({"sales": "Sales"}))
    assert missing.value.role == "debtors"


@pytest.mark.parametrize(
    ("role", "ok"),
    [
        ("bank", True),
        ("expense_travel", True),
        ("party:Acme & Co", True),
        ("party:\x00", False),
        ("Bank", False),
        ("party:", False),
        ("x" * 60, False),
    ],
)
def test_ledger_roles_are_known_words_or_parties(role: str, ok: bool) -> None:
    if ok:
        assert mapping.check_role(role) == role
    else:
        with pytest.raises(VoucherRefused):
            mapping.check_role(role)


@pytest.mark.parametrize(
    ("ce_type", "record", "kinds"),
    [
        (routes.ISSUED, {"document_type": "invoice", "country": "IN", "invoice_id": "i"}, ["post_sales"]),
        (
            routes.ISSUED,
            {"document_type": "credit_note", "country": "IN", "invoice_id": "i"},
            ["post_credit_note"],
        ),
        (routes.ISSUED, {"document_type": "debit_note", "country": "IN", "invoice_id": "i"}, []),
        (routes.ISSUED, {"document_type": "invoice", "country": "KE", "invoice_id": "i"}, []),
        (routes.PAYMENT_STATUS_CHANGED, {"status": "captured", "payment_id": "p"}, ["post_receipt"]),
        (routes.PAYMENT_STATUS_CHANGED, {"status": "authorized", "payment_id": "p"}, []),
        (routes.PAYMENT_STATUS_CHANGED, {"status": "failed", "payment_id": "p"}, []),
        ("ledgerflow.invoice.cancelled", {"invoice_id": "i"}, []),
    ],
)
def test_which_events_become_vouchers(ce_type: str, record: dict[str, Any], kinds: list[str]) -> None:
    jobs = routes.routes(ce_type, "ce-1", {"tenant_id": "t1", **record})
    assert [j.kind for j in jobs] == kinds
    assert all(j.job_id == f"ce-1:{j.kind}" and j.connector == "tally" for j in jobs)


EXPENSE_LEDGERS = mapping.LedgerMap(
    {
        "bank": "ICICI Bank",
        "expenses": "General Expenses",
        "expense:supplies": "Office Supplies",
        "creditors": "Sundry Vendors",
        "vendor:Tech Supplies Ltd": "Tech Supplies Ltd",
        "tds_payable": "TDS Payable",
    }
)


def expense(**change: Any) -> dict[str, Any]:
    return {
        "expense_id": "e1",
        "expense_number": "EXP-2026-000123",
        "amount": Decimal("50000.00"),
        "category": "supplies",
        "expense_date": date(2026, 6, 1),
        "vendor_name": "Tech Supplies Ltd",
        "description": "Lab consumables",
        "paid_on": date(2026, 6, 15),
        "payment_reference": "NEFT-991",
        "tds_deducted": None,
        **change,
    }


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (expense(), [("Office Supplies", "debit", "50000.00"), ("Tech Supplies Ltd", "credit", "50000.00")]),
        (
            expense(category="travel", vendor_name="New Vendor"),
            [("General Expenses", "debit", "50000.00"), ("Sundry Vendors", "credit", "50000.00")],
        ),
    ],
    ids=["mapped-category-and-vendor", "defaults"],
)
def test_an_approved_expense_is_a_purchase_voucher_booking_the_vendors_bill(
    record: dict[str, Any], expected: list[tuple[str, str, str]]
) -> None:
    purchase = mapping.purchase_voucher("t1", record, EXPENSE_LEDGERS)
    assert (purchase.voucher_type, purchase.day, purchase.number) == (
        "Purchase",
        date(2026, 6, 1),
        "EXP-2026-000123",
    )
    assert legs(purchase) == expected and purchase.party_ledger == expected[1][0]
    build_import(COMPANY, [purchase])


@pytest.mark.parametrize(
    ("tds", "expected"),
    [
        (None, [("Tech Supplies Ltd", "debit", "50000.00"), ("ICICI Bank", "credit", "50000.00")]),
        (
            Decimal("5000.00"),
            [
                ("Tech Supplies Ltd", "debit", "50000.00"),
                ("ICICI Bank", "credit", "45000.00"),
                ("TDS Payable", "credit", "5000.00"),
            ],
        ),
    ],
    ids=["no-tds", "tds-deducted"],
)
def test_a_paid_expense_is_a_payment_voucher_with_tds_credited_to_its_ledger(
    tds: Decimal | None, expected: list[tuple[str, str, str]]
) -> None:
    payment = mapping.payment_voucher("t1", expense(tds_deducted=tds), EXPENSE_LEDGERS)
    assert (payment.voucher_type, payment.day, payment.reference) == (
        "Payment",
        date(2026, 6, 15),
        "NEFT-991",
    )
    assert legs(payment) == expected
    assert payment.remote_id != mapping.purchase_voucher("t1", expense(), EXPENSE_LEDGERS).remote_id
    build_import(COMPANY, [payment])


def test_tds_as_large_as_the_payment_is_refused() -> None:
    payment = mapping.payment_voucher("t1", expense(tds_deducted=Decimal("50000.00")), EXPENSE_LEDGERS)
    with pytest.raises(VoucherRefused) as refused:
        build_import(COMPANY, [payment])
    assert refused.value.code == "bad_amount"


@pytest.mark.parametrize(
    ("ce_type", "kind"), [(routes.EXPENSE_APPROVED, "post_purchase"), (routes.EXPENSE_PAID, "post_payment")]
)
def test_expense_events_become_vouchers_keyed_by_the_expense(ce_type: str, kind: str) -> None:
    [job] = routes.routes(ce_type, "ce-9", {"tenant_id": "t1", "expense_id": "e1"})
    assert (job.kind, job.subject, dict(job.payload)) == (kind, "e1", {"expense_id": "e1"})
