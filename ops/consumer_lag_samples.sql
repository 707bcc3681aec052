-- Lag samples of the engine's consumer groups, written each time lag is sampled (`ledgerflow lag`,
-- GET /healthz/consumers, the API's lag monitor). Stall detection (ops/stall.py) compares a
-- partition's committed offset over time; ops/lag.py prunes rows older than its retention.
-- Idempotent: run at every start (engine/db.py MIGRATIONS).
CREATE TABLE IF NOT EXISTS consumer_lag_samples (
    group_id   text NOT NULL,
    topic      text NOT NULL,
    partition  integer NOT NULL,
    -- Next offset the group will read; NULL while it has committed nothing on this partition.
    committed  bigint,
    end_offset bigint NOT NULL,
    lag        bigint NOT NULL,
    sampled_at timestamptz NOT NULL,
    PRIMARY KEY (group_id, topic, partition, sampled_at)
);
CREATE INDEX IF NOT EXISTS consumer_lag_samples_sampled_at ON consumer_lag_samples (sampled_at);
