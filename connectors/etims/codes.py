"""Kenya eTIMS code lists and item classes, synced per environment (``codes.sync`` jobs).

``selectCodeList`` and ``selectItemClsList`` take ``lastReqDt`` (YYYYMMDDhhmmss) and answer only what
changed since (001 = nothing new: the client returns an empty list). The lists are national, the same
for every taxpayer, so one table per environment serves every tenant; any initialised device of the
environment may fetch them. Class 04 carries the tax types with their rate in ``userDfnCd1``
(kenya-etims reference notes, "Tax types": read it at runtime rather than trust a constant; several SDKs
ship A=16%, which is wrong); a sync writes those rates to ``etims_tax_rates``, which the Kenya VAT
computation reads. Until an environment's first sync, :data:`DEFAULT_CODES` applies.

Sync runs after a device's initialisation, on demand (``POST /v1/etims/codes/sync`` queues a
``codes.sync`` job) and on a schedule: the device watch of each etims worker syncs an environment whose
lists are older than ``LEDGERFLOW_ETIMS_CODES_SYNC_EVERY`` hours (default 24).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import psycopg
from psycopg.rows import dict_row

from connectors.errors import RetryableError
from connectors.etims.client import CodeClass, ItemClass
from engine import db
from streams.connectors.jobs import Job, JobResult

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

TAX_TYPE_CLASS = "04"
QTY_UNIT_CLASS = "10"
PKG_UNIT_CLASS = "17"
FIRST_REQUEST = "20180101000000"  # before eTIMS existed: the first sync asks for everything
# KRA's timestamps are Nairobi time (EAT, UTC+3, no daylight saving).
NAIROBI = timezone(timedelta(hours=3), "EAT")


def last_req_dt(moment: datetime) -> str:
    return moment.astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


# What applies before an environment's first sync: the tax types of the reference notes and the
# units most sales use. Source: kenya-etims reference notes ("Tax types (class 04)", "saveItem").
DEFAULT_CODES: Mapping[str, Mapping[str, tuple[str, str | None]]] = {
    TAX_TYPE_CLASS: {
        "A": ("Exempt", "0"),
        "B": ("16% VAT", "16"),
        "C": ("Zero rated", "0"),
        "D": ("Non-VAT", "0"),
        "E": ("8% VAT", "8"),
    },
    QTY_UNIT_CLASS: {
        "U": ("Pieces/items", None),
        "KG": ("Kilogram", None),
        "L": ("Litre", None),
        "M": ("Metre", None),
        "NO": ("Number", None),
        "BX": ("Box", None),
    },
    PKG_UNIT_CLASS: {
        "NT": ("Net", None),
        "BX": ("Box", None),
        "BG": ("Bag", None),
        "CT": ("Carton", None),
        "BL": ("Bale", None),
    },
}


@dataclass(frozen=True)
class CodeRow:
    cd_cls: str
    cd: str
    cd_nm: str
    user_dfn_cd1: str | None
    use_yn: bool


@dataclass(frozen=True)
class ItemClassRow:
    item_cls_cd: str
    item_cls_nm: str
    item_cls_lvl: int | None
    tax_ty_cd: str | None
    use_yn: bool


def code_rows(classes: Iterable[CodeClass]) -> list[CodeRow]:
    """Pure: the client's code classes flattened to rows."""
    return [
        CodeRow(cls.code_class, code.code, code.name, code.user_defined_1, code.in_use)
        for cls in classes
        for code in cls.codes
    ]


def item_class_rows(classes: Iterable[ItemClass]) -> list[ItemClassRow]:
    return [ItemClassRow(c.code, c.name, c.level, c.tax_type, c.in_use) for c in classes]


def tax_rates(rows: Iterable[CodeRow]) -> dict[str, tuple[Decimal, str]]:
    """Pure: class-04 rows -> {tax type: (rate in percent, name)}; a rate that is not a number is skipped
    (the default then stays in force for that type)."""
    found: dict[str, tuple[Decimal, str]] = {}
    for row in rows:
        if row.cd_cls != TAX_TYPE_CLASS or not row.use_yn:
            continue
        try:
            rate = Decimal(str(row.user_dfn_cd1).strip())
        except (InvalidOperation, ValueError):
            continue
        if rate.is_finite() and Decimal(0) <= rate < Decimal(100):
            found[row.cd] = (rate.quantize(Decimal("0.01")), row.cd_nm)
    return found


# -- storage ----------------------------------------------------------------------------------------


def stored_last_req_dt(conn: psycopg.Connection, environment: str, kind: str) -> str:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT last_req_dt FROM etims_sync_state WHERE environment = %s AND kind = %s",
            (environment, kind),
        ).fetchone()
    return str(row["last_req_dt"]) if row else FIRST_REQUEST


def store_codes(
    conn: psycopg.Connection, environment: str, rows: list[CodeRow], *, requested_at: str, now: datetime
) -> int:
    """Upsert the code rows, the class-04 rates and the new lastReqDt, in the caller's transaction."""
    for row in rows:
        conn.execute(
            "INSERT INTO etims_code_lists (environment, cd_cls, cd, cd_nm, user_dfn_cd1, use_yn, synced_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (environment, cd_cls, cd) DO UPDATE SET"
            " cd_nm = EXCLUDED.cd_nm, user_dfn_cd1 = EXCLUDED.user_dfn_cd1, use_yn = EXCLUDED.use_yn,"
            " synced_at = EXCLUDED.synced_at",
            (environment, row.cd_cls, row.cd, row.cd_nm, row.user_dfn_cd1, row.use_yn, now),
        )
    for tax_type, (rate, name) in tax_rates(rows).items():
        conn.execute(
            "INSERT INTO etims_tax_rates (environment, tax_type, rate, name, synced_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (environment, tax_type) DO UPDATE SET"
            " rate = EXCLUDED.rate, name = EXCLUDED.name, synced_at = EXCLUDED.synced_at",
            (environment, tax_type, rate, name, now),
        )
    _store_position(conn, environment, "code_list", requested_at, now)
    return len(rows)


def store_item_classes(
    conn: psycopg.Connection, environment: str, rows: list[ItemClassRow], *, requested_at: str, now: datetime
) -> int:
    for row in rows:
        conn.execute(
            "INSERT INTO etims_item_classes (environment, item_cls_cd, item_cls_nm, item_cls_lvl, tax_ty_cd,"
            " use_yn, synced_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (environment, item_cls_cd) DO UPDATE SET item_cls_nm = EXCLUDED.item_cls_nm,"
            " item_cls_lvl = EXCLUDED.item_cls_lvl, tax_ty_cd = EXCLUDED.tax_ty_cd,"
            " use_yn = EXCLUDED.use_yn, synced_at = EXCLUDED.synced_at",
            (environment, row.item_cls_cd, row.item_cls_nm, row.item_cls_lvl, row.tax_ty_cd, row.use_yn, now),
        )
    _store_position(conn, environment, "item_classes", requested_at, now)
    return len(rows)


def _store_position(
    conn: psycopg.Connection, environment: str, kind: str, requested_at: str, now: datetime
) -> None:
    conn.execute(
        "INSERT INTO etims_sync_state (environment, kind, last_req_dt, synced_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (environment, kind) DO UPDATE SET last_req_dt = EXCLUDED.last_req_dt,"
        " synced_at = EXCLUDED.synced_at",
        (environment, kind, requested_at, now),
    )


def codes_in_force(conn: psycopg.Connection, environment: str, cd_cls: str) -> dict[str, str]:
    """{code: name} of a class: the synced list once there is one, the shipped default before."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT cd, cd_nm FROM etims_code_lists WHERE environment = %s AND cd_cls = %s AND use_yn",
            (environment, cd_cls),
        ).fetchall()
    if rows:
        return {str(r["cd"]): str(r["cd_nm"]) for r in rows}
    return {code: name for code, (name, _) in DEFAULT_CODES.get(cd_cls, {}).items()}


def item_class(conn: psycopg.Connection, environment: str, code: str) -> dict[str, Any] | bool | None:
    """The synced item class ``code``; None if unknown; True when nothing is synced yet (then any
    well-formed code is accepted and KRA's saveItem judges it)."""
    with conn.cursor(row_factory=dict_row) as cur:
        synced = cur.execute(
            "SELECT EXISTS (SELECT 1 FROM etims_item_classes WHERE environment = %s) AS any", (environment,)
        ).fetchone()
        if not synced or not synced["any"]:
            return True
        return cur.execute(
            "SELECT * FROM etims_item_classes WHERE environment = %s AND item_cls_cd = %s AND use_yn",
            (environment, code),
        ).fetchone()


# -- the job ----------------------------------------------------------------------------------------


def sync_job(tenant_id: UUID, environment: str, *, reason: str) -> Job:
    return Job(
        f"{reason}:{uuid4()}:codes.sync",
        "etims",
        "codes.sync",
        str(tenant_id),
        str(tenant_id),
        {"environment": environment},
    )


async def sync_code_lists(context: HandlerContext, tenant_id: UUID) -> JobResult:
    """Fetch what changed since the stored lastReqDt, through one of the tenant's initialised devices
    in the integration's environment, and store it."""
    from connectors.etims.devices import active_device, device_client, record_device_success

    loaded = await context.integration(tenant_id)
    environment = loaded.environment

    def pick() -> tuple[str | None, str, str]:
        with db.connect(context.settings) as conn:
            row = conn.execute(
                "SELECT bhf_id FROM etims_devices WHERE tenant_id = %s AND environment = %s"
                " AND status IN ('initialized', 'offline') ORDER BY bhf_id LIMIT 1",
                (tenant_id, environment),
            ).fetchone()
            return (
                str(row[0]) if row else None,
                stored_last_req_dt(conn, environment, "code_list"),
                stored_last_req_dt(conn, environment, "item_classes"),
            )

    bhf_id, codes_since, classes_since = await context.blocking(pick)
    if bhf_id is None:
        raise RetryableError(
            "no_initialised_device",
            f"no initialised eTIMS device in {environment} to sync the code lists with",
        )
    device = await active_device(context, tenant_id, bhf_id)
    client = await device_client(
        context, loaded, bhf_id=bhf_id, device_type=device.device_type, cmc_key=device.cmc_key
    )
    # Taken before the calls: a change made while we fetch is asked for again next time, never missed.
    requested_at = last_req_dt(datetime.now(UTC))
    try:
        classes = await client.code_list(codes_since)
        items = await client.item_classes(classes_since)
    finally:
        await client.aclose()
    rows, item_rows = code_rows(classes), item_class_rows(items)

    def store() -> tuple[int, int]:
        now = datetime.now(UTC)
        with db.connect(context.settings) as conn, conn.transaction():
            written = store_codes(conn, environment, rows, requested_at=requested_at, now=now)
            written_items = store_item_classes(
                conn, environment, item_rows, requested_at=requested_at, now=now
            )
            record_device_success(conn, tenant_id, environment, bhf_id)
        return written, written_items

    written, written_items = await context.blocking(store)
    return JobResult({"environment": environment, "codes": written, "item_classes": written_items})
