"""GSTR-1 (the monthly statement of outward supplies) built from a period's documents. No I/O but
temporary files: each document's entry and each finished part are written to one as they are made
(see ``_Spill`` and ``Gstr1Return``), so a month's memory does not grow with its size.

What goes where (field names as the GSTN returns offline tool writes them; india-gst.md section 2):

* ``b2b``   invoices to a registered buyer (buyer GSTIN), incl. SEZ (inv_typ SEWP/SEWOP) and deemed
  exports (DE); regular ones are ``R``. ``rchrg`` Y when the buyer pays the tax (reverse charge).
* ``b2cl``  invoices to an unregistered buyer, inter-state, with an invoice value above the threshold in
  force on the invoice date: Rs 2,50,000 up to 2024-07-31, Rs 1,00,000 from 2024-08-01 (CGST Rules
  rule 59(4) as amended by Notification 12/2024-Central Tax of 10 July 2024, in force 1 Aug 2024).
* ``b2cs``  every other sale to an unregistered buyer, summarised per (supply type, place of supply,
  rate, e-commerce operator); notes against such sales are netted into the same rows.
* ``exp``   exports, with (WPAY) or without (WOPAY) payment of IGST, with the shipping bill when known.
* ``cdnr`` / ``cdnur``  credit (C) and debit (D) notes to registered / unregistered buyers. ``cdnur``
  only takes notes on B2CL-size inter-state sales and on exports (typ B2CL / EXPWP / EXPWOP); a note on
  a small B2C sale adjusts ``b2cs`` instead, as the GSTN form has no other place for it.
* ``nil``   nil-rated, exempt and non-GST lines, per INTRB2B / INTRAB2B / INTRB2C / INTRAB2C.
* ``hsn``   per HSN, unit and rate, split into ``hsn_b2b`` and ``hsn_b2c`` (the split GSTN made mandatory
  in 2025 (GSTN's Table 12 advisory, phase III), net of notes.
* ``doc_issue``  numbers issued per series: invoices (doc_num 1), debit notes (4), credit notes (5).
* Amendments (``b2ba``, ``b2cla``, ``b2csa``, ``cdnra``, ``cdnura``, ``expa``): a change to a document
  of an already filed period, reported in the next open period against the original's number and date.

Cancelled documents are no supply (left out of every section) but are counted in ``doc_issue``.
Documents with an IRN are auto-populated at GSTN from the IRP; they are still carried here (GSTN
reconciles both) and counted in the summary.

Not built: advances received (``at``) and adjusted (``atadj``), tax paid on advances (``txpd``),
supplies through e-commerce operators under section 52/9(5) (``supeco``, Table 14/15): the engine
records no advances and no operator-side sales. See docs/gst.md, "GSTR-1 sections".
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from itertools import chain
from typing import Any

import orjson

Day = date  # the type, for annotations inside SupplyDocument (whose field ``date`` hides it)

VERSION = "GST3.2.1"
"""The ``version`` the returns offline tool writes at the top of its JSON (GST3.x.y series)."""

ITEM_LIMIT = 19_000
"""Line items per upload: the returns offline tool takes up to 19,000 (GSTN offline tool FAQ); a larger
return is uploaded as several files."""

B2CL_CHANGE = date(2024, 8, 1)
B2CL_LIMIT_BEFORE = Decimal("250000")
B2CL_LIMIT_FROM = Decimal("100000")

CENT = Decimal("0.01")
ZERO = Decimal("0")

DOC_NUM = {"invoice": 1, "debit_note": 4, "credit_note": 5}
"""GSTR-1 Table 13 document kinds: 1 invoices for outward supply, 4 debit notes, 5 credit notes."""

SECTIONS = ("b2b", "b2cl", "b2cs", "exp", "cdnr", "cdnur", "nil")
AMENDMENT_SECTIONS = {
    "b2b": "b2ba",
    "b2cl": "b2cla",
    "b2cs": "b2csa",
    "exp": "expa",
    "cdnr": "cdnra",
    "cdnur": "cdnura",
}
_INV_TYP = {"B2B": "R", "SEZWP": "SEWP", "SEZWOP": "SEWOP", "DEXP": "DE"}
EXPORTS = ("EXPWP", "EXPWOP")


@dataclass(slots=True)
class SupplyLine:
    line_no: int
    hsn: str
    description: str
    unit: str | None
    quantity: Decimal
    taxable_value: Decimal
    gst_rate: Decimal
    igst: Decimal = ZERO
    cgst: Decimal = ZERO
    sgst: Decimal = ZERO
    cess: Decimal = ZERO
    supply_category: str = "taxable"  # taxable | nil | exempt | non_gst


@dataclass(frozen=True, slots=True)
class ExportDetails:
    shipping_bill_number: str | None = None
    shipping_bill_date: date | None = None
    port_code: str | None = None


@dataclass(slots=True)
class SupplyDocument:
    """One invoice, credit note or debit note as the return needs it. Amounts on notes are positive;
    ``document_type`` says which way they go. Not frozen, only for speed (a frozen dataclass sets each
    field through object.__setattr__; a month of 100,000 documents is built at once): treat as a value."""

    document_id: str
    number: str
    document_type: str  # invoice | credit_note | debit_note
    date: date
    supply_type: str  # B2B | B2C | SEZWP | SEZWOP | EXPWP | EXPWOP | DEXP
    seller_gstin: str
    buyer_gstin: str | None
    place_of_supply: str
    intra_state: bool
    total: Decimal
    lines: tuple[SupplyLine, ...]
    buyer_name: str = ""
    reverse_charge: bool = False
    ecommerce_gstin: str | None = None
    export: ExportDetails | None = None
    cancelled: bool = False
    e_invoiced: bool = False
    original_number: str | None = None
    original_date: Day | None = None
    original_value: Decimal | None = None
    """The original invoice's value (a note's section depends on it: B2CL or B2CS)."""
    note_reason: str | None = None


@dataclass(frozen=True)
class Amendment:
    """A document of a filed period (``original_period``, MMYYYY) changed since: ``original`` as it was
    filed, ``amended`` as it is now (``amended.cancelled``: amended to zero, as GSTN allows no deletion
    once filed)."""

    original_period: str
    original: SupplyDocument
    amended: SupplyDocument


# Spilled data stays in memory up to this size, then goes to disk: a small return (most tests, most
# traders) never touches the disk.
SPOOL_BYTES = 1 << 20


@dataclass
class Gstr1Return:
    """The built return. Its parts' exact JSON texts (``dumps``) are kept in a temporary file as
    they were finished, not as objects: the bench's month of 200,000 documents is 35 MB of JSON, and
    its entries were about 1 KB of Python objects per document when held as dicts (tracemalloc;
    docs/performance.md, bench-gstr1 and gstr1-memory)."""

    summary: dict[str, Any]
    content_hash: str
    part_hashes: list[str]
    """SHA-256 of each part's text (``tax_return_parts``' key), in order."""
    _file: Any = field(repr=False)
    _spans: list[tuple[int, int]] = field(repr=False)

    def texts(self) -> Iterator[bytes]:
        """Each part's exact JSON text, in order, one at a time."""
        for offset, length in self._spans:
            self._file.seek(offset)
            yield self._file.read(length)

    @property
    def parts(self) -> list[dict[str, Any]]:
        """The parts as objects (amounts as Decimals; a whole-number rate as an int), for tests and
        small returns: ``dumps`` of each gives its text back byte for byte."""
        return [json.loads(t, parse_float=Decimal) for t in self.texts()]


# --- classification ------------------------------------------------------------------------------


def b2cl_limit(day: date) -> Decimal:
    """The invoice value above which an inter-state sale to an unregistered buyer is B2CL."""
    return B2CL_LIMIT_BEFORE if day < B2CL_CHANGE else B2CL_LIMIT_FROM


def _is_note(doc: SupplyDocument) -> bool:
    return doc.document_type in ("credit_note", "debit_note")


def classify(doc: SupplyDocument) -> str:
    """The section a (not cancelled) document's taxable lines belong in."""
    registered = bool(doc.buyer_gstin) and doc.supply_type not in EXPORTS
    if _is_note(doc):
        if registered:
            return "cdnr"
        if doc.supply_type in EXPORTS:
            return "cdnur"
        value = doc.original_value if doc.original_value is not None else doc.total
        if not doc.intra_state and value > b2cl_limit(doc.original_date or doc.date):
            return "cdnur"
        return "b2cs"
    if doc.supply_type in EXPORTS:
        return "exp"
    if registered:
        return "b2b"
    if not doc.intra_state and doc.total > b2cl_limit(doc.date):
        return "b2cl"
    return "b2cs"


# --- formatting ----------------------------------------------------------------------------------


_DAYS: dict[date, str] = {}


def _d(day: date) -> str:
    # One string per day: a month's entries share about 31 (4 MB fewer strings at 100,000 documents).
    found = _DAYS.get(day)
    if found is None:
        found = day.strftime("%d-%m-%Y")
        if len(_DAYS) < 4096:  # bounded whatever the input; a few years of days
            _DAYS[day] = found
    return found


ZERO_CENT = Decimal("0.00")


def _m(value: Decimal) -> Decimal:
    # Zero amounts are most of a return's tax fields: one shared object (and never "-0.00").
    return value.quantize(CENT) if value else ZERO_CENT


def _s(value: Decimal) -> str:
    """An amount of the summary: a decimal string, as every amount the API shows."""
    return str(_m(value))


_RATES: dict[Decimal, Decimal] = {}


def _rate(value: Decimal) -> Decimal:
    # 18 not 18.00: the offline tool writes the rate as a plain number (0.25, 3, 18).
    found = _RATES.get(value)
    if found is None:
        normal = value.normalize()
        found = normal.quantize(Decimal(1)) if normal == normal.to_integral() else normal
        if len(_RATES) < 64:  # a handful of rates exist; bounded whatever the input
            _RATES[value] = found
    return found


def _sign(doc: SupplyDocument) -> int:
    return -1 if doc.document_type == "credit_note" else 1


def _taxable_lines(doc: SupplyDocument) -> list[SupplyLine]:
    if doc.supply_type in EXPORTS:
        return list(doc.lines)  # an export is zero-rated whatever the goods: every line is in exp
    return [x for x in doc.lines if x.supply_category == "taxable"]


@dataclass(slots=True)
class _Sums:
    txval: Decimal = ZERO
    iamt: Decimal = ZERO
    camt: Decimal = ZERO
    samt: Decimal = ZERO
    csamt: Decimal = ZERO

    def add(self, line: SupplyLine, sign: int = 1) -> None:
        self.txval += sign * line.taxable_value
        self.iamt += sign * line.igst
        self.camt += sign * line.cgst
        self.samt += sign * line.sgst
        self.csamt += sign * line.cess


def _items(lines: Iterable[SupplyLine], *, intra: bool, wrapped: bool = True) -> list[dict[str, Any]]:
    """Rate-wise items of one document: GSTN takes one item per rate per document."""
    per_rate: dict[Decimal, _Sums] = defaultdict(_Sums)
    for line in lines:
        per_rate[line.gst_rate].add(line)
    items = []
    for num, (rate, s) in enumerate(sorted(per_rate.items()), start=1):
        det: dict[str, Any] = {"txval": _m(s.txval), "rt": _rate(rate)}
        if intra:
            det |= {"camt": _m(s.camt), "samt": _m(s.samt)}
        else:
            det["iamt"] = _m(s.iamt)
        det["csamt"] = _m(s.csamt)
        items.append({"num": num, "itm_det": det} if wrapped else det)
    return items


def _zeroed(doc: SupplyDocument) -> SupplyDocument:
    """A cancelled document as an amendment reports it: every amount zero."""
    lines = tuple(
        SupplyLine(
            x.line_no, x.hsn, x.description, x.unit, ZERO, ZERO, x.gst_rate, supply_category=x.supply_category
        )
        for x in doc.lines
    )
    return replace(doc, lines=lines, total=ZERO)


def _invoice_entry(doc: SupplyDocument, section: str) -> dict[str, Any]:
    lines = _taxable_lines(doc)
    if section == "exp":
        entry: dict[str, Any] = {"inum": doc.number, "idt": _d(doc.date), "val": _m(doc.total)}
        if doc.export is not None:
            if doc.export.port_code:
                entry["sbpcode"] = doc.export.port_code
            if doc.export.shipping_bill_number:
                entry["sbnum"] = doc.export.shipping_bill_number
            if doc.export.shipping_bill_date:
                entry["sbdt"] = _d(doc.export.shipping_bill_date)
        entry["itms"] = _items(lines, intra=False, wrapped=False)
        return entry
    if section in ("b2b", "b2cl"):
        entry = {"inum": doc.number, "idt": _d(doc.date), "val": _m(doc.total)}
        if section == "b2b":
            entry |= {
                "pos": doc.place_of_supply,
                "rchrg": "Y" if doc.reverse_charge else "N",
                "inv_typ": _INV_TYP.get(doc.supply_type, "R"),
            }
        if doc.ecommerce_gstin:
            entry["etin"] = doc.ecommerce_gstin
        entry["itms"] = _items(lines, intra=doc.intra_state)
        return entry
    # notes
    entry = {
        "ntty": "C" if doc.document_type == "credit_note" else "D",
        "nt_num": doc.number,
        "nt_dt": _d(doc.date),
        "val": _m(doc.total),
    }
    if section == "cdnr":
        entry |= {
            "pos": doc.place_of_supply,
            "rchrg": "Y" if doc.reverse_charge else "N",
            "inv_typ": _INV_TYP.get(doc.supply_type, "R"),
        }
    else:
        entry = {"typ": doc.supply_type if doc.supply_type in EXPORTS else "B2CL", **entry}
        if doc.supply_type not in EXPORTS:
            entry["pos"] = doc.place_of_supply
    entry["itms"] = _items(lines, intra=doc.intra_state)
    return entry


def _original_ref(section: str, original: SupplyDocument) -> dict[str, Any]:
    if section in ("cdnr", "cdnur"):
        return {"ont_num": original.number, "ont_dt": _d(original.date)}
    return {"oinum": original.number, "oidt": _d(original.date)}


# --- the summary sections ------------------------------------------------------------------------


B2csKey = tuple[str, str, str, str, Decimal]
_NIL_FIELDS = {"nil": "nil_amt", "exempt": "expt_amt", "non_gst": "ngsup_amt"}
_NIL_ORDER = ("INTRB2B", "INTRAB2B", "INTRB2C", "INTRAB2C")


def _b2cs_key(doc: SupplyDocument, line: SupplyLine) -> B2csKey:
    return (
        "INTRA" if doc.intra_state else "INTER",
        doc.place_of_supply,
        "E" if doc.ecommerce_gstin else "OE",
        doc.ecommerce_gstin or "",
        line.gst_rate,
    )


def _b2cs_row(key: B2csKey, s: _Sums) -> dict[str, Any]:
    sply_ty, pos, typ, etin, rate = key
    row: dict[str, Any] = {"sply_ty": sply_ty, "pos": pos, "typ": typ}
    if etin:
        row["etin"] = etin
    row |= {"rt": _rate(rate), "txval": _m(s.txval)}
    if sply_ty == "INTRA":
        row |= {"camt": _m(s.camt), "samt": _m(s.samt)}
    else:
        row["iamt"] = _m(s.iamt)
    row["csamt"] = _m(s.csamt)
    return row


def _uqc(line: SupplyLine) -> str:
    # Services have no unit of quantity: GSTN takes "NA" for SAC codes (chapter 99).
    if line.hsn.startswith("99"):
        return "NA"
    return (line.unit or "OTH").upper()


@dataclass(slots=True)
class _HsnRow:
    desc: str
    qty: Decimal = ZERO
    sums: _Sums | None = None


_SERIAL = re.compile(r"^(.*?)([0-9]+)$")  # ASCII digits only: int() would also read other scripts


def _series(number: str) -> tuple[str, int | None]:
    """(prefix, serial): "INV/24-25/0007" -> ("INV/24-25/", 7); no trailing digits -> serial None."""
    found = _SERIAL.match(number)
    if not found:
        return number, None
    return found.group(1), int(found.group(2))


def doc_issue(docs: Iterable[SupplyDocument]) -> dict[str, Any]:
    """Table 13: per kind of document and per series, the numbers used, cancelled and net.

    A series is the number without its trailing digits ("INV-2026-" of "INV-2026-014"); zero padding is
    not part of it (A9 is followed by A10). A series is reported as runs of consecutive numbers: a gap
    (a number never issued) starts a new row, because GSTN reads ``totnum`` as every number from
    ``from`` to ``to`` having been used; a missing number is neither issued nor cancelled and must not
    be reported as either. Cancelled numbers stay in their run and are counted in ``cancel``;
    ``net_issue = totnum - cancel``. A number with no trailing digits, or one whose serial another
    number of its series already has (A10 and A010), is a row of its own."""
    used: dict[int, _Numbers] = {}
    for d in docs:
        _numbers_of(used, DOC_NUM.get(d.document_type, 1)).add(d.number, d.cancelled)
    return _doc_issue(used)


class _Numbers:
    """The numbers of one kind of document used in a month, in the order they came, and which of
    them were cancelled: a list and a bytearray, not a (kind, number, cancelled) tuple per document
    (72 bytes each: 7 MB of a 100,000-document month, tracemalloc)."""

    __slots__ = ("cancelled", "numbers")

    def __init__(self) -> None:
        self.numbers: list[str] = []
        self.cancelled = bytearray()

    def add(self, number: str, cancelled: bool) -> None:
        self.numbers.append(number)
        self.cancelled.append(cancelled)


def _numbers_of(used: dict[int, _Numbers], kind: int) -> _Numbers:
    found = used.get(kind)
    if found is None:
        found = used[kind] = _Numbers()
    return found


def _doc_issue(used: Mapping[int, _Numbers]) -> dict[str, Any]:
    doc_det = []
    for kind in sorted(used):
        numbers, cancelled = used[kind].numbers, used[kind].cancelled
        # Shortest first, then by text, equal numbers in the order they came (the first takes its
        # serial, a later one is loose): two stable sorts of positions, so that no (length, number)
        # key is made per document.
        order = sorted(range(len(numbers)), key=numbers.__getitem__)
        order.sort(key=lambda i: len(numbers[i]))
        series: dict[str, dict[int, int]] = defaultdict(dict)
        loose: list[int] = []
        for i in order:
            prefix, serial = _series(numbers[i])
            if serial is None or serial in series[prefix]:
                loose.append(i)
            else:
                series[prefix][serial] = i
        del order
        runs: list[list[int]] = []
        for _, taken in sorted(series.items()):
            run: list[int] = []
            previous: int | None = None
            for serial in sorted(taken):
                if previous is not None and serial != previous + 1:
                    runs.append(run)
                    run = []
                run.append(taken[serial])
                previous = serial
            if run:
                runs.append(run)
        loose.sort(key=lambda i: (numbers[i], cancelled[i]))
        runs.extend([i] for i in loose)
        rows = []
        for num, run in enumerate(runs, start=1):
            cancelled_count = sum(cancelled[i] for i in run)
            rows.append(
                {
                    "num": num,
                    "from": numbers[run[0]],
                    "to": numbers[run[-1]],
                    "totnum": len(run),
                    "cancel": cancelled_count,
                    "net_issue": len(run) - cancelled_count,
                }
            )
        doc_det.append({"doc_num": kind, "docs": rows})
    return {"doc_det": doc_det}


# --- the whole return ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Unit:
    """One piece of the return that must stay whole in one upload, with its line-item count."""

    section: str
    group: tuple[str, str] | None  # (key name, value): b2b's ctin, b2cl's pos, exp's exp_typ
    entry: Any  # a dict, a list of rows, or a document's entry as JSON (orjson.Fragment)
    items: int


class _Spill:
    """One section's document entries, as JSON, in a temporary file in the order they came: one line
    per document, ``header TAB entry``, the header a JSON array of the document's place in its section
    (date ordinal, number, document_id), its group and its item count. The entry is never parsed
    again (JSON numbers would come back as floats); it goes into its part as an ``orjson.Fragment``.

    A section is reported by (date, number, document_id). When the documents came in that order (the
    projection's stream: ``iter_supplies`` orders so, in the C collation the stack's database uses),
    the file is read back as it is and nothing per document stays in memory; otherwise only the
    headers are read to sort, and the entries are read at their offsets."""

    def __init__(self, section: str) -> None:
        self.section = section
        # Outlives this call: read back when the parts are packed, closed by build_gstr1.
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        self.last: tuple[int, str, str] | None = None
        self.ordered = True

    def add(
        self, order: tuple[int, str, str], group: tuple[str, str] | None, entry: bytes, items: int
    ) -> None:
        if self.last is not None and order < self.last:
            self.ordered = False
        self.last = order
        key, value = group if group is not None else (None, None)
        self.file.write(orjson.dumps([*order, key, value, items]) + b"\t" + entry)
        self.file.write(b"\n")  # orjson escapes control characters in strings: no raw newline inside

    def units(self) -> Iterator[_Unit]:
        self.file.seek(0)
        if self.ordered:
            for line in self.file:
                yield self._unit(line)
            return
        places: list[tuple[tuple[int, str, str], int]] = []
        offset = 0
        for line in self.file:
            header = orjson.loads(line[: line.index(b"\t")])
            places.append(((header[0], header[1], header[2]), offset))
            offset += len(line)
        places.sort(key=lambda p: p[0])  # stable, as the sort of the units held in memory was
        for _, at in places:
            self.file.seek(at)
            yield self._unit(self.file.readline())

    def _unit(self, line: bytes) -> _Unit:
        tab = line.index(b"\t")
        _day, _number, _id, key, value, items = orjson.loads(line[:tab])
        group = None if key is None else (key, value)
        return _Unit(self.section, group, orjson.Fragment(line[tab + 1 : -1]), items)

    def close(self) -> None:
        self.file.close()


@dataclass(slots=True)
class _SectionTotals:
    count: int = 0
    value: Decimal = ZERO
    sums: _Sums | None = None


class _Month:
    """The return, built in one pass over the period's documents: each document is classified and
    written as its entry, or added to the summary tables, then no longer needed. A month of 100,000
    documents can therefore be streamed from the projection (``iter_supplies``) instead of being
    held whole next to the return built from it."""

    def __init__(self) -> None:
        # Each document's entry is written out as soon as it is made (``_Spill``): held as dicts
        # until the month was read, they were most of a 100,000-document month's peak (about
        # 100 MB, tracemalloc; docs/performance.md bench-gstr1).
        self.spills: dict[str, _Spill] = {}
        self.totals: dict[str, _SectionTotals] = {}
        self.b2cs: dict[B2csKey, _Sums] = defaultdict(_Sums)
        self.b2cs_documents = 0
        self.nil: dict[str, dict[str, Decimal]] = {}
        self.hsn: dict[str, dict[tuple[str, str, Decimal], _HsnRow]] = {"hsn_b2b": {}, "hsn_b2c": {}}
        self.numbers_used: dict[int, _Numbers] = {}
        self.documents = 0
        self.cancelled = 0
        self.e_invoiced = 0

    def add(self, doc: SupplyDocument) -> None:
        self.documents += 1
        _numbers_of(self.numbers_used, DOC_NUM.get(doc.document_type, 1)).add(doc.number, doc.cancelled)
        if doc.cancelled:
            self.cancelled += 1
            return
        self.e_invoiced += doc.e_invoiced
        self._nil(doc)
        self._hsn(doc)
        lines = _taxable_lines(doc)
        # A document of nil/exempt/non-GST lines only is reported in ``nil`` (and hsn, doc_issue)
        # alone: a b2b or note entry without items would be refused by the portal.
        if not lines:
            return
        section = classify(doc)
        sign = _sign(doc)
        if section == "b2cs":
            self.b2cs_documents += 1
            for line in lines:
                self.b2cs[_b2cs_key(doc, line)].add(line, sign)
            return
        totals = self.totals.get(section)
        if totals is None:
            totals = self.totals[section] = _SectionTotals(sums=_Sums())
        totals.count += 1
        totals.value += doc.total
        assert totals.sums is not None
        for line in lines:
            totals.sums.add(line)
        entry = _invoice_entry(doc, section)
        spill = self.spills.get(section)
        if spill is None:
            spill = self.spills[section] = _Spill(section)
        spill.add(
            (doc.date.toordinal(), doc.number, doc.document_id),
            _group(section, doc),
            dumps(entry),
            len(entry["itms"]),
        )

    def _nil(self, doc: SupplyDocument) -> None:
        if doc.supply_type in EXPORTS:
            return
        sply_ty = ("INTRA" if doc.intra_state else "INTR") + ("B2B" if doc.buyer_gstin else "B2C")
        for line in doc.lines:
            name = _NIL_FIELDS.get(line.supply_category)
            if name is not None:
                row = self.nil.setdefault(sply_ty, dict.fromkeys(_NIL_FIELDS.values(), ZERO))
                row[name] += _sign(doc) * line.taxable_value

    def _hsn(self, doc: SupplyDocument) -> None:
        registered = bool(doc.buyer_gstin) and doc.supply_type not in EXPORTS
        table = self.hsn["hsn_b2b" if registered else "hsn_b2c"]
        sign = _sign(doc)
        for line in doc.lines:
            uqc = _uqc(line)
            key = (line.hsn, uqc, line.gst_rate)
            row = table.get(key)
            if row is None:
                row = table[key] = _HsnRow(line.description[:30], ZERO, _Sums())
            if uqc != "NA":
                row.qty += sign * line.quantity
            assert row.sums is not None
            row.sums.add(line, sign)

    def hsn_tables(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for name, table in self.hsn.items():
            rows = []
            for num, ((hsn, uqc, rate), row) in enumerate(sorted(table.items()), start=1):
                s = row.sums
                assert s is not None
                rows.append(
                    {
                        "num": num,
                        "hsn_sc": hsn,
                        "desc": row.desc,
                        "uqc": uqc,
                        "qty": _m(row.qty),
                        "rt": _rate(rate),
                        "txval": _m(s.txval),
                        "iamt": _m(s.iamt),
                        "camt": _m(s.camt),
                        "samt": _m(s.samt),
                        "csamt": _m(s.csamt),
                    }
                )
            out[name] = rows
        return out

    def nil_rows(self) -> list[dict[str, Any]]:
        return [
            {"sply_ty": t, **{k: _m(v) for k, v in self.nil[t].items()}} for t in _NIL_ORDER if t in self.nil
        ]


def _group(section: str, doc: SupplyDocument) -> tuple[str, str] | None:
    if section in ("b2b", "cdnr"):
        return ("ctin", doc.buyer_gstin or "")
    if section == "b2cl":
        return ("pos", doc.place_of_supply)
    if section == "exp":
        return ("exp_typ", "WPAY" if doc.supply_type == "EXPWP" else "WOPAY")
    return None


def _units(
    month: _Month,
    documents: Iterable[SupplyDocument],
    amendments: Sequence[Amendment],
    filed_b2cs: Mapping[str, Sequence[Mapping[str, Any]]],
) -> tuple[Iterator[_Unit], dict[str, Any]]:
    """The return's units in upload order (the documents' units are read back from their spills
    while the parts are packed), and its summary."""
    for doc in documents:
        month.add(doc)

    units: list[_Unit] = []
    # Summary tables first, each whole in the first part: GSTN replaces a summary table on upload, so
    # it must not be spread over files.
    b2cs = [_b2cs_row(k, s) for k, s in sorted(month.b2cs.items())]
    if b2cs:
        units.append(_Unit("b2cs", None, b2cs, len(b2cs)))
    nil = month.nil_rows()
    if nil:
        units.append(_Unit("nil", None, {"inv": nil}, len(nil)))
    hsn = month.hsn_tables()
    hsn_count = len(hsn["hsn_b2b"]) + len(hsn["hsn_b2c"])
    if hsn_count:
        units.append(_Unit("hsn", None, hsn, hsn_count))
    issue = _doc_issue(month.numbers_used)
    if issue["doc_det"]:
        units.append(_Unit("doc_issue", None, issue, sum(len(d["docs"]) for d in issue["doc_det"])))
    # Documents by date and number in each section, whatever order they came in (_Spill.units).
    spilled = [month.spills[s].units() for s in ("b2b", "b2cl", "exp", "cdnr", "cdnur") if s in month.spills]
    amended: list[_Unit] = []

    amended_counts: dict[str, int] = defaultdict(int)
    b2csa_deltas: dict[tuple[str, tuple[str, str, str, str]], dict[Decimal, _Sums]] = defaultdict(
        lambda: defaultdict(_Sums)
    )
    for change in sorted(amendments, key=lambda a: (a.original_period, a.original.date, a.original.number)):
        section = classify(change.original)
        amended_doc = _zeroed(change.amended) if change.amended.cancelled else change.amended
        name = AMENDMENT_SECTIONS[section]
        amended_counts[name] += 1
        if section == "b2cs":
            for doc, sign in ((change.original, -1), (amended_doc, 1)):
                for line in _taxable_lines(doc):
                    sply_ty, pos, typ, etin, rate = _b2cs_key(doc, line)
                    b2csa_deltas[(change.original_period, (sply_ty, pos, typ, etin))][rate].add(
                        line, sign * _sign(doc)
                    )
            continue
        entry = {**_original_ref(section, change.original), **_invoice_entry(amended_doc, section)}
        amended.append(_Unit(name, _group(section, amended_doc), entry, len(entry["itms"])))

    # B2CSA replaces a filed B2CS row of the original month with its revised values: the filed row
    # (from the filed return's JSON, ``filed_b2cs``) plus what the changed documents moved.
    for (omon, (sply_ty, pos, typ, etin)), per_rate in sorted(b2csa_deltas.items()):
        filed = {
            Decimal(str(r["rt"])): r
            for r in filed_b2cs.get(omon, ())
            if (r.get("sply_ty"), r.get("pos"), r.get("typ"), r.get("etin", "")) == (sply_ty, pos, typ, etin)
        }
        itms = []
        for rate in sorted(per_rate):
            s = per_rate[rate]
            base = filed.get(rate, {})
            revised = {"rt": _rate(rate), "txval": _m(s.txval + Decimal(str(base.get("txval", 0))))}
            if sply_ty == "INTRA":
                revised["camt"] = _m(s.camt + Decimal(str(base.get("camt", 0))))
                revised["samt"] = _m(s.samt + Decimal(str(base.get("samt", 0))))
            else:
                revised["iamt"] = _m(s.iamt + Decimal(str(base.get("iamt", 0))))
            revised["csamt"] = _m(s.csamt + Decimal(str(base.get("csamt", 0))))
            itms.append(revised)
        row: dict[str, Any] = {"omon": omon, "sply_ty": sply_ty, "pos": pos, "typ": typ}
        if etin:
            row["etin"] = etin
        row["itms"] = itms
        amended.append(_Unit("b2csa", None, row, len(itms)))

    return chain(units, *spilled, amended), _summary(month, b2cs, nil, hsn, issue, amended_counts)


def _summary(
    month: _Month,
    b2cs: list[dict[str, Any]],
    nil: list[dict[str, Any]],
    hsn: dict[str, list[dict[str, Any]]],
    issue: dict[str, Any],
    amended_counts: Mapping[str, int],
) -> dict[str, Any]:
    per_section: dict[str, Any] = {}
    for name in ("b2b", "b2cl", "exp", "cdnr", "cdnur"):
        totals = month.totals.get(name) or _SectionTotals(sums=_Sums())
        s = totals.sums
        assert s is not None
        per_section[name] = {
            "count": totals.count,
            "value": _s(totals.value),
            "txval": _s(s.txval),
            "iamt": _s(s.iamt),
            "camt": _s(s.camt),
            "samt": _s(s.samt),
            "csamt": _s(s.csamt),
        }
    b2cs_sums = {
        k: _s(sum((r.get(k, ZERO) for r in b2cs), ZERO)) for k in ("txval", "iamt", "camt", "samt", "csamt")
    }
    per_section["b2cs"] = {"count": len(b2cs), "documents": month.b2cs_documents, **b2cs_sums}
    per_section["nil"] = {
        "count": len(nil),
        **{k: _s(sum((r[k] for r in nil), ZERO)) for k in ("nil_amt", "expt_amt", "ngsup_amt")},
    }
    per_section["hsn"] = {"hsn_b2b": len(hsn["hsn_b2b"]), "hsn_b2c": len(hsn["hsn_b2c"])}
    per_section["doc_issue"] = {
        "totnum": sum(r["totnum"] for d in issue["doc_det"] for r in d["docs"]),
        "cancel": sum(r["cancel"] for d in issue["doc_det"] for r in d["docs"]),
        "net_issue": sum(r["net_issue"] for d in issue["doc_det"] for r in d["docs"]),
    }
    for name, count in sorted(amended_counts.items()):
        per_section[name] = {"count": count}
    return {
        "documents": month.documents,
        "cancelled": month.cancelled,
        "e_invoiced": month.e_invoiced,
        "sections": per_section,
    }


_PART_ORDER = (
    "b2b",
    "b2ba",
    "b2cl",
    "b2cla",
    "b2cs",
    "b2csa",
    "cdnr",
    "cdnra",
    "cdnur",
    "cdnura",
    "exp",
    "expa",
    "nil",
    "hsn",
    "doc_issue",
)


def _pack(
    gstin: str, period: str, units: Iterable[_Unit], limit: int
) -> Iterator[tuple[dict[str, Any], int]]:
    """Units into as few uploads as the item limit allows, in order; a unit is never split (one
    document's items, or one summary table, stay in one file). Each file with its item count, as
    soon as it is full: only one file's units are held at a time."""
    chunk: list[_Unit] = []
    used = 0
    for unit in units:
        if chunk and used + unit.items > limit:
            yield _file(gstin, period, chunk), used
            chunk = []
            used = 0
        chunk.append(unit)
        used += unit.items
    yield _file(gstin, period, chunk), used  # a month without documents is one file with no sections


def _file(gstin: str, period: str, chunk: Sequence[_Unit]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    # Per section, group value -> its group (b2b's buyers, b2cl's states, exp's types).
    index: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for unit in chunk:
        if unit.group is None:
            if unit.section in ("b2cs", "b2csa", "cdnur", "cdnura"):
                rows = unit.entry if isinstance(unit.entry, list) else [unit.entry]
                body.setdefault(unit.section, []).extend(rows)
            else:
                body[unit.section] = unit.entry
            continue
        key, value = unit.group
        inner = "nt" if unit.section in ("cdnr", "cdnra") else "inv"
        found = index[unit.section].get(value)
        if found is None:
            found = index[unit.section][value] = {key: value, inner: []}
            body.setdefault(unit.section, []).append(found)
        found[inner].append(unit.entry)
    file = {"gstin": gstin, "fp": period, "version": VERSION, "hash": ""}
    file |= {name: body[name] for name in _PART_ORDER if name in body}
    file["hash"] = part_hash(file)
    return file


def build_gstr1(
    gstin: str,
    period: str,
    documents: Iterable[SupplyDocument],
    *,
    amendments: Sequence[Amendment] = (),
    filed_b2cs: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    item_limit: int = ITEM_LIMIT,
) -> Gstr1Return:
    """The return of ``gstin`` for ``period`` (MMYYYY) from the period's documents (cancelled ones
    included: they count in doc_issue), in any order; read once, so an iterator streamed from the
    projection (``projections.gst_outward_supplies.iter_supplies``) does. ``filed_b2cs``: per filed
    period, its filed ``b2cs`` rows, which a B2CSA row revises (without them the revised row holds
    only what changed). Each part is written out as its JSON text as soon as it is full."""
    month = _Month()
    # Outlives this call: the returned Gstr1Return reads its parts from it (closed when collected).
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    try:
        units, summary = _units(month, documents, amendments, filed_b2cs or {})
        digest = hashlib.sha256()
        parts_summary: list[dict[str, Any]] = []
        hashes: list[str] = []
        spans: list[tuple[int, int]] = []
        offset = 0
        for n, (part, items) in enumerate(_pack(gstin, period, units, item_limit), start=1):
            parts_summary.append(
                {"part": n, "items": items, "sections": [k for k in part if k not in _PART_HEAD]}
            )
            text = dumps(part)
            del part
            digest.update(text)
            hashes.append(hashlib.sha256(text).hexdigest())
            out.write(text)
            spans.append((offset, len(text)))
            offset += len(text)
    except BaseException:
        out.close()
        raise
    finally:
        for spill in month.spills.values():
            spill.close()
    summary["parts"] = parts_summary
    return Gstr1Return(summary, digest.hexdigest(), hashes, out, spans)


_PART_HEAD = ("gstin", "fp", "version", "hash")


def part_hash(part: Mapping[str, Any]) -> str:
    """SHA-256 of the part's canonical JSON without its own ``hash``: the same content always gives the
    same value (the offline tool's own field is opaque to GSTN; ours lets a file be checked)."""
    return hashlib.sha256(dumps({k: v for k, v in part.items() if k != "hash"})).hexdigest()


def dumps(value: Any) -> bytes:
    """JSON with Decimals as exact JSON numbers (GSTN's amounts are numbers, not strings), keys in
    their given order, no spaces: the same return always gives the same bytes."""
    return orjson.dumps(value, default=_number)


def _number(value: Any) -> orjson.Fragment:
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f"))
    raise TypeError(f"not JSON: {type(value).__name__}")


# --- versions ------------------------------------------------------------------------------------


def diff_summaries(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """What changed between two versions' summaries: per section and figure, {old, new}; top-level
    counts likewise. Empty when nothing changed."""
    changes: dict[str, Any] = {}
    for key in ("documents", "cancelled", "e_invoiced"):
        if old.get(key) != new.get(key):
            changes[key] = {"old": old.get(key), "new": new.get(key)}
    old_sections = old.get("sections", {})
    new_sections = new.get("sections", {})
    sections: dict[str, Any] = {}
    for name in sorted(set(old_sections) | set(new_sections)):
        a = old_sections.get(name, {})
        b = new_sections.get(name, {})
        moved = {
            k: {"old": a.get(k), "new": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
        }
        if moved:
            sections[name] = moved
    if sections:
        changes["sections"] = sections
    if len(old.get("parts", [])) != len(new.get("parts", [])):
        changes["parts"] = {"old": len(old.get("parts", [])), "new": len(new.get("parts", []))}
    return changes


def period_of(day: date) -> str:
    """The return period (MMYYYY) a document dated ``day`` belongs to."""
    return f"{day.month:02d}{day.year:04d}"


__all__ = [
    "ITEM_LIMIT",
    "VERSION",
    "Amendment",
    "ExportDetails",
    "Gstr1Return",
    "SupplyDocument",
    "SupplyLine",
    "b2cl_limit",
    "build_gstr1",
    "classify",
    "diff_summaries",
    "doc_issue",
    "dumps",
    "part_hash",
    "period_of",
]
