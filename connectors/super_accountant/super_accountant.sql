-- The consolidating accountant connector's tables (connectors/super_accountant). Idempotent.

-- The college's daily expense sync schedule (the seed's "daily, 2:00 AM"), one row per tenant.
CREATE TABLE IF NOT EXISTS super_accountant_schedules (
    tenant_id   uuid PRIMARY KEY,
    enabled     boolean NOT NULL DEFAULT true,
    run_at      time NOT NULL DEFAULT '02:00',
    timezone    text NOT NULL DEFAULT 'Asia/Kolkata',
    -- the local date of the last planned run: a day is planned once
    last_run_on date,
    updated_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per sync batch: the exact payload (frozen when planned, so a retry sends the same body
-- under the same Idempotency-Key) and what became of it.
CREATE TABLE IF NOT EXISTS super_accountant_batches (
    batch_id      uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    run_id        uuid NOT NULL,
    seq           integer NOT NULL,
    trigger       text NOT NULL,
    expense_count integer NOT NULL,
    total_paise   bigint NOT NULL,
    payload       jsonb NOT NULL,
    -- queued | sent | failed
    status        text NOT NULL,
    accepted      integer,
    duplicate     boolean,
    error         jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- when Kafka acknowledged the batch's job; null: queue it again (a crash in between)
    published_at  timestamptz,
    finished_at   timestamptz
);
CREATE INDEX IF NOT EXISTS super_accountant_batches_by_tenant ON super_accountant_batches (tenant_id, created_at);
CREATE INDEX IF NOT EXISTS super_accountant_batches_queued ON super_accountant_batches (status, created_at)
    WHERE status = 'queued';

-- Which expense went in which batch (each expense once), or why it could not be sent.
CREATE TABLE IF NOT EXISTS super_accountant_expenses (
    tenant_id      uuid NOT NULL,
    expense_number text NOT NULL,
    batch_id       uuid,
    -- batched | refused
    status         text NOT NULL,
    reason         text,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, expense_number)
);

-- Monthly P&L submissions: the report as built (decimal rupees), the payload sent (paise), and the
-- accountant's answer.
CREATE TABLE IF NOT EXISTS super_accountant_reports (
    report_id     uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    period        text NOT NULL,
    report        jsonb NOT NULL,
    payload       jsonb,
    -- queued | submitted | failed
    status        text NOT NULL,
    submission_id text,
    next_action   text,
    duplicate     boolean,
    error         jsonb,
    requested_by  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    finished_at   timestamptz
);
CREATE INDEX IF NOT EXISTS super_accountant_reports_by_tenant ON super_accountant_reports (tenant_id, period, created_at);
