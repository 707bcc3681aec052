"""Pure: catalogue items -> VeeKaart's product, inventory and pricing payloads (seed "EzBillify <->
VeeKaart", "Data Mapping and Transformation").

The shop's API takes JSON numbers ("Converted to float" in the seed's tables). A float is written
only when it reads back as exactly the same decimal (``exact_number``): for the catalogue's amounts
(two places, at most 15 significant digits) the shortest repr of the float is that decimal, so
nothing is rounded on the way; an amount that would not survive is refused for that item.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

# Ledgerflow's status -> VeeKaart's (the seed maps is_active to 'active' / 'inactive').
STATUS_TO_SHOP = {"active": "active", "inactive": "inactive"}
HUNDRED = Decimal(100)
CENT = Decimal("0.01")


class NotExactlyRepresentable(ValueError):
    """An amount the shop's JSON numbers cannot carry exactly."""


def exact_number(value: Decimal | str) -> float:
    amount = Decimal(value)
    number = float(amount)
    if Decimal(repr(number)) != amount:
        raise NotExactlyRepresentable(f"{amount} cannot be sent as a JSON number without rounding")
    return number


def discount_percentage(price: Decimal, mrp: Decimal | None) -> Decimal:
    """(mrp - selling_price) / mrp * 100, to two places (seed); 0 without an MRP or when the price is
    the MRP. The catalogue never holds a price above the MRP (engine/domain/product.py)."""
    if mrp is None or mrp <= 0 or price >= mrp:
        return Decimal("0.00")
    return ((mrp - price) / mrp * HUNDRED).quantize(CENT, rounding=ROUND_HALF_UP)


def _mrp(item: Mapping[str, Any]) -> Decimal | None:
    return None if item.get("mrp") is None else Decimal(item["mrp"])


def product_payload(item: Mapping[str, Any]) -> dict[str, Any]:
    """``item`` is a catalogue document (engine/catalogue.product_view)."""
    mrp = _mrp(item)
    return {
        "sku": item["sku"],
        "name": item["name"],
        "description": item.get("description") or "",
        "hsn_sac_code": item["hsn"],
        "price": exact_number(item["price"]),
        "mrp": None if mrp is None else exact_number(mrp),
        "tax_rate": exact_number(item["gst_rate"]),
        "status": STATUS_TO_SHOP[item["status"]],
    }


def inventory_payload(item: Mapping[str, Any]) -> dict[str, Any]:
    # Ledgerflow does not reserve stock for open orders: all of it is available.
    stock = exact_number(item["stock"])
    return {"sku": item["sku"], "quantity": stock, "reserved_quantity": 0.0, "available_quantity": stock}


def pricing_payload(item: Mapping[str, Any]) -> dict[str, Any]:
    # The catalogue keeps no purchase price, so cost_price is not sent (the seed maps it from
    # purchase_price, which Ledgerflow does not have).
    price = Decimal(item["price"])
    mrp = _mrp(item)
    return {
        "sku": item["sku"],
        "selling_price": exact_number(price),
        "mrp": None if mrp is None else exact_number(mrp),
        "tax_rate": exact_number(item["gst_rate"]),
        "discount_percentage": exact_number(discount_percentage(price, mrp)),
    }
