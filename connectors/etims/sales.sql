-- eTIMS sales queue (connectors/etims/sales.py). Idempotent: run by `ledgerflow db migrate` after the
-- engine's migrations (Connector.migrations). No column holds a key: the CMC key lives only in
-- connector_secrets, sealed.

-- invcNo per environment + tenant + branch (KRA: "sequential per TIN+branch, never reused",
-- kenya-etims.md). A plain row, not a PostgreSQL SEQUENCE: a sequence hands out numbers outside the
-- transaction and loses them on rollback, this row's increment commits or rolls back with the sale.
CREATE TABLE IF NOT EXISTS etims_sale_sequences (
    tenant_id    uuid    NOT NULL,
    environment  text    NOT NULL,
    bhf_id       text    NOT NULL,
    last_invc_no bigint  NOT NULL,
    PRIMARY KEY (tenant_id, environment, bhf_id)
);

CREATE TABLE IF NOT EXISTS etims_sales (
    invoice_id          uuid        PRIMARY KEY,
    tenant_id           uuid        NOT NULL,
    environment         text        NOT NULL,
    bhf_id              text        NOT NULL,
    invc_no             bigint      NOT NULL,
    document_type       text        NOT NULL,           -- invoice | credit_note
    number              text        NOT NULL,           -- our invoice number (trdInvcNo)
    original_invoice_id uuid,                           -- credit notes: the invoice they refund
    job_id              text        NOT NULL,           -- the job that allocated the number
    record              jsonb       NOT NULL,           -- the issued record as published (what is sent)
    state               text        NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'sent', 'signed', 'blocked', 'voided')),
    device_type         text,
    attempts            integer     NOT NULL DEFAULT 0,
    numbered_recorded   boolean     NOT NULL DEFAULT false,
    receipt             jsonb,                          -- signed: the receipt fields (no key)
    signed_recorded     boolean     NOT NULL DEFAULT false,
    adopted_existing    boolean     NOT NULL DEFAULT false,
    first_failure_at    timestamptz,                    -- first transient failure since the last success
    last_failure        jsonb,                          -- {code, message, error_class}
    stale_alerted       boolean     NOT NULL DEFAULT false,
    void_reason         text,
    voided_by           text,
    queued_at           timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    signed_at           timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, environment, bhf_id, invc_no)
);

-- The queue head of a branch, and the operators' list by state.
CREATE INDEX IF NOT EXISTS etims_sales_open
    ON etims_sales (tenant_id, environment, bhf_id, invc_no) WHERE state IN ('queued', 'sent', 'blocked');
CREATE INDEX IF NOT EXISTS etims_sales_by_state ON etims_sales (tenant_id, state, bhf_id, invc_no);
