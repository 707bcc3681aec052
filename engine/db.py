"""PostgreSQL access shared by the API, relay, projections and CLI.

One connection pool per process, bound to the configured schema through ``search_path`` so that
tests can give every test its own schema. The event store itself is the eventsourcing library's
recorder (see ``engine/application.py``); the tables here are the engine's own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from engine.config import Settings

T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached; callers answer 503 and retry later."""


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says PostgreSQL is away or dropped the session (wait and try again), not that
    the data is wrong: consumers wait these out and never dead-letter a record because of them.

    psycopg's OperationalError covers a lost connection, an administrator's shutdown or
    ``pg_terminate_backend`` (57P01), serialization failures and deadlocks (40001, 40P01) and
    "too many connections"; InterfaceError a connection already closed. The eventsourcing
    library maps the same conditions to its own OperationalError and InterfaceError."""
    from eventsourcing.persistence import InterfaceError as StoreInterfaceError
    from eventsourcing.persistence import OperationalError as StoreOperationalError

    return isinstance(
        exc,
        (
            DatabaseUnavailable,
            psycopg.OperationalError,
            psycopg.InterfaceError,
            StoreOperationalError,
            StoreInterfaceError,
        ),
    )


def is_record_fault(exc: BaseException) -> bool:
    """True when ``exc`` is about the record being processed, so retrying it can never succeed: PostgreSQL
    refused its data (psycopg.DataError: a NUL byte, a numeric overflow, bad encoding;
    psycopg.IntegrityError: a CHECK or NOT NULL) or our code could not handle it (any non-database
    exception: KeyError, TypeError, ValueError...). Outages are not (see ``is_outage``), nor are other
    database errors (a missing table is the deployment's fault, and would blame every record)."""
    if is_outage(exc) or not isinstance(exc, Exception):
        return False
    if isinstance(exc, psycopg.Error):
        return isinstance(exc, (psycopg.DataError, psycopg.IntegrityError))
    return True


def apply_refusing_faults(
    conn: psycopg.Connection, apply: Callable[[Sequence[T]], None], items: Sequence[T]
) -> list[tuple[T, Exception]]:
    """``apply(items)`` inside a savepoint of the caller's transaction; when that fails with a record
    fault (``is_record_fault``), roll it back and apply each half the same way, down to the single
    items that fail. Everything else is applied, in order. Returns the refused items with their
    errors; any other error propagates. k bad items among n cost about k * log2(n) extra tries."""
    if not items:
        return []
    try:
        with conn.transaction():
            apply(items)
        return []
    except Exception as exc:
        if not is_record_fault(exc):
            raise
        if len(items) == 1:
            return [(items[0], exc)]
    middle = len(items) // 2
    return apply_refusing_faults(conn, apply, items[:middle]) + apply_refusing_faults(
        conn, apply, items[middle:]
    )


def connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection:
    """A single connection with ``search_path`` set to the configured schema."""
    try:
        conn = psycopg.connect(
            settings.database_url,
            autocommit=autocommit,
            connect_timeout=5,
            options=f"-c search_path={settings.db_schema}",
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    return conn


def make_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> ConnectionPool:
    """A connection pool whose connections use the configured schema and return dict rows."""

    def configure(conn: psycopg.Connection) -> None:
        conn.row_factory = dict_row  # type: ignore[assignment]

    return ConnectionPool(
        settings.database_url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"options": f"-c search_path={settings.db_schema}", "connect_timeout": 5},
        configure=configure,
        # Fail fast while PostgreSQL is down so the API can answer 503 instead of hanging.
        timeout=5,
        open=True,
    )


@contextmanager
def transaction(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """A pooled connection inside a transaction, with connection failures mapped to DatabaseUnavailable."""
    try:
        with pool.connection() as conn, conn.transaction():
            yield conn
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    except TimeoutError as exc:  # psycopg_pool.PoolTimeout subclasses it
        raise DatabaseUnavailable(str(exc)) from exc


def ensure_schema(settings: Settings) -> None:
    """Create the configured schema and every bookkeeping and projection table (idempotent)."""
    # Several processes may start at once: serialise all DDL (the schema included) so that
    # CREATE ... IF NOT EXISTS cannot race into a unique violation.
    with connect(settings, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledgerflow.ensure_schema'))")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(settings.db_schema)))
        for package, name in MIGRATIONS:
            conn.execute(resources.files(package).joinpath(name).read_text())
        install_dependants(conn, settings)


# Each SQL file is idempotent (CREATE ... IF NOT EXISTS) and owned by the module beside it.
MIGRATIONS: list[tuple[str, str]] = [
    ("engine", "bookkeeping.sql"),
    ("projections", "invoice_register.sql"),
    ("streams.connectors", "runtime.sql"),
    ("engine", "consumer_lag_samples.sql"),
    ("projections", "rebuild.sql"),
    ("projections", "dead_letters.sql"),
]


# Modules with ``install(conn, settings)`` creating objects that depend on projection tables
# (views, row-level security policies). A projection rebuild drops the old table and calls
# ``install_dependants`` again inside its swap transaction.
DEPENDANTS: list[str] = ["projections.reporting"]


def install_dependants(conn: psycopg.Connection, settings: Settings) -> None:
    import importlib

    for module in DEPENDANTS:
        importlib.import_module(module).install(conn, settings)
