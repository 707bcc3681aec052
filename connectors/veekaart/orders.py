"""Pure: a VeeKaart order webhook body -> the customer and the draft invoice it asks for.

The seed's order endpoint checks "order ID, customer data, and total amount" and answers a missing
or mistyped field with 400 and the fields at fault; ``parse_order`` does the same with the API's
field-error form. The unit prices of the items are before GST (the shop applies the item's
``tax_rate`` on top), which is what an invoice line's ``unit_price`` is.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from engine.commands import Money, Quantity, Rate, Text, UnitPrice
from engine.fields import IsoDate, SafeStr, field_errors

OrderId = Annotated[SafeStr, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class OrderCustomer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Text
    # A plain shape check: the address is only used to recognise a returning buyer.
    email: (
        Annotated[SafeStr, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None
    ) = None
    phone: Annotated[SafeStr, StringConstraints(max_length=20, pattern=r"^\+?[0-9 -]{6,20}$")] | None = None
    gstin: Annotated[SafeStr, StringConstraints(pattern=r"^[0-9]{2}[A-Z0-9]{13}$")] | None = None
    state_code: Annotated[SafeStr, StringConstraints(pattern=r"^[0-9]{2}$")] | None = None


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sku: Annotated[SafeStr, StringConstraints(min_length=1, max_length=64)]
    name: Text
    hsn_sac_code: Annotated[SafeStr, StringConstraints(min_length=2, max_length=8, pattern=r"^[0-9]+$")]
    quantity: Quantity = Field(gt=0)
    price: UnitPrice
    tax_rate: Rate | None = None
    discount: Money = Decimal("0")
    unit: Annotated[SafeStr, StringConstraints(min_length=1, max_length=8)] = "NOS"


class Order(BaseModel):
    model_config = ConfigDict(extra="ignore")

    order_id: OrderId
    order_date: IsoDate | None = None
    customer: OrderCustomer
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=500)]
    total_amount: Money


class OrderRejected(ValueError):
    """An order body with the fields at fault (``fields``: path, code, message)."""

    def __init__(self, message: str, fields: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.fields = fields


def parse_order(body: bytes | str) -> Order:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OrderRejected("the body is not JSON", [_field("body", "invalid_json", "not JSON")]) from exc
    try:
        order = Order.model_validate(data)
    except ValidationError as exc:
        fields = field_errors(exc.errors())
        raise OrderRejected(
            "missing required fields: " + ", ".join(f["path"] for f in fields[:10]), fields
        ) from exc
    customer = order.customer
    problems = []
    if not (customer.gstin or customer.phone or customer.email):
        problems.append(_field("customer", "missing_contact", "give a GSTIN, a phone number or an e-mail"))
    if not (customer.gstin or customer.state_code):
        problems.append(_field("customer.state_code", "missing", "needed without a GSTIN (place of supply)"))
    if problems:
        raise OrderRejected("missing required fields: " + ", ".join(p["path"] for p in problems), problems)
    return order


def _field(path: str, code: str, message: str) -> dict[str, str]:
    return {"path": path, "code": code, "message": message}


def buyer_state(order: Order) -> str:
    """The buyer's state code: a GSTIN's first two digits name it; else the order's."""
    customer = order.customer
    if customer.gstin:
        return customer.gstin[:2]
    assert customer.state_code is not None
    return customer.state_code


def draft_fields(order: Order, catalogue_rates: Mapping[str, Decimal] | None = None) -> dict[str, Any]:
    """The draft invoice's fields (``DraftInvoice``: IssueInvoice's without ``number``). An item the
    shop sent without ``tax_rate`` takes the rate of its SKU in the catalogue (``catalogue_rates``):
    the rate Ledgerflow pushed to the shop, and the one the master allowed for its HSN. Many HSN
    codes have several possible rates since the 2025 revision, so the code alone cannot give it."""
    rates = catalogue_rates or {}
    return {
        "date": order.order_date,
        "buyer": {"name": order.customer.name, "gstin": order.customer.gstin, "state": buyer_state(order)},
        "lines": [
            {
                "description": item.name,
                "hsn": item.hsn_sac_code,
                "quantity": item.quantity,
                "unit": item.unit,
                "unit_price": item.price,
                "discount": item.discount,
                "gst_rate": item.tax_rate if item.tax_rate is not None else rates.get(item.sku),
            }
            for item in order.items
        ],
    }
