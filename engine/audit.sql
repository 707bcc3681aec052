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
-- How the audit_trail projection finds an event's row: both columns of its join in one index. With
-- event_id alone, a planner without statistics yet (a table just filled: a backlog, a bench, a
-- fresh tenant's first burst) ANDed it with the primary key's events_table prefix, a scan of every
-- row of the store per event looked up: 1.8 ms a row at 50,000 rows, most of the projector's
-- PostgreSQL CPU in the bench of 2026-12-03 (EXPLAIN ANALYZE before the first ANALYZE).
CREATE INDEX IF NOT EXISTS event_actors_event ON event_actors (event_id, events_table);
DROP INDEX IF EXISTS event_actors_event_id;

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
