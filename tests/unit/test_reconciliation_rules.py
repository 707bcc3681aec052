"""The reconciliation rules (engine/reconciliation_rules.py), table-driven."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from engine.reconciliation_rules import (
    BankLine,
    Match,
    Target,
    TargetRef,
    counterparty_named,
    normalise_reference,
    reconcile,
    tokens,
)

D = Decimal
DAY = date(2026, 5, 12)


def line(amount: str, ref: str | None = None, text: str = "", day: date = DAY, cur: str = "INR") -> BankLine:
    return BankLine("L1", "50100123456789", day, D(amount), cur, ref, text)


def target(
    kind: str,
    amount: str,
    *refs: str,
    who: str | None = None,
    day: date = DAY,
    charges: str = "0",
    tid: str = "T1",
    cur: str = "INR",
) -> Target:
    return Target(
        kind,  # type: ignore[arg-type]
        tid,
        D(amount),
        cur,
        day,
        frozenset(normalise_reference(r) for r in refs),
        who,
        D(charges),
    )


def one(bank_line: BankLine, *targets: Target) -> Match:
    [result] = reconcile([bank_line], targets)
    return result


@pytest.mark.parametrize(
    ("bank_line", "targets", "status", "method", "difference"),
    [
        # Reference first: the UTR in the line names the payout, the amount agrees.
        (
            line("-25000.00", "UTR SBIN126131234567"),
            [target("payout", "25000.00", "SBIN126131234567")],
            "matched",
            "reference",
            "0.00",
        ),
        # The bank debits a payout with its charges.
        (
            line("-25005.90", "SBIN126131234567"),
            [target("payout", "25000.00", "SBIN126131234567", charges="5.90")],
            "matched",
            "reference",
            "5.90",
        ),
        # A reference with a different amount is a discrepancy for a payout...
        (
            line("-24000.00", "SBIN126131234567"),
            [target("payout", "25000.00", "SBIN126131234567")],
            "discrepancy",
            "reference",
            "-1000.00",
        ),
        # ...and for a payment.
        (
            line("1170.00", None, "RAZORPAY SETTLEMENT pay_29QQoUBi66xm2f"),
            [target("payment", "1180.00", "pay_29QQoUBi66xm2f")],
            "discrepancy",
            "reference",
            "-10.00",
        ),
        # An invoice paid in part is partially matched; paid in excess, a discrepancy.
        (
            line("500.00", None, "NEFT INV-2026-0007 ACME"),
            [target("invoice", "1180.00", "INV-2026-0007")],
            "partially_matched",
            "reference",
            "-680.00",
        ),
        (
            line("1200.00", None, "NEFT INV-2026-0007"),
            [target("invoice", "1180.00", "INV-2026-0007")],
            "discrepancy",
            "reference",
            "20.00",
        ),
        # Case and full-width digits do not matter.
        (
            line("1180.00", None, "neft inv-２０２６-0007"),
            [target("invoice", "1180.00", "INV-2026-0007")],
            "matched",
            "reference",
            "0.00",
        ),
        # A reference wins over a date far outside the window.
        (
            line("1180.00", "INV-2026-0007", day=date(2026, 8, 1)),
            [target("invoice", "1180.00", "INV-2026-0007")],
            "matched",
            "reference",
            "0.00",
        ),
        # No reference: amount + date window + counterparty named in the text.
        (
            line("1180.00", "NONREF", "NEFT CR ACME TRADERS"),
            [target("invoice", "1180.00", "X-1", who="Acme Traders Pvt Ltd")],
            "matched",
            "amount_date_counterparty",
            "0.00",
        ),
        # Outside the three-day window: nothing.
        (
            line("1180.00", None, "ACME TRADERS", day=date(2026, 5, 16)),
            [target("invoice", "1180.00", "X-1", who="Acme Traders")],
            "unmatched",
            None,
            "0",
        ),
        # Another counterparty: nothing.
        (
            line("1180.00", None, "BETA STORES"),
            [target("invoice", "1180.00", "X-1", who="Acme Traders")],
            "unmatched",
            None,
            "0",
        ),
        # A target with no counterparty matches when it is the only candidate.
        (
            line("1180.00", None, "UPI CREDIT"),
            [target("payment", "1180.00", "pay_A")],
            "matched",
            "amount_date_counterparty",
            "0.00",
        ),
        # Two equally good candidates: no guess.
        (
            line("1180.00", None, "UPI CREDIT"),
            [target("payment", "1180.00", "pay_A"), target("payment", "1180.00", "pay_B", tid="T2")],
            "unmatched",
            None,
            "0",
        ),
        # A named candidate beats an anonymous one.
        (
            line("1180.00", None, "NEFT ACME TRADERS"),
            [
                target("payment", "1180.00", "pay_A"),
                target("invoice", "1180.00", "X-1", who="Acme Traders", tid="T2"),
            ],
            "matched",
            "amount_date_counterparty",
            "0.00",
        ),
        # Direction: a credit never matches a payout, a debit never an invoice.
        (
            line("25000.00", "SBIN126131234567"),
            [target("payout", "25000.00", "SBIN126131234567")],
            "unmatched",
            None,
            "0",
        ),
        (
            line("-1180.00", "INV-2026-0007"),
            [target("invoice", "1180.00", "INV-2026-0007")],
            "unmatched",
            None,
            "0",
        ),
        # Currency must agree.
        (
            line("1180.00", "INV-2026-0007", cur="USD"),
            [target("invoice", "1180.00", "INV-2026-0007")],
            "unmatched",
            None,
            "0",
        ),
        # NONREF and short references are never references.
        (line("99.00", "NONREF"), [target("payment", "100.00", "NONREF")], "unmatched", None, "0"),
        (line("99.00", "A1"), [target("invoice", "100.00", "A1")], "unmatched", None, "0"),
        # A zero line matches nothing.
        (line("0.00", "INV-2026-0007"), [target("invoice", "0.00", "INV-2026-0007")], "unmatched", None, "0"),
    ],
)
def test_a_bank_line_is_judged_by_reference_first_then_amount_date_and_counterparty(
    bank_line: BankLine, targets: list[Target], status: str, method: str | None, difference: str
) -> None:
    found = one(bank_line, *targets)
    assert (found.status, found.method, found.difference) == (status, method, D(difference))


def test_one_line_pays_several_invoices_it_names() -> None:
    paid = line("2000.00", None, "NEFT ACME INV-11 INV-12")
    found = one(
        paid, target("invoice", "1180.00", "INV-11", tid="A"), target("invoice", "820.00", "INV-12", tid="B")
    )
    assert found.status == "matched"
    assert found.targets == (TargetRef("invoice", "A"), TargetRef("invoice", "B"))
    assert found.matched_amount == D("2000.00")


def test_a_payment_is_settled_by_one_line_only_an_invoice_by_several() -> None:
    lines = [
        BankLine("L1", "A", DAY, D("100.00"), "INR", "pay_AAAA"),
        BankLine("L2", "A", DAY, D("100.00"), "INR", "pay_AAAA"),
        BankLine("L3", "A", DAY, D("50.00"), "INR", "INV-0001"),
        BankLine("L4", "A", DAY, D("50.00"), "INR", "INV-0001"),
    ]
    found = reconcile(
        lines,
        [
            target("payment", "100.00", "pay_AAAA"),
            target("invoice", "100.00", "INV-0001", who="Acme", tid="I"),
        ],
    )
    assert [m.status for m in found] == ["matched", "unmatched", "partially_matched", "partially_matched"]


def test_manual_matches_come_first_and_unmatched_lines_are_left_alone() -> None:
    lines = [
        BankLine("L1", "A", DAY, D("100.00"), "INR", "pay_AAAA"),
        BankLine("L2", "A", DAY, D("100.00"), "INR", "UPI"),
        BankLine("L3", "A", DAY, D("70.00"), "INR", "INV-0009"),
    ]
    targets = [target("payment", "100.00", "pay_AAAA"), target("invoice", "70.00", "INV-0009", tid="I")]
    found = reconcile(lines, targets, manual={"L2": [TargetRef("payment", "T1")]}, left_alone=["L3"])
    assert [(m.status, m.method) for m in found] == [
        ("unmatched", None),  # its payment was taken by the manual match
        ("matched", "manual"),
        ("unmatched", None),
    ]


def test_the_result_does_not_depend_on_the_order_of_the_lines() -> None:
    lines = [BankLine(f"L{i}", "A", DAY, D("100.00"), "INR", None, "UPI") for i in range(3)]
    targets = [target("payment", "100.00", "pay_AAAA")]
    forward = {m.line_id: m.status for m in reconcile(lines, targets)}
    backward = {m.line_id: m.status for m in reconcile(lines[::-1], targets)}
    assert forward == backward


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("UTR/SBIN0001234", {"UTR/SBIN0001234", "SBIN0001234"}),
        ("NEFT-INV-7 ACME", {"NEFT-INV-7", "ACME"}),
        ("NONREF", set()),
        ("\x00\u202e=HYPERLINK()", {"HYPERLINK"}),
    ],
)
def test_tokens_are_the_words_a_reference_can_be(text: str, expected: set[str]) -> None:
    assert tokens(text) == expected


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        ("Acme Traders Pvt Ltd", "NEFT CR ACME TRADERS", True),
        ("Acme Traders", "NEFT CR ACME", False),
        ("Ltd", "anything", None),
        (None, "anything", None),
        ("Śrī Gaṇeśa Stores", "IMPS ŚRĪ GAṆEŚA STORES", True),
    ],
)
def test_a_counterparty_is_named_when_all_its_distinctive_words_appear(
    name: str | None, text: str, named: bool | None
) -> None:
    assert counterparty_named(name, text) is named
