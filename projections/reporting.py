"""The analysts' reporting schema: stable SQL views over the projections, tenant-isolated roles, and
the queries behind ``GET /v1/reports`` and ``ledgerflow export``.

The views (``reporting.sql``) are a contract documented in ``docs/reporting.md``: columns are only
ever added at the end. ``REPORTS`` below names every view and column with its PostgreSQL type; the
same descriptions become the database comments that BI tools show, and the API lists them.

Isolation: the views run with their caller's rights (``security_invoker``) and ``invoice_register``
has a row-level security policy that shows a role only the rows of the tenant that
``<reporting>.tenant_roles`` maps it to. The engine's own role owns the tables and is not subject to
the policy; the API therefore filters by tenant explicitly.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import tuple_row

from engine.config import Settings
from engine.tax.states import STATES


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    """PostgreSQL's own spelling (``format_type``), e.g. ``numeric(18,2)``: part of the contract."""
    description: str


@dataclass(frozen=True)
class Report:
    """One view of the reporting schema."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    """Unique within a tenant; rows are ordered and paginated by it."""
    date_column: str
    """What ``from``/``to`` filter on."""
    monthly: bool = False
    """``date_column`` is the first day of a month: ``from``/``to`` select the months they touch."""

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


MONEY = "numeric(18,2)"
QUANTITY = "numeric(18,3)"
RATE = "numeric(6,3)"
TIMESTAMP = "timestamp with time zone"

_TENANT = Column("tenant_id", "uuid", "The tenant (seller) the row belongs to.")
_INVOICE_ID = Column("invoice_id", "uuid", "Invoice id, as in the API and on the ledger.invoice.v1 topic.")
_NUMBER = Column("invoice_number", "text", "Invoice number, unique per tenant and financial year.")
_DATE = Column("invoice_date", "date", "Invoice date.")
_PERIOD = Column("period", "date", "First day of the tax period (calendar month) of the invoice date.")
_SUPPLY_TYPE = Column(
    "supply_type", "text", "B2B, B2C, SEZWP, SEZWOP, EXPWP or EXPWOP (e-invoice supply type codes)."
)
_POS = Column("place_of_supply", "text", "Two-digit GST state code of the place of supply (96: abroad).")
_POS_NAME = Column("place_of_supply_name", "text", "Name of the place of supply's state or territory.")
_EINVOICE_STATUS = Column(
    "einvoice_status",
    "text",
    "generated (the IRP issued an IRN), cancelled (that IRN was cancelled), failed (no IRN: the IRP call"
    " failed for good) or none (no outcome recorded: not applicable, not enabled, or in progress).",
)


def _taxes(prefix: str = "") -> tuple[Column, ...]:
    return (
        Column("cgst", MONEY, f"Central GST{prefix}, INR."),
        Column("sgst", MONEY, f"State or union-territory GST{prefix}, INR."),
        Column("igst", MONEY, f"Integrated GST{prefix}, INR."),
        Column("cess", MONEY, f"Compensation cess{prefix}, INR."),
    )


REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report(
            "invoices",
            "One row per invoice with its tax totals, cancellation and e-invoicing state.",
            (
                _TENANT,
                _INVOICE_ID,
                _NUMBER,
                Column("financial_year", "text", "Indian financial year (April to March), e.g. 2025-26."),
                _DATE,
                _PERIOD,
                Column("status", "text", "issued or cancelled."),
                _SUPPLY_TYPE,
                Column("buyer_name", "text", "Buyer's name as on the invoice."),
                Column("buyer_gstin", "text", "Buyer's GSTIN; empty for an unregistered buyer (B2C)."),
                _POS,
                _POS_NAME,
                Column(
                    "intra_state",
                    "boolean",
                    "True when CGST and SGST apply (seller and place of supply in one state); false: IGST.",
                ),
                Column("taxable", MONEY, "Taxable value (after discounts), INR."),
                *_taxes(),
                Column("total_tax", MONEY, "cgst + sgst + igst + cess, INR."),
                Column("total", MONEY, "Invoice total: taxable + total_tax, INR."),
                Column("issued_at", TIMESTAMP, "When the invoice was recorded."),
                Column("cancelled_at", TIMESTAMP, "When the invoice was cancelled; empty if it was not."),
                Column(
                    "cancellation_reason",
                    "text",
                    "duplicate, data_entry_mistake, order_cancelled or other; empty if not cancelled.",
                ),
                Column("irn", "text", "Invoice Reference Number from the IRP (64 hex characters), if any."),
                _EINVOICE_STATUS,
            ),
            key=("invoice_date", "invoice_number", "invoice_id"),
            date_column="invoice_date",
        ),
        Report(
            "invoice_lines",
            "One row per invoice line: HSN/SAC, quantity, rate and the line's taxes.",
            (
                _TENANT,
                _INVOICE_ID,
                _NUMBER,
                _DATE,
                _PERIOD,
                Column("status", "text", "The invoice's status: issued or cancelled."),
                _SUPPLY_TYPE,
                _POS,
                Column("line_no", "integer", "1-based position of the line on the invoice."),
                Column("description", "text", "Description of the goods or service."),
                Column("hsn", "text", "HSN code (goods) or SAC code (services)."),
                Column("quantity", QUANTITY, "Quantity, in unit."),
                Column("unit", "text", "Unit quantity code (UQC), e.g. NOS, KGS."),
                Column("unit_price", QUANTITY, "Price per unit before discount, INR."),
                Column("discount", MONEY, "Discount on the line, INR."),
                Column("taxable_value", MONEY, "quantity x unit_price - discount, INR."),
                Column("gst_rate", RATE, "GST rate in percent (CGST + SGST, or IGST), e.g. 18.000."),
                Column(
                    "rate_source",
                    "text",
                    "master (rate from the HSN rate master) or override (set by caller).",
                ),
                *_taxes(" on the line")[:3],
                Column("cess_rate", RATE, "Compensation cess rate in percent."),
                _taxes(" on the line")[3],
                Column("total", MONEY, "taxable_value + taxes, INR."),
            ),
            key=("invoice_date", "invoice_number", "invoice_id", "line_no"),
            date_column="invoice_date",
        ),
        Report(
            "invoice_tax_summary",
            "Per tax period, supply type and place of supply: invoice count and tax totals. Cancelled "
            "invoices are excluded from the sums and counted separately.",
            (
                _TENANT,
                _PERIOD,
                _SUPPLY_TYPE,
                _POS,
                _POS_NAME,
                Column("invoice_count", "bigint", "Invoices not cancelled."),
                Column("taxable", MONEY, "Taxable value of the invoices not cancelled, INR."),
                *_taxes(" of the invoices not cancelled"),
                Column("total_tax", MONEY, "cgst + sgst + igst + cess, INR."),
                Column("total", MONEY, "Invoice totals of the invoices not cancelled, INR."),
                Column("cancelled_count", "bigint", "Cancelled invoices (not in the sums)."),
                Column("cancelled_total", MONEY, "Invoice totals of the cancelled invoices, INR."),
            ),
            key=("period", "supply_type", "place_of_supply"),
            date_column="period",
            monthly=True,
        ),
        Report(
            "hsn_summary",
            "HSN-wise summary of outward supplies (GSTR-1 table 12) per tax period and supply type; "
            "cancelled invoices are excluded.",
            (
                _TENANT,
                _PERIOD,
                _SUPPLY_TYPE,
                Column("hsn", "text", "HSN or SAC code."),
                Column("unit", "text", "Unit quantity code (UQC)."),
                Column("gst_rate", RATE, "GST rate in percent."),
                Column("invoice_count", "bigint", "Invoices with at least one such line."),
                Column("quantity", QUANTITY, "Total quantity, in unit."),
                Column("taxable_value", MONEY, "Total taxable value, INR."),
                *_taxes(),
                Column("total", MONEY, "Total value: taxable_value + taxes, INR."),
            ),
            key=("period", "supply_type", "hsn", "unit", "gst_rate"),
            date_column="period",
            monthly=True,
        ),
        Report(
            "einvoice_status",
            "One row per invoice with its e-invoicing (IRN) state, acknowledgement and last failure.",
            (
                _TENANT,
                _INVOICE_ID,
                _NUMBER,
                _DATE,
                Column("invoice_status", "text", "issued or cancelled."),
                _SUPPLY_TYPE,
                Column("buyer_gstin", "text", "Buyer's GSTIN; empty for an unregistered buyer."),
                Column("total", MONEY, "Invoice total, INR."),
                _EINVOICE_STATUS,
                Column("irn", "text", "Invoice Reference Number (64 hex characters), if generated."),
                Column("ack_no", "text", "The IRP's acknowledgement number."),
                Column("acknowledged_at", TIMESTAMP, "The IRP's acknowledgement time (AckDt)."),
                Column(
                    "adopted_existing",
                    "boolean",
                    "True when the IRP already had the invoice (error 2150) and that IRN was adopted.",
                ),
                Column("irn_cancelled_at", TIMESTAMP, "When the IRP cancelled the IRN."),
                Column(
                    "irn_cancel_reason_code",
                    "integer",
                    "1 duplicate, 2 data entry mistake, 3 order cancelled, 4 other.",
                ),
                Column(
                    "failure_operation", "text", "generate or cancel: the call that last failed for good."
                ),
                Column(
                    "failure_class", "text", "permanent, needs_attention or retryable (retries exhausted)."
                ),
                Column("failure_code", "text", "The IRP's error code, or ours (timeout, http_503, ...)."),
                Column("failure_message", "text", "The IRP's error message."),
                Column("failure_attempts", "integer", "Attempts made before giving up."),
            ),
            key=("invoice_date", "invoice_number", "invoice_id"),
            date_column="invoice_date",
        ),
    )
}

# Tables of the reporting schema a tenant role may read besides the views.
_READABLE_TABLES = ("tenant_roles", "gst_states")
# The projection tables the views read (with the caller's rights, so the caller needs SELECT).
_PROJECTION_TABLES = ("invoice_register",)
# Marks the roles `grant` created, so that it never takes over (or drops) anybody else's role.
ROLE_MARKER = "ledgerflow reporting role"
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Shared with engine.db.ensure_schema: a session may take an advisory lock again, so install() is
# safe both inside ensure_schema and inside a projection rebuild's swap transaction.
_DDL_LOCK = "ledgerflow.ensure_schema"


# -- installation ---------------------------------------------------------------------------------


def _template() -> str:
    return resources.files("projections").joinpath("reporting.sql").read_text()


def _fingerprint() -> str:
    """Changes whenever what install() would create changes."""
    digest = hashlib.sha256(_template().encode())
    digest.update(
        orjson.dumps([[r.name, r.description, [c.__dict__ for c in r.columns]] for r in REPORTS.values()])
    )
    digest.update(orjson.dumps(sorted((s.code, s.alpha, s.name) for s in STATES.values())))
    digest.update(orjson.dumps([_READABLE_TABLES, _PROJECTION_TABLES]))
    return digest.hexdigest()


def install(conn: psycopg.Connection, settings: Settings) -> None:
    """Create or bring up to date the reporting schema, its views and the tenant-isolation policies.

    Runs inside the caller's transaction and never commits. Idempotent: when nothing changed since
    the last installation (same definitions, same ``invoice_register`` table) it only checks that.
    When ``invoice_register`` is a different table than last time (a rebuild swapped it in), the
    views, the policy and the tenant roles' grants are made again against the new one.
    """
    reporting, base = _schemas(settings)
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_DDL_LOCK,))
    fingerprint = _fingerprint()
    register_oid = _oid(conn, settings, "invoice_register")
    if _installed(conn, settings) == (fingerprint, register_oid):
        return
    conn.execute(sql.SQL(_template()).format(reporting=reporting, base=base))
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {}.gst_states (code, alpha, name) VALUES (%s, %s, %s)"
                " ON CONFLICT (code) DO UPDATE SET alpha = excluded.alpha, name = excluded.name"
            ).format(reporting),
            [(s.code, s.alpha, s.name) for s in STATES.values()],
        )
    # The catalogue's descriptions as database comments: psql's \d+ and BI tools show them.
    comments: list[sql.Composable] = []
    for report in REPORTS.values():
        view = sql.SQL("{}.{}").format(reporting, sql.Identifier(report.name))
        comments.append(sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(report.description)))
        comments.extend(
            sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                view, sql.Identifier(column.name), sql.Literal(column.description)
            )
            for column in report.columns
        )
    conn.execute(sql.SQL(";\n").join(comments))
    for (role,) in _all(
        conn,
        sql.SQL(
            "SELECT t.role_name FROM {}.tenant_roles AS t JOIN pg_roles AS r ON r.rolname = t.role_name"
        ).format(reporting),
    ):
        _grant_privileges(conn, settings, role)
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.installation (fingerprint, register_oid) VALUES (%s, %s)"
            " ON CONFLICT (singleton) DO UPDATE SET fingerprint = excluded.fingerprint,"
            " register_oid = excluded.register_oid, installed_at = now()"
        ).format(reporting),
        (fingerprint, register_oid),
    )


def _schemas(settings: Settings) -> tuple[sql.Identifier, sql.Identifier]:
    return sql.Identifier(settings.reporting_schema), sql.Identifier(settings.db_schema)


def _oid(conn: psycopg.Connection, settings: Settings, table: str) -> int:
    name = sql.SQL("{}.{}").format(sql.Identifier(settings.db_schema), sql.Identifier(table)).as_string(conn)
    row = _one(conn, "SELECT %s::regclass::oid", (name,))
    assert row is not None
    return int(row[0])


def _installed(conn: psycopg.Connection, settings: Settings) -> tuple[str, int] | None:
    name = sql.SQL("{}.installation").format(sql.Identifier(settings.reporting_schema)).as_string(conn)
    exists = _one(conn, "SELECT to_regclass(%s) IS NOT NULL", (name,))
    if not exists or not exists[0]:
        return None
    row = _one(
        conn,
        sql.SQL("SELECT fingerprint, register_oid FROM {}.installation").format(
            sql.Identifier(settings.reporting_schema)
        ),
    )
    return (str(row[0]), int(row[1])) if row else None


def _one(conn: psycopg.Connection, query: Any, params: Any = None) -> tuple[Any, ...] | None:
    # Tuple rows whatever the connection's row factory (the API's pool returns dicts).
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchone()


def _all(conn: psycopg.Connection, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


# -- tenant roles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleGrant:
    role: str
    tenant_id: UUID
    created: bool
    password: str | None
    """The generated password of a new role created without one (shown once); else None."""


@dataclass(frozen=True)
class RoleRevoke:
    role: str
    dropped: bool
    """False when the role also reads another deployment (schema or database) and was kept."""


@dataclass(frozen=True)
class TenantRole:
    role: str
    tenant_id: UUID
    granted_at: datetime
    exists: bool


def check_role_name(role: str) -> None:
    if not _ROLE_NAME.fullmatch(role) or role.startswith("pg_"):
        raise RoleRefused(
            f"{role!r} is not a usable role name: use 1-63 lower-case letters, digits and underscores,"
            " starting with a letter or underscore and not with pg_"
        )


def grant_tenant_role(
    conn: psycopg.Connection, settings: Settings, *, tenant_id: UUID, role: str, password: str | None
) -> RoleGrant:
    """Create (or update) a LOGIN role that reads only ``tenant_id``'s rows of the reporting views.

    An existing role is reused only if this command created it and it reads the same tenant; its
    password changes only when one is given. Call inside a transaction, after :func:`install`.
    """
    check_role_name(role)
    reporting, _ = _schemas(settings)
    existing = _role(conn, role)
    mapped = _one(
        conn, sql.SQL("SELECT tenant_id FROM {}.tenant_roles WHERE role_name = %s").format(reporting), (role,)
    )
    if mapped is not None and mapped[0] != tenant_id:
        raise RoleRefused(f"role {role} already reads tenant {mapped[0]}; revoke it first")
    created = existing is None
    if created:
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"
            ).format(sql.Identifier(role))
        )
        conn.execute(
            sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(ROLE_MARKER))
        )
    generated = secrets.token_urlsafe(24) if created and password is None else None
    if password is not None or generated is not None:
        _set_password(conn, role, password or generated or "")
    # psql and BI tools connected as the role find the views without qualifying them.
    conn.execute(
        sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path TO {}").format(
            sql.Identifier(role), sql.Identifier(_database(conn)), reporting
        )
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.tenant_roles (role_name, tenant_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
        ).format(reporting),
        (role, tenant_id),
    )
    _grant_privileges(conn, settings, role)
    return RoleGrant(role, tenant_id, created, generated)


def revoke_tenant_role(conn: psycopg.Connection, settings: Settings, role: str) -> RoleRevoke:
    """Take the role's reporting rights away and drop it (it was created by grant_tenant_role)."""
    check_role_name(role)
    reporting, base = _schemas(settings)
    deleted = _one(
        conn,
        sql.SQL("DELETE FROM {}.tenant_roles WHERE role_name = %s RETURNING tenant_id").format(reporting),
        (role,),
    )
    if deleted is None:
        raise RoleRefused(f"role {role} reads no tenant in {settings.reporting_schema}")
    if _role(conn, role) is None:
        return RoleRevoke(role, dropped=True)  # dropped by hand earlier; the mapping was all that was left
    name = sql.Identifier(role)
    conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(reporting, name))
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(reporting, name))
    for table in _PROJECTION_TABLES:
        conn.execute(sql.SQL("REVOKE ALL ON {}.{} FROM {}").format(base, sql.Identifier(table), name))
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(base, name))
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(sql.Identifier(_database(conn)), name)
            )
            conn.execute(sql.SQL("DROP ROLE {}").format(name))
    except pg_errors.DependentObjectsStillExist:
        # The role also reads another deployment (another schema or database): keep it for that.
        return RoleRevoke(role, dropped=False)
    return RoleRevoke(role, dropped=True)


def tenant_roles(conn: psycopg.Connection, settings: Settings) -> list[TenantRole]:
    rows = _all(
        conn,
        sql.SQL(
            "SELECT t.role_name, t.tenant_id, t.granted_at, r.rolname IS NOT NULL"
            " FROM {}.tenant_roles AS t LEFT JOIN pg_roles AS r ON r.rolname = t.role_name"
            " ORDER BY t.role_name"
        ).format(sql.Identifier(settings.reporting_schema)),
    )
    return [TenantRole(str(r[0]), r[1], r[2], bool(r[3])) for r in rows]


def _role(conn: psycopg.Connection, role: str) -> dict[str, Any] | None:
    row = _one(
        conn,
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,"
        " shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
        (role,),
    )
    if row is None:
        return None
    if row[5] != ROLE_MARKER:
        raise RoleRefused(
            f"role {role} exists and was not created by `ledgerflow reporting grant`; choose another name"
        )
    if any(row[:5]):
        raise RoleRefused(f"role {role} has administrative attributes; a reporting role must not")
    return {"marker": row[5]}


def _set_password(conn: psycopg.Connection, role: str, password: str) -> None:
    # Only the SCRAM verifier reaches the server, so the password cannot appear in its logs.
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier.decode()))
    )


def _database(conn: psycopg.Connection) -> str:
    row = _one(conn, "SELECT current_database()")
    assert row is not None
    return str(row[0])


def _grant_privileges(conn: psycopg.Connection, settings: Settings, role: str) -> None:
    """Exactly what a tenant role needs: read the views and, because they run with its rights, the
    projection tables under them (row-level security cuts those down to its tenant)."""
    reporting, base = _schemas(settings)
    name = sql.Identifier(role)
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(_database(conn)), name))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(base, name))
    tables = [sql.SQL("{}.{}").format(base, sql.Identifier(t)) for t in _PROJECTION_TABLES]
    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.SQL(", ").join(tables), name))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(reporting, name))
    readable = [sql.SQL("{}.{}").format(reporting, sql.Identifier(t)) for t in (*_READABLE_TABLES, *REPORTS)]
    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.SQL(", ").join(readable), name))


# -- queries ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFilter:
    tenant_id: UUID | None
    """None only for exports across all tenants (the engine's own role)."""
    date_from: date | None = None
    date_to: date | None = None


@dataclass(frozen=True)
class ReportPage:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    next: str | None


def report(name: str) -> Report:
    found = REPORTS.get(name)
    if found is None:
        raise UnknownReport(f"no report named {name!r}; the reports are {', '.join(REPORTS)}")
    return found


def _where(settings: Settings, chosen: Report, where: ReportFilter) -> tuple[list[sql.Composable], list[Any]]:
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    if where.tenant_id is not None:
        clauses.append(sql.SQL("tenant_id = %s"))
        params.append(where.tenant_id)
    column = sql.Identifier(chosen.date_column)
    if where.date_from is not None:
        if chosen.monthly:
            clauses.append(sql.SQL("{} >= date_trunc('month', %s::timestamp)::date").format(column))
        else:
            clauses.append(sql.SQL("{} >= %s").format(column))
        params.append(where.date_from)
    if where.date_to is not None:
        clauses.append(sql.SQL("{} <= %s").format(column))
        params.append(where.date_to)
    return clauses, params


def _select(
    settings: Settings, chosen: Report, where: ReportFilter, extra: Sequence[sql.Composable] = ()
) -> tuple[sql.Composed, list[Any]]:
    clauses, params = _where(settings, chosen, where)
    clauses.extend(extra)
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(map(sql.Identifier, chosen.column_names)),
        sql.Identifier(settings.reporting_schema),
        sql.Identifier(chosen.name),
    )
    if clauses:
        query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses)
    order = ("tenant_id", *chosen.key) if where.tenant_id is None else chosen.key
    query += sql.SQL(" ORDER BY ") + sql.SQL(", ").join(map(sql.Identifier, order))
    return query, params


def page(
    conn: psycopg.Connection,
    settings: Settings,
    chosen: Report,
    tenant_id: UUID,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    after: str | None = None,
    limit: int = 100,
) -> ReportPage:
    """One page of a tenant's rows in key order; ``next`` continues after the last row."""
    extra: list[sql.Composable] = []
    params_after: list[Any] = []
    if after is not None:
        keys = sql.SQL(", ").join(map(sql.Identifier, chosen.key))
        marks = sql.SQL(", ").join(sql.Placeholder() * len(chosen.key))
        extra.append(sql.SQL("({}) > ({})").format(keys, marks))
        params_after = list(decode_cursor(chosen, after))
    query, params = _select(settings, chosen, ReportFilter(tenant_id, date_from, date_to), extra)
    query += sql.SQL(" LIMIT %s")
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(query, [*params, *params_after, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = dict(zip(chosen.column_names, rows[-1], strict=True))
        next_cursor = encode_cursor(chosen, [last[k] for k in chosen.key])
    return ReportPage(chosen.column_names, rows, next_cursor)


def count(conn: psycopg.Connection, settings: Settings, chosen: Report, where: ReportFilter) -> int:
    clauses, params = _where(settings, chosen, where)
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(settings.reporting_schema), sql.Identifier(chosen.name)
    )
    if clauses:
        query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses)
    row = _one(conn, query, params)
    assert row is not None
    return int(row[0])


def stream(
    conn: psycopg.Connection, settings: Settings, chosen: Report, where: ReportFilter, *, chunk_rows: int
) -> Iterator[list[tuple[Any, ...]]]:
    """Every matching row, ``chunk_rows`` at a time, through a server-side cursor (flat memory).

    Needs a connection inside a transaction (a named cursor lives as long as its transaction).
    """
    query, params = _select(settings, chosen, where)
    with conn.cursor(name=f"report_{chosen.name}", row_factory=tuple_row) as cur:
        cur.itersize = chunk_rows
        cur.execute(query, params)
        while chunk := cur.fetchmany(chunk_rows):
            yield chunk


def json_value(value: Any) -> Any:
    """A view's value in JSON: decimals as strings (exact), dates and times in ISO 8601."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    return value


def text_value(value: Any) -> str:
    """A view's value in CSV: as in JSON; empty for NULL, true/false for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(json_value(value))


# OWASP "CSV Injection" (https://owasp.org/www-community/attacks/CSV_Injection): spreadsheets
# evaluate a cell that begins with = + - @ as a formula, and some strip a leading tab or carriage
# return first. A text cell beginning so gets a leading single quote, which spreadsheets show as
# text. Only text columns: numbers, dates and ids are written exactly (a negative amount stays -2.00).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_value(pg_type: str, value: Any) -> str:
    """A view's value in a CSV cell: ``text_value``, with formula-like text neutralised."""
    text = text_value(value)
    if pg_type == "text" and text.startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text


def csv_row(chosen: Report, row: Sequence[Any]) -> list[str]:
    return [csv_value(c.type, v) for c, v in zip(chosen.columns, row, strict=True)]


# -- cursors ----------------------------------------------------------------------------------------


def encode_cursor(chosen: Report, key_values: Sequence[Any]) -> str:
    """Opaque to callers: the report's name and the last row's key, base64url-encoded JSON."""
    raw = orjson.dumps({"report": chosen.name, "after": [json_value(v) for v in key_values]})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(chosen: Report, cursor: str) -> tuple[Any, ...]:
    """The key values a cursor continues after; InvalidCursor for anything this API did not issue."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidCursor("not a cursor returned by this API") from exc
    if not isinstance(data, dict) or set(data) != {"report", "after"}:
        raise InvalidCursor("not a cursor returned by this API")
    if data["report"] != chosen.name:
        raise InvalidCursor(f"this cursor belongs to the report {data['report']!r}, not {chosen.name!r}")
    values = data["after"]
    if not isinstance(values, list) or len(values) != len(chosen.key):
        raise InvalidCursor("not a cursor returned by this API")
    return tuple(_parse(chosen.column(k).type, v) for k, v in zip(chosen.key, values, strict=True))


# More integer digits than any numeric key column has (numeric(18,3) and smaller).
MAX_KEY_DIGITS = 40


def _parse(pg_type: str, value: Any) -> Any:
    try:
        if pg_type == "date" and isinstance(value, str):
            return date.fromisoformat(value)
        if pg_type == "uuid" and isinstance(value, str):
            return UUID(value)
        # PostgreSQL text cannot hold NUL, so such a value would fail in the query, not here.
        if pg_type == "text" and isinstance(value, str) and "\x00" not in value:
            return value
        if pg_type in ("integer", "bigint") and isinstance(value, int) and not isinstance(value, bool):
            return value
        if pg_type.startswith("numeric") and isinstance(value, str):
            number = Decimal(value)
            # Keys are numeric(p,s) columns; a value with hundreds of digits of exponent would
            # overflow PostgreSQL's numeric in the query instead of failing here.
            if number.is_finite() and -MAX_KEY_DIGITS < number.adjusted() < MAX_KEY_DIGITS:
                return number
    except (ValueError, InvalidOperation) as exc:
        raise InvalidCursor("not a cursor returned by this API") from exc
    raise InvalidCursor("not a cursor returned by this API")


# -- errors -----------------------------------------------------------------------------------------


class ReportingError(Exception):
    """Base of this module's errors.

    ReportingError
    ├── UnknownReport   no view of that name
    ├── InvalidCursor   a pagination cursor this API did not issue (or for another report)
    └── RoleRefused     a tenant role cannot be granted or revoked as asked
    """


class UnknownReport(ReportingError):
    pass


class InvalidCursor(ReportingError):
    pass


class RoleRefused(ReportingError):
    pass
