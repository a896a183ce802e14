//! Batched settlement for the [`Subscriber`](crate::Subscriber): the handlers' acks, nacks,
//! rejects and lease extensions of one kind are coalesced into one call.
//!
//! A handler task hands its ack id and [`Kind`] to the settler task over a channel: an
//! outcome together with the handler's slot, which the settler frees when the call carrying it
//! has ended (the task itself ends at once); a lease extension waits until its call has
//! ended. The settler keeps one open batch per kind (a nack or reject reason and an
//! extension's deadline are per request, so each distinct one is its own kind) and flushes it
//! when it holds `ack_batch_size` ids (at most the larger of 250 and a quarter of
//! `max_concurrency`: a handler keeps its slot until its settlement ended, and the slots are the
//! server's window, so a batch of all of them stalls the window for each call's round trip;
//! see [`batch_limit`]), when `ack_batch_delay` has
//! passed since its first id came in, or — once the subscriber drains —
//! as soon as every handler still holding a slot has handed in its id. Each flush is its own
//! task, so new ids batch while a call is under way; a flush retries while the service is
//! unavailable, like a single settlement did. Memory is bounded: at most `max_concurrency`
//! ids wait or are being settled.
//!
//! When every sender is gone (the subscriber's handlers have ended), the settler flushes what
//! is left, waits for the flushes under way and ends.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use eventflow_proto::v1::{
    AcknowledgeRequest, ModifyAckDeadlineRequest, RejectRequest, subscriber_service_client::SubscriberServiceClient,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    connection::AuthChannel,
    error::is_retryable,
    subscriber::{Counters, SubscriberConfig},
};

/// Most ack ids one settlement request may carry (the server's limit).
const MAX_ACK_IDS: usize = 10_000;

/// The default `ack_batch_delay`.
pub(crate) const DEFAULT_BATCH_DELAY: Duration = Duration::from_millis(5);

/// Into how many batches a large window of handler slots is cut. A handler keeps its slot
/// until the call carrying its outcome has ended, and the server's window is the slots: a batch
/// of every slot leaves the window full, and the server idle, for each call's round trip. A
/// quarter keeps three quarters flowing while one call is under way, as the server cuts its
/// reads of the window in quarters.
const BATCHES_PER_WINDOW: usize = 4;

/// Ids a batch may always grow to (when there are as many slots): a call has a fixed cost, and
/// below this the stall costs less than more calls. Measured (next-steps item 117): with 1000
/// slots quarters gave ~30 % more events/s at the same CPU; with 16–256 slots they gave 0–20 %
/// at 18–50 % more CPU per event.
const MIN_BATCH: usize = 250;

/// The most ids one settlement call carries: `ack_batch_size` within the server's cap, and at
/// most a quarter of the `max_concurrency` slots or [`MIN_BATCH`] of them, whichever is more
/// (at least one).
fn batch_limit(ack_batch_size: usize, max_concurrency: usize) -> usize {
    let window = max_concurrency.div_ceil(BATCHES_PER_WINDOW).max(MIN_BATCH.min(max_concurrency)).max(1);
    ack_batch_size.clamp(1, MAX_ACK_IDS).min(window)
}

/// What a settlement does; ids of one kind share a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Acknowledge.
    Ack,
    /// ModifyAckDeadline 0 with this reason.
    Nack(String),
    /// Reject with this reason.
    Reject(String),
    /// ModifyAckDeadline with these seconds (a lease extension).
    Extend(i32),
}

/// Who learns that the call carrying an id has ended.
enum Waiter {
    /// A handler waiting for its lease extension to land before it goes on.
    Told(oneshot::Sender<()>),
    /// A finished handler's slot: freed when the call carrying its outcome has ended, so the
    /// handler's task need not wait for it.
    Slot(OwnedSemaphorePermit),
}

/// One id handed in, and who waits for its call to end.
struct Entry {
    /// How to settle it.
    kind: Kind,
    /// The delivery.
    ack_id: String,
    /// Told when the call carrying it has ended.
    done: Waiter,
}

/// The handle handler tasks settle through; the settler task ends once every clone is dropped.
#[derive(Clone)]
pub(crate) struct Settler {
    /// To the settler task.
    entries: mpsc::UnboundedSender<Entry>,
}

/// What a flush needs: the client, the retry settings and the counters.
#[derive(Clone)]
pub(crate) struct Calls {
    /// The SubscriberService client.
    pub(crate) client: SubscriberServiceClient<AuthChannel>,
    /// Retry and batching settings.
    pub(crate) config: Arc<SubscriberConfig>,
    /// Where outcomes are counted.
    pub(crate) counters: Arc<Counters>,
}

/// An open batch of one kind.
struct Batch {
    /// Its ids, in arrival order.
    ack_ids: Vec<String>,
    /// Who waits for them.
    waiters: Vec<Waiter>,
    /// When it is flushed at the latest.
    due: Instant,
}

impl Settler {
    /// Starts the settler task: `slots` are the subscriber's handler slots (to see, while
    /// draining, when every handler still running has handed in its id); `drain` is cancelled
    /// once the subscriber starts no more handlers.
    pub(crate) fn start(
        calls: Calls,
        slots: Arc<Semaphore>,
        drain: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (entries, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(batch_loop(calls, rx, slots, drain));
        (Self { entries }, task)
    }

    /// Settles one delivery with the next call of its kind; returns when that call has ended.
    pub(crate) async fn settle(&self, kind: Kind, ack_id: String) {
        let (done, ended) = oneshot::channel();
        if self.entries.send(Entry { kind, ack_id, done: Waiter::Told(done) }).is_ok() {
            let _ = ended.await;
        }
    }

    /// Hands in a finished handler's outcome with its `slot`, which is freed when the call
    /// carrying it has ended (at once if the settler is gone).
    pub(crate) fn hand_in(&self, kind: Kind, ack_id: String, slot: OwnedSemaphorePermit) {
        let _ = self.entries.send(Entry { kind, ack_id, done: Waiter::Slot(slot) });
    }
}

/// The settler task's state: the open batches and the calls under way.
struct Batches {
    /// What a flush needs.
    calls: Calls,
    /// The open batch of each kind.
    open: HashMap<Kind, Batch>,
    /// Ids waiting in open batches.
    waiting: usize,
    /// Ids in calls under way.
    sending: usize,
    /// The calls under way; each answers how many ids it carried.
    flushing: JoinSet<usize>,
}

impl Batches {
    /// Sends the open batch of `kind`, if any, on its own task.
    fn flush(&mut self, kind: &Kind) {
        if let Some((kind, batch)) = self.open.remove_entry(kind) {
            self.waiting -= batch.ack_ids.len();
            self.sending += batch.ack_ids.len();
            self.flushing.spawn(flush(self.calls.clone(), kind, batch));
        }
    }

    /// Sends the open batches `which` selects.
    fn flush_where(&mut self, which: impl Fn(&Batch) -> bool) {
        let kinds: Vec<Kind> = self.open.iter().filter(|(_, b)| which(b)).map(|(k, _)| k.clone()).collect();
        for kind in &kinds {
            self.flush(kind);
        }
    }
}

/// The settler task; see the module doc.
async fn batch_loop(
    calls: Calls,
    mut rx: mpsc::UnboundedReceiver<Entry>,
    slots: Arc<Semaphore>,
    drain: CancellationToken,
) {
    let config = calls.config.clone();
    let limit = batch_limit(config.ack_batch_size, config.max_concurrency);
    let delay = config.ack_batch_delay;
    let mut b = Batches { calls, open: HashMap::new(), waiting: 0, sending: 0, flushing: JoinSet::new() };
    let mut draining = false;
    // One timer for the earliest open batch, reset only when that changes (not per id).
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed = None;
    loop {
        let due = b.open.values().map(|batch| batch.due).min();
        if let Some(due) = due
            && armed != Some(due)
        {
            timer.as_mut().reset(due);
            armed = Some(due);
        }
        tokio::select! {
            entry = rx.recv() => {
                let Some(Entry { kind, ack_id, done }) = entry else { break };
                let batch = b
                    .open
                    .entry(kind.clone())
                    .or_insert_with(|| Batch { ack_ids: Vec::new(), waiters: Vec::new(), due: Instant::now() + delay });
                batch.ack_ids.push(ack_id);
                batch.waiters.push(done);
                let full = batch.ack_ids.len() >= limit || delay.is_zero();
                b.waiting += 1;
                if full {
                    b.flush(&kind);
                }
            }
            () = &mut timer, if due.is_some() => {
                armed = None;
                let now = Instant::now();
                b.flush_where(|batch| batch.due <= now);
            }
            () = drain.cancelled(), if !draining => draining = true,
            Some(sent) = b.flushing.join_next(), if !b.flushing.is_empty() => {
                b.sending -= sent.unwrap_or(0);
            }
        }
        // Draining: no new handler starts, so once every busy slot's id is here (or being
        // sent), nothing else can join the open batches.
        let busy = config.max_concurrency.saturating_sub(slots.available_permits());
        if draining && b.waiting > 0 && b.waiting + b.sending >= busy {
            b.flush_where(|_| true);
        }
    }
    b.flush_where(|_| true);
    while b.flushing.join_next().await.is_some() {}
}

/// Sends one batch, then wakes its waiters; returns how many ids it carried.
async fn flush(calls: Calls, kind: Kind, batch: Batch) -> usize {
    let n = batch.ack_ids.len();
    calls.send(&kind, batch.ack_ids).await;
    for waiter in batch.waiters {
        match waiter {
            Waiter::Told(done) => {
                let _ = done.send(());
            }
            Waiter::Slot(slot) => drop(slot),
        }
    }
    n
}

impl Calls {
    /// Sends one settlement call for `ack_ids`, retrying while the service is unavailable (for
    /// `settle_retry_for`), and counts the outcome. A lease extension is not retried (best
    /// effort: a failure leaves the old deadline) and counts only its successes.
    pub(crate) async fn send(&self, kind: &Kind, ack_ids: Vec<String>) {
        let started = Instant::now();
        let mut attempt = 0u32;
        let c = &self.counters;
        loop {
            let mut client = self.client.clone();
            let ids = ack_ids.clone();
            let answer = match kind {
                Kind::Ack => client
                    .acknowledge(AcknowledgeRequest { ack_ids: ids })
                    .await
                    .map(|r| r.get_ref().expired_ack_ids.len() + r.get_ref().invalid_ack_ids.len()),
                Kind::Nack(reason) => client
                    .modify_ack_deadline(ModifyAckDeadlineRequest {
                        ack_ids: ids,
                        ack_deadline_seconds: 0,
                        reason: reason.clone(),
                    })
                    .await
                    .map(|r| r.get_ref().expired_ack_ids.len() + r.get_ref().invalid_ack_ids.len()),
                Kind::Extend(seconds) => client
                    .modify_ack_deadline(ModifyAckDeadlineRequest {
                        ack_ids: ids,
                        ack_deadline_seconds: *seconds,
                        reason: String::new(),
                    })
                    .await
                    .map(|r| r.get_ref().expired_ack_ids.len() + r.get_ref().invalid_ack_ids.len()),
                Kind::Reject(reason) => client
                    .reject(RejectRequest { ack_ids: ids, reason: reason.clone() })
                    .await
                    .map(|r| r.get_ref().expired_ack_ids.len() + r.get_ref().invalid_ack_ids.len()),
            };
            c.settle_calls.fetch_add(1, Ordering::Relaxed);
            let (counter, what) = match kind {
                Kind::Ack => (&c.acked, "acknowledge"),
                Kind::Nack(_) => (&c.nacked, "nack"),
                Kind::Reject(_) => (&c.rejected, "reject"),
                Kind::Extend(_) => (&c.lease_extensions, "lease extension"),
            };
            match answer {
                Ok(expired) => {
                    counter.fetch_add(ack_ids.len().saturating_sub(expired) as u64, Ordering::Relaxed);
                    if !matches!(kind, Kind::Extend(_)) {
                        c.expired.fetch_add(expired as u64, Ordering::Relaxed);
                    }
                    return;
                }
                Err(status) if matches!(kind, Kind::Extend(_)) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "lease extension failed");
                    return;
                }
                Err(status) if is_retryable(status.code()) && started.elapsed() < self.config.settle_retry_for => {
                    tokio::time::sleep(self.config.reconnect.delay(attempt)).await;
                    attempt += 1;
                }
                Err(status) => {
                    tracing::warn!(what, code = ?status.code(), message = status.message(), "settlement failed");
                    c.settle_failures.fetch_add(ack_ids.len() as u64, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_at_most_a_quarter_of_a_large_window_and_within_the_servers_cap() {
        assert_eq!(batch_limit(1000, 1000), 250);
        assert_eq!(batch_limit(5000, 4000), 1000);
        assert_eq!(batch_limit(1000, 600), 250, "at least MIN_BATCH where there are as many slots");
        assert_eq!(batch_limit(1000, 16), 16, "a small window is one batch, as the stall costs less than calls");
        assert_eq!(batch_limit(100, 8), 8);
        assert_eq!(batch_limit(3, 1000), 3, "a smaller batch size holds");
        assert_eq!(batch_limit(1, 16), 1);
        assert_eq!(batch_limit(0, 16), 1, "at least one id");
        assert_eq!(batch_limit(1000, 0), 1);
        assert_eq!(batch_limit(50_000, 100_000), MAX_ACK_IDS);
    }
}
