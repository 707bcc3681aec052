"""CSV cells: formula-like text is neutralised (OWASP "CSV Injection"), numbers are written exactly."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from projections.reporting import REPORTS, csv_row, csv_value


@pytest.mark.parametrize(
    ("pg_type", "value", "cell"),
    [
        ("text", '=HYPERLINK("http://evil.example","click")', '\'=HYPERLINK("http://evil.example","click")'),
        ("text", "+91 98450 12345", "'+91 98450 12345"),
        ("text", "-2+3", "'-2+3"),
        ("text", "@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("text", "\t=1+1", "'\t=1+1"),
        ("text", "\r=1+1", "'\r=1+1"),
        ("text", "Reliable Traders = best", "Reliable Traders = best"),
        ("text", "'already quoted", "'already quoted"),
        ("text", "", ""),
        ("text", None, ""),
        ("numeric(18,2)", Decimal("-2.00"), "-2.00"),
        ("numeric(18,2)", Decimal("1180.00"), "1180.00"),
        ("numeric(6,3)", Decimal("-0.125"), "-0.125"),
        ("integer", -3, "-3"),
        ("bigint", 12, "12"),
        ("date", date(2026, 1, 19), "2026-01-19"),
        ("boolean", False, "false"),
        ("uuid", UUID("7d0e8f0e-0000-4000-8000-000000000000"), "7d0e8f0e-0000-4000-8000-000000000000"),
    ],
)
def test_a_cell_is_neutralised_only_when_it_is_text_that_starts_like_a_formula(
    pg_type: str, value: Any, cell: str
) -> None:
    assert csv_value(pg_type, value) == cell


def test_a_row_is_written_by_its_columns_types() -> None:
    hsn = REPORTS["hsn_summary"]
    values: dict[str, Any] = {c.name: None for c in hsn.columns}
    values.update(hsn="=1+1", unit="-NOS", quantity=Decimal("-1.000"), total=Decimal("-118.00"))
    row = csv_row(hsn, [values[c.name] for c in hsn.columns])
    written = dict(zip(hsn.column_names, row, strict=True))
    assert (written["hsn"], written["unit"]) == ("'=1+1", "'-NOS")
    assert (written["quantity"], written["total"]) == ("-1.000", "-118.00")
