-- invoice_register: one row per invoice, the read model behind GET /v1/invoices.
-- Rows are upserted by event version, so replaying older events never moves a row backwards.
CREATE TABLE IF NOT EXISTS invoice_register (
    invoice_id      uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    number          text NOT NULL,
    financial_year  text NOT NULL,
    invoice_date    date NOT NULL,
    status          text NOT NULL,
    buyer_name      text NOT NULL,
    buyer_gstin     text,
    place_of_supply text NOT NULL,
    supply_type     text NOT NULL,
    taxable         numeric(18, 2) NOT NULL,
    cgst            numeric(18, 2) NOT NULL,
    sgst            numeric(18, 2) NOT NULL,
    igst            numeric(18, 2) NOT NULL,
    cess            numeric(18, 2) NOT NULL,
    total           numeric(18, 2) NOT NULL,
    -- json, not jsonb: keeps the field order the API shows. lz4, not the default pglz: a 5-line
    -- invoice's document is ~4 KB, above the TOAST threshold, and pglz compression of every row
    -- was the projection's bottleneck past ~20,000 rows (bench/).
    document        json COMPRESSION lz4 NOT NULL,
    issued_at       timestamptz NOT NULL,
    cancelled_at    timestamptz,
    cancellation    jsonb,
    last_event_id   text NOT NULL
);
-- Tables created before the lz4 choice get it too (only new rows are affected; that is fine).
-- Guarded: every process runs this file at start, and ALTER TABLE takes an exclusive lock.
DO $$
BEGIN
    IF (SELECT attcompression FROM pg_attribute
        WHERE attrelid = 'invoice_register'::regclass AND attname = 'document') IS DISTINCT FROM 'l' THEN
        ALTER TABLE invoice_register ALTER COLUMN document SET COMPRESSION lz4;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS invoice_register_tenant_date
    ON invoice_register (tenant_id, invoice_date, number, invoice_id);

-- E-invoicing (IRN) results, added with the gst-irp connector. Guarded like the lz4 change: even
-- ADD COLUMN IF NOT EXISTS takes an ACCESS EXCLUSIVE lock, which would wait behind any long reader
-- (an export, a BI query) at every process start, and hold up every other reader meanwhile.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'invoice_register'::regclass AND attname = 'einvoice_cancellation'
                   AND NOT attisdropped) THEN
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS irn text;
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS einvoice json;
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS einvoice_failure json;
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS einvoice_cancellation json;
    END IF;
END
$$;

-- Kenyan invoices and credit notes (issue 10): the country, the document type and its original,
-- Kenya VAT, where the sale is reported (environment, eTIMS branch) and its eTIMS state (the
-- `etims` block of GET /v1/invoices/{id}). A Kenyan row has no place of supply and zero GST.
-- Guarded like the columns above.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'invoice_register'::regclass AND attname = 'etims'
                   AND NOT attisdropped) THEN
        ALTER TABLE invoice_register ALTER COLUMN place_of_supply DROP NOT NULL;
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS country text NOT NULL DEFAULT 'IN';
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS document_type text NOT NULL DEFAULT 'invoice';
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS original_invoice_id uuid;
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS vat numeric(18, 2);
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS environment text;
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS branch_id text;
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS etims_status text;
        ALTER TABLE invoice_register ADD COLUMN IF NOT EXISTS etims json;
    END IF;
END
$$;

-- Indian credit and debit notes (issue 11): GET /v1/invoices/{id} lists an invoice's notes.
-- Guarded like the columns above (CREATE INDEX takes its lock before it sees the index exists).
DO $$
BEGIN
    IF to_regclass('invoice_register_original') IS NULL THEN
        CREATE INDEX IF NOT EXISTS invoice_register_original
            ON invoice_register (tenant_id, original_invoice_id) WHERE original_invoice_id IS NOT NULL;
    END IF;
END
$$;
