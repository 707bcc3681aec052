"""A tenant's invoice number series (issue 13): the next number a draft gets when it is issued.

A number is a prefix rendered for the financial year plus a sequence that restarts at 1 every
financial year (CGST Rules, rule 46(b): a consecutive serial number unique for a financial year),
e.g. ``INV/2026-27/0001``. The rules here are pure; the counter lives in PostgreSQL
(``invoice_series_counters``, engine/drafts.py) and is advanced only when the invoice is stored.

The IRP takes a document number of at most 16 characters, starting with a letter or a digit
other than 0, then letters, digits, ``/`` and ``-`` (the pattern of ``IssueInvoice.number``,
india-gst reference notes, DocDtls.No).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import Conflict
from engine.tax.errors import Violation

FY_PLACEHOLDER = "{fy}"
DEFAULT_PREFIX = "INV/{fy}/"
DEFAULT_DIGITS = 4
MAX_NUMBER_LENGTH = 16  # the IRP's DocDtls.No
MAX_DIGITS = 10
# What an issued number may look like: the IssueInvoice.number pattern.
NUMBER_PATTERN = re.compile(r"^[A-Za-z1-9][A-Za-z0-9/-]{0,15}$")
_PREFIX_CHARACTERS = re.compile(r"^[A-Za-z0-9/-]*$")
# The longest financial year text ("2026-27") a prefix is checked with.
SAMPLE_FINANCIAL_YEAR = "2026-27"


@dataclass(frozen=True)
class Series:
    prefix: str = DEFAULT_PREFIX
    digits: int = DEFAULT_DIGITS

    def prefix_for(self, financial_year: str) -> str:
        return self.prefix.replace(FY_PLACEHOLDER, financial_year)

    def number(self, financial_year: str, sequence: int) -> str:
        """Number ``sequence`` of ``financial_year``; SeriesExhausted past the IRP's 16 characters."""
        number = f"{self.prefix_for(financial_year)}{sequence:0{self.digits}d}"
        if len(number) > MAX_NUMBER_LENGTH:
            raise SeriesExhausted(number)
        return number

    def capacity(self, financial_year: str) -> int:
        """The last sequence number that still fits in 16 characters."""
        room = MAX_NUMBER_LENGTH - len(self.prefix_for(financial_year))
        return 10**room - 1 if room > 0 else 0


def check_series(series: Series) -> list[Violation]:
    """Why ``series`` cannot number invoices (an empty list when it can)."""
    found: list[Violation] = []
    literal = series.prefix.replace(FY_PLACEHOLDER, "")
    if not _PREFIX_CHARACTERS.match(literal):
        found.append(
            Violation(
                "prefix",
                "invalid_prefix",
                "a prefix has letters, digits, '/' and '-' only, and {fy} for the financial year",
            )
        )
        return found
    if not 1 <= series.digits <= MAX_DIGITS:
        found.append(Violation("digits", "invalid_digits", f"digits is between 1 and {MAX_DIGITS}"))
        return found
    sample = f"{series.prefix_for(SAMPLE_FINANCIAL_YEAR)}{1:0{series.digits}d}"
    if len(sample) > MAX_NUMBER_LENGTH:
        found.append(
            Violation(
                "prefix",
                "number_too_long",
                f"{sample!r} is {len(sample)} characters: the IRP takes at most {MAX_NUMBER_LENGTH}",
                {"example": sample},
            )
        )
    elif not NUMBER_PATTERN.match(sample):
        found.append(
            Violation(
                "prefix",
                "invalid_number",
                f"{sample!r} cannot be an invoice number: it must start with a letter or a digit 1-9",
                {"example": sample},
            )
        )
    return found


class SeriesExhausted(Conflict):
    """The sequence outgrew the 16 characters the IRP allows for this prefix (engine/drafts.py answers
    409 invalid_state with what to change)."""
