-- fee_collections: one row per receipted fee (engine/fees.py), the read model behind
-- GET /v1/fee-collections and the fee reconciliation. Written from the FeeCollection aggregate right
-- after it is stored (a collection never changes, so a row is written once); rebuildable from the
-- event store.
CREATE TABLE IF NOT EXISTS fee_collections (
    collection_id     uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    receipt_number    text NOT NULL,
    student_id        text NOT NULL,
    student_name      text NOT NULL,
    amount            numeric(20, 2) NOT NULL,
    currency          text NOT NULL,
    payment_mode      text NOT NULL,
    payment_date      date NOT NULL,
    payment_reference text,
    fee_type          text NOT NULL,
    academic_year     text NOT NULL,
    semester          integer,
    source            text NOT NULL,
    recorded_by       text NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS fee_collections_receipt ON fee_collections (tenant_id, receipt_number);
CREATE INDEX IF NOT EXISTS fee_collections_by_date ON fee_collections (tenant_id, payment_date, receipt_number);

-- fee_reconciliations: each POST /v1/reconciliation/fees run, kept as answered so that
-- GET /v1/reconciliation/fees/{id} shows what an accountant saw (the inputs may change later).
CREATE TABLE IF NOT EXISTS fee_reconciliations (
    reconciliation_id uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    from_date         date NOT NULL,
    to_date           date NOT NULL,
    result            jsonb NOT NULL,
    requested_by      text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS fee_reconciliations_by_tenant ON fee_reconciliations (tenant_id, created_at);
