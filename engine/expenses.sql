-- College expenses, approvals and budgets (engine/expenses.py, issue 14). The read tables
-- (expense_register, budget_register) are written right after each save of their aggregate and are
-- rebuildable from the event store (`ledgerflow expenses rebuild`); the others are configuration and
-- the durable SLA timer, which are not events.

-- expense_register: one row per expense, its latest state (the contract other helpers read:
-- /work/notes/expense-contract.md, docs/college-accounts.md).
CREATE TABLE IF NOT EXISTS expense_register (
    expense_id          uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL,
    expense_number      text NOT NULL,
    category            text NOT NULL,
    gl_code             text NOT NULL,
    amount              numeric(20, 2) NOT NULL,
    status              text NOT NULL,
    expense_date        date NOT NULL,
    financial_year      text NOT NULL,
    description         text NOT NULL,
    vendor_name         text NOT NULL,
    vendor_pan          text,
    receipt_url         text,
    submitted_by        text NOT NULL,
    submitted_at        timestamptz NOT NULL,
    approval_id         uuid,
    approval_due_at     timestamptz,
    escalated_at        timestamptz,
    approved_by         text,
    approved_by_name    text,
    approver_role       text,
    approved_at         timestamptz,
    comments            text,
    rejected_by         text,
    rejected_at         timestamptz,
    rejection_reason    text,
    paid_at             timestamptz,
    paid_on             date,
    payment_reference   text,
    tds_deducted        numeric(20, 2),
    version             integer NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS expense_register_number ON expense_register (tenant_id, expense_number);
CREATE INDEX IF NOT EXISTS expense_register_list ON expense_register (tenant_id, submitted_at, expense_id);
CREATE INDEX IF NOT EXISTS expense_register_dates ON expense_register (tenant_id, expense_date);

-- budget_register: one row per (tenant, category, financial year) budget, its latest state.
CREATE TABLE IF NOT EXISTS budget_register (
    budget_id           uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL,
    category            text NOT NULL,
    financial_year      text NOT NULL,
    allocated_amount    numeric(20, 2) NOT NULL,
    utilized_amount     numeric(20, 2) NOT NULL,
    alert_level         text NOT NULL,
    version             integer NOT NULL,
    UNIQUE (tenant_id, category, financial_year)
);

-- The running expense number per tenant and calendar year (EXP-2026-000001...). A number taken by a
-- submission that then failed is a gap, never a duplicate.
CREATE TABLE IF NOT EXISTS expense_number_sequences (
    tenant_id   uuid NOT NULL,
    year        integer NOT NULL,
    last_number integer NOT NULL,
    PRIMARY KEY (tenant_id, year)
);

-- Per-tenant configuration: thresholds, SLA, alert levels, categories and GL codes (NULL = the seed's
-- defaults), and the sealed secret of the principal portal's signed callback.
CREATE TABLE IF NOT EXISTS expense_settings (
    tenant_id           uuid PRIMARY KEY,
    approval_threshold  numeric(20, 2),
    sla_hours           numeric(9, 4),
    warning_percent     numeric(6, 2),
    critical_percent    numeric(6, 2),
    categories          jsonb,
    gl_codes            jsonb,
    callback_secret     text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- The durable SLA timer: one row per approval request, due at requested_at + SLA. The timer
-- (`ledgerflow expense-timer`) claims due rows with FOR UPDATE SKIP LOCKED and marks them fired.
CREATE TABLE IF NOT EXISTS expense_approval_timers (
    approval_id  uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    expense_id   uuid NOT NULL,
    due_at       timestamptz NOT NULL,
    fired_at     timestamptz,
    outcome      text
);
CREATE INDEX IF NOT EXISTS expense_approval_timers_due
    ON expense_approval_timers (due_at) WHERE fired_at IS NULL;

-- Callbacks already applied (the Standard Webhooks message id): an identical redelivery is 200.
CREATE TABLE IF NOT EXISTS expense_callbacks (
    tenant_id    uuid NOT NULL,
    message_id   text NOT NULL,
    body_hash    text NOT NULL,
    expense_id   uuid NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, message_id)
);
