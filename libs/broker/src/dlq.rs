//! Dead-letter queues: one Redis stream per subscription (`<p>:{<s>}:dlq:<sub>`), each entry
//! holding the event bytes and why, where and when it failed. Requeue moves entries to the
//! subscription's redrive stream, so only that subscription sees them again, with delivery
//! attempts starting over and the event (and its trace context) unchanged.

use std::collections::HashMap;

use redis::AsyncCommands;

use crate::{
    Broker, BrokerError, Result,
    keys::validate_name,
    model::{entry_ms, is_entry_id},
    scripts::REQUEUE,
};

/// Most dead letters one list page returns.
pub const MAX_DLQ_PAGE: usize = 1000;
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
    /// The encoded CloudEvent.
    pub payload: Vec<u8>,
}

/// A page of dead letters and the token of the next one (empty at the end).
pub type DeadLetterPage = (Vec<DeadLetter>, String);

impl Broker {
    /// Lists dead letters newest first: of one subscription, or (with `subscription` empty) of
    /// all subscriptions of the stream merged by time. `token` is the previous page's
    /// `next_page_token`.
    pub async fn list_dead_letters(
        &self,
        stream: &str,
        subscription: &str,
        page_size: usize,
        token: &str,
    ) -> Result<DeadLetterPage> {
        let subs = if subscription.is_empty() {
            self.list_subscriptions(stream).await?.into_iter().map(|s| s.name).collect()
        } else {
            self.get_subscription(stream, subscription).await?;
            vec![subscription.to_string()]
        };
        let after = parse_token(token)?;
        let page_size = page_size.clamp(1, MAX_DLQ_PAGE);
        let start = after.as_ref().map_or_else(|| "+".to_string(), |(id, _)| id.clone());
        let mut conn = self.conn().await?;
        let mut all = Vec::new();
        for sub in &subs {
            let rows: Vec<(String, HashMap<String, Vec<u8>>)> =
                conn.xrevrange_count(self.keys().dlq(stream, sub), &start, "-", page_size + 1).await?;
            all.extend(rows.into_iter().map(|(id, fields)| parse(stream, sub, id, fields)));
        }
        let key = |d: &DeadLetter| (id_key(&d.id), d.subscription.clone());
        if let Some((id, sub)) = &after {
            let bound = (id_key(id), sub.clone());
            all.retain(|d| key(d) < bound);
        }
        all.sort_by_key(|d| std::cmp::Reverse(key(d)));
        let more = all.len() > page_size;
        all.truncate(page_size);
        let next = match all.last() {
            Some(last) if more => format!("{},{}", last.id, last.subscription),
            _ => String::new(),
        };
        Ok((all, next))
    }

    /// One dead letter; `NotFound` if it is not there.
    pub async fn get_dead_letter(&self, stream: &str, subscription: &str, id: &str) -> Result<DeadLetter> {
        self.get_subscription(stream, subscription).await?;
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
        self.get_subscription(stream, subscription).await?;
        check_ids(ids)?;
        if ids.is_empty() {
            return Ok((0, Vec::new()));
        }
        let mut conn = self.conn().await?;
        let moved: Vec<i64> = REQUEUE
            .key(self.keys().dlq(stream, subscription))
            .key(self.keys().redrive(stream, subscription))
            .arg(subscription)
            .arg(ids)
            .invoke_async(&mut conn)
            .await?;
        let missing = ids.iter().zip(&moved).filter(|(_, m)| **m == 0).map(|(id, _)| id.clone()).collect();
        Ok((moved.iter().filter(|m| **m == 1).count() as u64, missing))
    }

    /// Requeues every dead letter of a subscription, oldest first, in batches of 1000.
    pub async fn requeue_all_dead_letters(&self, stream: &str, subscription: &str) -> Result<u64> {
        self.get_subscription(stream, subscription).await?;
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
        let key = self.keys().dlq(stream, subscription);
        let mut conn = self.conn().await?;
        let (len, _): (u64, i64) = redis::pipe().atomic().xlen(&key).del(&key).query_async(&mut conn).await?;
        Ok(len)
    }
}

/// Builds a dead letter from its stream entry.
fn parse(stream: &str, sub: &str, id: String, mut fields: HashMap<String, Vec<u8>>) -> DeadLetter {
    let text = |f: &str| fields.get(f).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    let entry_id = text("entry_id");
    let reason = text("reason");
    let consumer = text("consumer");
    let attempts = text("attempts").parse().unwrap_or(0);
    let time_ms = text("time_ms").parse().unwrap_or_else(|_| entry_ms(&id).unwrap_or(0));
    DeadLetter {
        stream: stream.into(),
        subscription: sub.into(),
        entry_id,
        attempts,
        reason,
        consumer,
        time_ms,
        payload: fields.remove("e").unwrap_or_default(),
        id,
    }
}

/// Orders entry ids numerically.
fn id_key(id: &str) -> (u64, u64) {
    id.split_once('-').map_or((0, 0), |(ms, seq)| (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0)))
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
