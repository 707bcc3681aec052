-- product_catalogue: one row per catalogue item (engine/catalogue.py), the read model behind
-- GET /v1/products and the shop sync. Written from the Product aggregate's state after each change,
-- guarded by its version, so an older state never overwrites a newer one; rebuildable from the
-- event store (ledger.product.v1 carries the whole state in every event).
CREATE TABLE IF NOT EXISTS product_catalogue (
    product_id  uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    sku         text NOT NULL,
    document    jsonb NOT NULL,
    version     integer NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, sku)
);

-- customers: a tenant's buyers as the shop's orders name them (find-or-create by GSTIN, else phone,
-- else email; seed "EzBillify <-> VeeKaart", order webhook). One row per tenant and identity key.
CREATE TABLE IF NOT EXISTS customers (
    customer_id  uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    identity_key text NOT NULL,
    name         text NOT NULL,
    gstin        text,
    phone        text,
    email        text,
    state        text,
    source       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, identity_key)
);
