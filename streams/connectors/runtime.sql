-- The connector runtime's shared state. Idempotent: run at every start (engine/db.py MIGRATIONS).

-- Circuit breaker per (connector, tenant), shared by every worker; transitions in streams/connectors/breaker.py.
CREATE TABLE IF NOT EXISTS connector_breakers (
    connector            text NOT NULL,
    tenant_id            text NOT NULL,
    state                text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures integer NOT NULL DEFAULT 0,
    half_open_successes  integer NOT NULL DEFAULT 0,
    opened_at            timestamptz,
    probe_started_at     timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, tenant_id)
);

-- Rate-limit permits per connector (streams/connectors/rate_limit.py): one row per request (or job)
-- still in flight (released_at NULL) or released less than one window ago; a permit is granted only
-- while fewer than the limit's count of such rows exist. (An older release kept the GCRA table
-- connector_rate here; it is no longer read and may be dropped.)
CREATE TABLE IF NOT EXISTS connector_rate_permits (
    id          bigserial PRIMARY KEY,
    connector   text NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    released_at timestamptz
);
CREATE INDEX IF NOT EXISTS connector_rate_permits_by_connector ON connector_rate_permits (connector);

-- One row per attempt sent to a provider: in flight while finished_at is NULL. Rows older than
-- two hours are pruned by the workers; status reads the last hour.
CREATE TABLE IF NOT EXISTS connector_attempts (
    id          bigserial PRIMARY KEY,
    connector   text NOT NULL,
    tenant_id   text NOT NULL,
    job_id      text NOT NULL,
    kind        text NOT NULL,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    outcome     text CHECK (outcome IN ('success', 'retryable', 'permanent', 'needs_attention')),
    error_code  text,
    latency_ms  double precision
);
CREATE INDEX IF NOT EXISTS connector_attempts_recent ON connector_attempts (connector, started_at);

-- What operators did with dead letters, so a record is redriven or discarded at most once.
CREATE TABLE IF NOT EXISTS connector_dlq_actions (
    connector  text NOT NULL,
    partition  integer NOT NULL,
    "offset"   bigint NOT NULL,
    action     text NOT NULL CHECK (action IN ('redriven', 'discarded')),
    job_id     text NOT NULL,
    acted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, partition, "offset")
);
