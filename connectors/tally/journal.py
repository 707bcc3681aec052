"""A voucher the accountant posts through ``POST /v1/tally/vouchers`` (seed 002, 2.5), made a Tally
voucher (pure: no I/O).

The seed's request signs its amounts from the books' point of view: a **positive** amount is a
**debit**, a **negative** one a **credit** (its example: ``-50000 // Credit``). Tally's own ``AMOUNT``
uses the opposite sign (a debit is negative, vouchers.py); :func:`voucher_of` turns each entry into a
``Leg`` with a side and a positive amount, and vouchers.py writes Tally's sign, so the two conventions
never meet in one place. The amounts must sum to exactly zero (double entry), to the paisa.

Tally keeps one narration per voucher, not per ledger entry: the entries' narrations are joined, in
order and without repeats, into the voucher's ``NARRATION``; each is also kept with our copy.

The REMOTEID is derived from the tenant and the voucher number (``manual:<number>``), so a voucher
number is posted to Tally once per tenant, whatever is retried or sent twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID, uuid5

import orjson

from connectors.tally.vouchers import (
    MAX_AMOUNT,
    Leg,
    Voucher,
    VoucherRefused,
    check_amount,
    check_name,
    clean_text,
    remote_id,
)

# The seed's voucher_type values -> Tally's predefined voucher type names (a new company has them all).
VOUCHER_TYPES: dict[str, str] = {
    "payment": "Payment",
    "receipt": "Receipt",
    "journal": "Journal",
    "sales": "Sales",
    "purchase": "Purchase",
    "contra": "Contra",
}
MAX_ENTRIES = 200
MAX_NUMBER = 60
MAX_ENTRY_NARRATION = 300
# Our voucher ids: a fixed, arbitrary namespace; the id of a tenant's voucher number never changes.
VOUCHER_ID_NAMESPACE = UUID("0c1d7a52-6b7e-4f0e-8f43-7a11e7a11e01")


@dataclass(frozen=True)
class Entry:
    ledger: str
    amount: Decimal
    """Signed as the seed signs it: positive is a debit, negative a credit."""
    narration: str = ""


@dataclass(frozen=True)
class Request:
    voucher_type: str
    voucher_number: str
    day: date
    entries: tuple[Entry, ...]

    def document(self) -> dict[str, Any]:
        """What we store and show: amounts as decimal strings."""
        return {
            "voucher_type": self.voucher_type,
            "voucher_number": self.voucher_number,
            "date": self.day.isoformat(),
            "ledger_entries": [
                {"ledger": e.ledger, "amount": str(e.amount), "narration": e.narration} for e in self.entries
            ],
        }

    def fingerprint(self) -> str:
        """Equal for equal requests: what a repeated voucher number or Idempotency-Key is compared by."""
        return hashlib.sha256(orjson.dumps(self.document(), option=orjson.OPT_SORT_KEYS)).hexdigest()


def voucher_id(tenant_id: UUID, voucher_number: str) -> UUID:
    return uuid5(VOUCHER_ID_NAMESPACE, f"{tenant_id}:{voucher_number}")


def signed_amount(value: Any) -> Decimal:
    """An entry's amount: a decimal (string or JSON number, never a boolean), not zero, whole paise,
    at most :data:`MAX_AMOUNT` either way."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise VoucherRefused("bad_amount", "an amount is a decimal number or string")
    try:
        amount = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError) as exc:
        raise VoucherRefused("bad_amount", f"{str(value)[:40]!r} is not a decimal amount") from exc
    if not amount.is_finite() or amount == 0 or abs(amount) > MAX_AMOUNT:
        raise VoucherRefused("bad_amount", f"an amount must be non-zero and at most {MAX_AMOUNT} either way")
    check_amount(abs(amount))  # whole paise
    return amount.quantize(Decimal("0.01"))


def check_number(value: str) -> str:
    number = check_name(value, "voucher number")
    if len(number) > MAX_NUMBER or number != number.strip():
        raise VoucherRefused(
            "bad_name", f"a voucher number has at most {MAX_NUMBER} characters and no outer spaces"
        )
    return number


def parse(voucher_type: str, voucher_number: str, day: date, entries: Sequence[Mapping[str, Any]]) -> Request:
    """The request, checked; ``VoucherRefused`` (``bad_voucher_type``, ``bad_name``, ``bad_amount``,
    ``bad_date``, ``unbalanced``) says what is wrong with it."""
    if voucher_type not in VOUCHER_TYPES:
        raise VoucherRefused(
            "bad_voucher_type",
            f"voucher_type is one of {', '.join(VOUCHER_TYPES)}, not {voucher_type[:40]!r}",
        )
    number = check_number(voucher_number)
    if not 1900 <= day.year <= 9999:
        raise VoucherRefused("bad_date", "the voucher date is out of range")
    if not 2 <= len(entries) <= MAX_ENTRIES:
        raise VoucherRefused("unbalanced", f"a voucher has 2 to {MAX_ENTRIES} ledger entries")
    parsed: list[Entry] = []
    for entry in entries:
        ledger = check_name(entry["ledger"])
        amount = signed_amount(entry["amount"])
        narration = clean_text(str(entry.get("narration") or ""), MAX_ENTRY_NARRATION)
        parsed.append(Entry(ledger, amount, narration))
    debit = sum((e.amount for e in parsed if e.amount > 0), Decimal(0))
    credit = -sum((e.amount for e in parsed if e.amount < 0), Decimal(0))
    if debit == 0 or credit == 0:
        raise VoucherRefused("unbalanced", "a voucher needs at least one debit and one credit entry")
    if debit != credit:
        raise VoucherRefused(
            "unbalanced", f"debits {debit} and credits {credit} differ by {abs(debit - credit)}"
        )
    return Request(voucher_type, number, day, tuple(parsed))


def from_document(document: Mapping[str, Any]) -> Request:
    """A stored :meth:`Request.document` read back (checked again: it is sent to Tally)."""
    return parse(
        str(document["voucher_type"]),
        str(document["voucher_number"]),
        date.fromisoformat(str(document["date"])),
        list(document["ledger_entries"]),
    )


def unknown_ledgers(request: Request, known: set[str]) -> list[str]:
    """The request's ledgers not in ``known`` (the ledgers last synced from Tally), in order, once."""
    return list(dict.fromkeys(e.ledger for e in request.entries if e.ledger not in known))


def voucher_of(tenant_id: str, request: Request) -> Voucher:
    """The Tally voucher: seed sign -> side (positive debit, negative credit), amounts made positive."""
    legs = tuple(Leg(e.ledger, "debit" if e.amount > 0 else "credit", abs(e.amount)) for e in request.entries)
    narration = "; ".join(dict.fromkeys(e.narration for e in request.entries if e.narration))
    return Voucher(
        voucher_type=VOUCHER_TYPES[request.voucher_type],  # type: ignore[arg-type]
        remote_id=remote_id(tenant_id, f"manual:{request.voucher_number}"),
        day=request.day,
        legs=legs,
        number=request.voucher_number,
        reference=request.voucher_number,
        narration=narration,
    )
