-- Partitioned streams in the archive: entry ids are per partition of a stream (partition i >= 1
-- of `orders` is the internal stream `orders~i`), so two partitions may hold the same entry id.
-- Rows keep the user-visible stream name and record the partition; the partition becomes part
-- of the row's identity (and of the paged queries' order). Rows of 1-partition streams, and
-- every row archived before this migration, are partition 0.
--
-- Adding the column with a constant default is a catalog change only; the primary key is
-- rebuilt on every day partition (one index build each, under an ACCESS EXCLUSIVE lock of the
-- archive while it runs: time it on a copy of a large archive first, see docs/operations.md).
ALTER TABLE eventflow.archive ADD COLUMN IF NOT EXISTS stream_partition integer NOT NULL DEFAULT 0;

ALTER TABLE eventflow.archive DROP CONSTRAINT IF EXISTS archive_pkey;
-- One row per stream entry of each partition; also the index of the time-ordered, paged
-- queries, whose order is (publish_time, entry_seq, stream_partition).
ALTER TABLE eventflow.archive ADD CONSTRAINT archive_pkey
    PRIMARY KEY (stream, publish_time, entry_seq, stream_partition);
