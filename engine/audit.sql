-- The audit store (docs/audit-log.md): who stored each event, and the audit log's own entries.
-- Also run by the event stores' recorder when it creates its tables (engine/attribution.py), so
-- that a store opened before any migration can already record its writers.

-- One row per stored event of every event store, written in the event's transaction.
CREATE TABLE IF NOT EXISTS event_actors (
    events_table       text NOT NULL,
    originator_id      uuid NOT NULL,
    originator_version bigint NOT NULL,
    -- The event id the relay publishes (ce_id): how the audit_trail projection finds the row.
    event_id           uuid NOT NULL,
    actor              text NOT NULL,
    role               text,
    user_id            uuid,
    client_ip          text,
    user_agent         text,
    request_id         text,
    route              text,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (events_table, originator_id, originator_version)
);
CREATE INDEX IF NOT EXISTS event_actors_event_id ON event_actors (event_id);

-- The read index of POST /v1/audit-logs entries (engine/audit_log.py), written with their events.
CREATE TABLE IF NOT EXISTS audit_entries (
    entry_id     uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    action       text NOT NULL,
    entity_type  text NOT NULL,
    entity_id    text NOT NULL,
    details      jsonb,
    actor        text NOT NULL,
    role         text,
    user_id      uuid,
    client_ip    text,
    user_agent   text,
    request_id   text
);
CREATE INDEX IF NOT EXISTS audit_entries_tenant_time ON audit_entries (tenant_id, occurred_at, entry_id);
CREATE INDEX IF NOT EXISTS audit_entries_tenant_entity
    ON audit_entries (tenant_id, entity_type, entity_id, occurred_at);
