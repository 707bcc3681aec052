-- The VeeKaart shop sync (connectors/veekaart/sync.py).
-- veekaart_sync_runs: one row per sync run, its counts and every failure with its reason
-- (GET /v1/integrations/veekaart/sync-runs).
CREATE TABLE IF NOT EXISTS veekaart_sync_runs (
    run_id       uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    kind         text NOT NULL,           -- full | incremental
    trigger      text NOT NULL,           -- manual | schedule
    status       text NOT NULL,           -- running | succeeded | partial | failed
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    considered   integer NOT NULL DEFAULT 0,
    pushed       integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    throttled    integer NOT NULL DEFAULT 0,
    failures     jsonb NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX IF NOT EXISTS veekaart_sync_runs_tenant ON veekaart_sync_runs (tenant_id, started_at DESC);
-- One running sync per tenant (the seed: never run several synchronisations at once).
CREATE UNIQUE INDEX IF NOT EXISTS veekaart_sync_runs_one_running
    ON veekaart_sync_runs (tenant_id) WHERE status = 'running';

-- veekaart_synced: the catalogue version of each item the shop has (all three feeds accepted it):
-- an incremental run pushes only items whose catalogue version is newer.
CREATE TABLE IF NOT EXISTS veekaart_synced (
    tenant_id  uuid NOT NULL,
    product_id uuid NOT NULL,
    version    integer NOT NULL,
    synced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, product_id)
);

-- veekaart_sync_schedule: the tenant's auto-sync (seed: "Auto Sync Enabled"), durable across
-- restarts; the scheduler claims due rows with SKIP LOCKED so two schedulers never run one twice.
CREATE TABLE IF NOT EXISTS veekaart_sync_schedule (
    tenant_id        uuid PRIMARY KEY,
    enabled          boolean NOT NULL,
    interval_minutes integer NOT NULL,
    next_run_at      timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
