-- The event archive: every event of the archived streams, stored once per stream entry by
-- eventflow-archive, queried and replayed by its ArchiveService.
CREATE SCHEMA IF NOT EXISTS eventflow;

-- The events, partitioned by publish time (one partition per UTC day, created ahead by the
-- archiver and dropped by its archive retention).
CREATE TABLE IF NOT EXISTS eventflow.archive (
    -- The stream the event was published to.
    stream        text        NOT NULL,
    -- Publish time: the entry id's millisecond part (exact: timestamptz keeps microseconds).
    publish_time  timestamptz NOT NULL,
    -- The entry id's sequence part: with stream and publish_time, the entry id.
    entry_seq     bigint      NOT NULL,
    -- CloudEvents attributes the queries filter on.
    event_id      text        NOT NULL,
    type          text        NOT NULL,
    source        text        NOT NULL,
    subject       text,
    partition_key text,
    -- The trace id (32 hex digits) of the event's traceparent.
    trace_id      text,
    -- The CloudEvent in the CloudEvents Protobuf Format, as published.
    event         bytea       NOT NULL,
    -- When the archiver stored it.
    archived_at   timestamptz NOT NULL DEFAULT now(),
    -- One row per stream entry (the archiver inserts with ON CONFLICT DO NOTHING); also the
    -- index of the time-ordered, paged queries.
    PRIMARY KEY (stream, publish_time, entry_seq)
) PARTITION BY RANGE (publish_time);

CREATE INDEX IF NOT EXISTS archive_type ON eventflow.archive (stream, type, publish_time);
CREATE INDEX IF NOT EXISTS archive_subject ON eventflow.archive (stream, subject, publish_time)
    WHERE subject IS NOT NULL;
CREATE INDEX IF NOT EXISTS archive_partition_key ON eventflow.archive (stream, partition_key, publish_time)
    WHERE partition_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS archive_trace ON eventflow.archive (trace_id) WHERE trace_id IS NOT NULL;

-- The streams ever archived (queries of other names are NOT_FOUND).
CREATE TABLE IF NOT EXISTS eventflow.archive_streams (
    stream     text        PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);

-- Creates the partition of UTC day `day` (days since 1970-01-01), eventflow.archive_YYYYMMDD,
-- unless it exists (also when another archiver creates it at the same time).
CREATE OR REPLACE FUNCTION eventflow.archive_ensure_partition(day integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    d date := date '1970-01-01' + day;
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS eventflow.%I PARTITION OF eventflow.archive FOR VALUES FROM (%L) TO (%L)',
        'archive_' || to_char(d, 'YYYYMMDD'),
        d::timestamp AT TIME ZONE 'UTC',
        (d + 1)::timestamp AT TIME ZONE 'UTC');
EXCEPTION WHEN duplicate_table OR unique_violation THEN
    NULL;
END;
$$;

-- Drops the day partitions that end at or before UTC day `before_day` (days since
-- 1970-01-01); returns how many.
CREATE OR REPLACE FUNCTION eventflow.archive_drop_partitions(before_day integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE n.nspname = 'eventflow' AND p.relname = 'archive' AND c.relname ~ '^archive_[0-9]{8}$'
    LOOP
        IF to_date(substr(part.relname, 9), 'YYYYMMDD') + 1 <= date '1970-01-01' + before_day THEN
            EXECUTE format('DROP TABLE eventflow.%I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END;
$$;
