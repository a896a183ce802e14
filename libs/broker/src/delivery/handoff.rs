//! Settlements made in this process, handed to the sessions whose deliveries they settled, so a
//! session at its flow-control limit frees exactly that room and reads again at once, without
//! re-reading its pending lists from Redis (two `XPENDING`s).
//!
//! Every open session registers a [`Mailbox`] under its consumer name ([`Handoffs::register`];
//! the mailbox unregisters when dropped). A settlement call that applied (acks, rejects and
//! nacks; lease changes keep the delivery with its session) puts the entry of each applied ack
//! id into the mailbox of the consumer the ack id names ([`Handoffs::hand`]), then wakes waiting
//! sessions. The session drains its mailbox before each batch and after each wait for room
//! ([`crate::delivery::DeliveryPolicy::settled_here`]).
//!
//! The count stays exact: an ack or reject took the entry out of the pending list for good
//! (stream ids are never reused), so whatever the session still counts under that id is stale;
//! a nack moved it to the parking consumer, from which the same session may claim it again
//! before it drains, so a nack's hand-off names the delivery attempt and frees the entry only
//! while the session still counts that attempt (a claim counts a higher one). What this process
//! cannot see (settlements through other replicas, leases that expired) the session's periodic
//! recount still finds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use crate::{Source, ack_id::AckId};

/// One settled delivery handed to its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// Where the entry was pending.
    pub source: Source,
    /// Its entry id.
    pub entry_id: String,
    /// The delivery attempt it settled, when the entry may come back to the session (a nack):
    /// only that attempt is freed. `None` when it left the pending list for good.
    pub attempt: Option<u32>,
}

/// The entries settled in this process for one session, not yet drained.
type Inbox = Arc<Mutex<Vec<Handoff>>>;

/// The mailboxes of the sessions open in this process, by consumer name.
#[derive(Debug, Default)]
pub struct Handoffs {
    sessions: Mutex<HashMap<String, Inbox>>,
}

impl Handoffs {
    /// Registers the session of `consumer` (a name unique per session).
    pub fn register(self: &Arc<Self>, consumer: &str) -> Mailbox {
        let inbox = Inbox::default();
        lock(&self.sessions).insert(consumer.to_string(), inbox.clone());
        Mailbox { registry: self.clone(), consumer: consumer.to_string(), inbox }
    }

    /// Hands the entries of `applied` (ack ids whose settlement applied) to the sessions they
    /// were delivered by, if open here; `nack` says the entries may come back (see the module
    /// doc). Returns whether any session got one.
    pub fn hand(&self, applied: &[AckId], nack: bool) -> bool {
        let sessions = lock(&self.sessions);
        let mut handed = false;
        // The ids of one call mostly name one session: look each consumer up once per run.
        let mut current: Option<(&str, Option<MutexGuard<'_, Vec<Handoff>>>)> = None;
        for id in applied {
            if current.as_ref().is_none_or(|(consumer, _)| *consumer != id.consumer) {
                current = Some((id.consumer.as_str(), sessions.get(&id.consumer).map(|inbox| lock(inbox))));
            }
            if let Some((_, Some(inbox))) = current.as_mut() {
                inbox.push(Handoff {
                    source: id.source,
                    entry_id: id.entry_id.clone(),
                    attempt: nack.then_some(id.attempt),
                });
                handed = true;
            }
        }
        handed
    }
}

/// One session's registration; unregisters when dropped.
#[derive(Debug)]
pub struct Mailbox {
    registry: Arc<Handoffs>,
    consumer: String,
    inbox: Inbox,
}

impl Mailbox {
    /// Takes what was handed to the session so far.
    pub fn drain(&self) -> Vec<Handoff> {
        std::mem::take(&mut *lock(&self.inbox))
    }

    /// Whether something waits to be drained.
    pub fn is_empty(&self) -> bool {
        lock(&self.inbox).is_empty()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        lock(&self.registry.sessions).remove(&self.consumer);
    }
}

/// Locks `mutex`, also after a panic elsewhere (the data is a plain list, never half-updated).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack_id(consumer: &str, entry_id: &str, attempt: u32) -> AckId {
        AckId {
            stream: "s".into(),
            subscription: "sub".into(),
            source: Source::Stream,
            entry_id: entry_id.into(),
            consumer: consumer.into(),
            attempt,
            delivered_ms: 0,
            traceparent: None,
        }
    }

    #[test]
    fn settlements_reach_the_session_they_name_and_no_other() {
        let registry = Arc::new(Handoffs::default());
        let a = registry.register("a");
        let b = registry.register("b");
        let applied = [ack_id("a", "1-0", 1), ack_id("b", "2-0", 1), ack_id("a", "3-0", 2), ack_id("gone", "4-0", 1)];
        assert!(registry.hand(&applied, false));
        let of = |m: &Mailbox| m.drain().into_iter().map(|h| (h.entry_id, h.attempt)).collect::<Vec<_>>();
        assert_eq!(of(&a), [("1-0".to_string(), None), ("3-0".to_string(), None)]);
        assert_eq!(of(&b), [("2-0".to_string(), None)]);
        assert!(a.is_empty(), "drained");
        assert!(registry.hand(&[ack_id("b", "5-0", 3)], true));
        assert_eq!(of(&b), [("5-0".to_string(), Some(3))], "a nack names its attempt");
        drop(b);
        assert!(!registry.hand(&[ack_id("b", "6-0", 1)], false), "a closed session is no longer registered");
    }
}
