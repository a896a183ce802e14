//! The producer: publishes `soak-0` .. `soak-<N-1>` in batches, several requests in flight,
//! and retries every event without a result with the SAME id until it has one. Publish is
//! idempotent by event id within the stream's dedup window, so a retry of an event whose first
//! attempt was stored (but whose answer was lost to a SIGKILL or a timeout) comes back as a
//! duplicate of the first entry instead of a second copy.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use eventflow_proto::v1::{CloudEvent, PublishRequest, cloud_event, publisher_service_client::PublisherServiceClient};
use tokio::{task::JoinSet, time::Instant};
use tonic::transport::Channel;

use super::ledger::{Ledger, event_id};

/// Per-request deadline: long enough for a Redis pause, short enough to retry soon after.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// gRPC code of a per-event error the publisher will never accept on retry.
const INVALID_ARGUMENT: i32 = 3;

/// How the producer is set up.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The stream.
    pub stream: String,
    /// Events per Publish request.
    pub batch_size: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Bytes of data per event.
    pub event_bytes: usize,
}

/// What the producer went through.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Publish calls made (first attempts and retries).
    pub calls: u64,
    /// Calls that failed as a whole, or had per-event errors to retry.
    pub retries: u64,
    /// Failed calls and per-event errors by gRPC code.
    pub errors: Vec<(tonic::Code, u64)>,
    /// A few distinct error messages, for the log.
    pub samples: Vec<String>,
}

impl Report {
    fn error(&mut self, code: tonic::Code, message: &str) {
        match self.errors.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.errors.push((code, 1)),
        }
        let sample = format!("{code:?}: {message}");
        if self.samples.len() < 5 && !self.samples.contains(&sample) {
            self.samples.push(sample);
        }
    }

    fn merge(&mut self, other: Report) {
        self.calls += other.calls;
        self.retries += other.retries;
        for (code, n) in other.errors {
            match self.errors.iter_mut().find(|(c, _)| *c == code) {
                Some((_, m)) => *m += n,
                None => self.errors.push((code, n)),
            }
        }
        for sample in other.samples {
            if self.samples.len() < 5 && !self.samples.contains(&sample) {
                self.samples.push(sample);
            }
        }
    }
}

/// The event with index `n`.
fn event(n: usize, data: &[u8]) -> CloudEvent {
    CloudEvent {
        id: event_id(n),
        source: "/soak".into(),
        spec_version: "1.0".into(),
        r#type: "soak.event".into(),
        data: Some(cloud_event::Data::BinaryData(data.to_vec())),
        ..Default::default()
    }
}

/// Publishes every event of `ledger` through `channel` (a lazily reconnecting channel to the
/// publisher) until each has a result or `deadline` passes.
pub async fn run(plan: Plan, channel: Channel, ledger: Arc<Ledger>, deadline: Instant) -> Report {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let (plan, channel, ledger, next) = (plan.clone(), channel.clone(), ledger.clone(), next.clone());
        workers.spawn(async move { worker(plan, channel, ledger, next, deadline).await });
    }
    let mut report = Report::default();
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(r) => report.merge(r),
            Err(e) => report.samples.push(format!("publish worker failed: {e}")),
        }
    }
    report
}

/// Takes the next batch until none is left; publishes each to completion.
async fn worker(
    plan: Plan,
    channel: Channel,
    ledger: Arc<Ledger>,
    next: Arc<AtomicUsize>,
    deadline: Instant,
) -> Report {
    let mut client = PublisherServiceClient::new(channel);
    let data: Vec<u8> = (0..plan.event_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let mut report = Report::default();
    let size = plan.batch_size.max(1);
    loop {
        let start = next.fetch_add(1, Ordering::Relaxed) * size;
        if start >= ledger.events {
            return report;
        }
        let mut pending: Vec<usize> = (start..(start + size).min(ledger.events)).collect();
        let mut backoff = Duration::from_millis(50);
        while !pending.is_empty() {
            if Instant::now() >= deadline {
                // What is left shows as ids never accepted.
                return report;
            }
            report.calls += 1;
            let events = pending.iter().map(|&n| event(n, &data)).collect();
            let mut request = tonic::Request::new(PublishRequest { stream: plan.stream.clone(), events });
            request.set_timeout(REQUEST_TIMEOUT);
            match client.publish(request).await {
                Ok(reply) => {
                    let results = reply.into_inner().results;
                    if results.len() != pending.len() {
                        report.error(
                            tonic::Code::Internal,
                            &format!("{} results for {} events", results.len(), pending.len()),
                        );
                    } else {
                        let mut retry = Vec::new();
                        for (&n, result) in pending.iter().zip(&results) {
                            match &result.error {
                                None => ledger.accept(n, result.duplicate, &result.entry_id),
                                Some(e) if e.code == INVALID_ARGUMENT => {
                                    report.error(tonic::Code::from(e.code), &e.message);
                                    ledger.reject();
                                }
                                Some(e) => {
                                    report.error(tonic::Code::from(e.code), &e.message);
                                    retry.push(n);
                                }
                            }
                        }
                        pending = retry;
                        if pending.is_empty() {
                            break;
                        }
                    }
                }
                Err(status) => report.error(status.code(), status.message()),
            }
            report.retries += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}
