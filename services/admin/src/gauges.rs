//! The admin service exports the state gauges (stream length, lag, pending, DLQ depth, breaker
//! state) for every stream and subscription, refreshed from Redis every interval, so one
//! scrape target holds them however many subscriber replicas run. The counters Redis keeps per
//! subscription (retention dead-lettered and dropped, DLQ overflow) are exported the same way
//! as Prometheus counters: each refresh adds what Redis counted since the last one. Partitioned
//! streams also get per-partition length, lag and pending gauges (a `partition` label, bounded
//! by the 64 partitions a stream may have), so a hot partition shows.

use std::{collections::HashSet, time::Duration};

use eventflow_broker::{BreakerState, Broker, BrokerError};
use eventflow_proto::convert::count;
use eventflow_runtime::{CancellationToken, metrics::EventMetrics};
use prometheus::IntCounterVec;

/// Refreshes the gauges every `interval` until `shutdown`.
pub async fn refresh_loop(broker: Broker, metrics: EventMetrics, interval: Duration, shutdown: CancellationToken) {
    let mut seen = HashSet::new();
    loop {
        if let Err(e) = refresh(&broker, &metrics, &mut seen).await {
            tracing::warn!(error = %e, "gauge refresh failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Reads every stream's statistics into the gauges and counters (dropping series of deleted
/// objects); `seen` holds the (stream, subscription) pairs with counter series.
pub async fn refresh(
    broker: &Broker,
    metrics: &EventMetrics,
    seen: &mut HashSet<(String, String)>,
) -> Result<(), BrokerError> {
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
    let gauges = [
        &metrics.stream_length,
        &metrics.lag,
        &metrics.pending,
        &metrics.dlq_depth,
        &metrics.breaker_state,
        &metrics.ordered_keys_blocked,
        &metrics.ordered_oldest_blocked_age,
        &metrics.partition_length,
        &metrics.partition_lag,
        &metrics.partition_pending,
    ];
    for gauge in gauges {
        gauge.reset();
    }
    let mut now_seen = HashSet::new();
    for stats in all {
        metrics.stream_length.with_label_values(&[&stats.stream]).set(count(stats.length));
        for part in &stats.partitions {
            let partition = part.partition.to_string();
            metrics.partition_length.with_label_values(&[&stats.stream, &partition]).set(count(part.length));
            for sub in &part.subscriptions {
                let labels = [stats.stream.as_str(), sub.name.as_str(), partition.as_str()];
                metrics.partition_lag.with_label_values(&labels).set(count(sub.lag));
                metrics.partition_pending.with_label_values(&labels).set(count(sub.pending));
            }
        }
        for sub in stats.subscriptions {
            let labels = [stats.stream.as_str(), sub.name.as_str()];
            sync_counter(&metrics.retention_dead_lettered, &labels, sub.retention_dead_lettered);
            sync_counter(&metrics.retention_dropped, &labels, sub.retention_dropped);
            sync_counter(&metrics.dlq_overflow, &labels, sub.dead_letters_overflowed);
            now_seen.insert((stats.stream.clone(), sub.name.clone()));
            metrics.lag.with_label_values(&labels).set(count(sub.lag));
            metrics.pending.with_label_values(&labels).set(count(sub.pending));
            metrics.dlq_depth.with_label_values(&labels).set(count(sub.dead_letters));
            if sub.ordered {
                metrics.ordered_keys_blocked.with_label_values(&labels).set(count(sub.keys_blocked));
                let age = metrics.ordered_oldest_blocked_age.with_label_values(&labels);
                age.set(count(sub.oldest_blocked_age_ms / 1000));
            }
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
    for (stream, sub) in seen.difference(&now_seen) {
        for counter in [&metrics.retention_dead_lettered, &metrics.retention_dropped, &metrics.dlq_overflow] {
            let _ = counter.remove_label_values(&[stream, sub]);
        }
    }
    *seen = now_seen;
    Ok(())
}

/// Brings a counter series up to `total`, a count Redis keeps; a lower total (the subscription
/// was re-created) starts the series over, as a counter reset.
fn sync_counter(counter: &IntCounterVec, labels: &[&str; 2], total: u64) {
    let series = counter.with_label_values(labels);
    let current = series.get();
    if total < current {
        let _ = counter.remove_label_values(labels);
        counter.with_label_values(labels).inc_by(total);
    } else {
        series.inc_by(total - current);
    }
}
