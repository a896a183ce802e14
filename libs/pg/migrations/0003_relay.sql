-- What eventflow-relay needs of the outbox: failed rows, the indexes of its claim and cleanup,
-- the database's identity (deterministic event ids), and the NOTIFY that wakes it.

-- A row whose event the relay cannot publish (undecodable, refused by validation, unknown
-- stream): when and why. Failed rows are skipped, kept, and never deleted by the retention;
-- clearing failed_at makes the relay try again.
ALTER TABLE eventflow.outbox
    ADD COLUMN IF NOT EXISTS failed_at timestamptz,
    ADD COLUMN IF NOT EXISTS failure   text;

-- The relay's claim: rows still to publish, in id order (replaces 0001's index, which also
-- covered failed rows).
DROP INDEX IF EXISTS eventflow.outbox_unpublished;
CREATE INDEX IF NOT EXISTS outbox_pending ON eventflow.outbox (id)
    WHERE published_at IS NULL AND failed_at IS NULL;
-- The per-key order check: an older row of the same key still to publish.
CREATE INDEX IF NOT EXISTS outbox_pending_key ON eventflow.outbox (partition_key, id)
    WHERE published_at IS NULL AND failed_at IS NULL AND partition_key IS NOT NULL;
-- The retention: published rows by age.
CREATE INDEX IF NOT EXISTS outbox_published ON eventflow.outbox (published_at)
    WHERE published_at IS NOT NULL;

-- One random id per database: the relay names events without an id `outbox-<this>-<row id>`,
-- unique across databases publishing to one stream and the same on every retry of a row.
CREATE TABLE IF NOT EXISTS eventflow.outbox_identity (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id        uuid    NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO eventflow.outbox_identity DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Wakes the relay (LISTEN eventflow_outbox) when a transaction that inserted rows commits:
-- one notification per statement (PostgreSQL folds equal ones of a transaction into one).
CREATE OR REPLACE FUNCTION eventflow.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('eventflow_outbox', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS outbox_notify ON eventflow.outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON eventflow.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION eventflow.outbox_notify();
