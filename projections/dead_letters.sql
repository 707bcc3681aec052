-- Projection dead letters (projections/dead_letters.py): events a projection could not apply
-- (undecodable, or refused by PostgreSQL / the projection's code), kept with the bytes and headers
-- needed to apply them again. Written in the same transaction as the batch's tracking row, so the
-- projector's position never passes an event that is neither applied nor recorded here.
CREATE TABLE IF NOT EXISTS projection_dead_letters (
    id              bigserial PRIMARY KEY,
    projection      text NOT NULL,
    topic           text NOT NULL,
    -- -1 (and the notification id as offset) for an event a rebuild read from the event store.
    partition       integer NOT NULL,
    "offset"        bigint NOT NULL,
    ce_id           text NOT NULL DEFAULT '',
    ce_type         text NOT NULL DEFAULT '',
    aggregate_id    text NOT NULL DEFAULT '',
    tenant_id       text NOT NULL DEFAULT '',
    -- undecodable_event (no schema reads it) or apply_failed (the projection or PostgreSQL refused it).
    error_code      text NOT NULL,
    error_class     text NOT NULL,
    error_message   text NOT NULL,
    key             bytea,
    value           bytea NOT NULL,
    headers         jsonb NOT NULL DEFAULT '[]',
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'redriven', 'discarded')),
    attempts        integer NOT NULL DEFAULT 1,
    -- Copied to projection.<name>.dlq.v1 after the commit (an outbox: NULL until Kafka has it).
    published_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    UNIQUE (projection, topic, partition, "offset")
);
-- "Is this row incomplete?" is asked for every invoice the API shows: a partial index that holds
-- only the pending letters (usually none) answers it for nothing.
CREATE INDEX IF NOT EXISTS projection_dead_letters_pending
    ON projection_dead_letters (projection, aggregate_id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS projection_dead_letters_unpublished
    ON projection_dead_letters (projection, id) WHERE published_at IS NULL;
