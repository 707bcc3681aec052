"""The Product aggregate: its rules, revisions that change nothing, and its events as published on
``ledger.product.v1`` (the shipped schema, and the relay's fast path over stored events)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from engine.application import in_memory_ledger
from engine.domain.product import Product, ProductRuleBroken, product_id_for
from engine.publishing import outbound_from_stored, to_outbound
from schemas import registry


def state(**changes: Any) -> dict[str, Any]:
    return {
        "name": "T-shirt",
        "description": None,
        "hsn": "6109",
        "gst_rate": Decimal("5"),
        "price": Decimal("499.00"),
        "mrp": Decimal("599.00"),
        "stock": Decimal("40"),
        "unit": "NOS",
        "status": "active",
        **changes,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "deleted"},
        {"price": Decimal("-1")},
        {"stock": Decimal("-0.5")},
        {"price": Decimal("600.00")},  # above the MRP
    ],
)
def test_a_product_the_rules_forbid_is_never_recorded(changes: dict[str, Any]) -> None:
    with pytest.raises(ProductRuleBroken):
        Product(tenant_id=uuid4(), sku="S", **state(**changes))
    product = Product(tenant_id=uuid4(), sku="S", **state())
    with pytest.raises(ProductRuleBroken):
        product.revise(**changes)
    assert len(product.collect_events()) == 1


def test_the_id_is_the_tenant_and_sku_and_a_revision_that_changes_nothing_records_nothing() -> None:
    tenant = uuid4()
    product = Product(tenant_id=tenant, sku="S-1", **state())
    assert product.id == product_id_for(tenant, "S-1") != product_id_for(uuid4(), "S-1")
    assert product.revise(stock=Decimal("40")) is False
    assert product.revise(stock=Decimal("39"), mrp=None) is True
    assert (product.version, product.stock, product.mrp) == (2, Decimal("39"), None)


def test_both_events_carry_the_whole_item_on_the_product_topic() -> None:
    ledger = in_memory_ledger()
    product = Product(tenant_id=uuid4(), sku="S-1", **state())
    product.revise(price=Decimal("449.5"), mrp=None)
    ledger.save(product)
    created, revised = ledger.events.get(product.id)
    for event in (created, revised):
        message = to_outbound(event)
        assert (message.topic, message.key) == ("ledger.product.v1", str(product.id))
        value, _ = registry.encode_event(message.ce_type, message.record)
        assert registry.decode_event(value, message.ce_type)["sku"] == "S-1"
        stored = ledger.mapper.to_stored_event(event)
        fast = outbound_from_stored(
            stored.originator_id, stored.originator_version, stored.topic, stored.state
        )
        assert fast.record == message.record
    record = to_outbound(revised).record
    assert message.ce_type == "ledgerflow.product.revised"
    assert (record["price"], record["mrp"], record["gst_rate"], record["stock"]) == (
        "449.50",
        None,
        "5",
        "40",
    )
