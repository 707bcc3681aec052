"""The product catalogue on the real PostgreSQL: create, update, list, get; SKU unique per tenant
(also under concurrent creation), HSN and rate checked against the master, tenants kept apart."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from engine import db
from engine.application import LedgerService
from engine.config import Settings
from engine.relay import Relay
from schemas import registry
from tests.conftest import BackgroundLoop
from tests.integration.helpers import client_for, register_tenant
from tests.integration.test_api_contract import assert_error_shape
from tests.integration.test_backbone import read_topic

pytestmark = pytest.mark.integration


def shirt(**changes: Any) -> dict[str, Any]:
    return {
        "sku": "TSHIRT-M-BLU",
        "name": "Cotton T-shirt, blue, M",
        "hsn": "6109",
        "gst_rate": "5",
        "price": "499.00",
        "mrp": "599",
        "stock": "40",
        **changes,
    }


def test_a_product_is_created_updated_listed_and_read_back(
    service: LedgerService, settings: Settings
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    created = client.post("/v1/products", json=shirt(), headers=auth)
    assert created.status_code == 201, created.text
    product = created.json()
    assert product["price"] == "499.00" and product["mrp"] == "599.00" and product["stock"] == "40"
    assert created.headers["Location"] == f"/v1/products/{product['id']}"

    changed = client.patch(
        f"/v1/products/{product['id']}", json={"stock": "35", "price": "449"}, headers=auth
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["stock"] == "35" and changed.json()["version"] == 2
    unchanged = client.patch(f"/v1/products/{product['id']}", json={"stock": "35"}, headers=auth)
    assert unchanged.json()["version"] == 2, "an update that changes nothing records no event"

    client.post("/v1/products", json=shirt(sku="MUG-01", name="Mug", hsn="6912", gst_rate="5"), headers=auth)
    listed = client.get("/v1/products", params={"limit": 1}, headers=auth).json()
    assert [p["sku"] for p in listed["items"]] == ["MUG-01"] and listed["next"] == "MUG-01"
    rest = client.get("/v1/products", params={"cursor": listed["next"]}, headers=auth).json()
    assert [p["sku"] for p in rest["items"]] == ["TSHIRT-M-BLU"] and rest["next"] is None
    assert rest["items"][0]["price"] == "449.00"
    got = client.get(f"/v1/products/{product['id']}", headers=auth)
    assert got.json()["price"] == "449.00"
    # No rate given: the master's, when the HSN has one (8471, computers: 18%).
    laptop = client.post(
        "/v1/products", json=shirt(sku="LAP-1", hsn="8471", gst_rate=None, price="1", mrp=None), headers=auth
    )
    assert laptop.status_code == 201 and laptop.json()["gst_rate"] == "18", laptop.text


def test_the_same_sku_created_concurrently_exists_once(service: LedgerService, settings: Settings) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    with ThreadPoolExecutor(6) as pool:
        codes = list(
            pool.map(lambda _: client.post("/v1/products", json=shirt(), headers=auth).status_code, range(6))
        )
    assert sorted(codes) == [201] + [409] * 5
    again = client.post("/v1/products", json=shirt(), headers=auth)
    assert_error_shape(again.json(), "sku_exists")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (shirt(hsn="7777"), 422, "hsn_unknown"),
        (shirt(hsn="6911", gst_rate="18"), 422, "gst_rate_mismatch"),
        (shirt(gst_rate=None), 422, "gst_rate_mismatch"),
        (shirt(price="700"), 422, "product_rule_broken"),
        (shirt(sku="A B"), 422, "validation_failed"),
        (shirt(name="bad\u0000name"), 422, "validation_failed"),
        (shirt(price="1e999999"), 422, "validation_failed"),
        (shirt(colour="blue"), 422, "validation_failed"),
    ],
)
def test_a_product_the_catalogue_cannot_accept_is_refused(
    service: LedgerService, settings: Settings, body: dict[str, Any], status: int, code: str
) -> None:
    _, key = register_tenant(service)
    response = client_for(settings).post(
        "/v1/products", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == status, response.text
    assert_error_shape(response.json(), code)


def test_another_tenants_product_is_not_found(service: LedgerService, settings: Settings) -> None:
    _, key_a = register_tenant(service)
    _, key_b = register_tenant(service, gstin="29AAGCB7383J1Z4", state="29")
    client = client_for(settings)
    product = client.post("/v1/products", json=shirt(), headers={"Authorization": f"Bearer {key_a}"}).json()
    other = {"Authorization": f"Bearer {key_b}"}
    assert client.get(f"/v1/products/{product['id']}", headers=other).status_code == 404
    assert (
        client.patch(f"/v1/products/{product['id']}", json={"stock": "1"}, headers=other).status_code == 404
    )
    assert client.get("/v1/products", headers=other).json()["items"] == []
    # The same SKU is free for another tenant.
    assert client.post("/v1/products", json=shirt(), headers=other).status_code == 201


def test_product_changes_are_published_on_the_product_topic(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    product = client.post("/v1/products", json=shirt(), headers=auth).json()
    client.patch(f"/v1/products/{product['id']}", json={"stock": "39"}, headers=auth)
    background.start(Relay(settings).run)

    messages = read_topic(settings, settings.topic("ledger.product.v1"), expected=2)

    headers = [dict(m.headers()) for m in messages]
    assert [h["ce_type"].decode() for h in headers] == [
        "ledgerflow.product.created",
        "ledgerflow.product.revised",
    ]
    assert {m.key().decode() for m in messages} == {product["id"]}
    records = [registry.decode_event(m.value()) for m in messages]
    assert [(r["sku"], r["stock"], r["price"]) for r in records] == [
        ("TSHIRT-M-BLU", "40", "499.00"),
        ("TSHIRT-M-BLU", "39", "499.00"),
    ]


def test_a_catalogue_row_lost_after_its_event_is_restored_by_the_next_create(
    service: LedgerService, settings: Settings
) -> None:
    _, key = register_tenant(service)
    client = client_for(settings)
    auth = {"Authorization": f"Bearer {key}"}
    product = client.post("/v1/products", json=shirt(), headers=auth).json()
    with db.transaction(service.pool) as conn:
        conn.execute("DELETE FROM product_catalogue WHERE product_id = %s", (product["id"],))

    again = client.post("/v1/products", json=shirt(), headers=auth)

    assert again.status_code == 409
    assert [p["id"] for p in client.get("/v1/products", headers=auth).json()["items"]] == [product["id"]]
