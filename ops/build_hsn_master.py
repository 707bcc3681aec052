"""Build the packaged HSN/SAC rate master (engine/tax/data/hsn_*.tsv.gz) from the shared HSN reference.

Run once when the reference changes; the output is committed and the application never reads the
reference itself::

    python -m ops.build_hsn_master /work/shared/reference/hsn

Inputs: ``hsn_sac_codes.csv.gz`` (one row per code, rates before and from 22 Sep 2025 and the 1 Feb 2026
column; its README explains the method and the gaps), ``rules_pre_compensation_cess.csv`` (compensation
cess before 22 Sep 2025), and our own ``ops/hsn/sac_rates.csv`` (service rates, which the reference lacks).

Outputs, tab-separated and gzipped, one row per code:

* ``hsn_rates.tsv.gz`` - what the invoice path and the search need: ``code, kind, outside, rates per period
  (3), cess per period (percent and text, 2), description``. Rates are ``"18"`` (single), ``"5|18"``
  (candidates) or empty.
* ``hsn_text.tsv.gz`` - what only the look-up API shows: basis per period and notes.

Three periods, matching engine.tax.rates: P0 from 1 Jul 2017 (the reference's "pre" column, a circa-2023
snapshot, README caveat 1), P1 from 22 Sep 2025 (9/2025 and 10/2025-CT(R)), P2 from 1 Feb 2026 (19/2025-CT(R):
Schedule VII omitted, pan masala and tobacco to 40%, biris to 18%, compensation cess ends).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "engine" / "tax" / "data"
SAC_RATES = Path(__file__).resolve().parent / "hsn" / "sac_rates.csv"

_BASIS_MAX = 600
"""Basis text kept per period; the reference's full entry lists run to several kilobytes for headings."""


def _rates(single: str, possible: str) -> str:
    if single.strip():
        return _num(single)
    values = sorted({Decimal(v) for v in possible.split(";") if v.strip()})
    return "|".join(_num(str(v)) for v in values)


def _num(text: str) -> str:
    value = Decimal(text.strip())
    return format(value.normalize(), "f")


def _p2(code: str, description: str, p1: str, from_2026: str) -> str:
    """The rate set from 1 Feb 2026. The reference fills its 2026 column only for codes whose whole set is
    {28}; 28% after 22 Sep 2025 exists only in Schedule VII (9/2025-CT(R)), which 19/2025-CT(R) omitted, so
    a 28 among several candidates becomes 40 too (18 for biris, as the reference does)."""
    if from_2026.strip():
        return _num(from_2026)
    if not p1 or "28" not in p1.split("|"):
        return p1
    new = "18" if "BIRI" in description.upper() else "40"
    values = sorted({Decimal(new if v == "28" else v) for v in p1.split("|")})
    return "|".join(_num(str(v)) for v in values)


_PERCENT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*%$")
_PERCENT_PLUS_SPECIFIC = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*%\s*\+\s*Rs\.?\s*[0-9,]+ per thousand$")
_NIL = "nil"


def _cess_rules(reference: Path) -> list[tuple[tuple[str, ...], tuple[str, ...], str]]:
    """(included prefixes, excluded prefixes, cess text) per entry of the compensation-cess table."""
    rules = []
    with (reference / "rules_pre_compensation_cess.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            codes = tuple(row["codes"].split())
            if not codes:
                continue  # "all goods other than those mentioned above": nil, names no code
            value = _clean(row["cess"])
            value = _NIL if value.replace("NIL", "").replace("Nil", "").strip() == "" else value
            rules.append((codes, tuple(row["codes_excluded"].split()), value))
    return rules


def _cess_percent_8(code: str, rules: list[tuple[tuple[str, ...], tuple[str, ...], str]]) -> str:
    """The compensation cess in percent on an 8-digit tariff item when it is certain, else "".

    Certain means: every cess entry whose code list covers the item gives the same value (a nil entry for
    the same code, e.g. ambulances or used vehicles under 87, makes it conditional), the value is a plain
    percentage or a percentage plus a specific amount per thousand (cigarettes: the percentage is due in
    full; the specific part is shown as text, not computed), and the most specific matching entry names at
    least the 6-digit sub-heading: an entry naming only a heading or chapter is limited by its description
    (2202 "carbonated beverages of fruit drink", 8711 "motorcycles above 350 cc"), which the code alone
    cannot decide. "X% or Rs N whichever is higher", "0.32R per unit" (R = retail sale price) and "Rs 400 per
    tonne" need facts an invoice line does not carry, so they stay text only.
    """
    matches = [
        (max(len(p) for p in codes if code.startswith(p)), value)
        for codes, excluded, value in rules
        if any(code.startswith(p) for p in codes) and not any(code.startswith(x) for x in excluded)
    ]
    if not matches or max(length for length, _ in matches) < 6:
        return ""
    values = {value for _, value in matches}
    if len(values) != 1:
        return ""
    (value,) = values
    for pattern in (_PERCENT, _PERCENT_PLUS_SPECIFIC):
        found = pattern.match(value)
        if found:
            return _num(found.group(1))
    return ""


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def _load_sac() -> dict[str, dict[str, str]]:
    lines = [ln for ln in SAC_RATES.read_text(encoding="utf-8").splitlines(True) if not ln.startswith("#")]
    rows = {row["sac"]: row for row in csv.DictReader(io.StringIO("".join(lines)))}
    for sac, row in rows.items():
        for key in ("rates_pre", "rates_post"):
            for value in row[key].split("|"):
                Decimal(value)  # a typo fails the build, not an invoice
        if not (sac.startswith("99") and sac.isdigit()):
            raise ValueError(f"sac_rates.csv: {sac!r} is not a SAC code")
    return rows


def _sac_row(code: str, sac: dict[str, dict[str, str]]) -> dict[str, str] | None:
    """The SAC rate row of the longest prefix of ``code`` that has one."""
    for length in range(len(code), 3, -1):
        row = sac.get(code[:length])
        if row is not None:
            return row
    return None


def _sac_basis(rates: str, row: dict[str, str]) -> str:
    label = " or ".join(f"{r}%" for r in rates.split("|"))
    return f"{label} [{row['source']}]" + (f": {row['note']}" if row["note"] else "")


def build(reference: Path) -> tuple[list[list[str]], list[list[str]]]:
    sac = _load_sac()
    cess_rules = _cess_rules(reference)
    rates_rows: list[list[str]] = []
    text_rows: list[list[str]] = []
    with gzip.open(reference / "hsn_sac_codes.csv.gz", "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            code = row["code"].strip()
            if not (code.isdigit() and len(code) in (2, 4, 6, 8)):
                raise ValueError(f"bad code {code!r}")
            kind = row["kind"]
            description = _clean(row["description"])
            notes = _clean(row["notes_from_2025_09_22"])
            basis0 = _clean(row["basis_pre"])[:_BASIS_MAX]
            basis1 = _clean(row["basis_from_2025_09_22"])[:_BASIS_MAX]
            outside = "outside GST" in notes or basis1.startswith("outside GST")
            if kind == "services":
                found = _sac_row(code, sac)
                if found is None:
                    p0 = p1 = ""
                    notes = "no service rate sourced for this SAC code yet: send gst_rate"
                else:
                    p0, p1 = found["rates_pre"], found["rates_post"]
                    basis0, basis1 = _sac_basis(p0, found), _sac_basis(p1, found)
                    notes = found["note"]
                p2 = p1
                cess0 = cess1 = ("", "")
            else:
                p0 = _rates(row["rate_pre_2025_09_22"], row["rates_possible_pre"])
                p1 = _rates(row["rate_from_2025_09_22"], row["rates_possible_from_2025_09_22"])
                p2 = _p2(code, description, p1, row["rate_from_2026_02_01"])
                note = _clean(row["cess_note_pre_2025_09_22"])
                percent = _cess_percent_8(code, cess_rules) if len(code) == 8 and note else ""
                cess0 = (percent, note)
                # From 22 Sep 2025 compensation cess remains only on the Schedule VII goods (tobacco and pan
                # masala), until 31 Jan 2026; the reference's note says which codes keep it.
                cess1 = cess0 if "compensation cess continued" in notes else ("", "")
            if outside:
                # Outside GST (CGST Act s.9(2); alcoholic liquor for human consumption, Constitution art.
                # 246A): the schedule rates the reference lists apply only to non-potable or other goods
                # under the same code, so the code answers "outside GST" rather than a rate.
                p0 = p1 = p2 = ""
            rates_rows.append([code, kind, "1" if outside else "", p0, p1, p2, *cess0, *cess1, description])
            text_rows.append([code, basis0, basis1, notes])
    _aggregate_cess(rates_rows)
    return rates_rows, text_rows


def _aggregate_cess(rows: list[list[str]]) -> None:
    """A 2, 4 or 6-digit code gets a cess percent only when every 8-digit item beneath it has that same
    certain percent (the reference aggregates rates the same way, README "Mapping method" step 3)."""
    items = [r for r in rows if len(r[0]) == 8]
    for row in rows:
        if len(row[0]) == 8 or not row[7]:
            continue
        for cess_at in (6, 8):  # (percent, text) columns of P0 and P1
            if not row[cess_at + 1]:
                continue
            beneath = {r[cess_at] for r in items if r[0].startswith(row[0])}
            if len(beneath) == 1 and "" not in beneath:
                row[cess_at] = beneath.pop()


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    body = "\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows)
    # mtime=0: the same input gives byte-identical output, so a rebuild shows no spurious diff.
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as out:
        out.write(body.encode("utf-8"))


def main(argv: list[str]) -> int:
    reference = Path(argv[1] if len(argv) > 1 else "/work/shared/reference/hsn")
    try:
        rates_rows, text_rows = build(reference)
    except (OSError, ValueError, InvalidOperation) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    _write(
        OUT / "hsn_rates.tsv.gz",
        [
            "code",
            "kind",
            "outside",
            "p0",
            "p1",
            "p2",
            "cess0_pct",
            "cess0",
            "cess1_pct",
            "cess1",
            "description",
        ],
        rates_rows,
    )
    _write(OUT / "hsn_text.tsv.gz", ["code", "basis0", "basis1", "notes"], text_rows)
    print(f"{len(rates_rows)} codes -> {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
