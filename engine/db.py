"""PostgreSQL access shared by the API, relay, projection runners and CLI.

One connection pool per process, bound to the configured schema through ``search_path`` so that
tests can give every test its own schema. The event store itself is the eventsourcing library's
recorder (see ``engine/application.py``); the tables here are the engine's own bookkeeping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from engine.config import Settings
from engine.errors import ConfigurationError, Unavailable

T = TypeVar("T")


class DatabaseUnavailable(Unavailable):
    """PostgreSQL could not be reached; callers answer 503 and retry later."""


class SchemaNotMigrated(DatabaseUnavailable):
    """The role connected may not change the schema, and the owner has not migrated it to this
    version of the code: run ``ledgerflow db migrate`` with the owner's URL. A kind of
    unavailability: the API answers 503 and background processes retry until the owner has."""


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


def connect(settings: Settings, *, autocommit: bool = False, owner: bool = False) -> psycopg.Connection:
    """A single connection with ``search_path`` set to the configured schema; as the schema's owner
    role (``LEDGERFLOW_OWNER_DATABASE_URL``) when ``owner``."""
    try:
        conn = psycopg.connect(
            settings.owner_url if owner else settings.database_url,
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


@contextmanager
def locked_transaction(
    pool: ConnectionPool, name: str, *, wait_seconds: int, busy: Exception
) -> Iterator[psycopg.Connection]:
    """A pooled connection inside a transaction that first takes the transaction-scoped advisory lock
    ``name`` (the first 8 bytes of its SHA-256, so any text names one). Callers with one name wait for
    each other until the first commits or rolls back, but at most ``wait_seconds`` (the transaction's
    ``lock_timeout``): a holder that hangs must not hold the others for ever. After that wait,
    ``busy`` is raised."""
    digest = hashlib.sha256(name.encode()).digest()
    with transaction(pool) as conn:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{wait_seconds}s",))
        try:
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(digest[:8], "big", signed=True),)
            )
        except psycopg.errors.LockNotAvailable as exc:
            raise busy from exc
        yield conn


@contextmanager
def event_store_tables_lock(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection holding the session advisory lock under which a process creates the eventsourcing
    tables of an event store (``engine.application.open_event_store``): eventsourcing issues CREATE OR
    REPLACE FUNCTION when an application is built, and two processes doing it at once fail with "tuple
    concurrently updated". Released on the way out."""
    with connect(settings, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(hashtext('ledgerflow.event_store_tables'))")
        try:
            yield lock
        finally:
            lock.execute("SELECT pg_advisory_unlock(hashtext('ledgerflow.event_store_tables'))")


def ensure_schema(settings: Settings) -> None:
    """Create the configured schema and every bookkeeping and projection table (idempotent).

    Runs as the owner role. A role that may not create objects in the schema (the runtime role of
    a two-role deployment, given no owner URL) only checks that the owner migrated the schema to
    this version of the code, and raises ``SchemaNotMigrated`` if not.
    """
    # Several processes may start at once: serialise all DDL (the schema included) so that
    # CREATE ... IF NOT EXISTS cannot race into a unique violation.
    with connect(settings, autocommit=True, owner=True) as conn:
        if not may_change_schema(conn, settings.db_schema):
            check_migrated(conn, settings)
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledgerflow.ensure_schema'))")
            if is_migrated(conn):
                # Already at this version (another process, or an earlier start). Running the DDL
                # again would still take ACCESS EXCLUSIVE locks (ALTER TABLE ... ADD COLUMN IF NOT
                # EXISTS does) on tables that running processes use, and deadlock their queries.
                return
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(settings.db_schema)))
            for package, name in all_migrations():
                conn.execute(resources.files(package).joinpath(name).read_text())
            install_dependants(conn, settings)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (fingerprint text PRIMARY KEY,"
                " migrated_at timestamptz NOT NULL DEFAULT now(),"
                " migrated_by text NOT NULL DEFAULT current_user)"
            )
            conn.execute(
                "INSERT INTO schema_migrations (fingerprint) VALUES (%s) ON CONFLICT DO NOTHING",
                (schema_fingerprint(),),
            )


def may_change_schema(conn: psycopg.Connection, schema: str) -> bool:
    """Whether the connected role may create objects in ``schema`` (or create it, if missing)."""
    row = conn.execute(
        "SELECT CASE WHEN n.oid IS NULL THEN has_database_privilege(current_database(), 'CREATE')"
        " ELSE has_schema_privilege(n.oid, 'CREATE') END"
        " FROM (SELECT %s::text AS name) AS wanted LEFT JOIN pg_namespace AS n ON n.nspname = wanted.name",
        (schema,),
    ).fetchone()
    return bool(row and row[0])


def schema_fingerprint() -> str:
    """Changes whenever a migration or the list of dependants changes."""
    digest = hashlib.sha256()
    for package, name in all_migrations():
        digest.update(f"{package}/{name}\n".encode())
        digest.update(resources.files(package).joinpath(name).read_bytes())
    # Named by module, as when the engine listed them by module name: the fingerprint stays the same.
    digest.update(",".join(d.__module__ for d in dependants()).encode())
    return digest.hexdigest()


def is_migrated(conn: psycopg.Connection) -> bool:
    """Whether the schema on the connection's search path is stamped with this code's migrations."""
    found = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not (found and found[0]):
        return False
    stamped = conn.execute(
        "SELECT 1 FROM schema_migrations WHERE fingerprint = %s", (schema_fingerprint(),)
    ).fetchone()
    return stamped is not None


def check_migrated(conn: psycopg.Connection, settings: Settings) -> None:
    if is_migrated(conn):
        return
    raise SchemaNotMigrated(
        f"schema {settings.db_schema!r} is not migrated to this version and role {settings.runtime_role!r}"
        " may not change it: run `ledgerflow db migrate` with LEDGERFLOW_OWNER_DATABASE_URL set to the"
        " owner role's URL (docs/runbooks/local-stack.md)"
    )


def grant_runtime(conn: psycopg.Connection, settings: Settings) -> None:
    """Give the runtime role what the engine uses, now and for tables the owner creates later.

    Data rights only (SELECT/INSERT/UPDATE/DELETE, sequences' USAGE): no CREATE, no ownership, so
    the runtime role cannot create, alter or drop anything. Nothing to do when one role is both.
    """
    runtime = settings.runtime_role
    owner = conn.execute("SELECT current_user").fetchone()
    if not runtime or owner is None or owner[0] == runtime:
        return
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (runtime,)).fetchone()
    if not exists:
        raise SchemaNotMigrated(f"runtime role {runtime!r} does not exist (`ledgerflow stack up` creates it)")
    role, owner_role = sql.Identifier(runtime), sql.Identifier(owner[0])
    base, reporting = sql.Identifier(settings.db_schema), sql.Identifier(settings.reporting_schema)
    statements = [
        "GRANT USAGE ON SCHEMA {base} TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {base} TO {role}",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {base} TO {role}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {base}"
        " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {base} GRANT USAGE ON SEQUENCES TO {role}",
    ]
    has_reporting = conn.execute(
        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (settings.reporting_schema,)
    ).fetchone()
    if has_reporting:
        statements += [
            "GRANT USAGE ON SCHEMA {reporting} TO {role}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA {reporting} TO {role}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {reporting}"
            " GRANT SELECT ON TABLES TO {role}",
        ]
    for statement in statements:
        conn.execute(sql.SQL(statement).format(base=base, reporting=reporting, role=role, owner=owner_role))
    # Row-level security (the tenant isolation of docs/reporting.md) denies by default every command
    # no policy allows; the engine itself reads and writes every tenant's rows. BYPASSRLS would need
    # a superuser to grant and would reach every table: a policy per table is narrower.
    secured = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE c.relrowsecurity AND c.relkind IN ('r', 'p') AND n.nspname IN (%s, %s)"
        " AND NOT EXISTS (SELECT 1 FROM pg_policy AS p"
        " WHERE p.polrelid = c.oid AND p.polname = 'ledgerflow_runtime')",
        (settings.db_schema, settings.reporting_schema),
    ).fetchall()
    for schema, table in secured:
        command = "ALL" if schema == settings.db_schema else "SELECT"
        conn.execute(
            sql.SQL("CREATE POLICY ledgerflow_runtime ON {}.{} FOR {} TO {} USING (true)").format(
                sql.Identifier(schema), sql.Identifier(table), sql.SQL(command), role
            )
            + (sql.SQL(" WITH CHECK (true)") if command == "ALL" else sql.SQL(""))
        )


# Each SQL file is idempotent (CREATE ... IF NOT EXISTS) and owned by the package beside it. The
# engine lists only its own; the outer packages' and the connectors' are handed over by the process's
# composition root (``register_outer``, ``register_migrations``): they depend on the engine, never the
# other way round.
MIGRATIONS: list[tuple[str, str]] = [
    ("engine", "bookkeeping.sql"),
    ("engine", "connector_state.sql"),
    ("engine", "etims_tax_rates.sql"),
    ("engine", "tax_return_parts.sql"),
    ("engine", "webhooks.sql"),
    ("engine", "payments.sql"),
    ("engine", "tds.sql"),
    ("engine", "integration_health.sql"),
    ("engine", "invoice_drafts.sql"),
    ("engine", "catalogue.sql"),
    ("engine", "expenses.sql"),
    ("engine", "fees.sql"),
    ("engine", "users.sql"),
    ("engine", "audit.sql"),
]

# The outer packages' tables (registered by ``register_outer``) run before this engine migration: the order
# they had when the engine still named them. ``schema_fingerprint`` hashes the migrations in order, so
# another order would make every deployed schema look unmigrated to a runtime-only role.
OUTER_MIGRATIONS_BEFORE = ("engine", "connector_state.sql")

# Installs objects that depend on projection tables (views, row-level security policies): called
# with the owner's connection after every migration, and again by a projection rebuild inside its
# swap transaction (``install_dependants``).
Dependant = Callable[[psycopg.Connection, Settings], None]

# None until registered, so that a process that forgot to register fails loudly instead of migrating
# (and fingerprinting) a schema without those tables.
_outer_migrations: list[tuple[str, str]] | None = None
_dependants: list[Dependant] | None = None
# The tables each connector declares for itself (``Connector.migrations``, connectors/registry.py).
_registered_migrations: list[tuple[str, str]] | None = None


class MigrationsNotRegistered(ConfigurationError, RuntimeError):
    """The schema was needed before the process's entry point registered the outer packages' or the
    connectors' tables."""


def register_outer(migrations: Iterable[tuple[str, str]], dependants: Iterable[Dependant]) -> None:
    """Hand over the outer packages' ``(package, sql file)`` migrations, in order, and their dependants
    (``install(conn, settings)`` functions). Registering the same again is a no-op."""
    global _outer_migrations, _dependants
    known = list(_outer_migrations or [])
    known += [m for m in migrations if m not in known and m not in MIGRATIONS]
    _outer_migrations = known
    installers = list(_dependants or [])
    installers += [d for d in dependants if d not in installers]
    _dependants = installers


def register_migrations(migrations: Iterable[tuple[str, str]]) -> None:
    """Add ``(package, sql file)`` migrations after the engine's own; registering one again is a no-op."""
    global _registered_migrations
    known = list(_registered_migrations or [])
    known += [m for m in migrations if m not in known and m not in MIGRATIONS]
    _registered_migrations = known


def all_migrations() -> list[tuple[str, str]]:
    """The engine's migrations with the outer packages' before ``OUTER_MIGRATIONS_BEFORE``, then the
    connectors' (``register_outer``, ``register_migrations``)."""
    if _registered_migrations is None:
        raise MigrationsNotRegistered(
            "no connector migrations registered: the process's entry point must call"
            " connectors.registry.register() before touching the schema"
        )
    if _outer_migrations is None:
        raise MigrationsNotRegistered(
            "no outer package migrations registered: the process's entry point must hand them over"
            " (db.register_outer) before touching the schema"
        )
    at = MIGRATIONS.index(OUTER_MIGRATIONS_BEFORE)
    return [*MIGRATIONS[:at], *_outer_migrations, *MIGRATIONS[at:], *_registered_migrations]


def dependants() -> list[Dependant]:
    """The registered dependants, in registration order (``register_outer``)."""
    if _dependants is None:
        raise MigrationsNotRegistered(
            "no dependants registered: the process's entry point must hand them over (db.register_outer)"
        )
    return list(_dependants)


def install_dependants(conn: psycopg.Connection, settings: Settings) -> None:
    for install in dependants():
        install(conn, settings)
    grant_runtime(conn, settings)
