//! The admin service exports the state gauges (stream length, lag, pending, DLQ depth, breaker
//! state) for every stream and subscription, refreshed from Redis every interval, so one
//! scrape target holds them however many subscriber replicas run.

use std::time::Duration;

use eventflow_broker::{BreakerState, Broker, BrokerError};
use eventflow_proto::convert::count;
use eventflow_runtime::{CancellationToken, metrics::EventMetrics};

/// Refreshes the gauges every `interval` until `shutdown`.
pub async fn refresh_loop(broker: Broker, metrics: EventMetrics, interval: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(e) = refresh(&broker, &metrics).await {
            tracing::warn!(error = %e, "gauge refresh failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Reads every stream's statistics into the gauges (dropping series of deleted objects).
pub async fn refresh(broker: &Broker, metrics: &EventMetrics) -> Result<(), BrokerError> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let (names, more) = broker.list_stream_names(&after, 1000).await?;
        after = names.last().cloned().unwrap_or_default();
        for name in names {
            match broker.stream_stats(&name).await {
                Ok(stats) => all.push(stats),
                Err(BrokerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if !more {
            break;
        }
    }
    for gauge in [&metrics.stream_length, &metrics.lag, &metrics.pending, &metrics.dlq_depth, &metrics.breaker_state] {
        gauge.reset();
    }
    for stats in all {
        metrics.stream_length.with_label_values(&[&stats.stream]).set(count(stats.length));
        for sub in stats.subscriptions {
            let labels = [stats.stream.as_str(), sub.name.as_str()];
            metrics.lag.with_label_values(&labels).set(count(sub.lag));
            metrics.pending.with_label_values(&labels).set(count(sub.pending));
            metrics.dlq_depth.with_label_values(&labels).set(count(sub.dead_letters));
            if let Some(state) = sub.breaker {
                let value = match state {
                    BreakerState::Closed => 0,
                    BreakerState::Open => 1,
                    BreakerState::HalfOpen => 2,
                };
                metrics.breaker_state.with_label_values(&labels).set(value);
            }
        }
    }
    Ok(())
}
