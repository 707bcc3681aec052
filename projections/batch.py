"""Set-based writing of a batch of events to a projection table: the path every row projection takes.

A projection whose events each change (at most) one row of one table says, per event, what that
event does to its row, as a :class:`RowChange`:

- ``insert``: the row's values, inserted if no row has that key yet (``INSERT ... ON CONFLICT DO
  NOTHING``: the first insert wins, a replayed one changes nothing);
- ``set``: columns set to fixed values on the row, if it exists (``UPDATE ... WHERE key = ...``).

:func:`write` then applies a whole batch with two statements whatever its size, instead of one
statement per event: the changes are first folded per key into their final effect (an upsert
cannot touch one row twice in one statement, and a row changed five times in a batch is written
once), then

1. the rows to insert are COPYed into a staging table of the session and moved with one
   ``INSERT INTO t SELECT ... ON CONFLICT (key) DO NOTHING``;
2. ``UPDATE t SET c = CASE WHEN c_set THEN new_c ELSE c END ... FROM unnest(arrays)`` for the
   rows that had columns set, one array per column in PostgreSQL's binary array format.

The fold is exact: the batch leaves every row as applying its events one by one, in order, would
(tests/unit/test_projection_fold.py checks the fold against a model of that, and
tests/integration/test_projection_batch.py the statements against the per-event path on
PostgreSQL). In particular a ``set`` that came before its row's ``insert`` in the batch applies
only if the row already existed, and a ``set`` after it applies either way.

To adopt it, subclass :class:`RowProjection` and implement ``change``; ``apply`` and ``on_table``
come with it (``projections/invoice_register.py`` is the example). The runner, the rebuild, the
replay and the dead-letter redrive all go through ``apply``, and poison isolation
(``db.apply_refusing_faults``) splits the *event* list, folding each half again, so one bad event
is still set aside alone. A projection that keeps its own per-event ``apply`` (the
``Projection`` protocol of ``projections/events.py``) works unchanged.

The staging table is ``LIKE`` the target and the update arrays are cast to the catalogue's column
types (looked up once per table and connection), so a projection names columns but never repeats
their types. Columns an insert leaves out take the table's DEFAULT, as in a plain INSERT.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, cast

import psycopg
from psycopg import sql

from engine import pg_copy
from projections.events import (
    AtDecode,
    AtMessage,
    PreparedEvent,
    ProjectedEvent,
    at_decode_hook,
    prepare,
    prepared,
)


@dataclass(frozen=True, slots=True)
class RowChange:
    """What one event does to the row ``key`` of its table: ``insert`` it if absent, then ``set``
    columns on it if it exists. Either may be left out."""

    key: Any
    insert: Mapping[str, Any] | None = None
    set: Mapping[str, Any] | None = None


@dataclass(slots=True)
class FinalEffect:
    """The changes of one batch to one row, folded: what ``write`` sends for it."""

    key: Any
    insert: dict[str, Any] | None = None
    """The first insert's values, with the sets that came after it applied."""
    before: dict[str, Any] = field(default_factory=dict)
    """Sets that came before the insert (or without one): they apply only to an existing row."""
    after: dict[str, Any] = field(default_factory=dict)
    """Sets that came after the insert: they apply to the row whether it existed or not."""

    @property
    def update(self) -> dict[str, Any]:
        """What to set on a row that existed before the batch: every set, in order."""
        return {**self.before, **self.after} if self.after else self.before


def fold(changes: Iterable[RowChange]) -> list[FinalEffect]:
    """Per key, in order of first appearance, the final effect of ``changes`` taken in order."""
    folded: dict[Any, FinalEffect] = {}
    for change in changes:
        effect = folded.get(change.key)
        if effect is None:
            effect = folded[change.key] = FinalEffect(change.key)
        if change.insert is not None and effect.insert is None:
            effect.insert = dict(change.insert)
        if change.set:
            if effect.insert is None:
                effect.before.update(change.set)
            else:
                effect.after.update(change.set)
                effect.insert.update(change.set)
    return list(folded.values())


def write(conn: psycopg.Connection, table: str, key: str, changes: Iterable[RowChange]) -> None:
    """Apply ``changes`` to ``table`` (primary or unique key column ``key``) with set-based statements,
    inside the caller's transaction."""
    changes = changes if isinstance(changes, list) else list(changes)
    if _only_first_inserts(changes):
        # Nothing to fold: each change is its row's only one and inserts it (a batch of issued
        # invoices), so no FinalEffect and no copy of each row (with the values-as-they-are rows
        # below and the register's cheaper document copy: python CPU 39-40 -> 34-35 us per
        # invoice on the bench topic, perf-rows in docs/performance.md).
        rows = [c.insert for c in changes if c.insert is not None]
        if not copy_straight_in(conn, table, rows):
            _insert(conn, table, key, rows, returning=False)
        return
    effects = fold(changes)
    if not effects:
        return
    inserts = [e.insert for e in effects if e.insert is not None]
    updates = [e for e in effects if e.before or (e.insert is not None and e.after)]
    inserted: list[Any] = []
    if inserts:
        # Only a row both inserted and updated in this batch needs to know whether the insert
        # happened (then its sets are already in the inserted values).
        needed = any(e.insert is not None for e in updates)
        inserted = _insert(conn, table, key, inserts, returning=needed)
    if updates:
        _update(conn, table, key, _column_types(conn, table), updates, inserted)


def copy_straight_in(conn: psycopg.Connection, table: str, rows: Sequence[Mapping[str, Any]]) -> bool:
    """COPY new rows straight into ``table``, skipping the staging table: False, with nothing
    written, if one of them is there already (a redelivered event), for the staging path's ON
    CONFLICT to skip it.

    The staging table's write and the INSERT ... SELECT out of it were about a fifth of the
    register's PostgreSQL time: 57-60 -> 43-47 us per 5-line invoice on the bench topic
    (bench.projection_costs, three alternating runs each). Only inside the caller's transaction,
    where the block is a savepoint: alone it would commit the rows without their tracking row."""
    if not copies_straight_in(conn, table):
        return False
    refused_here = (conn.info.backend_pid, table)
    types = _column_types(conn, table)
    try:
        with conn.transaction(), conn.cursor() as cur:
            for columns, same in _by_shape(rows).items():
                _copy(cur, sql.Identifier(table), columns, same, types)
    except psycopg.errors.UniqueViolation:
        return False
    except psycopg.errors.FeatureNotSupported:
        # "COPY FROM not supported with row-level security": the register has RLS for the
        # reporting roles (projections/reporting.sql), and a role that is not its owner, such as
        # the runtime role, is subject to it. INSERT is allowed there, so the staging path
        # serves this session and table from now on.
        if len(_COPY_REFUSED) > 256:  # bounded: old backends are never asked again
            _COPY_REFUSED.clear()
        _COPY_REFUSED.add(refused_here)
        return False
    return True


# (backend pid, table) where PostgreSQL refuses COPY FROM (row-level security).
_COPY_REFUSED: set[tuple[int, str]] = set()


def copies_straight_in(conn: psycopg.Connection, table: str) -> bool:
    """Whether ``copy_straight_in`` would try (a caller can skip the work of preparing its rows)."""
    in_transaction = conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    return in_transaction and (conn.info.backend_pid, table) not in _COPY_REFUSED


def _copy(
    cur: psycopg.Cursor[Any],
    target: sql.Composable,
    columns: tuple[str, ...],
    rows: Sequence[Mapping[str, Any]],
    types: Mapping[str, str] | None = None,
) -> sql.Composable:
    """COPY ``rows`` (each naming exactly ``columns``, in that order) into ``target``; the column
    list, for the statement that follows. ``types``, the columns' types, lets it use the binary
    format (engine/pg_copy.py), where the server does not read every byte of a row for delimiters
    and escapes; rows it cannot carry exactly as the text format would go in text format."""
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    kinds = _binary_kinds(cur.connection, columns, types)
    if kinds is not None:
        try:
            # A savepoint: a refused binary COPY leaves the transaction usable for the text one.
            with cur.connection.transaction():
                statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, names)
                with cur.copy(statement) as copy:
                    # In parts of a few hundred rows (~1 MB of invoices): a batch's whole stream
                    # at once was ~10 MB more to hold, twice over while it grew.
                    for start in range(0, len(rows), _BINARY_PART):
                        stop = start + _BINARY_PART
                        part = pg_copy.encode(
                            cast(Sequence[dict[str, Any]], rows[start:stop]),
                            kinds,
                            header=start == 0,
                            trailer=stop >= len(rows),
                        )
                        if part is None:
                            raise _NotBinary
                        copy.write(part)
            return names
        except (_NotBinary, psycopg.errors.DataError):
            # A value the binary format does not carry as the text format would, or one the
            # server refused (a number over the column's precision, a string over its length,
            # invalid JSON): the text format's COPY of the same rows is the one whose result, or
            # error, the batch has, word for word as before the binary format.
            pass
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, names)) as copy:
        write_row = copy.write_row
        for values in rows:
            write_row(list(values.values()))
    return names


_BINARY_PART = 256


class _NotBinary(Exception):
    """A row has a value for the text format (pg_copy.encode returned None)."""


def _binary_kinds(
    conn: psycopg.Connection, columns: tuple[str, ...], types: Mapping[str, str] | None
) -> bytes | None:
    """The columns' kinds for pg_copy.encode, or None: COPY in text format. Measured on the bench's
    5-line invoices (docs/performance.md, "pg-copy-binary"): the register's server CPU per row
    about a fifth lower, the client's formatting several times cheaper."""
    if types is None or not pg_copy.available() or conn.info.encoding != "utf-8":
        return None  # the binary strings are UTF-8, which only a UTF-8 session reads as sent
    return pg_copy.kinds_of(types[c] for c in columns)


def _by_shape(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, ...], list[Mapping[str, Any]]]:
    by_shape: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for values in rows:
        by_shape.setdefault(tuple(values), []).append(values)
    return by_shape


def _only_first_inserts(changes: Sequence[RowChange]) -> bool:
    """Whether every change only inserts, each a different row: then ``fold`` would return them as
    they are."""
    for change in changes:
        if change.insert is None or change.set:
            return False
    return len({c.key for c in changes}) == len(changes)


def _insert(
    conn: psycopg.Connection,
    table: str,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    returning: bool,
) -> list[Any]:
    """COPY the rows into a staging table, then move them over with one INSERT ... ON CONFLICT DO
    NOTHING. COPY because psycopg formats its rows in C: about 5 us of CPU per 5-line invoice row
    against 7.5 us for binary arrays and 15 us for executemany (docs/performance.md)."""
    # One COPY and one INSERT per distinct set of columns (a batch usually has one): a column a
    # row leaves out gets the table's DEFAULT, as in a plain INSERT naming only its columns.
    staging = _staging(conn, table)
    types = _column_types(conn, table)  # the staging table's too (LIKE the target)
    inserted: list[Any] = []
    with conn.cursor() as cur:
        for columns, same in _by_shape(rows).items():
            names = _copy(cur, staging, columns, same, types)
            # The DELETE empties the staging table for the next write of the same transaction (a
            # bisection retries halves); ON COMMIT DELETE ROWS empties it at commit anyway.
            statement = sql.SQL(
                "WITH moved AS (DELETE FROM {staging} RETURNING {names})"
                " INSERT INTO {table} ({names}) SELECT {names} FROM moved ON CONFLICT ({key}) DO NOTHING"
            ).format(staging=staging, names=names, table=sql.Identifier(table), key=sql.Identifier(key))
            if returning:
                statement += sql.SQL(" RETURNING {}").format(sql.Identifier(key))
            cur.execute(statement)
            if returning:
                inserted.extend(row[0] for row in cur.fetchall())
    return inserted


def _staging(conn: psycopg.Connection, table: str) -> sql.Composable:
    """A temporary table of ``table``'s columns (LIKE copies names, types and NOT NULL), one per
    session and table; created again if the transaction that created it was rolled back.

    INCLUDING DEFAULTS: a COPY that leaves out a NOT NULL column must still pass the staging
    table's copy of the constraint. Only the columns named are moved on, so the target's own
    DEFAULTs are what the rows get.

    INCLUDING COMPRESSION: with the default pglz the staging table compressed every ~4 KB invoice
    document once more (measured: 32 us of server CPU per row; with the target's lz4, 20-26 us,
    as the per-event path's 22-26 us)."""
    staging = sql.Identifier(f"{table}__batch")
    conn.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS INCLUDING COMPRESSION)"
            " ON COMMIT DELETE ROWS"
        ).format(staging, sql.Identifier(table))
    )
    return sql.SQL("pg_temp.{}").format(staging)


def _update(
    conn: psycopg.Connection,
    table: str,
    key: str,
    types: Mapping[str, str],
    effects: Sequence[FinalEffect],
    inserted: list[Any],
) -> None:
    changed = [e.update for e in effects]
    columns = _columns_of(map(tuple, changed))
    assignments: list[sql.Composable] = []
    aliases: list[sql.Composable] = [sql.Identifier("key")]
    arrays: list[sql.Composable] = [_array(types, key)]
    params: list[list[Any]] = [[e.key for e in effects]]
    for i, column in enumerate(columns):
        value = sql.Identifier(f"v{i}")
        aliases.append(value)
        arrays.append(_array(types, column))
        params.append([u.get(column) for u in changed])
        if all(column in u for u in changed):
            assignments.append(sql.SQL("{} = s.{}").format(sql.Identifier(column), value))
            continue
        # Set on some rows of the batch only: the others keep their value (a NULL in the array
        # could not tell "set to NULL" from "not set").
        flag = sql.Identifier(f"s{i}")
        aliases.append(flag)
        arrays.append(sql.SQL("%b::boolean[]"))
        params.append([column in u for u in changed])
        assignments.append(
            sql.SQL("{column} = CASE WHEN s.{flag} THEN s.{value} ELSE t.{column} END").format(
                column=sql.Identifier(column), flag=flag, value=value
            )
        )
    statement = sql.SQL(
        "UPDATE {table} AS t SET {assignments} FROM unnest({arrays}) AS s ({aliases}) WHERE t.{key} = s.key"
    ).format(
        table=sql.Identifier(table),
        assignments=sql.SQL(", ").join(assignments),
        arrays=sql.SQL(", ").join(arrays),
        aliases=sql.SQL(", ").join(aliases),
        key=sql.Identifier(key),
    )
    if inserted:
        # Rows this batch inserted already hold their later sets, and the sets before the insert
        # found no row when applied one by one.
        statement += sql.SQL(" AND NOT (s.key = ANY({}))").format(_array(types, key))
        params.append(inserted)
    _execute(conn, statement, params)


NUL_REFUSED = "PostgreSQL text fields cannot contain NUL (0x00) bytes"


def _execute(
    conn: psycopg.Connection, statement: sql.Composed, arrays: list[list[Any]]
) -> psycopg.Cursor[Any]:
    try:
        return conn.execute(statement, arrays)
    except psycopg.errors.CharacterNotInRepertoire as exc:
        # In binary format a NUL reaches the server, which names only the byte; say what psycopg
        # says of it in text format (the per-event path's message, which operators know).
        if any(isinstance(v, str) and "\x00" in v for array in arrays for v in array):
            raise psycopg.DataError(NUL_REFUSED) from exc
        raise


def _columns_of(shapes: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """Every column named in ``shapes`` (the rows' keys), in the order first seen (usually all are
    in the first)."""
    distinct = dict.fromkeys(shapes)  # in the usual batch, one shape
    first = next(iter(distinct), ())
    if len(distinct) == 1:
        return tuple(first)
    return tuple(dict.fromkeys(column for shape in distinct for column in shape))


def _array(types: Mapping[str, str], column: str) -> sql.Composable:
    """A binary array parameter cast to the column's type: psycopg's binary format is several times
    cheaper to build than the text format, which escapes every element (measured: 7 vs 250 us per
    5-line invoice row). Elements the array dumper sends as text are cast by the server."""
    try:
        pg_type = types[column]
    except KeyError:
        raise psycopg.errors.UndefinedColumn(
            f"the projection writes a column {column!r} its table lacks"
        ) from None
    return sql.SQL("%b::" + pg_type + "[]")


# The catalogue's column types per connection and table. Keyed by the connection's backend (a
# reconnect starts afresh) and the table's oid (a rebuild's swap replaces the table).
_TYPES: dict[tuple[int, int], dict[str, str]] = {}


def _column_types(conn: psycopg.Connection, table: str) -> dict[str, str]:
    oid_row = conn.execute("SELECT %s::regclass::oid", (sql.Identifier(table).as_string(conn),)).fetchone()
    assert oid_row is not None
    cache_key = (conn.info.backend_pid, int(oid_row[0]))
    found = _TYPES.get(cache_key)
    if found is None:
        rows = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
            (oid_row[0],),
        ).fetchall()
        found = _TYPES[cache_key] = {str(name): str(pg_type) for name, pg_type in rows}
        if len(_TYPES) > 256:  # bounded: old backends and swapped tables are never asked again
            del _TYPES[next(iter(_TYPES))]
    return found


@dataclass(frozen=True)
class ChangedEvent(PreparedEvent):
    """An event as ``RowProjection.at_decode`` leaves it: its row change, and no record."""

    @property
    def change(self) -> RowChange | Exception | None:
        """What ``change`` returned, or the exception it raised."""
        return cast(RowChange | Exception | None, self.prepared)

    @property
    def changed_by(self) -> str:
        """The projection that worked it out (only its ``apply`` may take the event)."""
        return self.prepared_by


def at_decode_of(projection: Any) -> AtDecode | None:
    """What the runner and the rebuild call on each event as it is decoded for ``projection``
    (``events.PreparesAtDecode``), or None: hand it the decoded event as it is.

    A row projection's ``at_decode`` only when its ``apply`` is ``RowProjection``'s (the only one
    that reads a ``ChangedEvent``): a subclass with its own ``apply`` may read records. Any other
    projection's ``at_decode`` if it has one: its ``apply`` takes what that returns."""
    if isinstance(projection, RowProjection):
        return projection.at_decode if type(projection).apply is RowProjection.apply else None
    return at_decode_hook(projection)


def at_message_of(projection: Any) -> AtMessage | None:
    """``projection.at_message`` (events.PreparesFromMessage) where ``at_decode_of`` gives a hook
    (its ``apply`` takes what the hooks return), else None."""
    hook = getattr(projection, "at_message", None)
    return hook if callable(hook) and at_decode_of(projection) is not None else None


class RowProjection(ABC):
    """A projection whose events each change at most one row of ``table``, keyed by ``key``.

    Implement ``change``; ``apply`` folds a batch per row and writes it set-based (``write``).
    ``on_table`` gives the same projection writing a table of the same shape (a rebuild's shadow).
    """

    name: str
    topics: list[str]
    key: str
    """The table's primary (or unique) key column."""

    def __init__(self, table: str | None = None) -> None:
        self.table = table or self.name

    @abstractmethod
    def change(self, event: ProjectedEvent) -> RowChange | None:
        """What ``event`` does to its row; None for an event this projection does not show. May
        raise for an event it cannot read: that event alone is then dead-lettered."""

    def apply(self, conn: psycopg.Connection, events: Sequence[ProjectedEvent]) -> None:
        changes = [c for c in map(self._change_of, events) if c is not None]
        write(conn, self.table, self.key, changes)

    def at_decode(self, event: ProjectedEvent) -> ChangedEvent:
        """``event`` with its change worked out now, without its record: what the runner hands
        ``apply`` when it decodes records for this projection (``at_decode_of``).

        Done as each record is decoded, while its objects are still in the CPU's caches, and so
        that the record itself (about 190 objects for a 5-line invoice) is freed at once unless
        another projection keeps it: decoding a batch of 2,500 records and building their rows
        afterwards cost 23 us an event with the frees, building each row as its record is decoded
        12.5 (docs/performance.md, "Projector: rows built as records are decoded")."""
        return cast(ChangedEvent, prepare(event, self.name, self.change, ChangedEvent))

    def _change_of(self, event: ProjectedEvent) -> RowChange | None:
        return prepared(event, self.name, self.change)

    def on_table(self, table: str) -> Self:
        twin = copy.copy(self)
        twin.table = table
        return twin
