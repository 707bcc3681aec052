"""The Product aggregate: one item of a tenant's catalogue (issue 13, seed "EzBillify <-> VeeKaart").

Its life is two events: ``Created`` with the whole item, and ``Revised`` with the whole item again
after any change (name, HSN, rate, price, MRP, stock or status). Carrying the full state in each event
lets a consumer of ``ledger.product.v1`` (the shop sync, a downstream catalogue) apply the latest
event alone, with no earlier one at hand, which is what an incremental sync needs.

The id is derived from the tenant and the SKU, so a SKU is unique per tenant by construction: two
concurrent creations of one SKU race for the same aggregate's first version, and one of them loses.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from engine.errors import InvalidInput

STATUSES = ("active", "inactive")
_PRODUCT_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/product")
FIELDS = ("name", "description", "hsn", "gst_rate", "price", "mrp", "stock", "unit", "status")


def product_id_for(tenant_id: UUID, sku: str) -> UUID:
    """Stable for one tenant's SKU: the SKU is the item's identity in the tenant's books and the shop."""
    return uuid5(_PRODUCT_NAMESPACE, f"{tenant_id}/{sku}")


class Product(Aggregate):
    class Created(Aggregate.Created):
        tenant_id: UUID
        sku: str
        name: str
        description: str | None
        hsn: str
        gst_rate: Decimal
        price: Decimal
        mrp: Decimal | None
        stock: Decimal
        unit: str
        status: str

    @event(Created)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        sku: str,
        name: str,
        description: str | None,
        hsn: str,
        gst_rate: Decimal,
        price: Decimal,
        mrp: Decimal | None,
        stock: Decimal,
        unit: str,
        status: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.sku = sku
        self._apply(
            name=name,
            description=description,
            hsn=hsn,
            gst_rate=gst_rate,
            price=price,
            mrp=mrp,
            stock=stock,
            unit=unit,
            status=status,
        )

    @staticmethod
    def create_id(*, tenant_id: UUID, sku: str, **_: Any) -> UUID:
        return product_id_for(tenant_id, sku)

    def _apply(self, **state: Any) -> None:
        check_state(state)
        self.name: str = state["name"]
        self.description: str | None = state["description"]
        self.hsn: str = state["hsn"]
        self.gst_rate: Decimal = state["gst_rate"]
        self.price: Decimal = state["price"]
        self.mrp: Decimal | None = state["mrp"]
        self.stock: Decimal = state["stock"]
        self.unit: str = state["unit"]
        self.status: str = state["status"]

    def state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    def revise(self, **changes: Any) -> bool:
        """Change some fields; True when anything changed (an unchanged revision records nothing, so a
        repeated update does not make the shop sync push the item again)."""
        unknown = set(changes) - set(FIELDS)
        if unknown:
            raise InvalidInput(f"not a product field: {sorted(unknown)[0]}")
        new = {**self.state(), **changes}
        if new == self.state():
            return False
        check_state(new)
        self._revised(tenant_id=self.tenant_id, sku=self.sku, **new)
        return True

    class Revised(Aggregate.Event):
        tenant_id: UUID
        sku: str
        name: str
        description: str | None
        hsn: str
        gst_rate: Decimal
        price: Decimal
        mrp: Decimal | None
        stock: Decimal
        unit: str
        status: str

    @event(Revised)
    def _revised(
        self,
        tenant_id: UUID,
        sku: str,
        name: str,
        description: str | None,
        hsn: str,
        gst_rate: Decimal,
        price: Decimal,
        mrp: Decimal | None,
        stock: Decimal,
        unit: str,
        status: str,
    ) -> None:
        self._apply(
            name=name,
            description=description,
            hsn=hsn,
            gst_rate=gst_rate,
            price=price,
            mrp=mrp,
            stock=stock,
            unit=unit,
            status=status,
        )


def check_state(state: dict[str, Any]) -> None:
    """The item's own rules (the HSN against the rate master is the service's check, which needs a date)."""
    if state["status"] not in STATUSES:
        raise ProductRuleBroken(f"status must be one of {', '.join(STATUSES)}")
    if state["price"] < 0 or state["stock"] < 0:
        raise ProductRuleBroken("price and stock cannot be negative")
    mrp = state["mrp"]
    # Legal Metrology (Packaged Commodities) Rules 2011: the declared retail sale price (MRP) is the most
    # a packaged item may be sold for; the seed's discount percentage (mrp - price) / mrp is never negative.
    # The catalogue's price is before GST, so this is the weakest form of that rule, not a full check.
    if mrp is not None and mrp < state["price"]:
        raise ProductRuleBroken("the price cannot exceed the MRP")


class ProductRuleBroken(InvalidInput):
    """A product state the catalogue does not accept."""
