-- etims_compliance: one row per Kenyan sale (invoice or credit note) with where it stands at KRA
-- eTIMS, the read model behind GET /v1/etims/compliance and `ledgerflow etims report`. The daily
-- report (per tenant, environment, branch and sale date) is an aggregate over these rows: counting
-- per sale, not per event, is what keeps a replayed or duplicated event from counting twice.
CREATE TABLE IF NOT EXISTS etims_compliance (
    invoice_id      uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    -- The etims integration's environment when the sale was issued (sandbox | production).
    environment     text NOT NULL,
    -- KRA's bhfId of the selling branch.
    branch_id       text NOT NULL,
    -- The sale's date (KRA's salesDt, an Africa/Nairobi calendar date). NULL only while the sale's
    -- issued event is missing (set aside as a projection dead letter): such a row is in no day.
    sale_date       date,
    number          text,
    document_type   text NOT NULL DEFAULT 'invoice',
    status          text NOT NULL CHECK (status IN ('pending', 'signed', 'failed', 'voided')),
    invc_no         bigint,
    receipt_no      bigint,
    -- The failure the sale is blocked on (status failed), else NULL.
    failure_code    text,
    failure_message text,
    -- Every refusal the sale met, keyed by event id (so a replay adds nothing):
    -- {"<event id>": {"code", "error_class", "message", "at"}}.
    failures        jsonb NOT NULL DEFAULT '{}'::jsonb,
    signed_at       timestamptz,
    voided_at       timestamptz,
    updated_at      timestamptz NOT NULL,
    last_event_id   text NOT NULL
);
CREATE INDEX IF NOT EXISTS etims_compliance_tenant_day
    ON etims_compliance (tenant_id, sale_date, environment, branch_id);
