-- audit_trail: one row per domain event, the read model behind GET /v1/audit-logs (docs/audit-log.md).
-- Who did it is copied from the engine's audit store (event_actors) when the event is applied; the
-- client's IP and user agent are in this table, never on a topic.
CREATE TABLE IF NOT EXISTS audit_trail (
    event_id        uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    occurred_at     timestamptz NOT NULL,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    event_type      text NOT NULL,
    action          text NOT NULL,
    entity_type     text NOT NULL,
    entity_id       text NOT NULL,
    changes         jsonb NOT NULL,
    state_after     jsonb NOT NULL,
    actor           text,
    role            text,
    user_id         uuid,
    client_ip       text,
    user_agent      text,
    request_id      text,
    -- A constraint, not a plain index: a rebuild gives its shadow table the constraints before it
    -- fills it, and every event looks up its entity's previous row through this index. Never
    -- violated on its own: event_id is unique already.
    CONSTRAINT audit_trail_entity_position UNIQUE (entity_id, topic, kafka_partition, kafka_offset, event_id)
);
CREATE INDEX IF NOT EXISTS audit_trail_tenant_time ON audit_trail (tenant_id, occurred_at, event_id);
CREATE INDEX IF NOT EXISTS audit_trail_tenant_entity
    ON audit_trail (tenant_id, entity_type, entity_id, occurred_at);
