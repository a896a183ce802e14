//! Dead-letter queues: one Redis stream per subscription (`<p>:{<s>}:dlq:<sub>`), each entry
//! holding the event bytes and why, where and when it failed. Requeue moves entries to the
//! subscription's redrive stream, so only that subscription sees them again, with delivery
//! attempts starting over and the event (and its trace context) unchanged.

use std::collections::{HashMap, VecDeque};

use redis::AsyncCommands;

use crate::{
    Broker, BrokerError, Result,
    keys::validate_name,
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

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: String,
    /// The stream the event was published to.
    pub stream: String,
    /// The event's entry id in that stream.
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

/// One subscription's queue, read newest first in chunks as a listing's merge needs them.
struct Reader {
    /// The subscription.
    sub: String,
    /// Its dead-letter stream.
    key: String,
    /// Where the next read starts: the token's id (inclusive) or `+` at first, then `(<last id>`.
    next: String,
    /// Entries of the next read; grows so that small queues take few round trips.
    chunk: usize,
    /// Read and not yet merged into the page.
    buffer: VecDeque<DeadLetter>,
    /// Whether the queue has nothing more.
    done: bool,
}

impl Broker {
    /// Lists dead letters newest first: of one subscription, or (with `subscription` empty) of
    /// all subscriptions of the stream merged by time. `token` is the previous page's
    /// `next_page_token`.
    ///
    /// A page holds at most `page_size` dead letters and stops before their size would pass
    /// [`MAX_DLQ_PAGE_BYTES`] (it always holds at least one), so a client with gRPC's default
    /// 4 MiB message limit can page through big events. The token names the last dead letter
    /// returned, so the next page starts right after it wherever the page stopped. Each queue
    /// is read in chunks as the merge needs them, never a whole page of big events per queue.
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
        self.refuse_partitioned(stream, "the dead-letter API").await?;
        let after = parse_token(token)?;
        let page_size = page_size.clamp(1, MAX_DLQ_PAGE);
        let bound = after.as_ref().map(|(id, sub)| (entry_key(id), sub.clone()));
        let start = after.as_ref().map_or_else(|| "+".to_string(), |(id, _)| id.clone());
        // The first reads share FIRST_CHUNK entries, so many queues of big events do not all
        // read a chunk at once.
        let first = FIRST_CHUNK.div_ceil(subs.len().max(1));
        let mut readers: Vec<Reader> = subs
            .into_iter()
            .map(|sub| Reader {
                key: self.keys().dlq(stream, &sub),
                sub,
                next: start.clone(),
                chunk: first,
                buffer: VecDeque::new(),
                done: false,
            })
            .collect();
        let mut conn = self.conn().await?;
        let mut page = Vec::new();
        let mut bytes = 0;
        let mut read = Read::default();
        loop {
            // Lookahead of one once the page is full: is there a next page? Otherwise what the
            // page can still take by count, and about what it can take by bytes.
            let want = if page.len() == page_size { 1 } else { (page_size - page.len() + 1).min(read.fit(bytes)) };
            self.refill(&mut conn, stream, &mut readers, want, bound.as_ref(), &mut read).await?;
            let newest = readers
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.buffer.front().map(|d| (sort_key(d), i)))
                .max_by(|(a, _), (b, _)| a.cmp(b))
                .map(|(_, i)| i);
            let Some(reader) = newest.and_then(|i| readers.get_mut(i)) else {
                return Ok((page, String::new()));
            };
            let size = reader.buffer.front().map_or(0, letter_bytes);
            let full = page.len() == page_size || (!page.is_empty() && bytes + size > MAX_DLQ_PAGE_BYTES);
            if full {
                let next = page.last().map(|d: &DeadLetter| format!("{},{}", d.id, d.subscription)).unwrap_or_default();
                return Ok((page, next));
            }
            bytes += size;
            page.extend(reader.buffer.pop_front());
        }
    }

    /// Reads until every reader has a buffered entry or is done; each read of a reader whose
    /// buffer ran empty (all in one pipeline) takes at most `want` entries, fewer while its
    /// chunk size grows from [`FIRST_CHUNK`]. Entries at or after the page token's bound are
    /// dropped (only the first read can meet them; a reader whose read held only such entries
    /// reads again, so the merge never skips one of its newer entries).
    async fn refill(
        &self,
        conn: &mut crate::RedisConn,
        stream: &str,
        readers: &mut [Reader],
        want: usize,
        bound: Option<&((u64, u64), String)>,
        read: &mut Read,
    ) -> Result<()> {
        loop {
            let mut pipe = redis::pipe();
            let mut asked = Vec::new();
            for (i, r) in readers.iter_mut().enumerate().filter(|(_, r)| r.buffer.is_empty() && !r.done) {
                let count = r.chunk.min(want).max(1);
                pipe.xrevrange_count(&r.key, &r.next, "-", count);
                asked.push((i, count));
                r.chunk = (r.chunk * 2).min(MAX_CHUNK);
            }
            if asked.is_empty() {
                return Ok(());
            }
            let replies: Vec<Vec<Row>> = pipe.query_async(conn).await?;
            for ((i, count), rows) in asked.into_iter().zip(replies) {
                let Some(r) = readers.get_mut(i) else { continue };
                r.done = rows.len() < count;
                if let Some((last, _)) = rows.last() {
                    r.next = format!("({last}");
                }
                let sub = r.sub.clone();
                for letter in rows.into_iter().map(|(id, fields)| parse(stream, &sub, id, fields)) {
                    read.count += 1;
                    read.bytes += letter_bytes(&letter);
                    if bound.is_none_or(|b| sort_key(&letter) < (b.0, b.1.as_str())) {
                        r.buffer.push_back(letter);
                    }
                }
            }
        }
    }

    /// One dead letter; `NotFound` if it is not there.
    pub async fn get_dead_letter(&self, stream: &str, subscription: &str, id: &str) -> Result<DeadLetter> {
        self.get_subscription(stream, subscription).await?;
        self.refuse_partitioned(stream, "the dead-letter API").await?;
        check_id("id", id)?;
        let mut conn = self.conn().await?;
        let rows: Vec<(String, HashMap<String, Vec<u8>>)> =
            conn.xrange(self.keys().dlq(stream, subscription), id, id).await?;
        rows.into_iter()
            .next()
            .map(|(id, fields)| parse(stream, subscription, id, fields))
            .ok_or_else(|| BrokerError::NotFound(format!("dead letter {id:?}")))
    }

    /// Requeues dead letters into their subscription; returns how many, and the ids not found.
    pub async fn requeue_dead_letters(
        &self,
        stream: &str,
        subscription: &str,
        ids: &[String],
    ) -> Result<(u64, Vec<String>)> {
        let config = self.get_subscription(stream, subscription).await?;
        self.refuse_partitioned(stream, "the dead-letter API").await?;
        check_ids(ids)?;
        if ids.is_empty() {
            return Ok((0, Vec::new()));
        }
        let mut conn = self.conn().await?;
        let requeue = Requeue { keys: self.keys(), stream, subscription, ids, gate: self.keys().gate_base(&config) };
        let moved = scripts::run(&mut conn, &requeue).await?;
        let missing = ids.iter().zip(&moved).filter(|(_, m)| !**m).map(|(id, _)| id.clone()).collect();
        Ok((moved.iter().filter(|m| **m).count() as u64, missing))
    }

    /// Requeues every dead letter of a subscription, oldest first, in batches of 1000.
    pub async fn requeue_all_dead_letters(&self, stream: &str, subscription: &str) -> Result<u64> {
        self.get_subscription(stream, subscription).await?;
        self.refuse_partitioned(stream, "the dead-letter API").await?;
        let mut total = 0;
        loop {
            let mut conn = self.conn().await?;
            let rows: Vec<(String, HashMap<String, Vec<u8>>)> =
                conn.xrange_count(self.keys().dlq(stream, subscription), "-", "+", 1000).await?;
            drop(conn);
            if rows.is_empty() {
                return Ok(total);
            }
            let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
            total += self.requeue_dead_letters(stream, subscription, &ids).await?.0;
        }
    }

    /// Deletes dead letters; returns how many existed.
    pub async fn delete_dead_letters(&self, stream: &str, subscription: &str, ids: &[String]) -> Result<u64> {
        self.get_subscription(stream, subscription).await?;
        self.refuse_partitioned(stream, "the dead-letter API").await?;
        check_ids(ids)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn().await?;
        Ok(conn.xdel(self.keys().dlq(stream, subscription), ids).await?)
    }

    /// Deletes every dead letter of a subscription; returns how many there were.
    pub async fn purge_dead_letters(&self, stream: &str, subscription: &str) -> Result<u64> {
        self.get_subscription(stream, subscription).await?;
        self.refuse_partitioned(stream, "the dead-letter API").await?;
        let key = self.keys().dlq(stream, subscription);
        let mut conn = self.conn().await?;
        let (len, _): (u64, i64) = redis::pipe().atomic().xlen(&key).del(&key).query_async(&mut conn).await?;
        Ok(len)
    }
}

/// Builds a dead letter from its stream entry.
fn parse(stream: &str, sub: &str, id: String, mut fields: HashMap<String, Vec<u8>>) -> DeadLetter {
    let text = |f: &str| fields.get(f).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    let entry_id = text(dead_letter::ENTRY_ID);
    let reason = text(dead_letter::REASON);
    let consumer = text(dead_letter::CONSUMER);
    let attempts = text(dead_letter::ATTEMPTS).parse().unwrap_or(0);
    let time_ms = text(dead_letter::TIME_MS).parse().unwrap_or_else(|_| entry_ms(&id).unwrap_or(0));
    let ordering_key = text(entry::KEY);
    DeadLetter {
        stream: stream.into(),
        subscription: sub.into(),
        entry_id,
        attempts,
        reason,
        consumer,
        time_ms,
        ordering_key,
        payload: fields.remove(entry::EVENT).unwrap_or_default(),
        id,
    }
}

/// The listing order of a dead letter (newest first = largest first): its id, then its
/// subscription for dead letters of several queues with equal ids.
fn sort_key(d: &DeadLetter) -> ((u64, u64), &str) {
    (entry_key(&d.id), d.subscription.as_str())
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

/// Reads a page token `<id>,<subscription>`.
fn parse_token(token: &str) -> Result<Option<(String, String)>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || BrokerError::invalid("page_token", "not a token from a previous page");
    let (id, sub) = token.split_once(',').ok_or_else(bad)?;
    if !is_entry_id(id) || validate_name("subscription", sub).is_err() {
        return Err(bad());
    }
    Ok(Some((id.into(), sub.into())))
}

fn check_id(field: &str, id: &str) -> Result<()> {
    if is_entry_id(id) { Ok(()) } else { Err(BrokerError::invalid(field, format!("{id:?} is not a dead letter id"))) }
}

fn check_ids(ids: &[String]) -> Result<()> {
    if ids.len() > MAX_DLQ_IDS {
        return Err(BrokerError::invalid("ids", format!("more than {MAX_DLQ_IDS}")));
    }
    ids.iter().try_for_each(|id| check_id("ids", id))
}
