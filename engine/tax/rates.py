"""Effective-dated GST rates: the set of legal rates on a date, and an HSN/SAC rate master.

GST rates change by notification, and an invoice must use the rate in force on its date, so both the
list of legal rates and the per-HSN master are keyed by ``effective_from`` (india-gst.md notes, section 4).

The master covers the whole HSN/SAC code list of the GST portal (22,126 codes): goods rates from
1/2017-CT(Rate) (as a circa-2023 snapshot) and 9/2025 + 10/2025-CT(Rate), the 1 Feb 2026 move of tobacco and
pan masala, compensation cess, and the service rates we sourced. ``ops/build_hsn_master.py`` builds the two
packaged files under ``data/`` from the shared reference (its README gives sources, method and gaps). They
are read once, on the first look-up rather than at import, so a process that never prices an Indian line
does not pay for them; everything else here is pure.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache, lru_cache
from importlib import resources
from typing import Literal

from engine.tax.errors import Violation

GST_START = date(2017, 7, 1)
"""GST replaced VAT, excise and service tax on 1 July 2017; no GST rate is valid before."""
GST_2_0 = date(2025, 9, 22)
"""GST 2.0 (56th GST Council, 3 Sep 2025): 5%/18% slabs plus 40%; 12% and 28% removed for most goods."""
TOBACCO_CESS_END = date(2026, 2, 1)
"""Tobacco and pan masala leave 28% + compensation cess for 40% (bidi 18%); the cess ends."""


def _rates(*values: str) -> tuple[Decimal, ...]:
    return tuple(sorted(Decimal(v) for v in values))


# The rates the IRP accepts in GstRt (combined rate), per the NIC rate master as kept by
# resilient-tech/india-compliance: 0, 0.1, 0.25, 1, 1.5, 3, 5, 6, 7.5, 12, 18, 28, and 40 from Sep 2025.
# The special rates are all kept because each still has a use: 0.1 supplies to merchant exporters,
# 0.25 precious stones and diamonds, 1 and 7.5 residential and commercial apartments in real estate
# projects, 1.5 worked diamonds and precious stones, 3 gold, silver and jewellery, 6 bricks under the
# special composition scheme. That they all continue after 22 Sep 2025 is our reading, not confirmed by
# the reference notes. 28 stays valid between GST 2.0 and 1 Feb 2026 only because tobacco and pan masala
# were kept at 28% + cess until the compensation cess loans were repaid.
_SPECIAL = ("0.1", "0.25", "1", "1.5", "3", "6", "7.5")
_VALID_RATES: tuple[tuple[date, tuple[Decimal, ...]], ...] = (
    (GST_START, _rates("0", "5", "12", "18", "28", *_SPECIAL)),
    (GST_2_0, _rates("0", "5", "18", "28", "40", *_SPECIAL)),
    (TOBACCO_CESS_END, _rates("0", "5", "18", "40", *_SPECIAL)),
)
_VALID_FROM = tuple(start for start, _ in _VALID_RATES)


def valid_rates_on(day: date) -> tuple[Decimal, ...]:
    """The combined GST rates (percent) legally valid for an invoice dated ``day``, ascending.

    Empty before 1 July 2017, when GST did not exist.
    """
    index = bisect_right(_VALID_FROM, day) - 1
    return _VALID_RATES[index][1] if index >= 0 else ()


PERIODS: tuple[date, ...] = (GST_START, GST_2_0, TOBACCO_CESS_END)
"""Starts of the master's rate periods: the 1/2017 schedules, GST 2.0 (9/2025-CT(R)), and 19/2025-CT(R)."""


@dataclass(frozen=True)
class RateEntry:
    """A code's single rate on a date (what an invoice line uses)."""

    hsn_prefix: str
    """The master code that answered: the line's code, or its longest prefix in the master."""
    effective_from: date
    """Start of the period from which this rate and cess apply unchanged."""
    gst_rate: Decimal
    """Combined rate in percent (CGST + SGST, or IGST)."""
    cess_rate: Decimal
    """Ad valorem compensation cess in percent (0 when none, or when it is specific or conditional)."""
    description: str


@dataclass(frozen=True)
class HsnRate:
    """What the master says about a code on a date (contract C3)."""

    code: str
    description: str
    kind: Literal["goods", "services"]
    rate: Decimal | None
    """The single rate, or ``None`` when there are several candidates, none is known, or it is outside GST."""
    candidates: tuple[Decimal, ...]
    """Every possible rate, ascending (one element when ``rate`` is set; empty when nothing is known)."""
    cess: Decimal | str | None
    """Compensation cess: a percent when certain, else the text of the entries (specific per unit, or
    conditional); ``None`` when no cess applies."""
    cess_rate: Decimal
    """The ad valorem cess an invoice line charges (the percent above, or 0)."""
    cess_note: str
    """Every compensation-cess entry naming the code, as written ("5% + Rs.2076 per thousand (...)"); the
    specific part of a mixed cess is here only. Empty when none applies."""
    basis: str
    """The notification entries behind the rate."""
    notes: str
    outside_gst: bool
    """Alcoholic liquor for human consumption, petroleum crude, petrol, diesel, ATF, natural gas."""
    effective_from: date
    """Start of the rate period the answer belongs to."""


# A row of data/hsn_rates.tsv.gz: kind, outside, p0, p1, p2, cess0_pct, cess0, cess1_pct, cess1, description.
_Row = tuple[str, ...]
_KIND, _OUTSIDE, _P0, _CESS0_PCT, _CESS0, _DESCRIPTION = 0, 1, 2, 5, 6, 9


def _read(name: str) -> Iterator[list[str]]:
    """The rows of a packaged table, streamed: the whole decompressed text never sits in memory."""
    with (
        resources.files("engine.tax").joinpath(f"data/{name}").open("rb") as raw,
        gzip.open(raw, "rt", encoding="utf-8", newline="\n") as rows,
    ):
        next(rows)  # header
        for line in rows:
            yield line.rstrip("\n").split("\t")


@cache
def _rates_table() -> dict[str, _Row]:
    interned: dict[str, str] = {}
    table: dict[str, _Row] = {}
    for fields in _read("hsn_rates.tsv.gz"):
        # Rate sets and cess texts repeat across thousands of codes: one string object each.
        table[fields[0]] = tuple(interned.setdefault(f, f) for f in fields[1:])
    return table


def load_rate_table() -> None:
    """Read the HSN master's rates into memory now rather than on the first invoice that needs them
    (about half a second of CPU): a server calls it while starting, before it takes requests."""
    _rates_table()


@cache
def _text_table() -> dict[str, tuple[str, str, str]]:
    # Items of one heading mostly share their basis text: keep one copy of each.
    interned: dict[str, str] = {}
    return {
        f[0]: (
            interned.setdefault(f[1], f[1]),
            interned.setdefault(f[2], f[2]),
            interned.setdefault(f[3], f[3]),
        )
        for f in _read("hsn_text.tsv.gz")
    }


def _period(day: date) -> int:
    return max(bisect_right(PERIODS, day) - 1, 0)


def _find(code: str) -> tuple[str, _Row] | None:
    """The row of ``code``, or of its longest prefix in the master (an 8-digit item missing from the
    portal list takes its sub-heading's or heading's rate, which is single only when every item beneath
    agrees)."""
    table = _rates_table()
    for length in (8, 6, 4, 2):
        if length <= len(code) and (row := table.get(code[:length])) is not None:
            return code[:length], row
    return None


def _parse_rates(text: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in text.split("|")) if text else ()


def _cess_at(row: _Row, period: int) -> tuple[str, str]:
    if period >= 2:  # 19/2025-CT(R): compensation cess ended on 1 Feb 2026
        return "", ""
    at = _CESS0_PCT + 2 * period
    return row[at], row[at + 1]


def _since(row: _Row, period: int) -> date:
    """Start of the earliest period, up to ``period``, from which the rate and cess stayed the same."""
    start = period
    while start > 0 and (row[_P0 + start - 1], _cess_at(row, start - 1)) == (
        row[_P0 + start],
        _cess_at(row, start),
    ):
        start -= 1
    return PERIODS[start]


def _valid_code(code: object) -> str | None:
    if isinstance(code, str) and _CODE.fullmatch(code.strip()):
        return code.strip()
    return None


_CODE = re.compile(r"[0-9]{2}|[0-9]{4}|[0-9]{6}|[0-9]{8}")


def hsn_lookup(code: str, day: date, *, exact: bool = False) -> HsnRate | None:
    """The master's answer for ``code`` on ``day``; ``None`` for a code (nor, unless ``exact``, any of its
    prefixes) not in the master, or a malformed code. Dates before GST get the first period's answer;
    callers refuse them first."""
    return _answer(code, day, exact=exact, with_text=True)


def _answer(code: str, day: date, *, exact: bool, with_text: bool) -> HsnRate | None:
    valid = _valid_code(code)
    if valid is None:
        return None
    found = _find(valid)
    if found is None or (exact and found[0] != valid):
        return None
    matched, row = found
    period = _period(day)
    candidates = _parse_rates(row[_P0 + period])
    percent, cess_text = _cess_at(row, period)
    cess: Decimal | str | None = Decimal(percent) if percent else (cess_text or None)
    basis, notes = "", ""
    # The basis texts are most of the master's memory; the invoice path does not need them.
    texts = _text_table().get(matched) if with_text else None
    if texts is not None:
        basis = texts[0] if period == 0 else texts[1]
        notes = texts[2]
    kind: Literal["goods", "services"] = "services" if row[_KIND] == "services" else "goods"
    return HsnRate(
        code=matched,
        description=row[_DESCRIPTION],
        kind=kind,
        rate=candidates[0] if len(candidates) == 1 else None,
        candidates=candidates,
        cess=cess,
        cess_rate=Decimal(percent) if percent else Decimal(0),
        cess_note=cess_text,
        basis=basis,
        notes=notes,
        outside_gst=row[_OUTSIDE] == "1",
        effective_from=_since(row, period),
    )


def master_rate(hsn: str, day: date) -> RateEntry | None:
    """The single rate for ``hsn`` on ``day`` (longest matching code in the master).

    ``None`` when the code is unknown, outside GST, has several candidate rates, or ``day`` precedes GST.
    """
    if day < GST_START or not isinstance(hsn, str):
        return None
    return _master_in_period(hsn.strip(), _period(day))


@lru_cache(maxsize=8192)
def _master_in_period(hsn: str, period: int) -> RateEntry | None:
    """master_rate per (code, period): invoices repeat a seller's few codes, and building the answer
    (Decimal parsing, the period walk) costs several times the old prefix look-up on the write path."""
    found = _answer(hsn, PERIODS[period], exact=False, with_text=False)
    if found is None or found.rate is None:
        return None
    return RateEntry(
        hsn_prefix=found.code,
        effective_from=found.effective_from,
        gst_rate=found.rate,
        cess_rate=found.cess_rate,
        description=found.description,
    )


def master_cess_rate(hsn: str, day: date) -> Decimal:
    """The ad valorem compensation cess on ``hsn`` on ``day`` when the master is certain of it, else 0."""
    found = _answer(hsn, day, exact=False, with_text=False)
    return found.cess_rate if found is not None else Decimal(0)


def no_master_rate(path: str, hsn: str, day: date) -> Violation:
    """Why the master gives no single rate for ``hsn`` on ``day``, as the 422 the caller must fix by sending
    ``gst_rate``: several candidates (``rate_required``), or not known / outside GST (``unknown_hsn``)."""
    found = _answer(hsn, day, exact=False, with_text=False)
    on = day.isoformat()
    if found is not None and found.outside_gst:
        return Violation(
            path,
            "unknown_hsn",
            f"{path}: {hsn} is outside GST (alcoholic liquor for human consumption, or petroleum crude, "
            "petrol, diesel, aviation turbine fuel or natural gas): the master has no GST rate for it. "
            "Report it as a non-GST supply, or send gst_rate (and gst_rate_reason) for this line.",
            {"hsn": hsn, "date": on, "outside_gst": True},
        )
    if found is not None and len(found.candidates) > 1:
        listed = ", ".join(f"{r}%" for r in found.candidates)
        return Violation(
            path,
            "rate_required",
            f"{path}: the rate of {hsn} on {on} depends on facts the code does not carry (e.g. sale value, "
            f"packaging, size): it is one of {listed}. Send gst_rate for this line.",
            {
                "hsn": hsn,
                "date": on,
                "candidates": [str(r) for r in found.candidates],
                "master_code": found.code,
            },
        )
    return Violation(
        path,
        "unknown_hsn",
        f"{path}: {hsn} is not in the rate master for {on}; send gst_rate (and gst_rate_reason) for this "
        "line.",
        {"hsn": hsn, "date": on},
    )


def _fold(text: str) -> str:
    """Case- and compatibility-folded text for matching ("Ｆａｎ" finds "FAN")."""
    return unicodedata.normalize("NFKC", text).casefold()


_NON_WORD = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class _SearchIndex:
    codes: tuple[str, ...]
    """Every code, in code order (a prefix search of the codes is a range of it)."""
    words: tuple[str, ...]
    """Every distinct description word, sorted (the words starting with a prefix are a range of it)."""
    postings: tuple[array[int], ...]
    """For each word, the positions in ``codes`` whose description has it (2-byte integers: compact)."""
    texts: tuple[str, ...]
    """For each code, its description's words as " w1 w2 ... " (whole-word tests are substring tests)."""


@cache
def _search_index() -> _SearchIndex:
    codes = tuple(sorted(_rates_table()))
    texts = tuple(f" {_NON_WORD.sub(' ', _fold(_rates_table()[c][_DESCRIPTION])).strip()} " for c in codes)
    by_word: dict[str, array[int]] = {}
    for position, text in enumerate(texts):
        for word in set(text.split()):
            by_word.setdefault(word, array("H")).append(position)  # 22,126 codes fit in 16 bits
    words = tuple(sorted(by_word))
    return _SearchIndex(codes, words, tuple(by_word[w] for w in words), texts)


def _starting_with(prefix: str, ordered: tuple[str, ...]) -> range:
    """The positions of ``ordered`` (sorted) whose item starts with ``prefix``."""
    return range(bisect_left(ordered, prefix), bisect_left(ordered, prefix + "\U0010ffff"))


def hsn_search(q: str, day: date, limit: int = 20) -> list[HsnRate]:
    """Codes whose number starts with ``q`` (digits only), or whose description has a word starting with
    every word of ``q``; whole-word (or plural) matches first, then headings before their tariff items.
    Empty for an empty query."""
    words = _NON_WORD.sub(" ", _fold(q)).split()
    if not words or limit <= 0:
        return []
    index = _search_index()
    if len(words) == 1 and words[0].isdigit() and q.strip().isdigit():
        codes = [index.codes[i] for i in _starting_with(words[0], index.codes)]
        codes.sort(key=lambda c: (len(c), c))
    else:
        matching: set[int] | None = None
        for word in words:
            having: set[int] = set()
            for w in _starting_with(word, index.words):
                having.update(index.postings[w])
            matching = having if matching is None else matching & having
        whole = [(f" {w} ", f" {w}s ", f" {w}es ") for w in words]
        # "shirt" ranks "SHIRTS" above "SHIRTING" fabrics.
        scored = sorted(
            (
                -sum(1 for forms in whole if any(f in index.texts[i] for f in forms)),
                len(index.codes[i]),
                index.codes[i],
            )
            for i in matching or ()
        )
        codes = [code for _, _, code in scored]
    results = []
    for code in codes[:limit]:
        found = hsn_lookup(code, day, exact=True)
        if found is not None:
            results.append(found)
    return results
