"""Effective-dated GST rates: the set of legal rates on a date, and an HSN/SAC rate master.

GST rates change by notification, and an invoice must use the rate in force on its date, so both the
list of legal rates and the per-HSN master are keyed by ``effective_from`` (india-gst.md notes, section 4).

The master (``data/hsn_rates.csv``) is a representative subset of the CBIC schedule covering the seeds'
items and common goods and services; it is not the full schedule. It is read once at import; everything
else here is pure.
"""

from __future__ import annotations

import csv
import io
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from importlib import resources
from types import MappingProxyType

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


@dataclass(frozen=True)
class RateEntry:
    hsn_prefix: str
    effective_from: date
    gst_rate: Decimal
    """Combined rate in percent (CGST + SGST, or IGST)."""
    cess_rate: Decimal
    """Ad valorem compensation cess in percent."""
    description: str


def _load_master() -> Mapping[str, tuple[RateEntry, ...]]:
    text = resources.files("engine.tax").joinpath("data/hsn_rates.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO("".join(ln for ln in text.splitlines(True) if not ln.startswith("#"))))
    by_prefix: dict[str, list[RateEntry]] = {}
    for row in rows:
        prefix = row["hsn_prefix"].strip()
        if not (prefix.isdigit() and len(prefix) in (4, 6, 8)):
            raise ValueError(f"hsn_rates.csv: bad hsn_prefix {prefix!r}")
        entry = RateEntry(
            hsn_prefix=prefix,
            effective_from=date.fromisoformat(row["effective_from"]),
            gst_rate=Decimal(row["gst_rate"]),
            cess_rate=Decimal(row["cess_rate"]),
            description=row["description"],
        )
        by_prefix.setdefault(prefix, []).append(entry)
    return MappingProxyType(
        {
            prefix: tuple(sorted(entries, key=lambda e: e.effective_from))
            for prefix, entries in by_prefix.items()
        }
    )


MASTER: Mapping[str, tuple[RateEntry, ...]] = _load_master()
"""HSN/SAC prefix -> its entries, oldest first."""


def master_rate(hsn: str, day: date) -> RateEntry | None:
    """The master entry for ``hsn`` on ``day``: longest matching prefix, latest ``effective_from <= day``.

    ``None`` when no prefix of ``hsn`` is in the master, or the date precedes every entry of every matching
    prefix.
    """
    code = hsn.strip()
    for length in range(len(code), 1, -1):
        entries = MASTER.get(code[:length])
        if entries is None:
            continue
        in_force = [e for e in entries if e.effective_from <= day]
        if in_force:
            return in_force[-1]
    return None
