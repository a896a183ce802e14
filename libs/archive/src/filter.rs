//! Which archived events a query, replay or export reads: the filter, the order, the page
//! size and the page token, each validated with the API's field name in the error.

use eventflow_broker::{MAX_PARTITIONS, model::entry_key, model::is_entry_id, validate_name};

use crate::ArchiveError;

/// Events per page when the client asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most events per page.
pub const MAX_PAGE_SIZE: usize = 1000;
/// A page stops before its events pass this many bytes (it always holds at least one), so it
/// fits gRPC's default 4 MiB message limit.
pub const MAX_PAGE_BYTES: usize = 1 << 20;
/// Most types one filter names.
pub const MAX_TYPES: usize = 100;

/// Which archived events of one stream (see `ArchiveFilter` in archive.proto).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The stream (required).
    pub stream: String,
    /// Published at or after (ms since the epoch).
    pub start_ms: Option<i64>,
    /// Published before (ms since the epoch).
    pub end_ms: Option<i64>,
    /// Any of these types; empty = any.
    pub types: Vec<String>,
    /// This `source`, if set.
    pub source: Option<String>,
    /// This `subject`, if set.
    pub subject: Option<String>,
    /// This `partitionkey`, if set.
    pub partition_key: Option<String>,
    /// This trace id (32 lowercase hex digits), if set.
    pub trace_id: Option<String>,
}

impl Filter {
    /// Checks every field; errors name it as `filter.<field>`.
    pub fn validate(&self) -> Result<(), ArchiveError> {
        validate_name("filter.stream", &self.stream)?;
        if let (Some(start), Some(end)) = (self.start_ms, self.end_ms)
            && end <= start
        {
            return Err(ArchiveError::invalid("filter.end_time", "must be after filter.start_time"));
        }
        if self.types.len() > MAX_TYPES {
            return Err(ArchiveError::invalid("filter.types", format!("at most {MAX_TYPES}")));
        }
        if self.types.iter().any(String::is_empty) {
            return Err(ArchiveError::invalid("filter.types", "must not contain an empty type"));
        }
        if let Some(trace) = &self.trace_id
            && (trace.len() != 32 || !trace.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(ArchiveError::invalid("filter.trace_id", "must be 32 lowercase hex digits"));
        }
        Ok(())
    }
}

/// Result order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Newest first.
    #[default]
    NewestFirst,
    /// Oldest first.
    OldestFirst,
}

/// A position in one stream's archive: an entry id as `(ms, seq)` and the partition holding it
/// (0 for a 1-partition stream). Ordered by time, then sequence, then partition — the order of
/// the queries. Page tokens are the entry id of the last event of the previous page.
///
/// As text (API entry ids, page tokens) it is `<ms>-<seq>` in partition 0 — the entry id as
/// Redis gave it, so a 1-partition stream's ids are unchanged — and `<ms>-<seq>~<i>` in
/// partition `i >= 1` (as the partition's internal stream is `<stream>~<i>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The entry id's milliseconds.
    pub ms: i64,
    /// The entry id's sequence number.
    pub seq: i64,
    /// The partition of the stream the entry is in.
    pub partition: u32,
}

impl Cursor {
    /// The cursor of archived entry id `id` (`<ms>-<seq>`, or `<ms>-<seq>~<i>` in partition
    /// `i >= 1`); `field` names it in the error.
    pub fn parse(field: &str, id: &str) -> Result<Self, ArchiveError> {
        let (entry, partition) = match id.split_once('~') {
            None => (id, 0),
            // One spelling per entry: digits without a leading zero (no `~0`, `~01`, `~+1`).
            Some((entry, p)) => match p.parse::<u32>() {
                Ok(n) if (1..MAX_PARTITIONS).contains(&n) && n.to_string() == p => (entry, n),
                _ => {
                    return Err(ArchiveError::invalid(
                        field,
                        format!("the partition after '~' must be 1 to {}", MAX_PARTITIONS - 1),
                    ));
                }
            },
        };
        Self::in_partition(field, entry, partition)
    }

    /// The cursor of Redis entry id `entry_id` (`<ms>-<seq>`) of partition `partition`.
    pub fn in_partition(field: &str, entry_id: &str, partition: u32) -> Result<Self, ArchiveError> {
        if !is_entry_id(entry_id) {
            return Err(ArchiveError::invalid(field, "must be an entry id <ms>-<seq> (or <ms>-<seq>~<partition>)"));
        }
        let (ms, seq) = entry_key(entry_id);
        match (i64::try_from(ms), i64::try_from(seq)) {
            (Ok(ms), Ok(seq)) => Ok(Self { ms, seq, partition }),
            _ => Err(ArchiveError::invalid(field, "out of range")),
        }
    }

    /// The Redis entry id `<ms>-<seq>` within its partition.
    pub fn stream_entry_id(self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }

    /// The archived entry id: `<ms>-<seq>`, with `~<partition>` in partitions from 1.
    pub fn entry_id(self) -> String {
        match self.partition {
            0 => self.stream_entry_id(),
            p => format!("{}-{}~{p}", self.ms, self.seq),
        }
    }
}

/// The page size asked for: 0 = [`DEFAULT_PAGE_SIZE`], at most `max`.
pub fn page_size(field: &str, asked: i32, default: usize, max: usize) -> Result<usize, ArchiveError> {
    match usize::try_from(asked) {
        Ok(0) => Ok(default),
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(ArchiveError::invalid(field, format!("must be at most {max}"))),
        Err(_) => Err(ArchiveError::invalid(field, "must not be negative")),
    }
}

/// The page token's cursor; `None` for the first page.
pub fn page_token(token: &str) -> Result<Option<Cursor>, ArchiveError> {
    if token.is_empty() { Ok(None) } else { Cursor::parse("page_token", token).map(Some) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn field_of(e: ArchiveError) -> String {
        match e {
            ArchiveError::InvalidArgument { field, .. }
            | ArchiveError::Broker(eventflow_broker::BrokerError::InvalidArgument { field, .. }) => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let ok = Filter { stream: "orders".into(), ..Filter::default() };
        ok.validate().unwrap();
        let bad = Filter { stream: String::new(), ..ok.clone() };
        assert_eq!(field_of(bad.validate().unwrap_err()), "filter.stream");
        let bad = Filter { start_ms: Some(10), end_ms: Some(10), ..ok.clone() };
        assert_eq!(field_of(bad.validate().unwrap_err()), "filter.end_time");
        let bad = Filter { trace_id: Some("ABC".into()), ..ok.clone() };
        assert_eq!(field_of(bad.validate().unwrap_err()), "filter.trace_id");
        let bad = Filter { types: vec![String::new()], ..ok };
        assert_eq!(field_of(bad.validate().unwrap_err()), "filter.types");
        assert_eq!(field_of(page_token("nope").unwrap_err()), "page_token");
        assert_eq!(field_of(page_size("page_size", -1, 100, 1000).unwrap_err()), "page_size");
        assert_eq!(field_of(page_size("page_size", 1001, 100, 1000).unwrap_err()), "page_size");
        assert_eq!(page_size("page_size", 0, 100, 1000).unwrap(), 100);
        assert_eq!(page_token("5-7").unwrap(), Some(Cursor { ms: 5, seq: 7, partition: 0 }));
    }

    #[test]
    fn partitioned_entry_ids_round_trip_and_bad_ones_are_named() {
        let c = Cursor::parse("entry_id", "5-7~2").unwrap();
        assert_eq!(c, Cursor { ms: 5, seq: 7, partition: 2 });
        assert_eq!((c.entry_id(), c.stream_entry_id()), ("5-7~2".to_string(), "5-7".to_string()));
        assert_eq!(Cursor::parse("entry_id", "5-7").unwrap().entry_id(), "5-7", "partition 0 keeps the plain id");
        let last = format!("5-7~{}", MAX_PARTITIONS - 1);
        assert_eq!(Cursor::parse("entry_id", &last).unwrap().entry_id(), last);
        for bad in ["5-7~0", "5-7~01", "5-7~+1", "5-7~", "5-7~x", "5~2", "5-7~2~3", &format!("5-7~{MAX_PARTITIONS}")] {
            assert_eq!(field_of(Cursor::parse("entry_id", bad).unwrap_err()), "entry_id", "{bad}");
        }
        assert!(Cursor::parse("t", "9-0").unwrap() > Cursor::parse("t", "5-7~3").unwrap(), "time first");
        assert!(Cursor::parse("t", "5-7~1").unwrap() > Cursor::parse("t", "5-7").unwrap(), "then partition");
    }
}
