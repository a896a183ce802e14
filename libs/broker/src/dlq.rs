//! Dead-letter queues: one Redis stream per subscription (`<p>:{<s>}:dlq:<sub>`), each entry
//! holding the event bytes and why, where and when it failed. Requeue moves entries to the
//! subscription's redrive stream, so only that subscription sees them again, with delivery
//! attempts starting over and the event (and its trace context) unchanged.
//!
//! On a partitioned stream ([`crate::partition`]) every partition has its own queue per
//! subscription, beside that partition's redrive stream; the API still shows one queue per
//! subscription. A dead letter's id names its partition ([`dead_letter_id`]: the queue entry id,
//! followed by `~<i>` for partition `i >= 1`, so ids on 1-partition streams are the plain entry ids
//! of before), so get, requeue and delete go to the queue it names, and a requeue puts the event
//! back on its own partition's redrive stream (for an ordered subscription at the head of its key
//! in that partition's gate). Purge and requeue-all go through every partition.
//!
//! A listing merges its queues (every partition × every subscription listed) newest first by
//! queue entry id (the dead-letter time), then subscription, then partition, reading each queue
//! in chunks as the merge needs them. The page token holds one cursor per partition: where that
//! partition's next dead letter is (entry id and subscription; the next page reads from there,
//! inclusive), or nothing once the partition has no more (it is not read again). So no dead
//! letter is skipped or listed twice, the next page reads again only what this one read ahead
//! (the queues' next entries), and dead letters added meanwhile (newer than their partition's
//! cursor: ids only grow) show on a new listing, not on a later page.

use std::collections::{BTreeMap, HashMap, VecDeque};

use redis::AsyncCommands;

use crate::{
    Broker, BrokerError, Result, SubscriptionConfig,
    keys::{PARTITION_SEPARATOR, partition_name, partition_number, validate_name},
    model::{entry_key, entry_ms, is_entry_id},
    schema::{dead_letter, entry},
    scripts::{self, Requeue},
};

/// Most dead letters one list page returns.
pub const MAX_DLQ_PAGE: usize = 1000;
/// Most bytes of dead letters (event and record) one list page carries, unless its one dead
/// letter is bigger: a quarter of gRPC's default 4 MiB message limit, so clients with default
/// settings can page through queues of big events.
pub const MAX_DLQ_PAGE_BYTES: usize = 1 << 20;
/// Entries of the first reads for a page, shared by the queues read; each queue's read size
/// doubles on each further read (within what the page can still take).
const FIRST_CHUNK: usize = 16;
/// Most entries of one read from one queue.
const MAX_CHUNK: usize = 1000;
/// Most ids one requeue/delete call takes.
pub const MAX_DLQ_IDS: usize = 10_000;
/// Dead letters one step of a requeue-all moves.
const REQUEUE_ALL_BATCH: usize = 1000;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id as the API shows it ([`dead_letter_id`]): the entry id in its dead-letter stream,
    /// naming its partition when that is not partition 0.
    pub id: String,
    /// The partition of the stream it was dead-lettered in (0 on a stream of one partition).
    pub partition: u32,
    /// The stream the event was published to (the stream's name, also for partitions `>= 1`).
    pub stream: String,
    /// The event's entry id in that stream (in its partition, on a partitioned stream).
    pub entry_id: String,
    /// The subscription it failed in.
    pub subscription: String,
    /// Deliveries made.
    pub attempts: u32,
    /// Why it was dead-lettered.
    pub reason: String,
    /// The consumer that last held it.
    pub consumer: String,
    /// When it was dead-lettered (ms since the Unix epoch).
    pub time_ms: u64,
    /// The event's ordering key (`partitionkey`), empty if it has none: on an ordered
    /// subscription, the key moved on without this event (a requeue puts it back at the key's
    /// head).
    pub ordering_key: String,
    /// The encoded CloudEvent.
    pub payload: Vec<u8>,
}

/// A page of dead letters and the token of the next one (empty at the end).
pub type DeadLetterPage = (Vec<DeadLetter>, String);

/// The API id of the dead letter at `entry` in a queue of partition `partition`: `entry` itself
/// on partition 0 (so ids on streams of one partition are as they always were), else
/// `<entry>~<partition>`. Clients treat ids as opaque.
pub fn dead_letter_id(entry: &str, partition: u32) -> String {
    if partition == 0 { entry.to_string() } else { format!("{entry}{PARTITION_SEPARATOR}{partition}") }
}

/// Reads an API dead-letter id into its partition and queue entry id; `InvalidArgument` naming
/// `field` when it is not one.
fn parse_id<'a>(field: &str, id: &'a str) -> Result<(u32, &'a str)> {
    let (entry, partition) = match id.split_once(PARTITION_SEPARATOR) {
        None => (id, Some(0)),
        Some((entry, number)) => (entry, partition_number(number)),
    };
    match partition {
        Some(partition) if is_entry_id(entry) => Ok((partition, entry)),
        _ => Err(BrokerError::invalid(field, format!("{id:?} is not a dead letter id"))),
    }
}

/// What a listing has read from Redis so far, to size its next reads by bytes.
#[derive(Debug, Default)]
struct Read {
    /// Dead letters read.
    count: usize,
    /// Their size ([`letter_bytes`]).
    bytes: usize,
}

impl Read {
    /// About how many more dead letters fit a page that holds `used` bytes (at least 1 more,
    /// plus one to see whether the next one would pass the cap); unbounded before any was read.
    fn fit(&self, used: usize) -> usize {
        match self.bytes.checked_div(self.count) {
            Some(average) if average > 0 => MAX_DLQ_PAGE_BYTES.saturating_sub(used) / average + 2,
            _ => usize::MAX,
        }
    }
}

/// A dead-letter stream entry as read: id and fields.
type Row = (String, HashMap<String, Vec<u8>>);

/// The reads of one pipeline: which reader, and how many entries it asked for.
type Reads = Vec<(usize, usize)>;

/// Where a listing resumes in one partition (one cursor of a page token).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    /// First page: from the newest.
    Start,
    /// At this dead letter (queue entry id, subscription), inclusive: the partition's next one
    /// in listing order.
    At(String, String),
    /// The partition has no more.
    Done,
}

/// One queue (a subscription in one partition), read newest first in chunks as a listing's
/// merge needs them.
struct Reader {
    /// The subscription.
    sub: String,
    /// The partition.
    partition: u32,
    /// Its dead-letter stream.
    key: String,
    /// Where the next read starts: `+`, or the cursor's entry id (inclusive or exclusive), then
    /// `(<last id>`.
    next: String,
    /// Entries of the next read; grows so that small queues take few round trips.
    chunk: usize,
    /// Read and not yet merged into the page, with their entry ids as sort keys.
    buffer: VecDeque<((u64, u64), DeadLetter)>,
    /// Whether the queue has nothing more.
    done: bool,
}

impl Reader {
    /// The listing order of its next dead letter (newest first = largest first): queue entry
    /// id, then subscription, then partition.
    fn front(&self) -> Option<((u64, u64), &str, u32)> {
        self.buffer.front().map(|(key, _)| (*key, self.sub.as_str(), self.partition))
    }
}

impl Broker {
    /// Lists dead letters newest first: of one subscription, or (with `subscription` empty) of
    /// all subscriptions of the stream merged by time, over every partition of the stream.
    /// `token` is the previous page's `next_page_token`.
    ///
    /// A page holds at most `page_size` dead letters and stops before their size would pass
    /// [`MAX_DLQ_PAGE_BYTES`] (it always holds at least one), so a client with gRPC's default
    /// 4 MiB message limit can page through big events. The token holds each partition's cursor
    /// (see the module doc), so the next page starts right after this one wherever it stopped.
    /// Each queue is read in chunks as the merge needs them, never a whole page of big events
    /// per queue.
    pub async fn list_dead_letters(
        &self,
        stream: &str,
        subscription: &str,
        page_size: usize,
        token: &str,
    ) -> Result<DeadLetterPage> {
        let subs: Vec<String> = if subscription.is_empty() {
            self.list_subscriptions(stream).await?.into_iter().map(|s| s.name).collect()
        } else {
            self.get_subscription(stream, subscription).await?;
            vec![subscription.to_string()]
        };
        let cursors = parse_token(token, self.partitions(stream).await?)?;
        let page_size = page_size.clamp(1, MAX_DLQ_PAGE);
        // The first reads share FIRST_CHUNK entries, so many queues of big events do not all
        // read a chunk at once.
        let first = FIRST_CHUNK.div_ceil((subs.len() * cursors.len()).max(1));
        let mut readers = Vec::new();
        for (partition, cursor) in (0u32..).zip(&cursors) {
            let part = partition_name(stream, partition);
            for sub in &subs {
                // A queue at the cursor's entry id holds the cursor's dead letter (inclusive)
                // when it is the cursor's subscription or an earlier one in listing order.
                let (next, done) = match cursor {
                    Cursor::Start => ("+".to_string(), false),
                    Cursor::At(id, at) if sub <= at => (id.clone(), false),
                    Cursor::At(id, _) => (format!("({id}"), false),
                    Cursor::Done => (String::new(), true),
                };
                let key = self.keys().dlq(&part, sub);
                readers.push(Reader {
                    sub: sub.clone(),
                    partition,
                    key,
                    next,
                    chunk: first,
                    buffer: VecDeque::new(),
                    done,
                });
            }
        }
        let mut conn = self.conn().await?;
        let mut page = Vec::new();
        let mut bytes = 0;
        let mut read = Read::default();
        loop {
            // Lookahead of one once the page is full: is there a next page? Otherwise what the
            // page can still take by count, and about what it can take by bytes.
            let want = if page.len() == page_size { 1 } else { (page_size - page.len() + 1).min(read.fit(bytes)) };
            self.refill(&mut conn, stream, &mut readers, want, &mut read).await?;
            let newest = readers
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.front().map(|key| (key, i)))
                .max_by(|(a, _), (b, _)| a.cmp(b))
                .map(|(_, i)| i);
            let Some(reader) = newest.and_then(|i| readers.get_mut(i)) else {
                return Ok((page, String::new()));
            };
            let size = reader.buffer.front().map_or(0, |(_, d)| letter_bytes(d));
            let full = page.len() == page_size || (!page.is_empty() && bytes + size > MAX_DLQ_PAGE_BYTES);
            if full {
                return Ok((page, next_token(&readers, cursors.len())));
            }
            bytes += size;
            page.extend(reader.buffer.pop_front().map(|(_, d)| d));
        }
    }

    /// Reads until every reader has a buffered entry or is done; each read of a reader whose
    /// buffer ran empty takes at most `want` entries, fewer while its chunk size grows from
    /// [`FIRST_CHUNK`]. The reads go in one pipeline, or on a cluster in one pipeline per
    /// partition (a pipeline stays within one hash slot), run concurrently.
    async fn refill(
        &self,
        conn: &mut crate::RedisConn,
        stream: &str,
        readers: &mut [Reader],
        want: usize,
        read: &mut Read,
    ) -> Result<()> {
        loop {
            let mut pipes: BTreeMap<u32, (Reads, redis::Pipeline)> = BTreeMap::new();
            for (i, r) in readers.iter_mut().enumerate().filter(|(_, r)| r.buffer.is_empty() && !r.done) {
                let count = r.chunk.min(want).max(1);
                let slot = if conn.is_cluster() { r.partition } else { 0 };
                let (asked, pipe) = pipes.entry(slot).or_insert_with(|| (Vec::new(), redis::pipe()));
                pipe.xrevrange_count(&r.key, &r.next, "-", count);
                asked.push((i, count));
                r.chunk = (r.chunk * 2).min(MAX_CHUNK);
            }
            let replies: Vec<(Reads, Vec<Vec<Row>>)> = if pipes.len() > 1 {
                let runs = pipes.into_values().map(|(asked, pipe)| {
                    let conn = conn.cluster_clone();
                    async move {
                        let mut conn =
                            conn.ok_or_else(|| BrokerError::Internal("cluster connection expected".into()))?;
                        let rows: Vec<Vec<Row>> = pipe.query_async(&mut conn).await?;
                        Ok::<_, BrokerError>((asked, rows))
                    }
                });
                futures_util::future::try_join_all(runs).await?
            } else if let Some((_, (asked, pipe))) = pipes.pop_first() {
                vec![(asked, pipe.query_async(conn).await?)]
            } else {
                return Ok(());
            };
            for ((i, count), rows) in replies.into_iter().flat_map(|(asked, rows)| asked.into_iter().zip(rows)) {
                let Some(r) = readers.get_mut(i) else { continue };
                r.done = rows.len() < count;
                if let Some((last, _)) = rows.last() {
                    r.next = format!("({last}");
                }
                for (id, fields) in rows {
                    let key = entry_key(&id);
                    let letter = parse(stream, &r.sub, r.partition, &id, fields);
                    read.count += 1;
                    read.bytes += letter_bytes(&letter);
                    r.buffer.push_back((key, letter));
                }
            }
        }
    }

    /// One dead letter; `NotFound` if it is not there (or its id names a partition the stream
    /// lacks).
    pub async fn get_dead_letter(&self, stream: &str, subscription: &str, id: &str) -> Result<DeadLetter> {
        self.get_subscription(stream, subscription).await?;
        let (partition, entry) = parse_id("id", id)?;
        let not_found = || BrokerError::NotFound(format!("dead letter {id:?}"));
        if partition >= self.partitions(stream).await? {
            return Err(not_found());
        }
        let mut conn = self.conn().await?;
        let rows: Vec<Row> =
            conn.xrange(self.keys().dlq(&partition_name(stream, partition), subscription), entry, entry).await?;
        rows.into_iter()
            .next()
            .map(|(entry, fields)| parse(stream, subscription, partition, &entry, fields))
            .ok_or_else(not_found)
    }

    /// Requeues dead letters into their subscription, each on its own partition's redrive
    /// stream; returns how many, and the ids not found (ids naming a partition the stream lacks
    /// among them).
    pub async fn requeue_dead_letters(
        &self,
        stream: &str,
        subscription: &str,
        ids: &[String],
    ) -> Result<(u64, Vec<String>)> {
        let config = self.get_subscription(stream, subscription).await?;
        let (groups, mut missing) = group_ids(ids, self.partitions(stream).await?)?;
        let mut moved = 0;
        for (partition, members) in groups {
            let entries: Vec<String> = members.iter().map(|(_, entry)| entry.clone()).collect();
            let found = self.requeue_in(&config, partition, &entries).await?;
            moved += found.iter().filter(|f| **f).count() as u64;
            missing.extend(members.into_iter().zip(found).filter(|(_, f)| !f).map(|((i, _), _)| i));
        }
        missing.sort_unstable();
        Ok((moved, missing.into_iter().filter_map(|i| ids.get(i).cloned()).collect()))
    }

    /// Requeues the dead letters at `entries` of `config`'s queue in `partition` ([`Requeue`]);
    /// per entry, whether it was there.
    async fn requeue_in(&self, config: &SubscriptionConfig, partition: u32, entries: &[String]) -> Result<Vec<bool>> {
        let part = partition_name(&config.stream, partition);
        // The gate of that partition's subscription (the settings are the same in every one).
        let gate = self.keys().gate_base(&SubscriptionConfig { stream: part.clone(), ..config.clone() });
        let requeue = Requeue { keys: self.keys(), stream: &part, subscription: &config.name, ids: entries, gate };
        let mut conn = self.conn().await?;
        scripts::run(&mut conn, &requeue).await
    }

    /// Requeues every dead letter of a subscription, each partition's oldest first, in batches
    /// of 1000.
    pub async fn requeue_all_dead_letters(&self, stream: &str, subscription: &str) -> Result<u64> {
        let config = self.get_subscription(stream, subscription).await?;
        let mut total = 0;
        for partition in 0..self.partitions(stream).await? {
            let key = self.keys().dlq(&partition_name(stream, partition), subscription);
            loop {
                let mut conn = self.conn().await?;
                let rows: Vec<Row> = conn.xrange_count(&key, "-", "+", REQUEUE_ALL_BATCH).await?;
                drop(conn);
                if rows.is_empty() {
                    break;
                }
                let entries: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
                total += self.requeue_in(&config, partition, &entries).await?.iter().filter(|f| **f).count() as u64;
            }
        }
        Ok(total)
    }

    /// Deletes dead letters; returns how many existed.
    pub async fn delete_dead_letters(&self, stream: &str, subscription: &str, ids: &[String]) -> Result<u64> {
        self.get_subscription(stream, subscription).await?;
        let (groups, _) = group_ids(ids, self.partitions(stream).await?)?;
        let mut deleted = 0;
        for (partition, members) in groups {
            let entries: Vec<String> = members.into_iter().map(|(_, entry)| entry).collect();
            let mut conn = self.conn().await?;
            let n: u64 = conn.xdel(self.keys().dlq(&partition_name(stream, partition), subscription), &entries).await?;
            deleted += n;
        }
        Ok(deleted)
    }

    /// Deletes every dead letter of a subscription (in every partition); returns how many there
    /// were.
    pub async fn purge_dead_letters(&self, stream: &str, subscription: &str) -> Result<u64> {
        self.get_subscription(stream, subscription).await?;
        let mut purged = 0;
        for partition in 0..self.partitions(stream).await? {
            let key = self.keys().dlq(&partition_name(stream, partition), subscription);
            let mut conn = self.conn().await?;
            let (len, _): (u64, i64) = redis::pipe().atomic().xlen(&key).del(&key).query_async(&mut conn).await?;
            purged += len;
        }
        Ok(purged)
    }
}

/// Queue entry ids by partition, each with its position among the ids of a call.
type ByPartition = BTreeMap<u32, Vec<(usize, String)>>;

/// Ids by partition, for the partitions the stream has: each with its queue entry ids and their
/// positions in `ids`; plus the positions of ids naming a partition the stream lacks. Checks
/// the count and every id first (`InvalidArgument` naming `ids`).
fn group_ids(ids: &[String], partitions: u32) -> Result<(ByPartition, Vec<usize>)> {
    if ids.len() > MAX_DLQ_IDS {
        return Err(BrokerError::invalid("ids", format!("more than {MAX_DLQ_IDS}")));
    }
    let mut groups = ByPartition::new();
    let mut beyond = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (partition, entry) = parse_id("ids", id)?;
        if partition < partitions {
            groups.entry(partition).or_default().push((i, entry.to_string()));
        } else {
            beyond.push(i);
        }
    }
    Ok((groups, beyond))
}

/// Builds a dead letter from its entry `entry` in the queue of `sub` in partition `partition`.
fn parse(stream: &str, sub: &str, partition: u32, entry: &str, mut fields: HashMap<String, Vec<u8>>) -> DeadLetter {
    let text = |f: &str| fields.get(f).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    let entry_id = text(dead_letter::ENTRY_ID);
    let reason = text(dead_letter::REASON);
    let consumer = text(dead_letter::CONSUMER);
    let attempts = text(dead_letter::ATTEMPTS).parse().unwrap_or(0);
    let time_ms = text(dead_letter::TIME_MS).parse().unwrap_or_else(|_| entry_ms(entry).unwrap_or(0));
    let ordering_key = text(entry::KEY);
    DeadLetter {
        id: dead_letter_id(entry, partition),
        partition,
        stream: stream.into(),
        subscription: sub.into(),
        entry_id,
        attempts,
        reason,
        consumer,
        time_ms,
        ordering_key,
        payload: fields.remove(entry::EVENT).unwrap_or_default(),
    }
}

/// What a dead letter adds to a page: its event and text fields, plus room for the encoding.
fn letter_bytes(d: &DeadLetter) -> usize {
    d.payload.len()
        + d.reason.len()
        + d.consumer.len()
        + d.id.len()
        + d.entry_id.len()
        + d.stream.len()
        + d.subscription.len()
        + 64
}

/// Separates the cursors of a page token.
const CURSOR_SEPARATOR: char = ';';

/// The token of the page after the one just filled: per partition, the next dead letter its
/// readers hold (the newest of their buffered fronts), or nothing when all of them are done.
/// `<entry id>,<subscription>` per partition, empty for a finished one, joined by `;`.
fn next_token(readers: &[Reader], partitions: usize) -> String {
    let mut next: Vec<Option<&Reader>> = vec![None; partitions];
    for r in readers.iter().filter(|r| r.front().is_some()) {
        if let Some(slot) = next.get_mut(r.partition as usize)
            && slot.is_none_or(|newest| newest.front() < r.front())
        {
            *slot = Some(r);
        }
    }
    let cursor = |r: &Reader| {
        let entry = r.buffer.front().and_then(|(_, d)| d.id.split(PARTITION_SEPARATOR).next()).unwrap_or_default();
        format!("{entry},{}", r.sub)
    };
    let cursors: Vec<String> = next.into_iter().map(|r| r.map(cursor).unwrap_or_default()).collect();
    cursors.join(&CURSOR_SEPARATOR.to_string())
}

/// Reads a page token ([`next_token`]) of a stream of `partitions` partitions: one cursor per
/// partition, all [`Cursor::Start`] for the first page.
fn parse_token(token: &str, partitions: u32) -> Result<Vec<Cursor>> {
    if token.is_empty() {
        return Ok(vec![Cursor::Start; partitions as usize]);
    }
    let bad = || BrokerError::invalid("page_token", "not a token from a previous page");
    let cursors = token
        .split(CURSOR_SEPARATOR)
        .map(|cursor| {
            if cursor.is_empty() {
                return Ok(Cursor::Done);
            }
            let (id, sub) = cursor.split_once(',').ok_or_else(bad)?;
            if !is_entry_id(id) || validate_name("subscription", sub).is_err() {
                return Err(bad());
            }
            Ok(Cursor::At(id.into(), sub.into()))
        })
        .collect::<Result<Vec<Cursor>>>()?;
    // A token of another stream, or of this name before it was re-created with another count.
    if cursors.len() != partitions as usize {
        return Err(bad());
    }
    Ok(cursors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_partition_and_plain_ids_are_partition_0() {
        assert_eq!(dead_letter_id("5-1", 0), "5-1");
        assert_eq!(dead_letter_id("5-1", 2), "5-1~2");
        assert_eq!(parse_id("id", "5-1").unwrap(), (0, "5-1"));
        assert_eq!(parse_id("id", "5-1~2").unwrap(), (2, "5-1"));
        for bad in ["", "x", "5", "5-1~", "5-1~0", "5-1~02", "5-1~+2", "5-1~x", "~2", "5-1~2~3"] {
            let e = parse_id("ids", bad).unwrap_err();
            assert!(matches!(&e, BrokerError::InvalidArgument { field, .. } if field == "ids"), "{bad}: {e}");
        }
    }

    #[test]
    fn page_tokens_carry_one_cursor_per_partition() {
        assert_eq!(parse_token("", 2).unwrap(), [Cursor::Start, Cursor::Start]);
        assert_eq!(parse_token("5-1,sub;", 2).unwrap(), [Cursor::At("5-1".into(), "sub".into()), Cursor::Done]);
        for bad in ["5-1,sub", "5-1,sub;;", "x,sub;", "5-1;", "5-1,a b;"] {
            let e = parse_token(bad, 2).unwrap_err();
            assert!(matches!(&e, BrokerError::InvalidArgument { field, .. } if field == "page_token"), "{bad}: {e}");
        }
    }
}
