"""Fee reconciliation rules, pure: which bank deposit settles which fee collection, and what disagrees.

The matching itself is the bank reconciliation's (engine/reconciliation_rules.py, explained for
accountants in docs/reconciliation.md), not a second matcher: a fee collection is offered to it as a
single-transfer target of money in, exactly like a captured gateway payment, whose references are the
portal's receipt number and the transfer's own reference (UPI reference, UTR, cheque number) and whose
counterparty is the student. So a deposit naming a receipt or UTR is matched whatever its amount; one
without is matched only by exact amount within the date tolerance and the student's name in its text;
two equally good candidates match nothing.

On top of that match this module sorts the outcome into what the seed's fee reconciliation reports
(docs/fees.md):

- ``matched``: a deposit and a collection that agree (amount, and date within the tolerance);
- ``discrepancies``:
  ``amount_differs`` (a reference ties them, the amounts disagree),
  ``date_outside_tolerance`` (a reference ties them, the deposit's value date is further from the
  payment date than the tolerance: late banking of cash or a cheque, or the wrong period),
  ``duplicate_deposit`` (a deposit names a collection another deposit already settled),
  ``duplicate_collection`` (two receipts for the same student, fee type, amount and day: the portal
  receipted one payment twice, or the student paid twice; a person decides which);
- ``unmatched_collections`` and ``unmatched_deposits``: the rest. A deposit after the period that
  matches nothing is left out: it belongs to the next period.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Literal

from engine.reconciliation_rules import (
    DATE_WINDOW,
    BankLine,
    Target,
    normalise_reference,
    reconcile,
    tokens,
)

DiscrepancyKind = Literal[
    "amount_differs", "date_outside_tolerance", "duplicate_deposit", "duplicate_collection"
]
ZERO = Decimal("0")
DEFAULT_TOLERANCE = DATE_WINDOW


@dataclass(frozen=True)
class Collection:
    collection_id: str
    receipt_number: str
    student_id: str
    student_name: str
    amount: Decimal
    currency: str
    payment_date: date
    fee_type: str
    payment_reference: str | None = None

    def references(self) -> frozenset[str]:
        return frozenset(normalise_reference(r) for r in (self.receipt_number, self.payment_reference) if r)


@dataclass(frozen=True)
class Pair:
    collection_id: str
    deposit_id: str
    method: str
    days_apart: int
    difference: Decimal
    """The deposit's amount less the collection's."""


@dataclass(frozen=True)
class Discrepancy:
    kind: DiscrepancyKind
    collection_ids: tuple[str, ...]
    deposit_ids: tuple[str, ...]
    collection_amount: Decimal
    deposit_amount: Decimal
    days_apart: int | None = None

    @property
    def difference(self) -> Decimal:
        return self.deposit_amount - self.collection_amount


@dataclass(frozen=True)
class FeeReconciliation:
    matched: tuple[Pair, ...]
    discrepancies: tuple[Discrepancy, ...]
    unmatched_collections: tuple[str, ...]
    unmatched_deposits: tuple[str, ...]
    collections_total: Decimal
    deposits_total: Decimal

    @property
    def balanced(self) -> bool:
        return not (self.discrepancies or self.unmatched_collections or self.unmatched_deposits)


def _target(c: Collection) -> Target:
    # "payment": the rules' single-transfer target of money in (settled by at most one line).
    return Target(
        "payment", c.collection_id, c.amount, c.currency, c.payment_date, c.references(), c.student_name
    )


def reconcile_fees(
    collections: Sequence[Collection],
    deposits: Sequence[BankLine],
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    period_end: date | None = None,
) -> FeeReconciliation:
    """Match the period's ``collections`` to the ``deposits`` (credits; debits are ignored) and sort
    the outcome (module docstring). ``period_end``: unmatched deposits after it are left out."""
    by_id = {c.collection_id: c for c in collections}
    lines = [d for d in deposits if d.amount > 0]
    line_by_id = {d.line_id: d for d in lines}
    matches = reconcile(lines, [_target(c) for c in collections], window=tolerance)
    matched: list[Pair] = []
    discrepancies: list[Discrepancy] = []
    settled: dict[str, str] = {}
    leftover: list[BankLine] = []
    for m in matches:
        line = line_by_id[m.line_id]
        if m.status == "unmatched" or not m.targets:
            leftover.append(line)
            continue
        c = by_id[m.targets[0].target_id]
        settled[c.collection_id] = line.line_id
        days = abs((line.value_date - c.payment_date).days)
        if m.status != "matched":
            discrepancies.append(
                Discrepancy(
                    "amount_differs", (c.collection_id,), (line.line_id,), c.amount, line.amount, days
                )
            )
        elif days > tolerance.days:
            discrepancies.append(
                Discrepancy(
                    "date_outside_tolerance", (c.collection_id,), (line.line_id,), c.amount, line.amount, days
                )
            )
        else:
            matched.append(Pair(c.collection_id, line.line_id, m.method or "", days, line.amount - c.amount))
    by_reference: dict[str, str] = {}
    for cid in settled:
        for ref in by_id[cid].references():
            by_reference[ref] = cid
    unmatched_deposits: list[str] = []
    for line in leftover:
        named = sorted(
            {by_reference[t] for t in tokens(line.reference, line.description) if t in by_reference}
        )
        if named:
            c = by_id[named[0]]
            days = abs((line.value_date - c.payment_date).days)
            discrepancies.append(
                Discrepancy(
                    "duplicate_deposit", (c.collection_id,), (line.line_id,), c.amount, line.amount, days
                )
            )
        elif period_end is None or line.value_date <= period_end:
            unmatched_deposits.append(line.line_id)
    same: dict[tuple[str, Decimal, date, str], list[Collection]] = defaultdict(list)
    for c in collections:
        same[(c.student_id, c.amount, c.payment_date, c.fee_type)].append(c)
    for group in same.values():
        if len(group) > 1:
            group.sort(key=lambda c: c.receipt_number)
            total = sum((c.amount for c in group), ZERO)
            paid = sum(
                (line_by_id[settled[c.collection_id]].amount for c in group if c.collection_id in settled),
                ZERO,
            )
            discrepancies.append(
                Discrepancy(
                    "duplicate_collection",
                    tuple(c.collection_id for c in group),
                    tuple(settled[c.collection_id] for c in group if c.collection_id in settled),
                    total,
                    paid,
                )
            )
    kept_deposits = {line.line_id for line in lines if period_end is None or line.value_date <= period_end}
    kept_deposits |= set(settled.values()) | {i for d in discrepancies for i in d.deposit_ids}
    return FeeReconciliation(
        matched=tuple(matched),
        discrepancies=tuple(discrepancies),
        unmatched_collections=tuple(
            c.collection_id
            for c in sorted(collections, key=lambda c: (c.payment_date, c.receipt_number))
            if c.collection_id not in settled
        ),
        unmatched_deposits=tuple(unmatched_deposits),
        collections_total=sum((c.amount for c in collections), ZERO),
        deposits_total=sum((line_by_id[i].amount for i in kept_deposits), ZERO),
    )
