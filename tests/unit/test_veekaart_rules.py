"""The VeeKaart connector's pure rules: the seed's field mappings, order validation with field
errors, and who may deliver an order (signature or partner API key)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from connectors.hooks import DeliveryMalformed, SignatureRejected
from connectors.veekaart import mapping, signature
from connectors.veekaart.orders import OrderRejected, draft_fields, parse_order
from connectors.veekaart.webhooks import HOOKS

NOW = datetime(2026, 12, 2, tzinfo=UTC)
DOC = {
    "sku": "TSHIRT-M",
    "name": "T-shirt",
    "description": None,
    "hsn": "6109",
    "gst_rate": "5",
    "price": "499.00",
    "mrp": "599.00",
    "stock": "40",
    "unit": "NOS",
    "status": "inactive",
}


@pytest.mark.parametrize(
    ("price", "mrp", "expected"),
    [
        ("499.00", "599.00", "16.69"),  # (599 - 499) / 599 * 100 = 16.694...
        ("75", "100", "25.00"),
        ("100", "100", "0.00"),
        ("100", None, "0.00"),
        ("0", "10", "100.00"),
        ("33.33", "66.67", "50.01"),  # 33.34 / 66.67 = 50.0075...: half up
    ],
)
def test_the_discount_percentage_is_derived_from_price_and_mrp(
    price: str, mrp: str | None, expected: str
) -> None:
    assert mapping.discount_percentage(Decimal(price), None if mrp is None else Decimal(mrp)) == Decimal(
        expected
    )


def test_the_seed_field_mappings() -> None:
    assert mapping.product_payload(DOC) == {
        "sku": "TSHIRT-M",
        "name": "T-shirt",
        "description": "",
        "hsn_sac_code": "6109",
        "price": 499.0,
        "mrp": 599.0,
        "tax_rate": 5.0,
        "status": "inactive",
    }
    assert mapping.inventory_payload(DOC) == {
        "sku": "TSHIRT-M",
        "quantity": 40.0,
        "reserved_quantity": 0.0,
        "available_quantity": 40.0,
    }
    assert mapping.pricing_payload(DOC)["discount_percentage"] == 16.69


@pytest.mark.parametrize(
    ("value", "exact"),
    [("0.10", True), ("1234567890123456.78", False), ("99999999.99", True), ("0.1", True)],
)
def test_an_amount_is_sent_as_a_number_only_when_it_reads_back_exactly(value: str, exact: bool) -> None:
    if exact:
        assert Decimal(repr(mapping.exact_number(value))) == Decimal(value)
    else:
        with pytest.raises(mapping.NotExactlyRepresentable):
            mapping.exact_number(value)


def order(**changes: Any) -> dict[str, Any]:
    return {
        "order_id": "VK-1001",
        "order_date": "2026-12-01",
        "customer": {"name": "Asha Rao", "phone": "+91 98450 12345", "state_code": "29"},
        "items": [
            {"sku": "TSHIRT-M", "name": "T-shirt", "hsn_sac_code": "6109", "quantity": 2, "price": "499.00"}
        ],
        "total_amount": "1047.90",
        **changes,
    }


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"order_id": "VK-1"}, {"customer", "items", "total_amount"}),
        (order(order_id=""), {"order_id"}),
        (order(items=[]), {"items"}),
        (order(total_amount="lots"), {"total_amount"}),
        (order(customer={"name": "A"}), {"customer", "customer.state_code"}),
        (order(customer={"name": "A\u0000", "email": "a@b.in", "state_code": "29"}), {"customer.name"}),
        (
            order(items=[{"sku": "X", "name": "X", "hsn_sac_code": "6109", "quantity": 0, "price": "1"}]),
            {"items[0].quantity"},
        ),
        (order(total_amount="1e999999"), {"total_amount"}),
        (order(order_id="VK\u202e1001"), {"order_id"}),  # a right-to-left override in the id
        (order(order_id="x" * 65), {"order_id"}),
        ("[1, 2]", {"body"}),
        ("{not json", {"body"}),
    ],
)
def test_a_malformed_order_names_the_fields_at_fault(body: Any, paths: set[str]) -> None:
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    with pytest.raises(OrderRejected) as caught:
        parse_order(raw)
    assert {f["path"] for f in caught.value.fields} == paths


def test_an_order_becomes_a_draft_invoice_for_the_buyers_state() -> None:
    fields = draft_fields(parse_order(orjson.dumps(order())))
    assert fields["buyer"] == {"name": "Asha Rao", "gstin": None, "state": "29"}
    assert fields["lines"][0]["unit_price"] == Decimal("499.00") and fields["lines"][0]["quantity"] == 2
    assert fields["lines"][0]["gst_rate"] is None
    # Without the shop's tax_rate, the catalogue's rate of the SKU (6109 has two possible rates).
    from_catalogue = draft_fields(parse_order(orjson.dumps(order())), {"TSHIRT-M": Decimal("5")})
    assert from_catalogue["lines"][0]["gst_rate"] == Decimal("5")
    with_gstin = order(customer={"name": "Acme", "gstin": "27AAGCB7383J1Z8"})
    assert draft_fields(parse_order(orjson.dumps(with_gstin)))["buyer"]["state"] == "27"


CREDENTIALS = {"webhook_secret": "whsec-now", "partner_api_key": "partner-key"}


def verify(body: bytes, headers: dict[str, str], credentials: dict[str, str] = CREDENTIALS) -> Any:
    return signature.verify(body, headers, HOOKS.secrets(credentials, NOW), NOW)


def test_an_order_signed_with_the_webhook_secret_or_carrying_the_partner_key_is_accepted() -> None:
    body = orjson.dumps(order())
    signed = verify(body, {signature.SIGNATURE_HEADER: signature.signature("whsec-now", body)})
    keyed = verify(body, {"authorization": "Bearer partner-key"})
    assert signed.provider_event_id == keyed.provider_event_id == "VK-1001"
    assert signed.event_type == "order.created"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer not-the-key"},
        {"authorization": "Basic partner-key"},
        {signature.SIGNATURE_HEADER: "00" * 32},
        # A forged signature is refused even beside the right key: a wrong signature is never ignored.
        {signature.SIGNATURE_HEADER: "00" * 32, "authorization": "Bearer partner-key"},
        {signature.SIGNATURE_HEADER: signature.signature("partner-key", b"x")},
    ],
)
def test_a_delivery_without_a_valid_signature_or_key_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureRejected):
        verify(orjson.dumps(order()), headers)


def test_the_previous_secret_verifies_within_a_day_of_a_rotation_only() -> None:
    body = orjson.dumps(order())
    headers = {signature.SIGNATURE_HEADER: signature.signature("whsec-old", body)}
    rotated = {
        **CREDENTIALS,
        "webhook_secret__previous": "whsec-old",
        "webhook_secret__replaced_at": "2026-12-01T12:00:00+00:00",
    }
    assert verify(body, headers, rotated).provider_event_id == "VK-1001"
    stale = {**rotated, "webhook_secret__replaced_at": "2026-11-30T12:00:00+00:00"}
    with pytest.raises(SignatureRejected):
        verify(body, headers, stale)


def test_an_authenticated_but_malformed_order_carries_its_field_errors() -> None:
    body = orjson.dumps(order(customer={"name": "A"}))
    with pytest.raises(DeliveryMalformed) as caught:
        verify(body, {"authorization": "Bearer partner-key"})
    assert {f["path"] for f in caught.value.fields} == {"customer", "customer.state_code"}
