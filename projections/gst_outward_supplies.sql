-- gst_outward_supplies: one row per Indian invoice, credit note and debit note, by tenant, seller
-- GSTIN and return period, the read model GSTR-1 is built from (projections/gst_outward_supplies.py).
-- The lines are kept with their document (jsonb) so that one event changes one row: the projection
-- stays rebuildable with the shadow-table swap every projection uses (projections/rebuild.py).
CREATE TABLE IF NOT EXISTS gst_outward_supplies (
    document_id           uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL,
    seller_gstin          text NOT NULL,
    -- The GSTR-1 return period of the document's date, MMYYYY (GSTN's `fp`).
    period                text NOT NULL,
    document_date         date NOT NULL,
    number                text NOT NULL,
    -- invoice | credit_note | debit_note
    document_type         text NOT NULL,
    -- B2B | B2C | SEZWP | SEZWOP | EXPWP | EXPWOP | DEXP
    supply_type           text NOT NULL,
    buyer_gstin           text,
    buyer_name            text NOT NULL,
    place_of_supply       text NOT NULL,
    intra_state           boolean NOT NULL,
    reverse_charge        boolean NOT NULL DEFAULT false,
    ecommerce_gstin       text,
    -- {shipping_bill_number, shipping_bill_date, port_code} of an export, when given.
    export                jsonb,
    original_invoice_id   uuid,
    original_number       text,
    original_invoice_date date,
    note_reason           text,
    taxable               numeric(18, 2) NOT NULL,
    igst                  numeric(18, 2) NOT NULL,
    cgst                  numeric(18, 2) NOT NULL,
    sgst                  numeric(18, 2) NOT NULL,
    cess                  numeric(18, 2) NOT NULL,
    total                 numeric(18, 2) NOT NULL,
    -- [{line_no, hsn, description, unit, quantity, taxable_value, gst_rate, igst, cgst, sgst, cess,
    --   supply_category}], amounts as decimal strings.
    lines                 jsonb NOT NULL,
    cancelled             boolean NOT NULL DEFAULT false,
    -- The IRN when the document was e-invoiced (GSTN then auto-populates it from the IRP).
    irn                   text,
    issued_at             timestamptz NOT NULL,
    last_event_id         text NOT NULL
);
CREATE INDEX IF NOT EXISTS gst_outward_supplies_return
    ON gst_outward_supplies (tenant_id, seller_gstin, period, document_date, number);
