-- Draft invoices and the invoice number series (issue 13; engine/drafts.py, engine/invoice_series.py).
-- Idempotent: run at every start (engine/db.py MIGRATIONS).

-- A tenant's number series: the prefix template ({fy} becomes the financial year, "2026-27") and
-- the least number of digits of the sequence part. No row: the defaults of engine/invoice_series.py.
CREATE TABLE IF NOT EXISTS invoice_series (
    tenant_id  uuid PRIMARY KEY,
    prefix     text NOT NULL,
    digits     integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The last sequence number used per tenant and financial year. Its row is locked (FOR UPDATE) while
-- a draft is issued and advanced only when the invoice is stored, so numbers have no gaps.
CREATE TABLE IF NOT EXISTS invoice_series_counters (
    tenant_id      uuid NOT NULL,
    financial_year text NOT NULL,
    last_number    integer NOT NULL,
    PRIMARY KEY (tenant_id, financial_year)
);

-- The drafts as GET /v1/invoices/drafts lists them: written from the InvoiceDraft aggregate after
-- every save (its events are the history; this is the look-up), newer versions only.
CREATE TABLE IF NOT EXISTS invoice_drafts (
    draft_id          uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    status            text NOT NULL,
    source            text NOT NULL,
    external_ref      text,
    invoice_date      date NOT NULL,
    buyer_name        text NOT NULL,
    total             numeric(18, 2) NOT NULL,
    issued_invoice_id uuid,
    number            text,
    version           integer NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS invoice_drafts_tenant ON invoice_drafts (tenant_id, created_at, draft_id);
