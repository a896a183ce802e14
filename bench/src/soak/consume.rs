//! The consumers: each holds one Subscribe call on a subscriber replica, records every
//! delivery in the ledger and acknowledges what it received after a short "processing" delay
//! (so it usually holds some events when the chaos drops it). On any error it acknowledges what it holds through any replica,
//! backs off a little and subscribes again on the next replica. A drop cancels the call
//! without acknowledging what it holds: those events must come back as redeliveries.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use eventflow_proto::v1::{AcknowledgeRequest, SubscribeRequest, subscriber_service_client::SubscriberServiceClient};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{chaos::Rng, ledger::Ledger, ledger::parse_id};

/// Deliveries are "processed" for this long (from the first held one) before they are
/// acknowledged together, so a consumer dropped by the chaos usually holds some.
const ACK_LINGER: Duration = Duration::from_millis(20);
/// Per-call deadline of Subscribe (until the call is open) and Acknowledge.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A Subscribe call silent this long is replaced (a stuck session must not stall the run).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What every consumer subscribes to.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The stream.
    pub stream: String,
    /// The subscription.
    pub subscription: String,
    /// `max_outstanding_messages` of each Subscribe call.
    pub max_outstanding: i32,
}

/// What one consumer went through.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Subscribe calls opened.
    pub sessions: u64,
    /// Sessions ended by a chaos drop.
    pub drops: u64,
    /// Subscribe calls that failed to open or ended with an error, by code.
    pub session_errors: Vec<(tonic::Code, u64)>,
    /// Sessions replaced for being silent for [`IDLE_TIMEOUT`].
    pub idle_restarts: u64,
    /// Acknowledge calls that failed without an answer (and were retried).
    pub ack_errors: u64,
    /// Deliveries whose ack was given up when the run stopped.
    pub acks_abandoned: u64,
}

impl Report {
    fn session_error(&mut self, code: tonic::Code) {
        match self.session_errors.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.session_errors.push((code, 1)),
        }
    }

    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &Report) {
        self.sessions += other.sessions;
        self.drops += other.drops;
        self.idle_restarts += other.idle_restarts;
        self.ack_errors += other.ack_errors;
        self.acks_abandoned += other.acks_abandoned;
        for &(code, n) in &other.session_errors {
            match self.session_errors.iter_mut().find(|(c, _)| *c == code) {
                Some((_, m)) => *m += n,
                None => self.session_errors.push((code, n)),
            }
        }
    }
}

/// Why a session ended.
enum End {
    /// The run is over.
    Stop,
    /// The chaos dropped this consumer.
    Drop,
    /// The call failed, ended or went silent: reconnect.
    Broken,
}

/// One consumer.
pub struct Consumer {
    /// Which consumer (0-based): picks its first replica.
    pub index: usize,
    /// What to subscribe to.
    pub plan: Plan,
    /// A channel per subscriber replica.
    pub replicas: Vec<Channel>,
    /// Where deliveries and acks are recorded.
    pub ledger: Arc<Ledger>,
    /// Notified by the chaos: drop the session now without acking.
    pub drop_signal: Arc<Notify>,
    /// Set while a Subscribe call is open, for the chaos to pick a victim.
    pub active: Arc<AtomicBool>,
    /// Cancelled when the run is over.
    pub stop: CancellationToken,
    /// Pauses after a drop.
    pub rng: Rng,
}

impl Consumer {
    /// Consumes until `stop`.
    pub async fn run(mut self) -> Report {
        let mut report = Report::default();
        let mut replica = self.index % self.replicas.len().max(1);
        let mut backoff = Duration::from_millis(100);
        while !self.stop.is_cancelled() {
            let mut held: Vec<(String, usize)> = Vec::new();
            let end = self.session(replica, &mut held, &mut report, &mut backoff).await;
            self.active.store(false, Ordering::Relaxed);
            match end {
                End::Stop => break,
                End::Drop => {
                    // Cancelled with what it holds unacknowledged: released to other consumers.
                    self.ledger.released(held.len());
                    report.drops += 1;
                    let pause = Duration::from_millis(100 + self.rng.below(900));
                    tokio::select! {
                        () = self.stop.cancelled() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                End::Broken => {
                    self.ack(replica, &mut held, &mut report).await;
                    tokio::select! {
                        () = self.stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            replica = (replica + 1) % self.replicas.len().max(1);
        }
        report
    }

    /// One Subscribe call on `replica`, until it ends; `held` is left with what was delivered
    /// and not acknowledged.
    async fn session(
        &mut self,
        replica: usize,
        held: &mut Vec<(String, usize)>,
        report: &mut Report,
        backoff: &mut Duration,
    ) -> End {
        let mut client = SubscriberServiceClient::new(self.replicas[replica].clone());
        let request = tonic::Request::new(SubscribeRequest {
            stream: self.plan.stream.clone(),
            subscription: self.plan.subscription.clone(),
            max_outstanding_messages: self.plan.max_outstanding,
            max_outstanding_bytes: 0,
        });
        // No grpc-timeout on a server-streaming call (it would end the stream): the wait for
        // the call to open is bounded here instead.
        let opened = tokio::select! {
            () = self.stop.cancelled() => return End::Stop,
            opened = tokio::time::timeout(CALL_TIMEOUT, client.subscribe(request)) => opened,
        };
        let mut stream = match opened {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => {
                report.session_error(status.code());
                return End::Broken;
            }
            Err(_) => {
                report.session_error(tonic::Code::DeadlineExceeded);
                return End::Broken;
            }
        };
        report.sessions += 1;
        self.active.store(true, Ordering::Relaxed);
        let (stop, drop_signal) = (self.stop.clone(), self.drop_signal.clone());
        let mut flush_at: Option<Instant> = None;
        loop {
            let at = flush_at;
            let flush = async move {
                match at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return End::Stop,
                () = drop_signal.notified() => return End::Drop,
                () = flush => {
                    flush_at = None;
                    self.ack(replica, held, report).await;
                }
                message = tokio::time::timeout(IDLE_TIMEOUT, stream.message()) => match message {
                    Ok(Ok(Some(batch))) => {
                        *backoff = Duration::from_millis(100);
                        let events = self.ledger.events;
                        let deliveries: Vec<(Option<usize>, i32)> = batch
                            .events
                            .iter()
                            .map(|e| (e.event.as_ref().and_then(|ev| parse_id(&ev.id, events)), e.delivery_attempt))
                            .collect();
                        self.ledger.deliver(&deliveries);
                        for (received, (n, _)) in batch.events.into_iter().zip(deliveries) {
                            // A foreign event is acknowledged too, under a sentinel index
                            // outside the ledger (it is skipped when recording the outcome).
                            held.push((received.ack_id, n.unwrap_or(usize::MAX)));
                        }
                        if flush_at.is_none() && !held.is_empty() {
                            flush_at = Some(Instant::now() + ACK_LINGER);
                        }
                    }
                    Ok(Ok(None)) => {
                        report.session_error(tonic::Code::Ok);
                        return End::Broken;
                    }
                    Ok(Err(status)) => {
                        report.session_error(status.code());
                        return End::Broken;
                    }
                    Err(_) => {
                        report.idle_restarts += 1;
                        return End::Broken;
                    }
                },
            }
        }
    }

    /// Acknowledges everything in `held` (emptying it), through `replica` first and the other
    /// replicas when a call fails, until one call answers or the run stops.
    async fn ack(&mut self, replica: usize, held: &mut Vec<(String, usize)>, report: &mut Report) {
        if held.is_empty() {
            return;
        }
        let batch = std::mem::take(held);
        let ack_ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        let mut target = replica;
        let mut retried = false;
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut client = SubscriberServiceClient::new(self.replicas[target].clone());
            let mut request = tonic::Request::new(AcknowledgeRequest { ack_ids: ack_ids.clone() });
            request.set_timeout(CALL_TIMEOUT);
            match client.acknowledge(request).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    let invalid: HashSet<&str> = reply.invalid_ack_ids.iter().map(String::as_str).collect();
                    let expired: HashSet<&str> = reply.expired_ack_ids.iter().map(String::as_str).collect();
                    let (indices, outcome): (Vec<usize>, Vec<Option<bool>>) = batch
                        .iter()
                        .filter(|(_, n)| *n != usize::MAX)
                        .map(|(id, n)| {
                            let outcome = if invalid.contains(id.as_str()) {
                                Some(true)
                            } else if expired.contains(id.as_str()) {
                                Some(false)
                            } else {
                                None
                            };
                            (*n, outcome)
                        })
                        .unzip();
                    self.ledger.acknowledged(&indices, &outcome, retried);
                    return;
                }
                Err(_) => {
                    report.ack_errors += 1;
                    retried = true;
                    if self.stop.is_cancelled() {
                        report.acks_abandoned += batch.len() as u64;
                        return;
                    }
                    target = (target + 1) % self.replicas.len().max(1);
                    tokio::select! {
                        () = self.stop.cancelled() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
