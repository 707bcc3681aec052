"""The product catalogue and the customers orders name (issue 13, seed "EzBillify <-> VeeKaart").

Products are event-sourced (engine/domain/product.py, topic ``ledger.product.v1``); ``product_catalogue``
is their read model, written from the aggregate's state after each change and guarded by its version.
The HSN of an item must be in the rate master (engine/tax/rates.py) on the day it is recorded, and its
GST rate one of the master's candidates for that code: a catalogue that carries a rate the law does not
know would put it on every invoice drafted from a shop order.

Customers are a plain table keyed per tenant by the buyer's identity (GSTIN, else phone, else e-mail):
an order from a known buyer finds the row, a new buyer creates it, concurrent orders of one new buyer
create it once (``ON CONFLICT``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from engine import db
from engine.application import LedgerService, ServiceError
from engine.domain.product import FIELDS, Product, ProductRuleBroken, product_id_for
from engine.errors import Conflict, InvalidInput, NotFound
from engine.tax.rates import hsn_lookup


class ProductNotFound(ServiceError, NotFound):
    code = "not_found"


class SkuTaken(ServiceError, Conflict):
    code = "sku_exists"


class ProductChangedConcurrently(ServiceError, Conflict):
    code = "concurrent_change"


class ProductRejected(ServiceError, InvalidInput):
    code = "product_rule_broken"


class HsnNotInMaster(ServiceError, InvalidInput):
    code = "hsn_unknown"


class RateNotForHsn(ServiceError, InvalidInput):
    code = "gst_rate_mismatch"


def checked_rate(hsn: str, gst_rate: Decimal | None, day: date) -> Decimal:
    """The item's GST rate: the given one if the master allows it for ``hsn`` on ``day``, or the
    master's single rate when none is given."""
    found = hsn_lookup(hsn, day)
    if found is None:
        raise HsnNotInMaster(
            f"HSN/SAC {hsn[:12]!r} is not in the rate master", {"fields": [_field("hsn", "hsn_unknown")]}
        )
    if gst_rate is None:
        if found.rate is None:
            raise RateNotForHsn(
                f"HSN {found.code} has several possible rates; give gst_rate",
                {"candidates": [str(c) for c in found.candidates]},
            )
        return found.rate
    if found.candidates and gst_rate not in found.candidates:
        raise RateNotForHsn(
            f"GST rate {gst_rate} is not a rate of HSN {found.code}",
            {"candidates": [str(c) for c in found.candidates]},
        )
    return gst_rate


def _field(path: str, code: str) -> dict[str, str]:
    return {"path": path, "code": code, "message": code.replace("_", " ")}


def product_view(product: Product) -> dict[str, Any]:
    """The item as the API and the shop sync show it: money and quantities as decimal strings."""
    return {
        "id": str(product.id),
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "hsn": product.hsn,
        "gst_rate": _plain(product.gst_rate),
        "price": f"{product.price:.2f}",
        "mrp": None if product.mrp is None else f"{product.mrp:.2f}",
        "stock": _plain(product.stock),
        "unit": product.unit,
        "status": product.status,
        "version": product.version,
    }


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def load_product(service: LedgerService, tenant_id: UUID, product_id: UUID) -> Product:
    try:
        found: Any = service.ledger.repository.get(product_id)
    except AggregateNotFoundError as exc:
        raise ProductNotFound("no such product") from exc
    # Another tenant's product is "not found", never "forbidden": ids tell nobody what others sell.
    if not isinstance(found, Product) or found.tenant_id != tenant_id:
        raise ProductNotFound("no such product")
    return found


def create_product(service: LedgerService, tenant_id: UUID, state: dict[str, Any], day: date) -> Product:
    """Record a new item; ``state`` has ``sku`` and every field of ``FIELDS`` (``gst_rate`` may be None)."""
    fields = {name: state[name] for name in FIELDS}
    fields["gst_rate"] = checked_rate(state["hsn"], state.get("gst_rate"), day)
    try:
        product = Product(tenant_id=tenant_id, sku=state["sku"], **fields)
    except ProductRuleBroken as exc:
        raise ProductRejected(str(exc)) from exc
    try:
        service._save(product)
    except IntegrityError as exc:
        # The SKU exists: make sure its catalogue row does too (a process that stopped between the
        # event and the row would otherwise leave an item nobody can list and nobody can create).
        write_row(service, load_product(service, tenant_id, product.id))
        raise SkuTaken(
            f"SKU {state['sku']!r} already exists",
            {"product_id": str(product_id_for(tenant_id, state["sku"]))},
        ) from exc
    write_row(service, product)
    return product


def update_product(
    service: LedgerService, tenant_id: UUID, product_id: UUID, changes: dict[str, Any], day: date
) -> Product:
    product = load_product(service, tenant_id, product_id)
    if "hsn" in changes or "gst_rate" in changes:
        hsn = changes.get("hsn", product.hsn)
        given = changes.get("gst_rate", product.gst_rate)
        changes = {**changes, "gst_rate": checked_rate(hsn, given, day)}
    try:
        changed = product.revise(**changes)
    except ProductRuleBroken as exc:
        raise ProductRejected(str(exc)) from exc
    if changed:
        try:
            service._save(product)
        except IntegrityError as exc:
            raise ProductChangedConcurrently("the product was changed by another request: retry") from exc
        write_row(service, product)
    return product


def write_row(service: LedgerService, product: Product) -> None:
    with db.transaction(service.pool) as conn:
        conn.execute(
            """
            INSERT INTO product_catalogue (product_id, tenant_id, sku, document, version)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (product_id) DO UPDATE
               SET document = EXCLUDED.document, version = EXCLUDED.version, updated_at = now()
             WHERE product_catalogue.version < EXCLUDED.version
            """,
            (product.id, product.tenant_id, product.sku, Jsonb(product_view(product)), product.version),
        )


def list_products(
    conn: psycopg.Connection, tenant_id: UUID, *, status: str | None, after_sku: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the tenant's items in SKU order, and the SKU to continue after (None at the end)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT sku, document FROM product_catalogue
             WHERE tenant_id = %s AND (%s::text IS NULL OR document->>'status' = %s)
               AND (%s::text IS NULL OR sku > %s)
             ORDER BY sku LIMIT %s
            """,
            (tenant_id, status, status, after_sku, after_sku, limit + 1),
        )
        rows = cur.fetchall()
    more = rows[limit]["sku"] if len(rows) > limit else None
    page = rows[:limit]
    return [r["document"] for r in page], (page[-1]["sku"] if more is not None else None)


def catalogue_rows(conn: psycopg.Connection, tenant_id: UUID) -> list[tuple[UUID, int, dict[str, Any]]]:
    """Every item of the tenant: (product id, version, document), for the shop sync."""
    rows = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            "SELECT product_id, version, document FROM product_catalogue WHERE tenant_id = %s ORDER BY sku",
            (tenant_id,),
        )
        .fetchall()
    )
    return [(r[0], int(r[1]), r[2]) for r in rows]


def rates_by_sku(conn: psycopg.Connection, tenant_id: UUID, skus: list[str]) -> dict[str, Decimal]:
    """The catalogue's GST rate of each of ``skus`` the tenant has."""
    rows = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            "SELECT sku, document->>'gst_rate' FROM product_catalogue WHERE tenant_id = %s AND sku = ANY(%s)",
            (tenant_id, skus),
        )
        .fetchall()
    )
    return {r[0]: Decimal(r[1]) for r in rows}


@dataclass(frozen=True)
class Customer:
    customer_id: UUID
    name: str
    gstin: str | None
    phone: str | None
    email: str | None
    state: str | None
    created: bool


def identity_key(gstin: str | None, phone: str | None, email: str | None) -> str:
    """How a buyer is recognised: a GSTIN names a registered business exactly; a consumer is known
    by phone (digits only, the last ten: the Indian mobile number without +91 or a leading 0), else
    by e-mail (case-insensitive)."""
    if gstin:
        return "gstin:" + gstin.strip().upper()
    digits = "".join(ch for ch in phone or "" if ch.isdigit())
    if digits:
        return "phone:" + digits[-10:]
    if email:
        return "email:" + email.strip().lower()
    raise InvalidInput("a customer needs a GSTIN, a phone number or an e-mail address")


def find_or_create_customer(
    conn: psycopg.Connection,
    tenant_id: UUID,
    *,
    name: str,
    gstin: str | None,
    phone: str | None,
    email: str | None,
    state: str | None,
    source: str,
) -> Customer:
    key = identity_key(gstin, phone, email)
    inserted = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            """
        INSERT INTO customers (customer_id, tenant_id, identity_key, name, gstin, phone, email, state, source)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (tenant_id, identity_key) DO NOTHING
        RETURNING customer_id
        """,
            (uuid4(), tenant_id, key, name, gstin, phone, email, state, source),
        )
        .fetchone()
    )
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            "SELECT customer_id, name, gstin, phone, email, state FROM customers"
            " WHERE tenant_id = %s AND identity_key = %s",
            (tenant_id, key),
        )
        .fetchone()
    )
    assert row is not None
    return Customer(row[0], row[1], row[2], row[3], row[4], row[5], created=inserted is not None)
