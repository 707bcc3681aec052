-- Integration health and alert policy (engine/integration_health.py, engine/alert_policy.py,
-- docs/integrations.md "Health, logs and alerts"). Idempotent: run at every start (engine/db.py MIGRATIONS).

-- One row per job a connector worker dead-lettered (streams/connectors/worker.py), so that the DLQ
-- depth can be told per tenant without reading the topic: the DLQ topic has one partition, so
-- (connector, partition, offset) names a record, and an operator's redrive or discard is the row
-- of connector_dlq_actions with the same three.
CREATE TABLE IF NOT EXISTS connector_dead_letters (
    connector        text NOT NULL,
    partition        integer NOT NULL,
    "offset"         bigint NOT NULL,
    tenant_id        text NOT NULL,
    job_id           text NOT NULL,
    job_kind         text NOT NULL,
    error_class      text NOT NULL,
    error_code       text NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, partition, "offset")
);
CREATE INDEX IF NOT EXISTS connector_dead_letters_by_tenant
    ON connector_dead_letters (tenant_id, connector, dead_lettered_at);

-- Who gets which alerts by email: per tenant, recipients per minimum severity (GET/PUT /v1/alerts/policy).
CREATE TABLE IF NOT EXISTS alert_policies (
    tenant_id  uuid PRIMARY KEY,
    email      jsonb NOT NULL DEFAULT '[]',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The alerts of ledger.alert.v1 as the alert worker saw them (streams/alerts.py), for GET /v1/alerts;
-- alert_id is the aggregate id, so a redelivered alert is one row.
CREATE TABLE IF NOT EXISTS alert_log (
    alert_id  uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    severity  text NOT NULL,
    cause     text NOT NULL,
    subject   text NOT NULL,
    message   text NOT NULL,
    details   jsonb NOT NULL DEFAULT '{}',
    raised_at timestamptz NOT NULL,
    seen_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_log_by_tenant ON alert_log (tenant_id, raised_at DESC, alert_id);

-- Index to page a tenant's attempts of one connector (GET /v1/integrations/{provider}/logs).
CREATE INDEX IF NOT EXISTS connector_attempts_by_tenant ON connector_attempts (connector, tenant_id, id);
