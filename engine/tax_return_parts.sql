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

-- What each generated GSTR-1 was built from: one row per document as the builder saw it (the
-- SupplyDocument as JSON, engine/tax_returns.py ``document_json``), so that after a period is filed
-- its documents "as filed" are these rows, not today's projection (issue 11: later changes go to the
-- amendment sections of the next open period). A snapshot is written while the return is built and
-- kept only when no snapshot of the same content exists (``tax_return_snapshot_heads``).
-- ``origin_period`` is the document's own period; ``kind`` is 'document' (reported in the return)
-- or 'amended' (an amendment's document as now, reported in an amendment section).
CREATE TABLE IF NOT EXISTS tax_return_snapshot_heads (
    tenant_id    uuid NOT NULL,
    gstin        text NOT NULL,
    period       text NOT NULL,
    content_hash text NOT NULL,
    snapshot_id  uuid NOT NULL UNIQUE,
    PRIMARY KEY (tenant_id, gstin, period, content_hash)
);

CREATE TABLE IF NOT EXISTS tax_return_snapshots (
    tenant_id     uuid NOT NULL,
    snapshot_id   uuid NOT NULL,
    document_id   text NOT NULL,
    origin_period text NOT NULL,
    kind          text NOT NULL,
    digest        text NOT NULL,
    document      text NOT NULL,
    PRIMARY KEY (tenant_id, snapshot_id, kind, document_id)
);
CREATE INDEX IF NOT EXISTS tax_return_snapshots_origin
    ON tax_return_snapshots (tenant_id, origin_period, document_id);
