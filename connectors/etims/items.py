"""Kenya eTIMS items: ``POST /v1/etims/items`` validates an item against the code lists in force,
gives it its item code (country, type, packaging unit, quantity unit and a per tenant/environment
sequence: ``KE1NTXU0000001``) and queues an ``item.save`` job that registers it with KRA (saveItem).

Item codes are never reused: the sequence only grows, also when an item fails at KRA.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from connectors.errors import ConnectorError, ErrorClass
from connectors.etims import codes
from connectors.etims.mapping import build_item_code, item_payload
from engine import db
from engine.tax.errors import Violation
from streams.connectors.jobs import Job, JobResult

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

ITEM_TYPES = {"1": "raw material", "2": "finished product", "3": "service"}
COUNTRY = "KE"


@dataclass(frozen=True)
class NewItem:
    name: str
    item_class_code: str
    item_type: str
    origin: str
    pkg_unit: str
    qty_unit: str
    tax_type: str
    default_price: Decimal
    bhf_id: str | None = None


def check_item(conn: psycopg.Connection, environment: str, item: NewItem) -> list[Violation]:
    """Every reason the item cannot be registered, against the code lists in force for ``environment``."""
    found: list[Violation] = []
    if not item.name.strip():
        found.append(Violation("name", "required", "name must not be empty"))
    if item.item_type not in ITEM_TYPES:
        found.append(
            Violation(
                "item_type",
                "unknown_item_type",
                "item_type must be 1 (raw material), 2 (finished product) or 3 (service)",
                {"allowed": sorted(ITEM_TYPES)},
            )
        )
    if len(item.origin) != 2 or not item.origin.isalpha() or not item.origin.isupper():
        found.append(Violation("origin", "invalid_origin", "origin is a two-letter country code, e.g. KE"))
    for field, cd_cls, value in (
        ("tax_type", codes.TAX_TYPE_CLASS, item.tax_type),
        ("pkg_unit", codes.PKG_UNIT_CLASS, item.pkg_unit),
        ("qty_unit", codes.QTY_UNIT_CLASS, item.qty_unit),
    ):
        allowed = codes.codes_in_force(conn, environment, cd_cls)
        if value not in allowed:
            found.append(
                Violation(
                    field,
                    "unknown_code",
                    f"{field} {value!r} is not in KRA's code list {cd_cls} for {environment}",
                    {"code_class": cd_cls, "allowed": sorted(allowed)[:50]},
                )
            )
    known = codes.item_class(conn, environment, item.item_class_code)
    if known is None or (
        known is True and not (item.item_class_code.isdigit() and len(item.item_class_code) <= 10)
    ):
        found.append(
            Violation(
                "item_class_code",
                "unknown_item_class",
                f"item_class_code {item.item_class_code!r} is not in KRA's item classes for {environment}",
            )
        )
    if item.default_price < 0:
        found.append(Violation("default_price", "negative", "default_price must not be negative"))
    return found


def next_sequence(conn: psycopg.Connection, tenant_id: UUID, environment: str) -> int:
    """The next item code sequence number (row-locked: concurrent requests get distinct numbers)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO etims_item_sequences (tenant_id, environment, last_value) VALUES (%s, %s, 1)"
            " ON CONFLICT (tenant_id, environment) DO UPDATE"
            " SET last_value = etims_item_sequences.last_value + 1 RETURNING last_value",
            (tenant_id, environment),
        ).fetchone()
    assert row is not None
    return int(row["last_value"])


def create_item(
    conn: psycopg.Connection, tenant_id: UUID, environment: str, bhf_id: str, item: NewItem
) -> dict[str, Any]:
    """Store a checked item with its new code, ``pending`` until KRA accepted it (caller's transaction)."""
    code = build_item_code(
        COUNTRY, item.item_type, item.pkg_unit, item.qty_unit, next_sequence(conn, tenant_id, environment)
    )
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO etims_items (id, tenant_id, environment, bhf_id, item_code, name, item_class_code,"
            " item_type, origin, pkg_unit, qty_unit, tax_type, default_price)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (
                uuid.uuid4(),
                tenant_id,
                environment,
                bhf_id,
                code,
                item.name,
                item.item_class_code,
                item.item_type,
                item.origin,
                item.pkg_unit,
                item.qty_unit,
                item.tax_type,
                item.default_price,
            ),
        ).fetchone()
    assert row is not None
    return row


def item_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "item_code": row["item_code"],
        "environment": row["environment"],
        "bhf_id": row["bhf_id"],
        "name": row["name"],
        "item_class_code": row["item_class_code"],
        "item_type": row["item_type"],
        "origin": row["origin"],
        "pkg_unit": row["pkg_unit"],
        "qty_unit": row["qty_unit"],
        "tax_type": row["tax_type"],
        "default_price": f"{Decimal(row['default_price']):.2f}",
        "status": row["status"],
        "failure": row["last_failure"],
        "created_at": row["created_at"].isoformat(),
    }


def list_items(conn: psycopg.Connection, tenant_id: UUID) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM etims_items WHERE tenant_id = %s ORDER BY environment, item_code", (tenant_id,)
        ).fetchall()


def save_job(tenant_id: UUID, item_id: UUID) -> Job:
    # The item id makes the job id: a queued item is registered once however often it is redelivered.
    return Job(
        f"item:{item_id}:item.save",
        "etims",
        "item.save",
        str(tenant_id),
        str(tenant_id),
        {"item_id": str(item_id)},
    )


def save_item_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """saveItem's body for a stored item (connectors/etims/mapping.py builds it)."""
    return item_payload(
        item_code=row["item_code"],
        item_class_code=row["item_class_code"],
        name=row["name"],
        origin=row["origin"],
        tax_type=row["tax_type"],
        default_price=Decimal(row["default_price"]),
        item_type=row["item_type"],
        pkg_unit=row["pkg_unit"],
        qty_unit=row["qty_unit"],
    )


async def save_item(context: HandlerContext, tenant_id: UUID, item_id: UUID) -> JobResult:
    """Register one item with KRA through its branch's device; idempotent on a registered item."""
    from connectors.etims.devices import active_device, device_client, record_device_success

    def load() -> dict[str, Any] | None:
        with db.connect(context.settings) as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT * FROM etims_items WHERE tenant_id = %s AND id = %s", (tenant_id, item_id)
            ).fetchone()

    row = await context.blocking(load)
    if row is None or row["status"] == "registered":
        return JobResult({"item_id": str(item_id), "status": row["status"] if row else "missing"})
    device = await active_device(context, tenant_id, row["bhf_id"])
    loaded = await context.integration(tenant_id)
    client = await device_client(
        context, loaded, bhf_id=device.bhf_id, device_type=device.device_type, cmc_key=device.cmc_key
    )
    try:
        await client.save_item(save_item_payload(row))
    except ConnectorError as exc:
        error = exc
        if error.error_class is not ErrorClass.RETRYABLE:
            await context.blocking(lambda: _mark(context, row, "failed", error))
        else:
            await context.blocking(lambda: _note(context, row, error))
        raise
    finally:
        await client.aclose()

    def done() -> None:
        with db.connect(context.settings) as conn, conn.transaction():
            conn.execute(
                "UPDATE etims_items SET status = 'registered', last_failure = NULL, updated_at = now()"
                " WHERE id = %s",
                (item_id,),
            )
            record_device_success(conn, tenant_id, row["environment"], row["bhf_id"])

    await context.blocking(done)
    return JobResult({"item_id": str(item_id), "item_code": row["item_code"], "status": "registered"})


def _failure(exc: ConnectorError) -> Jsonb:
    return Jsonb({"code": exc.code, "message": exc.message, "at": datetime.now(UTC).isoformat()})


def _mark(context: HandlerContext, row: Mapping[str, Any], status: str, exc: ConnectorError) -> None:
    with db.connect(context.settings) as conn, conn.transaction():
        conn.execute(
            "UPDATE etims_items SET status = %s, last_failure = %s, updated_at = now() WHERE id = %s",
            (status, _failure(exc), row["id"]),
        )


def _note(context: HandlerContext, row: Mapping[str, Any], exc: ConnectorError) -> None:
    with db.connect(context.settings) as conn, conn.transaction():
        conn.execute(
            "UPDATE etims_items SET last_failure = %s, updated_at = now() WHERE id = %s",
            (_failure(exc), row["id"]),
        )
