//! gRPC health (grpc.health.v1) and the start-up check of Redis.
//!
//! Readiness — reported for "" (the whole server) and each service name — is SERVING while the
//! Redis behind the service can take its writes: it answers, it is a master (not a replica,
//! which refuses writes with READONLY), it is not loading its dataset, and its
//! `maxmemory-policy` is `noeviction` (or the operator allowed another with
//! `--allow-eviction-policy`). It is NOT_SERVING otherwise and while the server shuts down.
//! The watch polls every [`PING_INTERVAL`] (`INFO replication` + `INFO persistence`); it reads
//! the eviction policy when Redis becomes ready (at start, after an outage, a failover or a
//! reload), every poll while the policy is refused, and every [`POLICY_RECHECK`] otherwise.
//! Changes are logged once, not on every poll.
//!
//! The extra name [`LIVENESS`] stays SERVING while the process runs (until shutdown), so a
//! liveness probe does not restart pods during a Redis outage or failover.
//!
//! [`check_layout`] runs once at start too: data of a newer eventflow layout under the key prefix
//! stops the service with one clear line. If Redis could not be reached then, the watch checks
//! the layout whenever Redis becomes ready, and every poll while it is refused; readiness stays
//! NOT_SERVING while Redis holds a newer (or damaged) layout.
//!
//! [`check_eviction_policy`] runs once at start: a refused policy stops the service with one
//! clear line; an unreachable Redis does not block start-up (the watch checks the policy once
//! Redis answers, and keeps readiness NOT_SERVING while it is refused).

use std::time::{Duration, Instant};

use eventflow_broker::{Broker, EvictionPolicy, LayoutCheck, ServerState, schema::LAYOUT_VERSION};
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::serve::ServeError;

/// The health service name for liveness probes: SERVING from start until shutdown.
pub const LIVENESS: &str = "liveness";

/// How often Redis is polled for health.
pub const PING_INTERVAL: Duration = Duration::from_millis(500);

/// How often a Redis found ready is asked for its eviction policy again (an operator may
/// change it at runtime).
pub const POLICY_RECHECK: Duration = Duration::from_secs(60);

/// Sets `status` for "" and every name in `services`.
pub async fn set_all(reporter: &HealthReporter, services: &[&str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in services {
        reporter.set_service_status(*name, status).await;
    }
}

/// The start-up check: fails with one line if Redis's `maxmemory-policy` is refused. Anything
/// else — the policy fine or allowed, CONFIG unavailable, Redis unreachable — lets the
/// service start; the health watch logs and keeps checking.
pub async fn check_eviction_policy(broker: &Broker) -> Result<(), ServeError> {
    match broker.eviction_policy().await {
        Ok(EvictionPolicy::Refused(policy)) => Err(ServeError::Config(refusal(&policy))),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "redis unreachable at start; its maxmemory-policy is checked once it answers");
            Ok(())
        }
    }
}

/// The start-up check of the data's layout version ([`Broker::check_layout`]): fails with one
/// line if Redis holds data of a newer eventflow layout (or a damaged version); writes the
/// version on a fresh Redis. An unreachable or read-only Redis does not block start-up.
pub async fn check_layout(broker: &Broker) -> Result<(), ServeError> {
    match layout_refusal(broker).await {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(ServeError::Config(why)),
        Err(e) => {
            tracing::warn!(error = %e, "redis unavailable at start; its layout version is checked once it answers");
            Ok(())
        }
    }
}

/// Why the data's layout refuses this code (one line), `None` if it does not; `Err` only while
/// Redis cannot be reached (or is read-only), so the check must be made again later.
async fn layout_refusal(broker: &Broker) -> Result<Option<String>, eventflow_broker::BrokerError> {
    match broker.check_layout().await {
        Ok(LayoutCheck::Newer(version)) => Ok(Some(format!(
            "redis key {} says the data under this key prefix has layout version {version}, written by a newer \
             eventflow; this version knows layouts up to {LAYOUT_VERSION} and refuses to touch it: run the newer \
             eventflow, or use another --key-prefix",
            broker.keys().layout()
        ))),
        Ok(LayoutCheck::Migrated(from)) => {
            tracing::info!(from, to = LAYOUT_VERSION, "redis data migrated to the current layout");
            Ok(None)
        }
        Ok(LayoutCheck::Current | LayoutCheck::Written) => Ok(None),
        Err(e) if e.is_transient() => Err(e),
        Err(e) => Ok(Some(format!("redis layout version: {e}"))),
    }
}

/// The one line that explains a refused eviction policy.
fn refusal(policy: &str) -> String {
    format!(
        "redis maxmemory-policy is {policy:?}, but eventflow needs \"noeviction\" (under any other policy a full \
         Redis silently deletes dedup keys or events); run `CONFIG SET maxmemory-policy noeviction` on Redis, \
         or pass --allow-eviction-policy (EVENTFLOW_ALLOW_EVICTION_POLICY=true) to accept that risk"
    )
}

/// Why readiness is what it is; a change of this is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// Redis can take writes.
    Ready,
    /// Redis does not answer.
    Unreachable,
    /// Redis is a replica.
    Replica,
    /// Redis is loading its dataset.
    Loading,
    /// Redis's eviction policy is refused.
    EvictionPolicy,
    /// Redis holds data of a newer (or a damaged) layout version.
    Layout,
}

/// The eviction-policy side of readiness: when it was last read and whether it allows serving.
#[derive(Debug, Default)]
struct PolicyWatch {
    /// When the policy was last read.
    checked: Option<Instant>,
    /// The policy refused at the last read (its name), if it was.
    refused: Option<String>,
    /// What was last logged about an allowed or unknown policy, so it is logged once.
    warned: Option<EvictionPolicy>,
    /// Whether the lack of INFO was logged (once).
    info_warned: bool,
}

impl PolicyWatch {
    /// Whether the policy allows serving; reads it again if Redis just became ready, it was
    /// refused, or [`POLICY_RECHECK`] passed. `None` if Redis could not be reached.
    async fn allows_serving(&mut self, broker: &Broker, just_ready: bool) -> Option<bool> {
        let due = just_ready || self.refused.is_some() || self.checked.is_none_or(|t| t.elapsed() >= POLICY_RECHECK);
        if due {
            let policy = broker.eviction_policy().await.ok()?;
            self.checked = Some(Instant::now());
            self.refused = None;
            match &policy {
                EvictionPolicy::NoEviction => {}
                EvictionPolicy::Refused(name) => self.refused = Some(name.clone()),
                EvictionPolicy::Allowed(name) if self.warned.as_ref() != Some(&policy) => tracing::warn!(
                    policy = %name,
                    "DANGER: redis maxmemory-policy is not noeviction and --allow-eviction-policy accepts it: \
                     when Redis is full it deletes keys, so dedup keys or whole streams with their pending \
                     events can vanish without a trace"
                ),
                EvictionPolicy::Unknown(why) if self.warned.as_ref() != Some(&policy) => tracing::warn!(
                    reason = %why,
                    "cannot read redis maxmemory-policy (CONFIG GET not available); make sure it is noeviction"
                ),
                EvictionPolicy::Allowed(_) | EvictionPolicy::Unknown(_) => {}
            }
            if matches!(policy, EvictionPolicy::Allowed(_) | EvictionPolicy::Unknown(_)) {
                self.warned = Some(policy);
            }
        }
        Some(self.refused.is_none())
    }
}

/// One poll: what readiness is now, with a detail for the log.
async fn poll(broker: &Broker, policy: &mut PolicyWatch, last: Option<Readiness>) -> (Readiness, String) {
    match broker.server_state().await {
        Err(e) => (Readiness::Unreachable, e.to_string()),
        Ok(ServerState::Replica) => (Readiness::Replica, String::new()),
        Ok(ServerState::Loading) => (Readiness::Loading, String::new()),
        Ok(state @ (ServerState::Ready | ServerState::Unchecked(_))) => {
            if let ServerState::Unchecked(why) = &state
                && !policy.info_warned
            {
                policy.info_warned = true;
                tracing::warn!(reason = %why, "redis INFO not available: replica and loading states are not detected");
            }
            let just_ready = last != Some(Readiness::Ready);
            match policy.allows_serving(broker, just_ready).await {
                None => (Readiness::Unreachable, "redis stopped answering".into()),
                Some(false) => (Readiness::EvictionPolicy, policy.refused.clone().unwrap_or_default()),
                // Checked whenever Redis becomes ready, so also every poll while refused.
                Some(true) if just_ready => match layout_refusal(broker).await {
                    Err(e) => (Readiness::Unreachable, e.to_string()),
                    Ok(None) => (Readiness::Ready, String::new()),
                    Ok(Some(why)) => (Readiness::Layout, why),
                },
                Some(true) => (Readiness::Ready, String::new()),
            }
        }
    }
}

/// Polls Redis every [`PING_INTERVAL`] and reports readiness (see the module doc) until
/// `shutdown`, then reports NOT_SERVING.
pub fn spawn_redis_watch(
    reporter: HealthReporter,
    services: Vec<&'static str>,
    broker: Broker,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        reporter.set_service_status(LIVENESS, ServingStatus::Serving).await;
        let mut last: Option<Readiness> = None;
        let mut policy = PolicyWatch::default();
        loop {
            let (now, detail) = poll(&broker, &mut policy, last).await;
            if last != Some(now) {
                match now {
                    Readiness::Ready => tracing::info!("redis ready: SERVING"),
                    Readiness::Unreachable => tracing::warn!(error = %detail, "redis unreachable: NOT_SERVING"),
                    Readiness::Replica => {
                        tracing::warn!("redis is a replica (read-only): NOT_SERVING until it is a master")
                    }
                    Readiness::Loading => tracing::warn!("redis is loading its dataset: NOT_SERVING until loaded"),
                    Readiness::Layout => tracing::error!("{detail}: NOT_SERVING until it is changed"),
                    Readiness::EvictionPolicy => tracing::error!(
                        policy = %detail,
                        "{}: NOT_SERVING until it is noeviction",
                        refusal(&detail)
                    ),
                }
                let status = if now == Readiness::Ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                set_all(&reporter, &services, status).await;
                last = Some(now);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(PING_INTERVAL) => {}
            }
        }
        set_all(&reporter, &services, ServingStatus::NotServing).await;
        reporter.set_service_status(LIVENESS, ServingStatus::NotServing).await;
    })
}
