"""Bank reconciliation rules, pure: which payment, payout or invoice a bank statement line settles.

A bank line is one entry of a statement (``ledger.bank_transaction.v1``): a signed amount (credits
positive, money in; debits negative, money out), a value date, the bank's reference and its free
text. A *target* is what a line can settle: a captured gateway **payment** or an issued **invoice**
(money in), a completed **payout** (money out).

The rules, in order (docs/reconciliation.md explains them for accountants):

1. **Reference first.** A line whose reference or description carries a target's reference (a
   payout's UTR or our reference, a gateway payment id, an invoice number) is matched to it,
   whatever the amount: a UTR is the bank's own identifier of a transfer (RBI's NEFT/RTGS
   procedures give every transfer one), so it outweighs an amount that differs. One line may name
   several invoices (one transfer paying three invoices): it is matched to all of them.
2. **Then amount + date window + counterparty.** A line with no reference hit is matched to the
   one open target of the same direction and currency with exactly its amount, dated within
   ``DATE_WINDOW`` of the value date (NEFT settles in half-hourly batches, but a statement books
   by value date and weekends and holidays push it), whose counterparty's name appears in the
   line's text. A target without a counterparty can still match, but only when no candidate
   names one. Two equally good candidates match nothing: a guess is worse than a human's look.
3. Otherwise the line is **unmatched**.

The status of a matched line compares the amounts:

- ``matched``: the line's amount equals the targets' total (for a payout, also its amount plus the
  bank's charges, which the bank debits together);
- ``partially_matched``: the line pays part of the invoices it names (a part payment);
- ``discrepancy``: a reference says which target, but the amounts disagree in a way a part payment
  does not explain (more than the invoices, or any difference from a payment or a payout, which
  are single transfers of a known amount).

A payment or a payout is one transfer, settled by at most one line; an invoice can be paid by
several lines (part payments), each naming it. Manual matches (an accountant's decision) come
first and take their targets out of the automatic rules; a manually unmatched line is left alone
by the automatic rules.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Literal

TargetType = Literal["payment", "payout", "invoice"]
Status = Literal["matched", "partially_matched", "unmatched", "discrepancy"]
Method = Literal["reference", "amount_date_counterparty", "manual"]

TARGET_TYPES: tuple[TargetType, ...] = ("payment", "payout", "invoice")
STATUSES: tuple[Status, ...] = ("matched", "partially_matched", "unmatched", "discrepancy")
DATE_WINDOW = timedelta(days=3)
# References shorter than this are not looked for in a line's text: "12" or "A1" would hit anything.
MIN_REFERENCE_LENGTH = 4
# The bank's placeholder for "no reference" (SWIFT MT940 field 61): never a reference.
NO_REFERENCES = frozenset({"NONREF", "NOREF", "NONE", "NA", "NIL"})
_TOKEN = re.compile(r"[A-Z0-9][A-Z0-9/_-]*[A-Z0-9]|[A-Z0-9]")
_SEPARATORS = "/_-"


def normalise_reference(text: str) -> str:
    """A reference as compared: compatibility-folded (full-width digits are digits), upper case,
    without spaces. ``inv-1`` and ``INV-1`` are one reference."""
    folded = unicodedata.normalize("NFKC", text).upper()
    return "".join(ch for ch in folded if ch.isascii() and (ch.isalnum() or ch in _SEPARATORS))


def tokens(*texts: str | None) -> frozenset[str]:
    """The references a line's text can carry: its words (letters, digits and the separators
    invoice numbers use), each also split at ``/`` and ``_`` (banks prefix a UTR as ``UTR/...``), so
    ``UTR/SBIN0001`` yields ``UTR/SBIN0001`` and ``SBIN0001`` (``UTR`` is too short to count)."""
    found: set[str] = set()
    for text in texts:
        if not text:
            continue
        folded = unicodedata.normalize("NFKC", text).upper()
        for word in _TOKEN.findall(folded):
            found.add(word)
            for part in re.split(r"[/_]", word):
                if part:
                    found.add(part)
    return frozenset(t for t in found if len(t) >= MIN_REFERENCE_LENGTH and t not in NO_REFERENCES)


def _words(text: str | None) -> frozenset[str]:
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return frozenset(w for w in re.findall(r"\w+", folded) if len(w) >= 3)


# Words that say nothing about who a counterparty is.
_NAME_NOISE = frozenset({"pvt", "ltd", "private", "limited", "the", "and", "llp", "inc", "co", "company"})


def counterparty_named(name: str | None, text: str) -> bool | None:
    """Whether the line's ``text`` names the counterparty ``name``: every distinctive word of the
    name (3 letters or more, not "Pvt", "Ltd"...) appears in it. None when there is no name."""
    wanted = _words(name) - _NAME_NOISE
    if not wanted:
        return None
    return wanted <= _words(text)


@dataclass(frozen=True)
class BankLine:
    line_id: str
    account: str
    value_date: date
    amount: Decimal
    """Signed: credits (money in) positive, debits negative."""
    currency: str
    reference: str | None = None
    description: str = ""

    @property
    def direction(self) -> Literal["in", "out"]:
        return "in" if self.amount > 0 else "out"

    @property
    def text(self) -> str:
        return f"{self.reference or ''} {self.description}"


@dataclass(frozen=True)
class Target:
    target_type: TargetType
    target_id: str
    amount: Decimal
    """Positive: what the payment, payout or invoice is for."""
    currency: str
    day: date
    references: frozenset[str] = frozenset()
    """Normalised (:func:`normalise_reference`)."""
    counterparty: str | None = None
    charges: Decimal = Decimal("0")
    """A payout's bank charges, debited with it."""

    @property
    def direction(self) -> Literal["in", "out"]:
        return "out" if self.target_type == "payout" else "in"

    @property
    def reusable(self) -> bool:
        """An invoice can be paid by several lines; a payment or payout is one transfer."""
        return self.target_type == "invoice"


@dataclass(frozen=True)
class TargetRef:
    target_type: TargetType
    target_id: str


@dataclass(frozen=True)
class Match:
    line_id: str
    status: Status
    method: Method | None = None
    targets: tuple[TargetRef, ...] = ()
    matched_amount: Decimal = Decimal("0")
    """What the targets add up to."""
    difference: Decimal = Decimal("0")
    """The line's (absolute) amount less the targets' total."""


@dataclass(frozen=True)
class ManualMatch:
    line_id: str
    targets: tuple[TargetRef, ...]


def judge(line: BankLine, targets: Sequence[Target], method: Method) -> Match:
    """The status of ``line`` matched to ``targets`` (see the module docstring)."""
    refs = tuple(TargetRef(t.target_type, t.target_id) for t in targets)
    paid = abs(line.amount)
    total = sum((t.amount for t in targets), Decimal("0"))
    if paid == total or (
        len(targets) == 1 and targets[0].target_type == "payout" and paid == total + targets[0].charges
    ):
        status: Status = "matched"
    elif paid < total and all(t.target_type == "invoice" for t in targets):
        status = "partially_matched"
    else:
        status = "discrepancy"
    return Match(line.line_id, status, method, refs, total, paid - total)


def unmatched(line: BankLine) -> Match:
    return Match(line.line_id, "unmatched")


@dataclass
class _Pool:
    """The open targets, indexed for the two rules; a single-use target leaves when matched."""

    by_reference: dict[str, list[Target]] = field(default_factory=dict)
    by_amount: dict[tuple[str, str, Decimal], list[Target]] = field(default_factory=dict)
    used: set[TargetRef] = field(default_factory=set)

    def add(self, target: Target) -> None:
        for ref in target.references:
            if len(ref) >= MIN_REFERENCE_LENGTH and ref not in NO_REFERENCES:
                self.by_reference.setdefault(ref, []).append(target)
        self.by_amount.setdefault((target.direction, target.currency, target.amount), []).append(target)

    def is_open(self, target: Target) -> bool:
        return target.reusable or TargetRef(target.target_type, target.target_id) not in self.used

    def take(self, targets: Iterable[Target]) -> None:
        for t in targets:
            if not t.reusable:
                self.used.add(TargetRef(t.target_type, t.target_id))


def _by_reference(line: BankLine, pool: _Pool) -> list[Target]:
    hits: dict[TargetRef, Target] = {}
    for token in sorted(tokens(line.reference, line.description)):
        for t in pool.by_reference.get(token, ()):
            if t.direction == line.direction and t.currency == line.currency and pool.is_open(t):
                hits.setdefault(TargetRef(t.target_type, t.target_id), t)
    found = list(hits.values())
    # A UTR or payment id names one transfer; only invoices are paid several at a time.
    single = [t for t in found if not t.reusable]
    if single:
        return [min(single, key=lambda t: (abs(t.day - line.value_date), t.target_type, t.target_id))]
    return sorted(found, key=lambda t: (t.day, t.target_id))


def _by_amount(line: BankLine, pool: _Pool, window: timedelta) -> Target | None:
    candidates = [
        t
        for t in pool.by_amount.get((line.direction, line.currency, abs(line.amount)), ())
        if pool.is_open(t) and abs(t.day - line.value_date) <= window
    ]
    named = [t for t in candidates if counterparty_named(t.counterparty, line.text)]
    if named:
        return named[0] if len(named) == 1 else None
    anonymous = [t for t in candidates if counterparty_named(t.counterparty, line.text) is None]
    return anonymous[0] if len(anonymous) == 1 else None


def reconcile(
    lines: Sequence[BankLine],
    targets: Iterable[Target],
    *,
    manual: Mapping[str, Sequence[TargetRef]] | None = None,
    left_alone: Iterable[str] = (),
    window: timedelta = DATE_WINDOW,
) -> list[Match]:
    """Match ``lines`` to ``targets``: one :class:`Match` per line, in the order given.

    ``manual`` maps a line id to the targets an accountant matched it to (they win, and their
    targets are taken first); ``left_alone`` are lines an accountant unmatched (never matched
    automatically). Lines are judged in (value date, line id) order, so the result does not depend
    on the order of ``lines``.
    """
    manual = manual or {}
    skip = set(left_alone)
    pool = _Pool()
    known: dict[TargetRef, Target] = {}
    for t in targets:
        known[TargetRef(t.target_type, t.target_id)] = t
        pool.add(t)
    results: dict[str, Match] = {}
    for line in lines:
        chosen = manual.get(line.line_id)
        if chosen is None:
            continue
        found = [known[r] for r in chosen if r in known]
        pool.take(found)
        results[line.line_id] = judge(line, found, "manual") if found else unmatched(line)
    for line in sorted(lines, key=lambda x: (x.value_date, x.line_id)):
        if line.line_id in results:
            continue
        if line.line_id in skip or line.amount == 0:
            results[line.line_id] = unmatched(line)
            continue
        referenced = _by_reference(line, pool)
        if referenced:
            pool.take(referenced)
            results[line.line_id] = judge(line, referenced, "reference")
            continue
        by_amount = _by_amount(line, pool, window)
        if by_amount is not None:
            pool.take([by_amount])
            results[line.line_id] = judge(line, [by_amount], "amount_date_counterparty")
            continue
        results[line.line_id] = unmatched(line)
    return [results[line.line_id] for line in lines]
