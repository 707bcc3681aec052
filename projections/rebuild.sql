-- Projection rebuilds in progress (projections/rebuild.py). A row exists from the moment a rebuild
-- creates its shadow table until the shadow is swapped in; a rebuild that finds its row resumes.
CREATE TABLE IF NOT EXISTS projection_rebuilds (
    projection      text PRIMARY KEY,
    -- 'kafka': the shadow's positions are in projection_tracking under '<projection>__rebuild'.
    -- 'event-store': the shadow's position is notification_id below.
    source          text NOT NULL CHECK (source IN ('kafka', 'event-store')),
    shadow_table    text NOT NULL,
    notification_id bigint NOT NULL DEFAULT 0,
    events_applied  bigint NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
