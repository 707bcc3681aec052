"""Vouchers of POST /v1/tally/vouchers (connectors/tally/journal.py): pure, table-driven."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from lxml import etree

from connectors.tally import journal
from connectors.tally.vouchers import VoucherRefused, build_import, remote_id

TENANT = "6f1f4a0e-0000-4000-8000-000000000001"


def entries(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"ledger": ledger, "amount": amount, "narration": ""} for ledger, amount in pairs]


SEED = [
    {"ledger": "Tech Supplies Ltd", "amount": -50000, "narration": "Payment for Invoice INV-2024-001"},
    {"ledger": "ICICI Bank", "amount": 50000, "narration": "NEFT payment"},
]


def test_the_seeds_example_becomes_a_tally_voucher_with_tallys_sign() -> None:
    request = journal.parse("payment", "PAY-2024-000123", date(2024, 1, 15), SEED)
    voucher = journal.voucher_of(TENANT, request)
    xml = etree.fromstring(build_import("Demo", [voucher]))
    legs = [
        (e.findtext("LEDGERNAME"), e.findtext("ISDEEMEDPOSITIVE"), e.findtext("AMOUNT"))
        for e in xml.iter("ALLLEDGERENTRIES.LIST")
    ]
    # Seed: negative is a credit (Tech Supplies), positive a debit (the bank). Tally: a debit is negative.
    assert legs == [("Tech Supplies Ltd", "No", "50000.00"), ("ICICI Bank", "Yes", "-50000.00")]
    assert xml.find(".//VOUCHER").get("VCHTYPE") == "Payment"
    assert xml.findtext(".//DATE") == "20240115"
    assert xml.findtext(".//VOUCHERNUMBER") == "PAY-2024-000123"
    assert xml.findtext(".//NARRATION") == "Payment for Invoice INV-2024-001; NEFT payment"
    assert voucher.remote_id == remote_id(TENANT, "manual:PAY-2024-000123")


@pytest.mark.parametrize(
    ("kind", "tally"),
    [
        ("payment", "Payment"),
        ("receipt", "Receipt"),
        ("journal", "Journal"),
        ("sales", "Sales"),
        ("purchase", "Purchase"),
        ("contra", "Contra"),
    ],
)
def test_every_seed_voucher_type_is_a_tally_voucher_type(kind: str, tally: str) -> None:
    request = journal.parse(kind, "V-1", date(2026, 4, 1), entries(("A", "1.00"), ("B", "-1.00")))
    assert journal.voucher_of(TENANT, request).voucher_type == tally


@pytest.mark.parametrize(
    ("voucher_type", "number", "day", "legs", "code"),
    [
        ("journal", "J-1", date(2026, 4, 1), entries(("A", "100"), ("B", "-99.99")), "unbalanced"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A", "100"), ("B", "100")), "unbalanced"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A", "100")), "unbalanced"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A", "0"), ("B", "0")), "bad_amount"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A", "0.001"), ("B", "-0.001")), "bad_amount"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A", "1e400"), ("B", "-1e400")), "bad_amount"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A", "NaN"), ("B", "-1")), "bad_amount"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A", float("inf")), ("B", "-1")), "bad_amount"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A", True), ("B", "-1")), "bad_amount"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A", "ten"), ("B", "-10")), "bad_amount"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A\u0000", "1"), ("B", "-1")), "bad_name"),
        ("journal", "J-1", date(2026, 4, 1), entries(("A\u202e", "1"), ("B", "-1")), "bad_name"),
        ("journal", "J-1", date(2026, 4, 1), entries((" ", "1"), ("B", "-1")), "bad_name"),
        ("journal", "J\n1", date(2026, 4, 1), entries(("A", "1"), ("B", "-1")), "bad_name"),
        ("journal", " J-1", date(2026, 4, 1), entries(("A", "1"), ("B", "-1")), "bad_name"),
        ("journal", "J" * 61, date(2026, 4, 1), entries(("A", "1"), ("B", "-1")), "bad_name"),
        ("Journal", "J-1", date(2026, 4, 1), entries(("A", "1"), ("B", "-1")), "bad_voucher_type"),
        ("debit_note", "J-1", date(2026, 4, 1), entries(("A", "1"), ("B", "-1")), "bad_voucher_type"),
        ("journal", "J-1", date(1800, 4, 1), entries(("A", "1"), ("B", "-1")), "bad_date"),
    ],
)
def test_what_is_refused_before_anything_is_queued(
    voucher_type: str, number: str, day: date, legs: list[dict[str, Any]], code: str
) -> None:
    with pytest.raises(VoucherRefused) as refused:
        journal.parse(voucher_type, number, day, legs)
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (50000, Decimal("50000.00")),
        (-0.1, Decimal("-0.10")),
        ("12.5", Decimal("12.50")),
        (" -99999999999999.98 ", Decimal("-99999999999999.98")),
    ],
)
def test_amounts_are_exact_decimals_whichever_way_they_come(amount: Any, expected: Decimal) -> None:
    assert journal.signed_amount(amount) == expected


def test_many_legs_balance_to_the_paisa_and_keep_their_order() -> None:
    legs = entries(("Rent", "1000.10"), ("Power", "0.20"), ("ICICI Bank", "-1000.25"), ("Cash", "-0.05"))
    voucher = journal.voucher_of(TENANT, journal.parse("journal", "J-9", date(2026, 5, 31), legs))
    assert [(leg.ledger, leg.side, leg.amount) for leg in voucher.legs] == [
        ("Rent", "debit", Decimal("1000.10")),
        ("Power", "debit", Decimal("0.20")),
        ("ICICI Bank", "credit", Decimal("1000.25")),
        ("Cash", "credit", Decimal("0.05")),
    ]


def test_ids_and_fingerprints_name_a_voucher_number_per_tenant() -> None:
    one, other = UUID(TENANT), UUID("6f1f4a0e-0000-4000-8000-000000000002")
    assert journal.voucher_id(one, "J-1") == journal.voucher_id(one, "J-1")
    assert journal.voucher_id(one, "J-1") != journal.voucher_id(other, "J-1")
    assert journal.voucher_id(one, "J-1") != journal.voucher_id(one, "J-2")
    first = journal.parse("journal", "J-1", date(2026, 4, 1), entries(("A", 1), ("B", "-1.00")))
    same = journal.parse("journal", "J-1", date(2026, 4, 1), entries(("A", "1.00"), ("B", -1)))
    changed = journal.parse("journal", "J-1", date(2026, 4, 1), entries(("A", 2), ("B", -2)))
    assert first.fingerprint() == same.fingerprint() != changed.fingerprint()
    assert journal.from_document(first.document()) == first


def test_narrations_lose_what_xml_cannot_carry_and_repeats() -> None:
    legs = [
        {"ledger": "A", "amount": "5", "narration": "fee\u0007 <b>&"},
        {"ledger": "B", "amount": "-5", "narration": "fee <b>&"},
    ]
    voucher = journal.voucher_of(TENANT, journal.parse("journal", "J-3", date(2026, 4, 1), legs))
    assert voucher.narration == "fee <b>&"


def test_unknown_ledgers_are_listed_once_in_order() -> None:
    request = journal.parse(
        "journal", "J-4", date(2026, 4, 1), entries(("Z", 1), ("A", 1), ("Z", 1), ("B", -3))
    )
    assert journal.unknown_ledgers(request, {"B"}) == ["Z", "A"]
    assert journal.unknown_ledgers(request, {"A", "B", "Z"}) == []
