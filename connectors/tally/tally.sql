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
