-- GSTIN verification (connectors/gstin_lookup/store.py). Idempotent: `ledgerflow db migrate` runs it
-- after the engine's migrations.

-- What the GST network said about a GSTIN, per tenant: the search is billed to the tenant's GSP
-- account, and a cache shared between tenants would tell one tenant whom another trades with (a
-- fresh answer for a GSTIN it never searched). `found` false: the network has no such registration.
-- Kept until expires_at (LEDGERFLOW_GSTIN_LOOKUP_TTL_S); an expired row is searched again.
CREATE TABLE IF NOT EXISTS gstin_lookup_taxpayers (
    tenant_id         uuid NOT NULL,
    gstin             text NOT NULL,
    found             boolean NOT NULL,
    legal_name        text,
    trade_name        text,
    status            text,          -- active | cancelled | suspended | inactive ... (lower case)
    taxpayer_type     text,          -- Regular, Composition, SEZ Unit, ... as the portal words it
    business_type     text,          -- constitution of business (ctb)
    registration_date date,
    cancellation_date date,
    address           text,
    checked_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, gstin)
);

-- The buyer verification of each Indian invoice (the gstin-lookup job after it was issued): what
-- the invoice view shows next to the buyer's GSTIN. `unverified`: the job was dead-lettered
-- (failure_* say why); a later successful redrive replaces it.
CREATE TABLE IF NOT EXISTS gstin_lookup_invoice_checks (
    tenant_id        uuid NOT NULL,
    invoice_id       uuid NOT NULL,
    invoice_number   text NOT NULL,
    gstin            text NOT NULL,
    outcome          text NOT NULL
                     CHECK (outcome IN ('active', 'not_active', 'not_registered', 'unverified')),
    status           text,
    alerted          boolean NOT NULL DEFAULT false,
    failure_code     text,
    failure_class    text,
    failure_attempts integer,
    checked_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id)
);
CREATE INDEX IF NOT EXISTS gstin_lookup_invoice_checks_gstin ON gstin_lookup_invoice_checks (tenant_id, gstin);
