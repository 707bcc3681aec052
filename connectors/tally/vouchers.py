"""Tally Prime vouchers as XML, and Tally's answers read back (pure: no I/O).

Tally's XML interface (TallyPrime help, "Integration Using XML Interface"; platform.md "Tally Prime XML
over HTTP"): a client POSTs an ``ENVELOPE`` whose ``HEADER/TALLYREQUEST`` is ``Import Data`` and whose
``BODY/IMPORTDATA`` names the report (``REQUESTDESC/REPORTNAME`` ``Vouchers``) and the company
(``STATICVARIABLES/SVCURRENTCOMPANY``), then carries one ``TALLYMESSAGE/VOUCHER`` per voucher with
``VCHTYPE``, ``ACTION`` and ``REMOTEID`` attributes, ``DATE`` as YYYYMMDD and one
``ALLLEDGERENTRIES.LIST`` per ledger leg.

Sign convention (the one thing every Tally integration gets wrong once): a debit leg has
``ISDEEMEDPOSITIVE`` Yes and a negative ``AMOUNT``, a credit leg No and a positive ``AMOUNT``; the
amounts of a voucher sum to exactly zero. :func:`build_import` refuses a voucher whose legs do not
balance before anything is sent.

Idempotency: Tally keys an imported voucher by its ``REMOTEID`` (and ``GUID``); importing the same
REMOTEID again alters that voucher instead of creating a second one (answered as ALTERED).
:func:`remote_id` derives it from the tenant and the document, so every retry names the same voucher.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from lxml import etree

from engine.fields import forbidden_character

VoucherType = Literal["Sales", "Receipt", "Payment", "Journal", "Purchase", "Credit Note", "Contra"]
VOUCHER_TYPES: tuple[str, ...] = (
    "Sales",
    "Receipt",
    "Payment",
    "Journal",
    "Purchase",
    "Credit Note",
    "Contra",
)
Side = Literal["debit", "credit"]

# Our own bound, the same as an invoice's (engine/tax/limits.py): far above any real voucher, and a
# number Tally's 2-decimal amounts hold exactly.
MAX_AMOUNT = Decimal("99999999999999.98")
CENT = Decimal("0.01")
# Our bounds on Tally names and free text, so one hostile field cannot make a megabyte voucher.
MAX_NAME = 200
MAX_NARRATION = 1000
# The UUID namespace of our REMOTEIDs: a fixed, arbitrary value (changing it would duplicate every
# voucher already posted).
REMOTE_ID_NAMESPACE = uuid.UUID("5b0c7f4e-2d6a-4c7e-9a0b-7a11e7a11e00")

# XML 1.0 section 2.2 "Char": tab, LF, CR and everything from U+0020 except surrogates, U+FFFE, U+FFFF.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class VoucherRefused(ValueError):
    """A voucher we will not send: ``code`` says why (``unbalanced``, ``bad_amount``, ``bad_name``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ResponseUnreadable(ValueError):
    """Tally's answer is not the XML of an import or an export."""


@dataclass(frozen=True)
class Leg:
    """One ledger entry: ``amount`` is positive; ``side`` says whether the ledger is debited or credited."""

    ledger: str
    side: Side
    amount: Decimal


@dataclass(frozen=True)
class Voucher:
    voucher_type: VoucherType
    remote_id: str
    day: date
    legs: tuple[Leg, ...]
    number: str | None = None
    reference: str | None = None
    party_ledger: str | None = None
    narration: str = ""


def remote_id(tenant_id: str, document: str) -> str:
    """The REMOTEID (and GUID) of the voucher for ``document`` (e.g. ``receipt:<payment id>``): the same
    for every attempt and every redelivery, different for every tenant and document."""
    return str(uuid.uuid5(REMOTE_ID_NAMESPACE, f"{tenant_id}:{document}"))


def tally_date(day: date) -> str:
    """Tally's date format, YYYYMMDD."""
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def clean_text(value: str, limit: int = MAX_NARRATION) -> str:
    """Free text (a narration, a reference) made legal XML 1.0: characters XML cannot carry at all
    (control characters, lone surrogates, U+FFFE/U+FFFF) are dropped, not escaped, since no escape
    for them exists in XML 1.0; markup characters are escaped by the serializer. Cut to ``limit``."""
    return _NOT_XML_CHAR.sub("", value)[:limit]


def check_name(value: str, what: str = "ledger") -> str:
    """A ledger, party or company name exactly as Tally must match it: refused (never silently changed,
    which would post to another ledger) when empty, too long, or carrying a control character."""
    if not isinstance(value, str) or not value.strip():
        raise VoucherRefused("bad_name", f"the {what} name is empty")
    if len(value) > MAX_NAME:
        raise VoucherRefused("bad_name", f"the {what} name is longer than {MAX_NAME} characters")
    found = forbidden_character(value)
    if found is not None or _NOT_XML_CHAR.search(value):
        where = f" ({found[1]} at position {found[0]})" if found else ""
        raise VoucherRefused(
            "bad_name", f"the {what} name {value[:40]!r} has a character Tally cannot take{where}"
        )
    return value


def check_amount(value: Any) -> Decimal:
    """A leg's amount: a finite decimal above zero, whole paise, at most :data:`MAX_AMOUNT`."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise VoucherRefused("bad_amount", f"{str(value)[:40]!r} is not a decimal amount") from exc
    if not amount.is_finite() or amount <= 0 or amount > MAX_AMOUNT:
        raise VoucherRefused("bad_amount", f"an amount must be above 0 and at most {MAX_AMOUNT}")
    if amount != amount.quantize(CENT):
        raise VoucherRefused("bad_amount", f"{amount} has more than 2 decimal places")
    return amount.quantize(CENT)


def signed_amount(leg: Leg) -> Decimal:
    """The ``AMOUNT`` Tally wants: negative for a debit, positive for a credit."""
    amount = check_amount(leg.amount)
    return -amount if leg.side == "debit" else amount


def check_voucher(voucher: Voucher) -> None:
    """Everything :func:`build_import` refuses, before a byte is sent."""
    if voucher.voucher_type not in VOUCHER_TYPES:
        raise VoucherRefused("bad_voucher_type", f"{str(voucher.voucher_type)[:40]!r} is not a voucher type")
    if len(voucher.legs) < 2:
        raise VoucherRefused("unbalanced", "a voucher needs at least one debit and one credit leg")
    sides = {leg.side for leg in voucher.legs}
    if sides != {"debit", "credit"}:
        raise VoucherRefused("unbalanced", "a voucher needs at least one debit and one credit leg")
    for leg in voucher.legs:
        check_name(leg.ledger)
    total = sum((signed_amount(leg) for leg in voucher.legs), Decimal(0))
    if total != 0:
        debit = sum((leg.amount for leg in voucher.legs if leg.side == "debit"), Decimal(0))
        credit = sum((leg.amount for leg in voucher.legs if leg.side == "credit"), Decimal(0))
        raise VoucherRefused("unbalanced", f"debits {debit} and credits {credit} differ by {abs(total)}")
    if voucher.party_ledger is not None:
        check_name(voucher.party_ledger, "party ledger")
    if not 1900 <= voucher.day.year <= 9999:
        raise VoucherRefused("bad_date", "the voucher date is out of range")


def _sub(parent: Any, tag: str, value: str | None = None, **attributes: str) -> Any:
    node = etree.SubElement(parent, tag, attributes)
    if value is not None:
        node.text = value
    return node


def _envelope(request: str) -> tuple[Any, Any]:
    root = etree.Element("ENVELOPE")
    header = _sub(root, "HEADER")
    _sub(header, "TALLYREQUEST", request)
    return root, _sub(root, "BODY")


def _serialise(root: Any) -> bytes:
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return out


def build_import(company: str, vouchers: Sequence[Voucher]) -> bytes:
    """The import request for ``vouchers`` into ``company``; ``VoucherRefused`` if any is unfit."""
    check_name(company, "company")
    for voucher in vouchers:
        check_voucher(voucher)
    root, body = _envelope("Import Data")
    importing = _sub(body, "IMPORTDATA")
    desc = _sub(importing, "REQUESTDESC")
    _sub(desc, "REPORTNAME", "Vouchers")
    _sub(_sub(desc, "STATICVARIABLES"), "SVCURRENTCOMPANY", company)
    data = _sub(importing, "REQUESTDATA")
    for voucher in vouchers:
        message = _sub(data, "TALLYMESSAGE")
        node = _sub(
            message, "VOUCHER", REMOTEID=voucher.remote_id, VCHTYPE=voucher.voucher_type, ACTION="Create"
        )
        _sub(node, "DATE", tally_date(voucher.day))
        _sub(node, "GUID", voucher.remote_id)
        _sub(node, "VOUCHERTYPENAME", voucher.voucher_type)
        if voucher.number:
            _sub(node, "VOUCHERNUMBER", clean_text(voucher.number, MAX_NAME))
        if voucher.reference:
            _sub(node, "REFERENCE", clean_text(voucher.reference, MAX_NAME))
        if voucher.party_ledger:
            _sub(node, "PARTYLEDGERNAME", voucher.party_ledger)
        _sub(node, "NARRATION", clean_text(voucher.narration))
        for leg in voucher.legs:
            entry = _sub(node, "ALLLEDGERENTRIES.LIST")
            _sub(entry, "LEDGERNAME", leg.ledger)
            _sub(entry, "ISDEEMEDPOSITIVE", "Yes" if leg.side == "debit" else "No")
            _sub(entry, "AMOUNT", str(signed_amount(leg)))
    return _serialise(root)


def build_ledger_export(company: str) -> bytes:
    """The export request of the company's "List of Accounts", ledgers only, as XML."""
    check_name(company, "company")
    root, body = _envelope("Export Data")
    desc = _sub(_sub(body, "EXPORTDATA"), "REQUESTDESC")
    _sub(desc, "REPORTNAME", "List of Accounts")
    variables = _sub(desc, "STATICVARIABLES")
    _sub(variables, "SVCURRENTCOMPANY", company)
    _sub(variables, "SVEXPORTFORMAT", "$$SysName:XML")
    _sub(variables, "ACCOUNTTYPE", "Ledgers")
    return _serialise(root)


# -- Tally's answers -------------------------------------------------------------------------------

COUNTERS = ("CREATED", "ALTERED", "DELETED", "IGNORED", "COMBINED", "CANCELLED", "ERRORS", "EXCEPTIONS")


@dataclass(frozen=True)
class ImportResult:
    """The counters of Tally's import answer, and its LINEERROR texts in order."""

    counts: dict[str, int] = field(default_factory=dict)
    line_errors: tuple[str, ...] = ()
    last_voucher_id: str | None = None

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    @property
    def accepted(self) -> int:
        """Vouchers Tally holds after the import: created now, or altered (a REMOTEID it knew)."""
        return self.count("CREATED") + self.count("ALTERED")

    @property
    def rejected(self) -> bool:
        return bool(self.line_errors) or self.count("ERRORS") > 0 or self.count("EXCEPTIONS") > 0


def _parser() -> Any:
    # Tally's answer is remote input: no entities, no DTD, no network, no huge trees.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
    )


_CHAR_REF = re.compile(rb"&#(x[0-9a-fA-F]{1,8}|[0-9]{1,10});")


def _legal_reference(match: re.Match[bytes]) -> bytes:
    text = match.group(1).decode()
    code = int(text[1:], 16) if text.startswith("x") else int(text)
    legal = code < 0x110000 and not _NOT_XML_CHAR.match(chr(code))
    return match.group(0) if legal else b"&#xFDD0;"


def _root(data: bytes) -> Any:
    # Tally's exports are reported to carry character references XML 1.0 forbids (such as &#4; in
    # names; unconfirmed). Each becomes the noncharacter U+FDD0, which check_name refuses: the ledger
    # so named is skipped (we could not post to it by name anyway) and the rest of the answer is read.
    data = _CHAR_REF.sub(_legal_reference, data)
    try:
        root = etree.fromstring(data, parser=_parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise ResponseUnreadable(f"Tally's answer is not XML: {str(exc)[:200]}") from exc
    if root is None:
        raise ResponseUnreadable("Tally's answer is empty")
    return root


def _local(node: Any) -> str:
    tag = node.tag
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def parse_import_response(data: bytes) -> ImportResult:
    """Tally's answer to an import: ``<RESPONSE>`` (ERP 9 and Prime) or ``ENVELOPE/BODY/DATA/
    IMPORTRESULT`` (newer Prime releases) with the counters, LINEERROR elements anywhere.
    ``ResponseUnreadable`` when it holds no counter at all (e.g. an HTML error page)."""
    root = _root(data)
    counts: dict[str, int] = {}
    errors: list[str] = []
    last: str | None = None
    for node in root.iter():
        name = _local(node).upper()
        text = (node.text or "").strip()
        if name in COUNTERS and name not in counts:
            try:
                counts[name] = int(text or "0")
            except ValueError as exc:
                raise ResponseUnreadable(f"{name} is not a number: {text[:40]!r}") from exc
        elif name == "LINEERROR" and text:
            errors.append(clean_text(text, 500))
        elif name == "LASTVCHID" and text:
            last = clean_text(text, 40)
    if not counts and not errors:
        raise ResponseUnreadable("Tally's answer has no import result")
    return ImportResult(counts, tuple(errors), last)


@dataclass(frozen=True)
class LedgerInfo:
    name: str
    parent: str | None
    opening_balance: Decimal | None
    closing_balance: Decimal | None


def _decimal(text: str | None) -> Decimal | None:
    if not text or not text.strip():
        return None
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        return None
    return value if value.is_finite() and abs(value) <= MAX_AMOUNT else None


def parse_ledgers(data: bytes) -> list[LedgerInfo]:
    """The ledgers of a "List of Accounts" export: every ``LEDGER`` element, named by its ``NAME``
    attribute (or its ``NAME.LIST/NAME``). Names Tally could hold but we could not post to (control
    characters) are skipped. A ``LINEERROR`` answer (e.g. no such company) raises ``VoucherRefused``."""
    root = _root(data)
    ledgers: dict[str, LedgerInfo] = {}
    for node in root.iter():
        name_tag = _local(node).upper()
        if name_tag == "LINEERROR" and (node.text or "").strip():
            raise VoucherRefused("tally_error", clean_text(node.text.strip(), 500))
        if name_tag != "LEDGER":
            continue
        name = node.get("NAME")
        if not name:
            found = node.xpath("./*[local-name()='NAME.LIST']/*[local-name()='NAME']")
            name = found[0].text if found else None
        try:
            name = check_name(name or "")
        except VoucherRefused:
            continue

        def child(tag: str, of: Any = node) -> str | None:
            found = of.xpath(f"./*[local-name()='{tag}']")
            return str(found[0].text) if found and found[0].text is not None else None

        parent = child("PARENT")
        ledgers[name] = LedgerInfo(
            name=name,
            parent=clean_text(parent, MAX_NAME) if parent else None,
            opening_balance=_decimal(child("OPENINGBALANCE")),
            closing_balance=_decimal(child("CLOSINGBALANCE")),
        )
    return sorted(ledgers.values(), key=lambda ledger: ledger.name)
