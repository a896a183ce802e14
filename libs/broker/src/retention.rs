//! Retention that accounts for every event: streams are trimmed only through the [`TRIM`](crate::scripts::TRIM)
//! script, which dead-letters (or, by the stream's choice, counts as dropped) every removed
//! entry that some subscription had not settled. Trims run in chunks of [`TRIM_CHUNK`] entries
//! so no single Redis call grows with the backlog:
//! * after a publish that left a stream over its max length (the PUBLISH script says so),
//!   in a background task per stream (`Broker::trim_soon`; one at a time per stream);
//! * every few seconds for every stream in the admin service ([`Broker::trim_all`]), which is
//!   what applies age limits to streams nobody publishes to.

use std::collections::HashSet;

use crate::{
    Broker, BrokerError, Result,
    keys::validate_name,
    scripts::{self, Trim},
};

/// Most entries one TRIM call removes.
pub const TRIM_CHUNK: usize = 200;

/// What a trim did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Entries removed from the stream.
    pub removed: u64,
    /// Dead letters written (one per subscription that had not settled a removed entry).
    pub dead_lettered: u64,
    /// Unsettled removed entries dropped, summed over subscriptions.
    pub dropped: u64,
}

impl std::ops::AddAssign for Trimmed {
    fn add_assign(&mut self, other: Self) {
        self.removed += other.removed;
        self.dead_lettered += other.dead_lettered;
        self.dropped += other.dropped;
    }
}

impl Broker {
    /// Applies `stream`'s retention now, chunk by chunk, until nothing is over it: in each of its
    /// partitions (each keeps its share of the max length, see [`crate::partition`]).
    pub async fn trim_stream(&self, stream: &str) -> Result<Trimmed> {
        validate_name("stream", stream)?;
        let mut total = Trimmed::default();
        for part in crate::partition_names(stream, self.partitions(stream).await?) {
            total += self.trim_one(&part).await?;
        }
        Ok(total)
    }

    /// [`Broker::trim_stream`] of one Redis-level stream (a stream or one partition).
    async fn trim_one(&self, stream: &str) -> Result<Trimmed> {
        crate::validate_partition_name("stream", stream)?;
        let keys = self.keys();
        let mut total = Trimmed::default();
        loop {
            let trim = Trim { keys, stream, chunk: TRIM_CHUNK, dlq_max_len: self.options().dlq_max_len };
            let reply = scripts::run(&mut self.conn().await?, &trim).await?;
            let [removed, dead_lettered, dropped, more] = reply;
            total += Trimmed { removed, dead_lettered, dropped };
            if more == 0 {
                return Ok(total);
            }
        }
    }

    /// Applies every stream's retention (age limits need this for streams nobody publishes to).
    pub async fn trim_all(&self) -> Result<Trimmed> {
        let mut total = Trimmed::default();
        let mut after = String::new();
        loop {
            let (names, more) = self.list_stream_names(&after, crate::admin::MAX_PAGE_SIZE).await?;
            after = names.last().cloned().unwrap_or_default();
            for name in names {
                match self.trim_stream(&name).await {
                    Ok(trimmed) => total += trimmed,
                    Err(BrokerError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if !more {
                return Ok(total);
            }
        }
    }

    /// Trims `stream` in a background task unless one is already trimming it (publishes that
    /// overrun the length limit while it runs are covered by its loop).
    pub(crate) fn trim_soon(&self, stream: &str) {
        if !self.trimming().insert(stream.to_string()) {
            return;
        }
        let broker = self.downgrade();
        let stream = stream.to_string();
        tokio::spawn(async move {
            let Some(broker) = broker.upgrade() else { return };
            match broker.trim_one(&stream).await {
                Ok(t) if t.dead_lettered + t.dropped > 0 => tracing::info!(
                    stream,
                    removed = t.removed,
                    dead_lettered = t.dead_lettered,
                    dropped = t.dropped,
                    "retention removed unsettled events"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(stream, error = %e, "retention trim failed; the admin trimmer retries"),
            }
            broker.trimming().remove(&stream);
        });
    }
}

/// Streams with a background trim running.
pub(crate) type Trimming = std::sync::Mutex<HashSet<String>>;
