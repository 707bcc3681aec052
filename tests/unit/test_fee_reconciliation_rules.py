"""Fee reconciliation rules (engine/fee_reconciliation_rules.py): each case a period's collections and
deposits, and what must come out matched, discrepant or unmatched."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from engine.fee_reconciliation_rules import Collection, reconcile_fees
from engine.reconciliation_rules import BankLine


def fee(
    cid: str,
    amount: str = "50000.00",
    day: int = 10,
    *,
    receipt: str | None = None,
    student: str = "5678",
    name: str = "Jane Student",
    ref: str | None = None,
    fee_type: str = "tuition",
) -> Collection:
    return Collection(
        collection_id=cid,
        receipt_number=receipt or f"FEE-2024-{cid}",
        student_id=student,
        student_name=name,
        amount=Decimal(amount),
        currency="INR",
        payment_date=date(2024, 1, day),
        fee_type=fee_type,
        payment_reference=ref,
    )


def deposit(lid: str, amount: str, day: int, reference: str | None = None, text: str = "") -> BankLine:
    return BankLine(
        lid, "9876543210", date(2024, 1, 1) + timedelta(days=day - 1), Decimal(amount), "INR", reference, text
    )


CASES = [
    pytest.param(
        [fee("1")],
        [deposit("d1", "50000.00", 10, "FEE-2024-1")],
        {"matched": [("1", "d1")]},
        id="receipt-number-in-the-reference",
    ),
    pytest.param(
        [fee("1", ref="401012345678")],
        [deposit("d1", "50000.00", 11, None, "UPI/401012345678/JANE")],
        {"matched": [("1", "d1")]},
        id="upi-reference-in-the-text",
    ),
    pytest.param(
        [fee("1")],
        [deposit("d1", "50000.00", 12, None, "UPI CR JANE STUDENT")],
        {"matched": [("1", "d1")]},
        id="amount-date-and-student-name",
    ),
    pytest.param(
        [fee("1")],
        [deposit("d1", "50000.00", 12, None, "CASH DEPOSIT")],
        {"unmatched_collections": ["1"], "unmatched_deposits": ["d1"]},
        id="amount-alone-is-not-enough",
    ),
    pytest.param(
        [fee("1")],
        [deposit("d1", "50000.00", 20, None, "UPI CR JANE STUDENT")],
        {"unmatched_collections": ["1"], "unmatched_deposits": ["d1"]},
        id="amount-and-name-outside-the-window",
    ),
    pytest.param(
        [fee("1")],
        [deposit("d1", "49500.00", 10, "FEE-2024-1")],
        {"discrepancies": [("amount_differs", ("1",), ("d1",), "-500.00")]},
        id="amount-differs",
    ),
    pytest.param(
        [fee("1")],
        [deposit("d1", "50000.00", 25, "FEE-2024-1")],
        {"discrepancies": [("date_outside_tolerance", ("1",), ("d1",), "0.00")]},
        id="banked-too-late",
    ),
    pytest.param(
        [fee("1")],
        [deposit("d1", "50000.00", 10, "FEE-2024-1"), deposit("d2", "50000.00", 11, "FEE-2024-1")],
        {"matched": [("1", "d1")], "discrepancies": [("duplicate_deposit", ("1",), ("d2",), "0.00")]},
        id="deposit-twice",
    ),
    pytest.param(
        [fee("1", receipt="FEE-A"), fee("2", receipt="FEE-B")],
        [deposit("d1", "50000.00", 10, "FEE-A")],
        {
            "matched": [("1", "d1")],
            "unmatched_collections": ["2"],
            "discrepancies": [("duplicate_collection", ("1", "2"), ("d1",), "-50000.00")],
        },
        id="receipted-twice",
    ),
    pytest.param(
        [fee("1", name="Jane Student"), fee("2", student="9", name="Jane Student")],
        [deposit("d1", "50000.00", 10, None, "UPI CR JANE STUDENT")],
        {"unmatched_collections": ["1", "2"], "unmatched_deposits": ["d1"]},
        id="two-equal-candidates-match-nothing",
    ),
    pytest.param(
        [fee("1")],
        [deposit("d1", "-50000.00", 10, "FEE-2024-1")],
        {"unmatched_collections": ["1"]},
        id="a-debit-is-not-a-deposit",
    ),
    pytest.param(
        [],
        [deposit("d1", "700.00", 33, None, "NEXT MONTH")],
        {},
        id="an-unmatched-deposit-after-the-period-belongs-to-the-next",
    ),
]


@pytest.mark.parametrize(("collections", "deposits", "expected"), CASES)
def test_fee_reconciliation_sorts_each_case(
    collections: list[Collection], deposits: list[BankLine], expected: dict[str, list[object]]
) -> None:
    result = reconcile_fees(collections, deposits, period_end=date(2024, 1, 31))

    assert [(p.collection_id, p.deposit_id) for p in result.matched] == expected.get("matched", [])
    assert [
        (d.kind, d.collection_ids, d.deposit_ids, str(d.difference)) for d in result.discrepancies
    ] == expected.get("discrepancies", [])
    assert list(result.unmatched_collections) == expected.get("unmatched_collections", [])
    assert list(result.unmatched_deposits) == expected.get("unmatched_deposits", [])
    assert result.balanced == (expected.keys() <= {"matched"})


def test_totals_are_exact_and_count_only_the_periods_deposits() -> None:
    result = reconcile_fees(
        [fee("1", "0.10"), fee("2", "0.20", receipt="R-0002")],
        [
            deposit("d1", "0.10", 10, "FEE-2024-1"),
            deposit("d2", "0.20", 10, "R-0002"),
            deposit("d3", "5", 40, "X"),
        ],
        period_end=date(2024, 1, 31),
    )

    assert (result.collections_total, result.deposits_total) == (Decimal("0.30"), Decimal("0.30"))
    assert result.balanced


def test_a_wider_tolerance_accepts_a_late_deposit() -> None:
    late = [deposit("d1", "50000.00", 20, "FEE-2024-1")]

    assert not reconcile_fees([fee("1")], late).balanced
    assert reconcile_fees([fee("1")], late, tolerance=timedelta(days=10)).balanced
