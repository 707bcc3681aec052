"""Bank statements in, one shape out (pure): SWIFT MT940, ISO 20022 camt.053, and the bank API's.

MT940 (platform.md, "Bank statements"): ``:20:`` statement reference, ``:25:`` account, ``:28C:``
statement/sequence number, ``:60F:``/``:60M:`` opening balance, ``:61:`` a line (value date, D/C
mark, amount, type, customer reference ``//`` bank reference), ``:86:`` its details, ``:62F:``/``:62M:``
closing balance. Parsed with the ``mt-940`` library; a file may hold several messages, each ending in
a line ``-``. Banks vary a lot in ``:61:``/``:86:``: the reference taken is the bank's reference when
given, else the customer reference; ``NONREF`` means none.

camt.053 (ISO 20022 BankToCustomerStatement, any version ``camt.053.001.xx``): ``BkToCstmrStmt/Stmt``
each with ``Id``, ``Acct/Id`` (IBAN or ``Othr/Id``), ``Bal`` (type ``OPBD`` opening booked, ``CLBD``
closing booked; ``PRCD`` stands in for a missing OPBD) and ``Ntry`` (``Amt@Ccy``, ``CdtDbtInd``
CRDT/DBIT, ``Sts`` BOOK/PDNG, ``BookgDt``, ``ValDt``, ``AcctSvcrRef``, ``NtryDtls/TxDtls``). Only
booked entries count: pending ones are not in the booked balances. Read with lxml, namespaces ignored
(each version has its own), entities never resolved and no network (an XML bomb or an external
entity is refused, not followed).

The dedupe key (:func:`dedupe_key`) is account + value date + amount + reference + the line's
position, where the position counts the lines of its statement that share the first four (1 for the
first, 2 for a second identical NONREF fee line...). A line seen again in an overlapping statement
gets the same key, and two genuinely identical lines in one statement keep two keys.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import mt940
from lxml import etree

MAX_BYTES = 10 * 1024 * 1024
NONREF = "NONREF"
AMOUNT_LIMIT = Decimal("1000000000000000")
"""10^15: MT940 amounts have at most 15 characters, and no bank balance comes near it; larger is
refused as a broken file (and would not fit the tables' numeric(20, 2))."""
TEXT_MAX = 500


class StatementError(ValueError):
    """A file that is not a statement we can read; the message says where and why."""


@dataclass(frozen=True)
class StatementLine:
    value_date: date
    booking_date: date | None
    amount: Decimal
    """Signed: credits positive, debits negative."""
    currency: str
    reference: str | None
    description: str
    position: int = 1
    """Ordinal among the statement's lines with the same account, value date, amount and reference."""


@dataclass(frozen=True)
class Statement:
    source: str
    """mt940, camt.053 or api."""
    account: str
    statement_ref: str
    currency: str
    from_date: date | None
    to_date: date | None
    opening: Decimal
    closing: Decimal
    lines: tuple[StatementLine, ...]

    @property
    def computed_closing(self) -> Decimal:
        return self.opening + sum((line.amount for line in self.lines), Decimal("0"))

    @property
    def balanced(self) -> bool:
        """Opening + lines = closing, to the paisa."""
        return self.computed_closing == self.closing


def dedupe_key(account: str, line: StatementLine) -> str:
    text = "\x1f".join(
        (account, line.value_date.isoformat(), f"{line.amount:.2f}", line.reference or "", str(line.position))
    )
    return hashlib.sha256(text.encode()).hexdigest()


def with_positions(lines: Iterable[StatementLine]) -> tuple[StatementLine, ...]:
    seen: Counter[tuple[date, Decimal, str | None]] = Counter()
    out = []
    for line in lines:
        seen[(line.value_date, line.amount, line.reference)] += 1
        out.append(replace(line, position=seen[(line.value_date, line.amount, line.reference)]))
    return tuple(out)


def _clean(text: Any, limit: int = TEXT_MAX) -> str:
    """Statement text as stored: control characters become spaces, runs of spaces one, capped."""
    value = re.sub(r"[\x00-\x1f\x7f-\x9f]+", " ", str(text or ""))
    return re.sub(r" {2,}", " ", value).strip()[:limit]


def _reference(value: Any) -> str | None:
    text = _clean(value, 64)
    return None if not text or text.upper() in (NONREF, "NOTPROVIDED") else text


def _account(value: str) -> str:
    """``:25:`` is often ``<bank code>/<account>``: the account is the last part, spaces dropped."""
    return _clean(value, 64).rsplit("/", 1)[-1].replace(" ", "")


# -- MT940 --------------------------------------------------------------------------------------


def parse_mt940(data: bytes) -> list[Statement]:
    if len(data) > MAX_BYTES:
        raise StatementError(f"larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # SWIFT's character set is a subset of both
    blocks = [b for b in re.split(r"\r?\n-\}?\s*(?:\r?\n|$)", text) if ":20:" in b or ":61:" in b]
    if not blocks:
        raise StatementError("no MT940 message (a :20: ... :62F: block) in the file")
    return [_mt940_statement(block, n) for n, block in enumerate(blocks, start=1)]


def _mt940_statement(block: str, n: int) -> Statement:
    transactions = mt940.models.Transactions()
    try:
        transactions.parse(block)
    except Exception as exc:  # the library raises bare Exceptions and RuntimeErrors on bad tags
        raise StatementError(f"message {n}: {exc}") from exc
    info = transactions.data
    opening = info.get("final_opening_balance") or info.get("intermediate_opening_balance")
    closing = info.get("final_closing_balance") or info.get("intermediate_closing_balance")
    if opening is None or closing is None or not info.get("account_identification"):
        raise StatementError(f"message {n}: needs :25: account, :60F: opening and :62F: closing balances")
    lines = []
    for t in transactions:
        d = t.data
        amount = d["amount"]
        lines.append(
            StatementLine(
                value_date=_date(d["date"]),
                booking_date=_date(d.get("entry_date") or d["date"]),
                amount=Decimal(amount.amount),
                currency=str(amount.currency or opening.amount.currency),
                reference=_reference(d.get("bank_reference")) or _reference(d.get("customer_reference")),
                description=_clean(d.get("transaction_details") or d.get("extra_details")),
            )
        )
    number = _clean(info.get("statement_number") or "", 20)
    for amount in (opening.amount.amount, closing.amount.amount, *(line.amount for line in lines)):
        if abs(Decimal(amount)) >= AMOUNT_LIMIT:
            raise StatementError(f"message {n}: an amount of {AMOUNT_LIMIT} or more")
    return Statement(
        source="mt940",
        account=_account(info["account_identification"]),
        statement_ref=_clean(f"{info.get('transaction_reference') or ''}/{number}", 64),
        currency=str(opening.amount.currency),
        from_date=_date(opening.date),
        to_date=_date(closing.date),
        opening=Decimal(opening.amount.amount),
        closing=Decimal(closing.amount.amount),
        lines=with_positions(lines),
    )


def _date(value: Any) -> date:
    return date(value.year, value.month, value.day)


# -- camt.053 -----------------------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
    )


def _find(node: Any, path: str) -> Any:
    """The first element at ``path`` (``/``-separated local names), namespaces ignored."""
    steps = "/".join(f"*[local-name()='{step}']" for step in path.split("/"))
    found = node.xpath(steps)
    return found[0] if found else None


def _text(node: Any, path: str) -> str | None:
    found = _find(node, path)
    return found.text.strip() if found is not None and found.text else None


def _all(node: Any, name: str) -> list[Any]:
    return list(node.xpath(f"*[local-name()='{name}']"))


def _amount(node: Any, where: str) -> tuple[Decimal, str]:
    amt = _find(node, "Amt")
    try:
        value = Decimal((amt.text or "").strip())
    except (AttributeError, InvalidOperation) as exc:
        raise StatementError(f"{where}: Amt is not a decimal amount") from exc
    if not value.is_finite() or value < 0 or value >= AMOUNT_LIMIT or value != round(value, 5):
        raise StatementError(f"{where}: Amt must be a non-negative decimal below {AMOUNT_LIMIT}")
    sign = _text(node, "CdtDbtInd")
    if sign not in ("CRDT", "DBIT"):
        raise StatementError(f"{where}: CdtDbtInd must be CRDT or DBIT")
    return (value if sign == "CRDT" else -value), str(amt.get("Ccy") or "")


def _iso_date(node: Any, path: str) -> date | None:
    text = _text(node, f"{path}/Dt") or _text(node, f"{path}/DtTm")
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError as exc:
        raise StatementError(f"{path}: {text[:30]!r} is not a date") from exc


def parse_camt053(data: bytes) -> list[Statement]:
    if len(data) > MAX_BYTES:
        raise StatementError(f"larger than {MAX_BYTES} bytes")
    if b"<!DOCTYPE" in data[:2048].upper() or b"<!ENTITY" in data.upper():
        raise StatementError("a DOCTYPE or ENTITY declaration is not allowed in a statement")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise StatementError(f"not well-formed XML: {exc}") from exc
    namespace = etree.QName(root).namespace or ""
    if "camt.053" not in namespace:
        raise StatementError(f"not a camt.053 document (namespace {namespace[:80]!r})")
    statements = root.xpath("//*[local-name()='BkToCstmrStmt']/*[local-name()='Stmt']")
    if not statements:
        raise StatementError("no BkToCstmrStmt/Stmt in the document")
    return [_camt_statement(stmt, n) for n, stmt in enumerate(statements, start=1)]


def _camt_statement(stmt: Any, n: int) -> Statement:
    where = f"Stmt {n}"
    account = _text(stmt, "Acct/Id/IBAN") or _text(stmt, "Acct/Id/Othr/Id")
    if not account:
        raise StatementError(f"{where}: Acct/Id (IBAN or Othr/Id) is required")
    balances: dict[str, tuple[Decimal, str, date | None]] = {}
    for bal in _all(stmt, "Bal"):
        code = _text(bal, "Tp/CdOrPrtry/Cd")
        if code:
            value, ccy = _amount(bal, f"{where} Bal {code}")
            balances.setdefault(code, (value, ccy, _iso_date(bal, "Dt")))
    opening = balances.get("OPBD") or balances.get("PRCD")
    closing = balances.get("CLBD")
    if opening is None or closing is None:
        raise StatementError(f"{where}: needs an OPBD (or PRCD) and a CLBD balance")
    currency = _text(stmt, "Acct/Ccy") or closing[1]
    lines = []
    for m, entry in enumerate(_all(stmt, "Ntry"), start=1):
        status = _text(entry, "Sts/Cd") or _text(entry, "Sts")
        if status and status != "BOOK":
            continue  # pending or information only: not in the booked balances
        amount, ccy = _amount(entry, f"{where} Ntry {m}")
        value_date = _iso_date(entry, "ValDt") or _iso_date(entry, "BookgDt")
        if value_date is None:
            raise StatementError(f"{where} Ntry {m}: ValDt or BookgDt is required")
        tx = _find(entry, "NtryDtls/TxDtls")
        reference = _reference(_text(entry, "AcctSvcrRef"))
        if reference is None and tx is not None:
            reference = _reference(_text(tx, "Refs/AcctSvcrRef")) or _reference(_text(tx, "Refs/EndToEndId"))
        description = _text(entry, "AddtlNtryInf") or (
            (_text(tx, "RmtInf/Ustrd") or _text(tx, "AddtlTxInf")) if tx is not None else None
        )
        lines.append(
            StatementLine(
                value_date=value_date,
                booking_date=_iso_date(entry, "BookgDt"),
                amount=amount,
                currency=ccy or currency,
                reference=reference,
                description=_clean(description),
            )
        )
    from_date = _iso_date(stmt, "FrToDt/FrDtTm") if _find(stmt, "FrToDt") is not None else None
    return Statement(
        source="camt.053",
        account=_account(account),
        statement_ref=_clean(_text(stmt, "Id") or f"stmt-{n}", 64),
        currency=currency,
        from_date=_frto(stmt, "FrDtTm") or from_date or opening[2],
        to_date=_frto(stmt, "ToDtTm") or closing[2],
        opening=opening[0],
        closing=closing[0],
        lines=with_positions(lines),
    )


def _frto(stmt: Any, name: str) -> date | None:
    text = _text(stmt, f"FrToDt/{name}")
    try:
        return date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def parse(data: bytes, fmt: str | None = None) -> list[Statement]:
    """The statements in an uploaded file; ``fmt`` ``mt940`` or ``camt.053``, else told by its start."""
    kind = fmt or ("camt.053" if data.lstrip()[:1] == b"<" else "mt940")
    if kind == "camt.053":
        return parse_camt053(data)
    if kind == "mt940":
        return parse_mt940(data)
    raise StatementError(f"unknown format {kind!r}: use mt940 or camt.053")
