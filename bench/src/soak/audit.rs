//! The end-of-run checks on the server side: every dead letter of the subscription (through
//! DeadLetterService, paged), and a full scan of the Redis stream (every entry decoded, so an
//! id stored twice or stored without the publisher ever accepting it shows up) with the
//! consumer group's own view (pending, lag). For ids nobody accounts for, what Redis still
//! knows about their entry is the evidence the report prints.

use std::{collections::BTreeMap, time::Duration};

use eventflow_proto::{
    prost::Message,
    v1::{CloudEvent, ListDeadLettersRequest, dead_letter_service_client::DeadLetterServiceClient},
};
use redis::{
    aio::MultiplexedConnection,
    streams::{StreamInfoGroupsReply, StreamPendingCountReply, StreamRangeReply},
};
use tonic::transport::Channel;

use super::ledger::parse_id;

/// Dead letters per ListDeadLetters page.
const PAGE_SIZE: i32 = 1000;
/// Entries per XRANGE call of the stream scan.
const SCAN_COUNT: usize = 10_000;

/// The subscription's dead letters.
#[derive(Debug, Default, Clone)]
pub struct DeadLetters {
    /// Per event index: dead-lettered at least once.
    pub by_index: Vec<bool>,
    /// Dead letters listed.
    pub entries: usize,
    /// Distinct event ids among them.
    pub distinct: usize,
    /// Dead letters of an id already listed (the same event dead-lettered twice).
    pub repeated: usize,
    /// Dead letters whose event is not one of this run's.
    pub foreign: usize,
    /// Count by reason.
    pub reasons: BTreeMap<String, usize>,
}

/// Lists every dead letter of `subscription` on `stream` (newest first, page by page).
pub async fn dead_letters(
    channel: Channel,
    stream: &str,
    subscription: &str,
    events: usize,
) -> Result<DeadLetters, String> {
    let mut client = DeadLetterServiceClient::new(channel);
    let mut found = DeadLetters { by_index: vec![false; events], ..Default::default() };
    let mut token = String::new();
    for _page in 0..100_000 {
        let mut attempt = 0;
        let page = loop {
            let mut request = tonic::Request::new(ListDeadLettersRequest {
                stream: stream.into(),
                subscription: subscription.into(),
                page_size: PAGE_SIZE,
                page_token: token.clone(),
            });
            request.set_timeout(Duration::from_secs(30));
            match client.list_dead_letters(request).await {
                Ok(reply) => break reply.into_inner(),
                // A Redis pause or a restart answers UNAVAILABLE for a few seconds.
                Err(status) if attempt < 30 => {
                    attempt += 1;
                    eprintln!("soak: ListDeadLetters failed ({status}); retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(status) => return Err(format!("ListDeadLetters: {status}")),
            }
        };
        for letter in &page.dead_letters {
            found.entries += 1;
            *found.reasons.entry(letter.reason.clone()).or_default() += 1;
            match letter.event.as_ref().and_then(|e| parse_id(&e.id, events)) {
                Some(n) if found.by_index[n] => found.repeated += 1,
                Some(n) => {
                    found.by_index[n] = true;
                    found.distinct += 1;
                }
                None => found.foreign += 1,
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(found);
        }
        token = page.next_page_token;
    }
    Err("ListDeadLetters: more than 100000 pages".into())
}

/// What the Redis stream holds at the end.
#[derive(Debug, Default, Clone)]
pub struct StreamAudit {
    /// XLEN.
    pub length: usize,
    /// Entries scanned.
    pub scanned: usize,
    /// Per event index: entries holding it.
    pub copies: Vec<u8>,
    /// Ids held by more than one entry (dedup failed).
    pub stored_twice: usize,
    /// Entries whose id is not one of this run's, or that do not decode.
    pub foreign: usize,
    /// The subscription's consumer group: pending entries.
    pub group_pending: Option<usize>,
    /// The subscription's consumer group: entries not yet delivered (None if unknown).
    pub group_lag: Option<usize>,
    /// The subscription's consumer group: last delivered entry id.
    pub group_last_delivered: String,
}

/// A connection to the run's redis-server.
pub async fn connect(url: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
    client.get_multiplexed_async_connection().await.map_err(|e| format!("redis connect: {e}"))
}

/// Scans stream `key` (entries in field `e`, the encoded CloudEvent) and the consumer group
/// `group`.
pub async fn scan_stream(
    conn: &mut MultiplexedConnection,
    key: &str,
    group: &str,
    events: usize,
) -> Result<StreamAudit, String> {
    let mut audit = StreamAudit { copies: vec![0; events], ..Default::default() };
    audit.length = redis::cmd("XLEN").arg(key).query_async(conn).await.map_err(|e| format!("XLEN: {e}"))?;
    let mut start = "-".to_string();
    loop {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await
            .map_err(|e| format!("XRANGE: {e}"))?;
        for entry in &reply.ids {
            audit.scanned += 1;
            let id = match entry.map.get("e") {
                Some(redis::Value::BulkString(bytes)) => CloudEvent::decode(bytes.as_slice()).ok().map(|e| e.id),
                _ => None,
            };
            match id.and_then(|id| parse_id(&id, events)) {
                Some(n) => {
                    audit.copies[n] = audit.copies[n].saturating_add(1);
                    if audit.copies[n] == 2 {
                        audit.stored_twice += 1;
                    }
                }
                None => audit.foreign += 1,
            }
        }
        match reply.ids.last() {
            Some(last) if reply.ids.len() == SCAN_COUNT => start = format!("({}", last.id),
            _ => break,
        }
    }
    let groups: StreamInfoGroupsReply =
        redis::cmd("XINFO").arg("GROUPS").arg(key).query_async(conn).await.map_err(|e| format!("XINFO GROUPS: {e}"))?;
    if let Some(g) = groups.groups.iter().find(|g| g.name == group) {
        audit.group_pending = Some(g.pending);
        audit.group_lag = g.lag;
        audit.group_last_delivered = g.last_delivered_id.clone();
    }
    Ok(audit)
}

/// What Redis knows about entry `entry` of `key` for `group`: whether it is still in the
/// stream, and its pending entry (owner, idle time, deliveries) if any.
pub async fn entry_evidence(conn: &mut MultiplexedConnection, key: &str, group: &str, entry: &str) -> String {
    let in_stream: Result<StreamRangeReply, _> =
        redis::cmd("XRANGE").arg(key).arg(entry).arg(entry).query_async(conn).await;
    let pending: Result<StreamPendingCountReply, _> =
        redis::cmd("XPENDING").arg(key).arg(group).arg(entry).arg(entry).arg(1).query_async(conn).await;
    let stream = match in_stream {
        Ok(r) if r.ids.is_empty() => "not in the stream".to_string(),
        Ok(_) => "in the stream".to_string(),
        Err(e) => format!("XRANGE failed: {e}"),
    };
    let pending = match pending {
        Ok(r) => match r.ids.first() {
            Some(p) => format!(
                "pending for consumer {} (idle {} ms, delivered {} times)",
                p.consumer, p.last_delivered_ms, p.times_delivered
            ),
            None => "not pending in the group".to_string(),
        },
        Err(e) => format!("XPENDING failed: {e}"),
    };
    format!("{stream}, {pending}")
}
