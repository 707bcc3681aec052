-- tds_register: one row per recorded TDS deduction (engine/tds.py), the read model behind the
-- thresholds of POST /v1/tds/calculate, GET /v1/tds/summary, GET /v1/tds/form26q and the certificate
-- statements. Written from the TdsDeduction aggregate right after it is stored (it never changes, so
-- a row is written once); rebuildable from the event store.
CREATE TABLE IF NOT EXISTS tds_register (
    deduction_id    uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    reference       text NOT NULL,
    vendor_pan      text,
    vendor_name     text NOT NULL,
    pan_status      text NOT NULL,
    payment_nature  text NOT NULL,
    threshold_group text NOT NULL,
    payment_date    date NOT NULL,
    financial_year  text NOT NULL,
    quarter         smallint NOT NULL,
    amount          numeric(20, 2) NOT NULL,
    act             text NOT NULL,
    section         text NOT NULL,
    section_code    text,
    tds_rate        numeric(9, 4) NOT NULL,
    tds_amount      numeric(20, 2) NOT NULL,
    computed_tds    numeric(20, 2) NOT NULL,
    higher_rate     boolean NOT NULL,
    recorded_by     text NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS tds_register_reference ON tds_register (tenant_id, reference);
CREATE INDEX IF NOT EXISTS tds_register_vendor_year
    ON tds_register (tenant_id, vendor_pan, financial_year, threshold_group) WHERE vendor_pan IS NOT NULL;
CREATE INDEX IF NOT EXISTS tds_register_quarter ON tds_register (tenant_id, financial_year, quarter);
