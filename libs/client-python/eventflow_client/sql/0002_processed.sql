-- Exactly-once consumers: the id of each event a subscription has processed, inserted in the
-- same transaction as the handler's side effects (a conflict means: already processed, skip).
CREATE SCHEMA IF NOT EXISTS eventflow;

CREATE TABLE IF NOT EXISTS eventflow.processed (
    subscription text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, event_id)
);

-- Pruning by age (after the stream's dedup horizon).
CREATE INDEX IF NOT EXISTS processed_age ON eventflow.processed (processed_at);
