-- Tables the engine keeps beside the event store. Idempotent: run at every start.

-- API keys are stored as SHA-256 of a 256-bit random secret (no salt needed at that entropy);
-- the key id is public and names the row. Rotation keeps the old key until expires_at.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      text PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id);
-- Named keys (POST /v1/tenant/api-keys): a name to tell them apart, when each was last accepted
-- (written at most once a minute), and when it was revoked (revocation also sets expires_at).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS name text NOT NULL DEFAULT 'default';
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS last_used_at timestamptz;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS revoked_at timestamptz;

-- Idempotency-Key (HTTP) and ce_id (ingest topic) map to the invoice they created.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id    uuid NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    invoice_id   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- The relay's position in the event store's notification log, written after Kafka acknowledged.
CREATE TABLE IF NOT EXISTS relay_position (
    relay           text PRIMARY KEY,
    notification_id bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Per projection, the last Kafka offset applied for each partition, written in the same
-- transaction as the projection's rows ("store the offset with the output").
CREATE TABLE IF NOT EXISTS projection_tracking (
    projection text NOT NULL,
    topic      text NOT NULL,
    partition  integer NOT NULL,
    "offset"   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

-- Per-tenant provider settings. Credentials are sealed (AES-GCM, key id prefixed) and never
-- leave the engine; credential_rotated_at maps each set field to when it last changed.
CREATE TABLE IF NOT EXISTS integrations (
    tenant_id             uuid NOT NULL,
    provider              text NOT NULL,
    enabled               boolean NOT NULL,
    environment           text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    base_url              text NOT NULL,
    credentials_sealed    text NOT NULL,
    credential_rotated_at jsonb NOT NULL DEFAULT '{}',
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider)
);

-- Per-tenant keys that sign ingest commands (engine/security/ingest_keys.py). The ingest agent
-- needs the secret itself for HMAC, so it is sealed (AES-GCM, key id prefixed), never hashed-only
-- and never in the clear. At most two unrevoked keys per tenant, enforced by the API under a lock.
CREATE TABLE IF NOT EXISTS ingest_keys (
    key_id        text PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    secret_sealed text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX IF NOT EXISTS ingest_keys_tenant ON ingest_keys (tenant_id);

-- Restarts of the processes `ledgerflow run` supervises, per machine and process name (counted
-- when the crashed process is started again); GET /metrics shows them.
CREATE TABLE IF NOT EXISTS process_restarts (
    host            text NOT NULL,
    process         text NOT NULL,
    restarts        bigint NOT NULL,
    last_exit_code  integer,
    last_restart_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, process)
);
