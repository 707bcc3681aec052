"""Binary COPY (engine/pg_copy.py through projections/batch.py) against PostgreSQL: whatever rows a
projection writes, the table must end up exactly as the text format left it, and a value the
server refuses must fail the batch with the text format's own error."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg import sql

from engine import db, pg_copy
from engine.config import Settings
from projections import batch
from projections.batch import RowChange

pytestmark = pytest.mark.integration

COLUMNS = ("id", "amount", "rate", "note", "label", "doc", "tags", "on_day", "at", "flag", "small", "count")
TABLE = """(
    id uuid PRIMARY KEY, amount numeric(18, 2), rate numeric, note text, label varchar(12), doc json,
    tags jsonb, on_day date, at timestamptz, flag boolean, small smallint, count bigint
)"""


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection]:
    db.ensure_schema(settings)
    with db.connect(settings) as connection:
        for name in ("copy_binary", "copy_text"):
            connection.execute(f"CREATE TEMPORARY TABLE {name} {TABLE}")
        yield connection
        connection.rollback()


def stored(conn: psycopg.Connection, table: str) -> list[str]:
    return [r[0] for r in conn.execute(f"SELECT t::text FROM {table} AS t ORDER BY id").fetchall()]


def copy_as_text(conn: psycopg.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    with conn.cursor() as cur:
        batch._copy(cur, sql.Identifier(table), COLUMNS, rows)  # no types: the text format


def copy_as_binary(conn: psycopg.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    with conn.cursor() as cur:
        batch._copy(cur, sql.Identifier(table), COLUMNS, rows, batch._column_types(conn, table))


def row(n: int, **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": str(uuid.UUID(int=n + 1)),
        "amount": f"{n}.50",
        "rate": "0.18",
        "note": f"note {n}",
        "label": "B2B",
        "doc": f'{{"n": {n}}}',
        "tags": '["a"]',
        "on_day": "2026-01-19",
        "at": datetime(2026, 1, 19, 10, 0, tzinfo=UTC) + timedelta(seconds=n),
        "flag": n % 2 == 0,
        "small": n % 100,
        "count": n * 10**12,
    }
    return {c: values.get(c, base[c]) for c in COLUMNS}


texts = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)


def decimals(digits: int, places: int) -> st.SearchStrategy[str]:
    """Plain decimal strings of up to ``digits`` integer digits and ``places`` decimal places."""

    def spelt(negative: bool, whole: int, scale: int, part: int) -> str:
        fraction = f".{part % 10**scale:0{scale}d}" if scale else ""
        return ("-" if negative else "") + str(whole) + fraction

    return st.builds(
        spelt,
        st.booleans(),
        st.integers(min_value=0, max_value=10**digits - 1),
        st.integers(min_value=0, max_value=places),
        st.integers(min_value=0, max_value=10**places),
    )


moments = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
values = st.fixed_dictionaries(
    {
        # Rounded to the column's scale by the server, in either format.
        "amount": st.one_of(
            st.none(), decimals(15, 4), st.sampled_from(["-0.00", "1.005", "000.10", "-0.004"])
        ),
        "rate": st.one_of(st.none(), decimals(40, 20)),
        "note": st.one_of(st.none(), texts),
        "label": st.one_of(st.none(), st.text(max_size=12, alphabet="abcé✓ \t\n\\")),
        "doc": st.one_of(st.none(), st.sampled_from(['{"é": "\\n"}', "[1, 2.5e300]", '"x"', "null"])),
        "tags": st.one_of(st.none(), st.sampled_from(['{"b": 1, "a": [true]}', "[]", '"\\u00e9"'])),
        "on_day": st.one_of(st.none(), st.dates().map(date.isoformat), st.dates()),
        "at": st.one_of(st.none(), moments),
        "flag": st.one_of(st.none(), st.booleans()),
        "small": st.one_of(st.none(), st.integers(min_value=-(2**15), max_value=2**15 - 1)),
        "count": st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    }
)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(values, min_size=1, max_size=8))
def test_binary_copy_stores_what_the_text_format_stores(
    conn: psycopg.Connection, drawn: list[dict[str, Any]]
) -> None:
    rows = [row(n, **v) for n, v in enumerate(drawn)]
    # The binary format is what these rows take (a session the engine opens, all values encodable).
    kinds = batch._binary_kinds(conn, COLUMNS, batch._column_types(conn, "copy_binary"))
    assert kinds is not None and pg_copy.encode(rows, kinds) is not None
    with conn.transaction(force_rollback=True):
        copy_as_text(conn, "copy_text", rows)
        copy_as_binary(conn, "copy_binary", rows)
        assert stored(conn, "copy_binary") == stored(conn, "copy_text")


def test_a_value_for_the_text_format_in_a_later_part_sends_the_batch_in_text(
    conn: psycopg.Connection,
) -> None:
    # 600 rows: three binary parts; the one value the binary format leaves alone (an exponent,
    # which numeric_in reads) is in the third, after two parts were sent.
    rows = [row(n, amount="1e2" if n == 555 else f"{n}.25") for n in range(600)]
    with conn.transaction():
        batch.write(conn, "copy_binary", "id", [RowChange(r["id"], insert=r) for r in rows])
        copy_as_text(conn, "copy_text", rows)
    assert stored(conn, "copy_binary") == stored(conn, "copy_text")
    assert conn.execute(
        "SELECT amount::text FROM copy_binary WHERE id = %s", (rows[555]["id"],)
    ).fetchone() == ("100.00",)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("amount", "12345678901234567.00"),  # over numeric(18, 2)
        ("label", "thirteen chrs"),  # over varchar(12)
        ("doc", "{not json"),
        ("tags", "{not json"),
    ],
)
def test_a_value_the_server_refuses_fails_with_the_text_formats_error(
    conn: psycopg.Connection, column: str, value: str
) -> None:
    rows = [row(n) for n in range(3)] + [row(3, **{column: value})]
    with pytest.raises(psycopg.errors.DataError) as as_text, conn.transaction():
        copy_as_text(conn, "copy_text", rows)
    with pytest.raises(psycopg.errors.DataError) as as_binary, conn.transaction():
        batch.write(conn, "copy_binary", "id", [RowChange(r["id"], insert=r) for r in rows])
    assert type(as_binary.value) is type(as_text.value)
    assert str(as_binary.value).replace("copy_binary", "copy_text") == str(as_text.value)
    assert as_binary.value.diag.context is not None and "line 4" in as_binary.value.diag.context


def test_a_nul_keeps_psycopgs_refusal(conn: psycopg.Connection) -> None:
    rows = [row(0, note="a\x00b")]
    with pytest.raises(psycopg.DataError, match="NUL"), conn.transaction():
        batch.write(conn, "copy_binary", "id", [RowChange(rows[0]["id"], insert=rows[0])])


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.uuids(), st.one_of(st.none(), st.binary(max_size=300))), min_size=1, max_size=8))
def test_bytea_and_uuid_objects_store_what_the_text_format_stores(
    conn: psycopg.Connection, drawn: list[tuple[uuid.UUID, bytes | None]]
) -> None:
    """The audit trail's rows: a tenant id as a uuid.UUID and its state as bytes (b"" for an
    entity's first event)."""
    columns = ("id", "tenant", "state")
    rows = [
        {"id": str(uuid.UUID(int=n + 1)), "tenant": tenant, "state": state}
        for n, (tenant, state) in enumerate(drawn)
    ]
    rows.append({"id": str(uuid.UUID(int=0)), "tenant": uuid.UUID(int=0), "state": b""})
    with conn.transaction(force_rollback=True):
        for name in ("bytes_binary", "bytes_text"):
            conn.execute(f"CREATE TEMPORARY TABLE {name} (id uuid PRIMARY KEY, tenant uuid, state bytea)")
        types = batch._column_types(conn, "bytes_binary")
        assert pg_copy.encode(rows, batch._binary_kinds(conn, columns, types) or b"") is not None
        with conn.cursor() as cur:
            batch._copy(cur, sql.Identifier("bytes_binary"), columns, rows, types)
            batch._copy(cur, sql.Identifier("bytes_text"), columns, rows)
        assert stored(conn, "bytes_binary") == stored(conn, "bytes_text")
        assert len(stored(conn, "bytes_binary")) == len(rows)
