//! New-entry notifications for idle delivery sessions, so sessions never hold a Redis
//! connection while they wait: one watcher task per broker blocks in one
//! `XREAD COUNT 1 BLOCK <block> STREAMS <keys...> <ids...>` on its own connection, over the
//! streams that idle sessions wait on, and wakes the sessions of a stream when an entry past
//! the id they registered arrives. Sessions then read with ordinary, non-blocking XREADGROUP
//! calls on pooled connections, so a replica uses the pool plus this one connection however
//! many Subscribe calls it serves.
//!
//! No wake-up is lost: a session registers the stream's last entry id read in the same atomic
//! step as its empty XREADGROUP ([`crate::scripts::READ_NEW`]), and the watcher reads from that
//! id. A key new to the watcher while it blocks interrupts it (`CLIENT UNBLOCK`) so the next
//! XREAD includes it. Idle sessions also wake after `block` to run their periodic work. A
//! stream stays in the XREAD for a while after its last session stopped waiting, so sessions
//! that idle between events do not interrupt the watcher each time.
//!
//! On Redis Cluster one XREAD cannot name streams of different hash slots (CROSSSLOT, even on
//! one node), so the watcher polls instead (`poll`): every [`CLUSTER_POLL`] it sends one
//! non-blocking `XREAD COUNT 1 STREAMS <key> <id>` per watched stream, concurrently over the
//! shared cluster connection (each routed to its stream's node), and wakes the sessions of the
//! streams that got entries. A stream new to it is polled at once. Chosen over one blocking
//! connection per stream (connections would grow with the streams a replica serves) and one
//! per node (a multi-key read per node still spans slots): its cost is a wake-up delay of up
//! to the poll interval for sessions without a blocking reader of their own, and one cheap
//! command per watched stream per interval. Sessions with their own reader are not affected
//! (their blocking XREADGROUP goes to the node owning their stream, see [`crate::conn`]).

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use redis::Value;
use tokio::sync::{Notify, watch};

use crate::{Broker, WeakBroker, model::entry_key};

/// What the watcher watches.
#[derive(Default)]
pub(crate) struct Watcher {
    /// The streams idle sessions wait on, and the Redis client id of the watcher's connection
    /// while it blocks (to interrupt it).
    state: Mutex<State>,
    /// Wakes the watcher task when it has nothing to watch and a key arrives.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Stream key -> the watch on it.
    keys: HashMap<String, Watch>,
    /// The client id of the watcher's connection while an XREAD with the current keys blocks.
    blocking: Option<i64>,
    /// Whether the watcher task runs.
    started: bool,
}

impl State {
    /// Wakes the sessions waiting on the streams that got entries (`(key, last id read)`), and
    /// forgets a busy stream nobody waits on (its sessions are reading anyway).
    fn wake(&mut self, arrived: Vec<(String, String)>) {
        for (key, last) in arrived {
            let Some(watch) = self.keys.get_mut(&key) else { continue };
            if watch.waiters == 0 {
                self.keys.remove(&key);
            } else {
                watch.after = last;
                watch.arrived.send_replace(());
            }
        }
    }
}

struct Watch {
    /// Wake for entries after this id.
    after: String,
    /// Signalled when such an entry arrives (a receiver made under the state lock sees every
    /// signal after it, so none is missed between registering and waiting).
    arrived: watch::Sender<()>,
    /// Sessions waiting.
    waiters: usize,
    /// Since when no session waits. The watch stays a while (so a session that is idle between
    /// events finds its stream still in the XREAD and need not interrupt it); it goes when an
    /// entry arrives with nobody waiting, or after [`LINGER`].
    unwatched_since: Option<Instant>,
}

/// How long a stream stays in the watcher's XREAD with no session waiting on it.
const LINGER: Duration = Duration::from_secs(30);

/// A session's registration; dropping it deregisters. Wait with `arrived.changed()`.
pub(crate) struct WatchGuard {
    broker: WeakBroker,
    key: String,
    /// Changes when an entry arrives.
    pub(crate) arrived: watch::Receiver<()>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let Some(broker) = self.broker.upgrade() else { return };
        let mut state = broker.watcher().lock();
        if let Some(watch) = state.keys.get_mut(&self.key) {
            watch.waiters = watch.waiters.saturating_sub(1);
            if watch.waiters == 0 {
                watch.unwatched_since = Some(Instant::now());
            }
        }
    }
}

impl Watcher {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Broker {
    /// Registers interest in entries of stream `key` after `after`; starts the watcher on first
    /// use and interrupts its XREAD if `key` is new to it.
    pub(crate) fn watch(&self, key: &str, after: &str) -> WatchGuard {
        let (arrived, interrupt) = {
            let mut state = self.watcher().lock();
            let start = !std::mem::replace(&mut state.started, true);
            if start {
                if self.is_cluster() {
                    tokio::spawn(poll(self.downgrade()));
                } else {
                    tokio::spawn(run(self.downgrade()));
                }
            }
            let fresh = !state.keys.contains_key(key);
            let watch = state.keys.entry(key.to_string()).or_insert_with(|| Watch {
                after: after.to_string(),
                arrived: watch::Sender::new(()),
                waiters: 0,
                unwatched_since: None,
            });
            watch.waiters += 1;
            watch.unwatched_since = None;
            if id_after(after, &watch.after) {
                watch.after = after.to_string();
            }
            (watch.arrived.subscribe(), if fresh { state.blocking } else { None })
        };
        self.watcher().changed.notify_one();
        if let Some(client_id) = interrupt {
            tokio::spawn(interrupt_watcher(self.downgrade(), client_id));
        }
        WatchGuard { broker: self.downgrade(), key: key.to_string(), arrived }
    }
}

/// The watcher task: runs until the broker is dropped.
async fn run(broker: WeakBroker) {
    let mut conn: Option<(crate::conn::BlockingConn, i64)> = None;
    loop {
        let Some(b) = broker.upgrade() else { return };
        let block = b.options().block;
        let (mut c, id) = match conn.take() {
            Some(c) => c,
            // Any key: on a single node every key is on it (the cluster watcher is `poll`).
            None => match b.blocking_conn("", block).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "watcher cannot connect; retrying");
                    drop(b);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let changed = b.watcher().changed.notified();
        // The keys and the blocking mark are taken together: a key registered after this
        // snapshot sees the mark and interrupts the XREAD below.
        let watched: Vec<(String, String)> = {
            let mut state = b.watcher().lock();
            state.keys.retain(|_, w| w.unwatched_since.is_none_or(|t| t.elapsed() < LINGER));
            let watched: Vec<_> = state.keys.iter().map(|(k, w)| (k.clone(), w.after.clone())).collect();
            state.blocking = (!watched.is_empty()).then_some(id);
            watched
        };
        if watched.is_empty() {
            conn = Some((c, id));
            // Wake now and then to notice the broker was dropped.
            let _ = tokio::time::timeout(Duration::from_secs(5), changed).await;
            continue;
        }
        drop(changed);
        drop(b);
        let reply = xread(&mut c, &watched, Some(block)).await;
        let Some(b) = broker.upgrade() else { return };
        let failed = {
            let mut state = b.watcher().lock();
            state.blocking = None;
            match reply {
                Ok(arrived) => {
                    state.wake(arrived);
                    None
                }
                Err(e) => Some(e),
            }
        };
        match failed {
            None => conn = Some((c, id)),
            Some(e) => {
                tracing::debug!(error = %e, "watcher read failed; reconnecting");
                drop(b);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How often the cluster watcher looks for new entries in the watched streams.
const CLUSTER_POLL: Duration = Duration::from_millis(20);

/// The watcher task on Redis Cluster: polls the watched streams (see the module doc); runs
/// until the broker is dropped.
async fn poll(broker: WeakBroker) {
    loop {
        let Some(b) = broker.upgrade() else { return };
        let changed = b.watcher().changed.notified();
        let watched: Vec<(String, String)> = {
            let mut state = b.watcher().lock();
            state.keys.retain(|_, w| w.unwatched_since.is_none_or(|t| t.elapsed() < LINGER));
            state.keys.iter().map(|(k, w)| (k.clone(), w.after.clone())).collect()
        };
        if watched.is_empty() {
            // Wake now and then to notice the broker was dropped.
            let _ = tokio::time::timeout(Duration::from_secs(5), changed).await;
            continue;
        }
        let reads = match b.conn().await {
            Ok(conn) => {
                let reads = watched.iter().map(|w| {
                    let mut conn = conn.cluster_clone();
                    async move {
                        match conn.as_mut() {
                            Some(conn) => {
                                xread(conn, std::slice::from_ref(w), None).await.map_err(crate::BrokerError::from)
                            }
                            None => Ok(Vec::new()),
                        }
                    }
                });
                futures_util::future::join_all(reads).await
            }
            Err(e) => vec![Err(e)],
        };
        {
            let mut state = b.watcher().lock();
            for read in reads {
                match read {
                    Ok(arrived) => state.wake(arrived),
                    Err(e) => tracing::debug!(error = %e, "cluster watcher read failed; polling on"),
                }
            }
        }
        // A new stream (or a session waiting again) is polled at once; otherwise next interval.
        let _ = tokio::time::timeout(CLUSTER_POLL, changed).await;
    }
}

/// Interrupts the watcher's XREAD on connection `client_id` so its next one includes a new
/// key. The XREAD may not be blocking in Redis yet (UNBLOCK then answers 0): retried briefly
/// until it is, or until the watcher came back by itself.
async fn interrupt_watcher(broker: WeakBroker, client_id: i64) {
    for _ in 0..100 {
        let Some(b) = broker.upgrade() else { return };
        if b.watcher().lock().blocking != Some(client_id) {
            return;
        }
        match b.unblock(None, client_id).await {
            Ok(1) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "watcher not interrupted; it picks the stream up after its block time");
                return;
            }
        }
        drop(b);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One XREAD over `watched`, blocking up to `block` when given; returns the keys that got
/// entries with the last id.
async fn xread(
    conn: &mut impl redis::aio::ConnectionLike,
    watched: &[(String, String)],
    block: Option<Duration>,
) -> redis::RedisResult<Vec<(String, String)>> {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT").arg(1);
    if let Some(block) = block {
        cmd.arg("BLOCK").arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
    }
    cmd.arg("STREAMS");
    for (key, _) in watched {
        cmd.arg(key);
    }
    for (_, after) in watched {
        cmd.arg(after);
    }
    let reply: Value = cmd.query_async(conn).await?;
    let mut arrived = Vec::new();
    // RESP2: [[key, [[id, fields]...]]...]; nil on timeout or unblock.
    if let Value::Array(streams) = reply {
        for stream in streams {
            let Value::Array(parts) = stream else { continue };
            let mut parts = parts.into_iter();
            let (Some(key), Some(Value::Array(entries))) = (parts.next(), parts.next()) else { continue };
            let key: String = redis::from_redis_value(key)?;
            let last = entries.into_iter().filter_map(|e| match e {
                Value::Array(mut f) if !f.is_empty() => redis::from_redis_value::<String>(f.swap_remove(0)).ok(),
                _ => None,
            });
            if let Some(last) = last.last() {
                arrived.push((key, last));
            }
        }
    }
    Ok(arrived)
}

/// Whether entry id `a` comes after `b`; ids that do not parse compare as `0-0`.
fn id_after(a: &str, b: &str) -> bool {
    entry_key(a) > entry_key(b)
}

#[cfg(test)]
mod tests {
    use super::id_after;

    #[test]
    fn ids_compare_numerically() {
        assert!(id_after("10-0", "9-5"));
        assert!(id_after("10-1", "10-0"));
        assert!(!id_after("10-0", "10-0"));
        assert!(!id_after("0-0", "1-0"));
        assert!(id_after("1-0", "garbage"));
    }
}
