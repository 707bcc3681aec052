-- The frozen JSON of generated tax returns (GSTR-1 upload parts), one row per part, keyed by its
-- content hash: a part generated again unchanged is the same row. TaxReturn events carry the hashes
-- (engine/domain/tax_return.py), never the JSON. Rows are never updated; the tenant column scopes
-- every read. Idempotent: run at every start (engine/db.py MIGRATIONS).
CREATE TABLE IF NOT EXISTS tax_return_parts (
    tenant_id    uuid NOT NULL,
    content_hash text NOT NULL,
    document     text NOT NULL,  -- the exact JSON text whose SHA-256 is content_hash
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, content_hash)
);

-- Which periods a GSTIN has filed (one row per period, written after the TaxReturn's Filed event):
-- later changes to those periods' documents go to the amendment sections of the next open period.
CREATE TABLE IF NOT EXISTS tax_return_filings (
    tenant_id  uuid NOT NULL,
    form       text NOT NULL,
    gstin      text NOT NULL,
    period     text NOT NULL,
    return_id  uuid NOT NULL,
    arn        text NOT NULL,
    filed_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, form, gstin, period)
);
