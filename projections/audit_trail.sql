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
    changes         text NOT NULL,   -- JSON, see below
    state_after     bytea NOT NULL,  -- JSON (UTF-8), see below
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

-- Issue 15: state_after is this projection's own memory (the previous state an entity's next event
-- is compared with), never shown, so it is kept as the JSON bytes the projection wrote rather than
-- parsed into jsonb: parsing it was about a third of PostgreSQL's work per row (a 5-line invoice's
-- state is ~3.8 KB of JSON). A table made before this is converted once, here.
DO $$
BEGIN
    IF (SELECT atttypid = 'jsonb'::regtype FROM pg_attribute
        WHERE attrelid = 'audit_trail'::regclass AND attname = 'state_after') THEN
        ALTER TABLE audit_trail ALTER COLUMN state_after TYPE bytea
            USING convert_to(state_after::text, 'UTF8');
    END IF;
END $$;
-- Issue 15: changes too is kept as the JSON text the projection wrote, and made jsonb when read
-- (projections/audit_trail.py, _SEARCH): jsonb_in was 44% of PostgreSQL's CPU on this table (perf
-- of the bench's 50,000 5-line invoices, audit-cost branch), and the API reads a page at a time.
-- The API answers what it did: the same text through the same jsonb_in, at read time.
DO $$
BEGIN
    IF (SELECT atttypid = 'jsonb'::regtype FROM pg_attribute
        WHERE attrelid = 'audit_trail'::regclass AND attname = 'changes') THEN
        ALTER TABLE audit_trail ALTER COLUMN changes TYPE text USING changes::text;
    END IF;
END $$;
-- Both documents are larger than the TOAST threshold once a few lines are in: lz4 compresses them
-- for a fraction of pglz's CPU (bench, 50,000 5-line invoices: PostgreSQL ~310 -> ~210 µs per
-- row). A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE audit_trail ALTER COLUMN changes SET COMPRESSION lz4,
                            ALTER COLUMN state_after SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN NULL;
END $$;
