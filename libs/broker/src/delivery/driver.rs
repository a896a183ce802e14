//! The delivery driver: the loop that feeds one [`Session`] into a [`Sink`] until the consumer
//! leaves, the subscription is gone or the server shuts down, and then closes the session so its
//! unsettled events are redelivered at once elsewhere.
//!
//! It is what every way of handing events to a consumer shares — the gRPC Subscribe stream today,
//! an HTTP pusher later — so the rules live once:
//! * a batch goes to the sink only while nothing asked to stop; an empty batch (nothing new, at
//!   the flow-control limit, breaker open) is reported to the sink's [`Sink::idle`] and the loop
//!   goes on, so cancellation is noticed between reads;
//! * while Redis cannot serve ([`BrokerError::is_transient`]) the driver waits with exponential
//!   backoff (from [`FIRST_RETRY_PAUSE`] up to [`MAX_RETRY_PAUSE`]) and keeps the consumer
//!   attached: an outage is a pause, not an end;
//! * any other error ends the delivery; the sink is told why ([`Sink::end`]), as it is on
//!   shutdown; so does a sink that refuses the subscription's current settings
//!   ([`Sink::refuses`]).

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{BrokerError, Delivery, Session, SubscriptionConfig, session::BatchStats};

/// First pause after Redis could not serve a read.
pub const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between retries while Redis cannot serve.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// Where a driven session's deliveries go: a gRPC stream, an HTTP pusher, a test's vector.
pub trait Sink: Send {
    /// Hands `batch` (never empty) to the consumer; `false` when the consumer is gone. `stats`
    /// is what the session's read did besides delivering (for metrics).
    fn send(&mut self, batch: Vec<Delivery>, stats: &BatchStats) -> impl Future<Output = bool> + Send;

    /// A read delivered nothing; `stats` may still say something (expired, dead-lettered).
    fn idle(&mut self, stats: &BatchStats) {
        let _ = stats;
    }

    /// Resolves when the consumer has gone away (then the driver stops at once).
    fn closed(&self) -> impl Future<Output = ()> + Send;

    /// Why this sink can no longer deliver the subscription as it is now configured (e.g. a
    /// Subscribe stream once the subscription became a push subscription), checked after every
    /// read with the settings the session last read; `Some` ends the delivery with that error.
    fn refuses(&self, config: &SubscriptionConfig) -> Option<BrokerError> {
        let _ = config;
        None
    }

    /// The delivery ends while the consumer is still there: tell it why.
    fn end(&mut self, why: &Ended) -> impl Future<Output = ()> + Send;
}

/// Why a driven delivery ended.
#[derive(Debug, Clone)]
pub enum Ended {
    /// The consumer went away.
    Gone,
    /// The server shuts down.
    Shutdown,
    /// An error retrying cannot fix (e.g. the subscription was deleted).
    Failed(BrokerError),
}

/// Delivers from `session` into `sink` until the consumer leaves, `shutdown` is cancelled or an
/// error that retrying cannot fix; then closes the session (logging what it released) and says
/// why it ended.
pub async fn drive(mut session: Session, sink: &mut impl Sink, shutdown: &CancellationToken) -> Ended {
    let ended = run(&mut session, sink, shutdown).await;
    if !matches!(ended, Ended::Gone) {
        sink.end(&ended).await;
    }
    let consumer = session.consumer().to_string();
    match session.close().await {
        Ok(released) => tracing::info!(%consumer, released, ?ended, "delivery ended"),
        Err(e) => {
            tracing::warn!(%consumer, error = %e, ?ended, "delivery ended; unsettled events wait for their deadline")
        }
    }
    ended
}

/// The loop of [`drive`], without the closing.
async fn run(session: &mut Session, sink: &mut impl Sink, shutdown: &CancellationToken) -> Ended {
    let mut pause = FIRST_RETRY_PAUSE;
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => return Ended::Shutdown,
            () = sink.closed() => return Ended::Gone,
            batch = session.next_batch() => batch,
        };
        if let Some(why) = sink.refuses(session.config()) {
            return Ended::Failed(why);
        }
        match batch {
            Ok(batch) if batch.is_empty() => sink.idle(session.last_stats()),
            Ok(batch) => {
                pause = FIRST_RETRY_PAUSE;
                let sent = tokio::select! {
                    () = shutdown.cancelled() => return Ended::Shutdown,
                    sent = sink.send(batch, session.last_stats()) => sent,
                };
                if !sent {
                    return Ended::Gone;
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, consumer = %session.consumer(), "redis cannot serve now; delivery paused");
                tokio::select! {
                    () = shutdown.cancelled() => return Ended::Shutdown,
                    () = sink.closed() => return Ended::Gone,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            Err(e) => return Ended::Failed(e),
        }
    }
}
