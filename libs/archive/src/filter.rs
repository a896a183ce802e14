//! Which archived events a query, replay or export reads: the filter, the order, the page
//! size and the page token, each validated with the API's field name in the error.

use eventflow_broker::{model::entry_key, model::is_entry_id, validate_name};

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

/// A position in one stream's archive: an entry id as `(ms, seq)`. Page tokens are the entry
/// id of the last event of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The entry id's milliseconds.
    pub ms: i64,
    /// The entry id's sequence number.
    pub seq: i64,
}

impl Cursor {
    /// The cursor of entry id `id`; `field` names it in the error.
    pub fn parse(field: &str, id: &str) -> Result<Self, ArchiveError> {
        if !is_entry_id(id) {
            return Err(ArchiveError::invalid(field, "must be an entry id <ms>-<seq>"));
        }
        let (ms, seq) = entry_key(id);
        match (i64::try_from(ms), i64::try_from(seq)) {
            (Ok(ms), Ok(seq)) => Ok(Self { ms, seq }),
            _ => Err(ArchiveError::invalid(field, "out of range")),
        }
    }

    /// The entry id `<ms>-<seq>`.
    pub fn entry_id(self) -> String {
        format!("{}-{}", self.ms, self.seq)
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
        assert_eq!(page_token("5-7").unwrap(), Some(Cursor { ms: 5, seq: 7 }));
    }
}
