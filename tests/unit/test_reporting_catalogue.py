"""The reporting catalogue against its documentation, pagination cursors, and value formats."""

from __future__ import annotations

import base64
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

import orjson
import pyarrow as pa
import pytest

from engine.config import PROJECT_ROOT, Settings
from ops.export import arrow_schema, arrow_type
from projections.reporting import REPORTS, InvalidCursor, decode_cursor, encode_cursor, json_value, text_value

SAMPLE = {
    "date": date(2026, 1, 19),
    "uuid": UUID("6f1c2e0a-5d7b-4a8e-9c3f-0123456789ab"),
    "text": "INV/2026/001",
    "integer": 3,
    "numeric(6,3)": Decimal("18.000"),
}


def documented_columns() -> dict[str, list[tuple[str, str]]]:
    """Per ``### `view` `` section of docs/reporting.md, the (column, type) rows of its table."""
    text = (PROJECT_ROOT / "docs" / "reporting.md").read_text()
    found: dict[str, list[tuple[str, str]]] = {}
    for section in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        title = re.match(r"`(\w+)`", section)
        if title:
            found[title.group(1)] = re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", section, flags=re.MULTILINE)
    return found


def test_docs_list_every_view_with_its_columns_and_types_in_order() -> None:
    documented = documented_columns()
    for report in REPORTS.values():
        assert documented.get(report.name) == [(c.name, c.type) for c in report.columns], report.name


def test_every_key_and_date_column_is_a_column_of_its_report() -> None:
    for report in REPORTS.values():
        names = report.column_names
        assert len(names) == len(set(names)) and names[0] == "tenant_id", report.name
        assert set(report.key) <= set(names) and report.date_column in names, report.name
        assert report.column(report.date_column).type == "date", report.name


def test_the_reporting_schema_sits_beside_the_engines_schema() -> None:
    assert Settings(db_schema="public").reporting_schema == "reporting"
    assert Settings(db_schema="t_1234").reporting_schema == "t_1234_reporting"


@pytest.mark.parametrize("name", list(REPORTS))
def test_a_cursor_returns_the_key_it_was_made_from(name: str) -> None:
    report = REPORTS[name]
    key = tuple(SAMPLE[report.column(k).type] for k in report.key)
    assert decode_cursor(report, encode_cursor(report, key)) == key


def _cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


@pytest.mark.parametrize(
    ("cursor", "message"),
    [
        ("garbage!", "not a cursor returned by this API"),
        (_cursor([1, 2, 3]), "not a cursor returned by this API"),
        (
            _cursor({"report": "invoices", "after": ["2026-01-19", "A-1"]}),
            "not a cursor returned by this API",
        ),
        (
            _cursor({"report": "invoices", "after": ["2026-01-19", "A-1", "not-a-uuid"]}),
            "not a cursor returned by this API",
        ),
        (_cursor({"report": "invoices", "after": [20260119, "A-1", str(SAMPLE["uuid"])]}), "not a cursor"),
        (_cursor({"report": "einvoice_status", "after": []}), "belongs to the report 'einvoice_status'"),
    ],
)
def test_a_cursor_this_api_did_not_issue_for_the_report_is_refused(cursor: str, message: str) -> None:
    with pytest.raises(InvalidCursor, match=re.escape(message)):
        decode_cursor(REPORTS["invoices"], cursor)


def test_a_non_finite_rate_in_a_cursor_is_refused() -> None:
    report = REPORTS["hsn_summary"]
    cursor = _cursor({"report": "hsn_summary", "after": ["2026-01-01", "B2B", "8504", "NOS", "NaN"]})
    with pytest.raises(InvalidCursor):
        decode_cursor(report, cursor)


def test_values_keep_exact_decimals_and_iso_dates_in_json_and_csv() -> None:
    stamp = datetime(2026, 1, 5, 6, 0, 15, tzinfo=UTC)
    assert json_value(Decimal("1770.00")) == "1770.00"
    assert json_value(stamp) == "2026-01-05T06:00:15+00:00"
    assert json_value(True) is True and json_value(None) is None and json_value(3) == 3
    assert [text_value(v) for v in (None, False, Decimal("0.00"), date(2026, 1, 1), SAMPLE["uuid"])] == [
        "",
        "false",
        "0.00",
        "2026-01-01",
        str(SAMPLE["uuid"]),
    ]


def test_every_column_has_a_parquet_type_and_decimals_keep_precision_and_scale() -> None:
    for report in REPORTS.values():
        schema = arrow_schema(report)
        assert schema.names == report.column_names
    assert arrow_type("numeric(18,2)") == pa.decimal128(18, 2)
    assert arrow_type("timestamp with time zone") == pa.timestamp("us", tz="UTC")
    with pytest.raises(ValueError, match="no Parquet type"):
        arrow_type("money")
