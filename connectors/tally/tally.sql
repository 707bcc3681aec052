-- Tally Prime (connectors/tally): per tenant, the ledger map (our roles -> the ledgers of the tenant's
-- Tally company) and the ledgers last read from Tally ("List of Accounts"), so that
-- GET /v1/tally/ledgers answers without reaching Tally and the map can be checked against them.
CREATE TABLE IF NOT EXISTS tally_ledger_maps (
    tenant_id  uuid PRIMARY KEY,
    ledgers    jsonb NOT NULL,
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tally_ledgers (
    tenant_id       uuid NOT NULL,
    name            text NOT NULL,
    parent          text,
    opening_balance numeric,
    closing_balance numeric,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE IF NOT EXISTS tally_ledger_syncs (
    tenant_id uuid PRIMARY KEY,
    synced_at timestamptz NOT NULL,
    ledgers   integer NOT NULL
);

-- Vouchers the accountant posts through POST /v1/tally/vouchers (connectors/tally/journal.py): one row
-- per tenant and voucher number (voucher_id is derived from both), queued, then posted or failed by
-- the connector's post_voucher job. idempotency_key: the request's Idempotency-Key, unique per tenant.
CREATE TABLE IF NOT EXISTS tally_vouchers (
    voucher_id      uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    voucher_number  text NOT NULL,
    voucher_type    text NOT NULL,
    document        jsonb NOT NULL,
    fingerprint     text NOT NULL,
    idempotency_key text,
    remote_id       text NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'posted', 'failed')),
    tally_answer    jsonb,
    error           jsonb,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    posted_at       timestamptz,
    finished_at     timestamptz,
    UNIQUE (tenant_id, voucher_number)
);
CREATE UNIQUE INDEX IF NOT EXISTS tally_vouchers_idempotency_key
    ON tally_vouchers (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tally_vouchers_by_status ON tally_vouchers (tenant_id, status, created_at);

-- The daily ledger sync's schedule per tenant (connectors/tally/sync.py): a row only once the tenant
-- changed it or a sync ran; without one, the defaults (enabled, 03:00 Asia/Kolkata) apply.
CREATE TABLE IF NOT EXISTS tally_schedules (
    tenant_id   uuid PRIMARY KEY,
    enabled     boolean NOT NULL DEFAULT true,
    run_at      time NOT NULL DEFAULT '03:00',
    timezone    text NOT NULL DEFAULT 'Asia/Kolkata',
    last_run_on date,
    last_error  text
);

-- Monthly reconciliations (connectors/tally/reconcile.py): per tenant and month, each expense ledger's
-- movement in Tally against the approved and paid expenses we hold for it, as of one ledger sync.
CREATE TABLE IF NOT EXISTS tally_reconciliations (
    tenant_id    uuid NOT NULL,
    period       text NOT NULL,
    as_of        timestamptz NOT NULL,
    lines        jsonb NOT NULL,
    differences  integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, period)
);
