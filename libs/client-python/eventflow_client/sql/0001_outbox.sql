-- The transactional outbox: a service inserts one row per event inside its own transaction;
-- eventflow-relay publishes committed rows to their stream and deletes them after a retention.
CREATE SCHEMA IF NOT EXISTS eventflow;

CREATE TABLE IF NOT EXISTS eventflow.outbox (
    id            bigserial   PRIMARY KEY,
    -- The eventflow stream the event goes to.
    stream        text        NOT NULL,
    -- The CloudEvent in the CloudEvents Protobuf Format ...
    event         bytea,
    -- ... or in the CloudEvents JSON Format: exactly one of the two.
    event_json    jsonb,
    -- The CloudEvents `partitionkey`: rows of one key are published in id order.
    partition_key text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Set by the relay once the event is stored in its stream (NULL: not yet published).
    published_at  timestamptz,
    CONSTRAINT outbox_one_format CHECK ((event IS NULL) <> (event_json IS NULL))
);

-- The relay's claim: unpublished rows in id order.
CREATE INDEX IF NOT EXISTS outbox_unpublished ON eventflow.outbox (id) WHERE published_at IS NULL;
