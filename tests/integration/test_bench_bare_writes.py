"""The bench's PostgreSQL-alone ceiling (bench/read_model_writes.py): the rows it stores again must be
exactly the rows that were there, split into transactions as the projector's batches, so that the
rate it prints is the rate of storing what the projections stored."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from bench import read_model_writes
from bench.read_model_writes import split_copy, store_again
from engine import db
from engine.config import Settings

pytestmark = pytest.mark.integration

Connect = Callable[[], psycopg.Connection]

TABLE = """(
    id uuid PRIMARY KEY, n integer NOT NULL, note text, doc json, tags jsonb, amount numeric(18, 2),
    doubled integer GENERATED ALWAYS AS (n * 2) STORED
)"""


@pytest.fixture
def connect(settings: Settings) -> Iterator[Connect]:
    db.ensure_schema(settings)

    def connection() -> psycopg.Connection:
        return psycopg.connect(
            settings.database_url, autocommit=True, options=f"-c search_path={settings.db_schema}"
        )

    yield connection


def fill(conn: psycopg.Connection, table: str, rows: int) -> None:
    conn.execute(sql.SQL("CREATE TABLE {} " + TABLE).format(sql.Identifier(table)))
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (id, n, note, doc, tags, amount)"
            " SELECT gen_random_uuid(), i,"
            " CASE WHEN i %% 7 = 0 THEN NULL ELSE repeat(chr(65 + i %% 26), i %% 300)"
            " || E'\\u00e9\\t\\u2028' END, json_build_object('i', i, 'text', repeat('x', i %% 5000)),"
            " CASE WHEN i %% 5 = 0 THEN NULL ELSE jsonb_build_array(i, 'y') END, i * 1.25"
            " FROM generate_series(1, %s) AS i"
        ).format(sql.Identifier(table)),
        (rows,),
    )


def contents(conn: psycopg.Connection, table: str) -> list[str]:
    query = sql.SQL("SELECT t::text FROM {} AS t ORDER BY n").format(sql.Identifier(table))
    return [r[0] for r in conn.execute(query).fetchall()]


def test_the_same_rows_are_stored_again_in_batches(connect: Connect, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_model_writes, "ROWS_PER_TRANSACTION", 7)
    names = [f"bare_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    with connect() as conn:
        fill(conn, names[0], 40)
        fill(conn, names[1], 3)
        fill(conn, names[2], 0)  # an empty read model (no Kenyan invoice in the bench) is skipped
        before = {name: contents(conn, name) for name in names}
    try:
        done: list[int] = []
        result = store_again(connect, names, events=40, writers=2, progress=done.append)
        with connect() as conn:
            assert {name: contents(conn, name) for name in names} == before
            left = conn.execute("SELECT to_regclass('bench_bare_write_positions')").fetchone()
        assert left == (None,)
        assert result.rows == 43 and result.events == 40 and result.writers == 2
        assert result.seconds > 0
        # The progress counts the first table's rows: 40 in batches of 7.
        assert sorted(done) == [5, 7, 7, 7, 7, 7]
    finally:
        with connect() as conn:
            for name in names:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def test_split_copy_keeps_every_tuple_and_frames_each_chunk(connect: Connect) -> None:
    name = f"bare_{uuid.uuid4().hex[:8]}"
    with connect() as conn:
        fill(conn, name, 25)
        stream = bytearray()
        query = sql.SQL("COPY (SELECT id, n, note, doc, tags, amount FROM {}) TO STDOUT (FORMAT BINARY)")
        with conn.cursor().copy(query.format(sql.Identifier(name))) as copy:
            for block in copy:
                stream += block
        chunks = list(split_copy(bytes(stream), 10))
        assert [count for _, count in chunks] == [10, 10, 5]
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(name)))
        into = sql.SQL("COPY {} (id, n, note, doc, tags, amount) FROM STDIN (FORMAT BINARY)")
        for chunk, _ in chunks:
            assert chunk.endswith(struct.pack("!h", -1))
            with conn.cursor().copy(into.format(sql.Identifier(name))) as copy:
                copy.write(chunk)
        assert conn.execute(
            sql.SQL("SELECT count(*), sum(n) FROM {}").format(sql.Identifier(name))
        ).fetchone() == (
            25,
            325,
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def test_split_copy_refuses_what_is_not_binary_copy() -> None:
    with pytest.raises(ValueError, match="not a binary COPY stream"):
        list(split_copy(b"id,n\n1,2\n", 10))
