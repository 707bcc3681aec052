-- The bank connector's tables (connectors/bank). Idempotent: run by `ledgerflow db migrate`.

-- Payouts as a list reads them: one row per Payout aggregate, rewritten from the aggregate after
-- every save (connectors/bank/payouts.py); the event store stays the record.
CREATE TABLE IF NOT EXISTS bank_payouts (
    tenant_id uuid NOT NULL,
    payout_id uuid NOT NULL,
    reference text NOT NULL,
    status text NOT NULL,
    mode text NOT NULL,
    amount numeric(20, 2) NOT NULL,
    currency text NOT NULL,
    beneficiary_name text NOT NULL,
    beneficiary_ifsc text NOT NULL,
    beneficiary_account_masked text NOT NULL,
    purpose text NOT NULL,
    round integer NOT NULL,
    provider_payment_id text,
    utr text,
    charges numeric(20, 2),
    failure_code text,
    failure_message text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, payout_id)
);
CREATE INDEX IF NOT EXISTS bank_payouts_by_status ON bank_payouts (tenant_id, status, created_at);
CREATE INDEX IF NOT EXISTS bank_payouts_by_provider_id ON bank_payouts (tenant_id, provider_payment_id);

-- Imported statements, each with its balance check.
CREATE TABLE IF NOT EXISTS bank_statements (
    tenant_id uuid NOT NULL,
    statement_id uuid NOT NULL,
    account text NOT NULL,
    source text NOT NULL,
    statement_ref text NOT NULL,
    currency text NOT NULL,
    from_date date,
    to_date date,
    opening_balance numeric(20, 2) NOT NULL,
    closing_balance numeric(20, 2) NOT NULL,
    computed_closing numeric(20, 2) NOT NULL,
    balanced boolean NOT NULL,
    lines integer NOT NULL,
    imported integer NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, statement_id)
);

-- Bank transactions: one row per statement line, deduplicated per tenant by the line's key
-- (account + value date + amount + reference + position in its statement).
CREATE TABLE IF NOT EXISTS bank_transactions (
    tenant_id uuid NOT NULL,
    transaction_id uuid NOT NULL,
    account text NOT NULL,
    value_date date NOT NULL,
    booking_date date,
    amount numeric(20, 2) NOT NULL,
    currency text NOT NULL,
    reference text,
    description text NOT NULL,
    position integer NOT NULL,
    dedupe_key text NOT NULL,
    statement_id uuid NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, transaction_id),
    UNIQUE (tenant_id, dedupe_key)
);
CREATE INDEX IF NOT EXISTS bank_transactions_by_date ON bank_transactions (tenant_id, account, value_date);

-- Latest known balance per account: from a statement's closing balance or the bank's balance API.
CREATE TABLE IF NOT EXISTS bank_balances (
    tenant_id uuid NOT NULL,
    account text NOT NULL,
    balance numeric(20, 2) NOT NULL,
    currency text NOT NULL,
    as_of timestamptz NOT NULL,
    source text NOT NULL,
    PRIMARY KEY (tenant_id, account)
);

-- The tenant's scheduled statement poll: the newest statements job is the one that keeps polling
-- (an older one, from an earlier save of the integration, stops when it sees it is superseded).
CREATE TABLE IF NOT EXISTS bank_statement_polls (
    tenant_id uuid PRIMARY KEY,
    job_id text NOT NULL,
    job_created_at timestamptz NOT NULL,
    last_polled_at timestamptz,
    last_result jsonb
);
