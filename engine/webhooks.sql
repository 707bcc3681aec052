-- Outbound webhooks (issue 13; engine/webhooks.py, streams/webhooks.py, docs/webhooks.md).
-- Idempotent: run at every start (engine/db.py MIGRATIONS).

-- The endpoints as the API lists them and the delivery worker routes by: written from the
-- WebhookEndpoint aggregate after every save (its events are the history; this is the look-up).
-- The signing secrets are not here: they are sealed in connector_secrets (provider "webhooks").
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    endpoint_id       uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    url               text NOT NULL,
    event_types       text[] NOT NULL,
    description       text NOT NULL DEFAULT '',
    body_format       text NOT NULL,
    status            text NOT NULL,
    disabled_reason   text,
    version           integer NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    secret_rotated_at timestamptz,
    -- The first failure since the last success (the 5-day disable rule); null while healthy.
    failing_since     timestamptz
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_tenant ON webhook_endpoints (tenant_id);

-- One row per (endpoint, event): the durable queue of the delivery worker. `seq` orders the events
-- of one ordering key (the Kafka key: the aggregate id) per endpoint: a row is only attempted when
-- no earlier pending row of the same key and endpoint exists.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id     uuid PRIMARY KEY,
    seq             bigserial NOT NULL,
    endpoint_id     uuid NOT NULL,
    tenant_id       uuid NOT NULL,
    event_id        text NOT NULL,
    ce_type         text NOT NULL,
    ordering_key    text NOT NULL,
    event           jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending',  -- pending | delivered | dead
    attempts        integer NOT NULL DEFAULT 0,
    schedule_step   integer NOT NULL DEFAULT 0,      -- attempts since the last (re)send
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    last_error      text,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_order
    ON webhook_deliveries (endpoint_id, ordering_key, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_listing ON webhook_deliveries (endpoint_id, seq DESC);

-- Every attempt of a delivery (GET /v1/webhooks/endpoints/{id}/deliveries).
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id  uuid NOT NULL,
    attempt      integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code  integer,
    latency_ms   integer NOT NULL,
    error        text,
    PRIMARY KEY (delivery_id, attempt)
);
