//! The readiness probe of a service over Redis: the [`ReadinessProbe`] that
//! [`crate::health`] polls, over a [`Broker`]. The broker-specific half of health lives here,
//! so the health watch itself knows nothing of Redis.
//!
//! Ready means the Redis behind the service can take its writes: it answers, it is a master
//! (not a replica, which refuses writes with READONLY), it is not loading its dataset, its
//! `maxmemory-policy` is `noeviction` (or the operator allowed another with
//! `--allow-eviction-policy`), and the data under the key prefix is not of a newer (or a
//! damaged) layout version. At start it also warns (once, without refusing) if Redis frees
//! expired keys in its main thread ([`Broker::lazy_expire`]). Each poll reads `INFO replication` + `INFO persistence`
//! ([`Broker::server_state`]); the eviction policy is read when Redis becomes ready (at start,
//! after an outage, a failover or a reload), every poll while it is refused, and every
//! [`POLICY_RECHECK`] otherwise; the layout version is checked whenever Redis becomes ready, so
//! also every poll while it is refused.
//!
//! At start ([`ReadinessProbe::check_at_start`]) a refused eviction policy and a newer layout
//! each stop the service with one clear line; an unreachable Redis does not block start-up
//! (the polls check both once Redis answers). A fresh Redis gets the layout version written.

use std::time::{Duration, Instant};

use eventflow_broker::{Broker, BrokerError, EvictionPolicy, LayoutCheck, ServerState, schema::LAYOUT_VERSION};

use crate::health::{Readiness, ReadinessProbe};

/// How often a Redis found ready is asked for its eviction policy again (an operator may
/// change it at runtime).
pub const POLICY_RECHECK: Duration = Duration::from_secs(60);

/// The readiness probe over a broker's Redis (see the module doc).
#[derive(Debug)]
pub struct RedisProbe {
    /// The broker whose Redis is probed.
    broker: Broker,
    /// The eviction-policy side of readiness.
    policy: PolicyWatch,
    /// Whether the last poll found Redis ready (the policy and layout are read again when it
    /// becomes ready).
    was_ready: bool,
}

impl RedisProbe {
    /// A probe of `broker`'s Redis, which has not been found ready yet.
    pub fn new(broker: Broker) -> Self {
        Self { broker, policy: PolicyWatch::default(), was_ready: false }
    }

    /// One poll (see the module doc).
    async fn poll(&mut self) -> Readiness {
        let state = match self.broker.server_state().await {
            Err(e) => return unreachable(&e.to_string()),
            Ok(ServerState::Replica) => {
                return Readiness::waiting(
                    "replica",
                    "redis is a replica (read-only): NOT_SERVING until it is a master",
                );
            }
            Ok(ServerState::Loading) => {
                return Readiness::waiting("loading", "redis is loading its dataset: NOT_SERVING until loaded");
            }
            Ok(state) => state,
        };
        if let ServerState::Unchecked(why) = &state
            && !self.policy.info_warned
        {
            self.policy.info_warned = true;
            tracing::warn!(reason = %why, "redis INFO not available: replica and loading states are not detected");
        }
        let just_ready = !self.was_ready;
        match self.policy.allows_serving(&self.broker, just_ready).await {
            None => unreachable("redis stopped answering"),
            Some(false) => {
                let policy = self.policy.refused.clone().unwrap_or_default();
                Readiness::refused(
                    "eviction_policy",
                    format!("{}: NOT_SERVING until it is noeviction", refusal(&policy)),
                )
            }
            Some(true) if just_ready => match layout_refusal(&self.broker).await {
                Err(e) => unreachable(&e.to_string()),
                Ok(None) => Readiness::serving("redis ready: SERVING"),
                Ok(Some(why)) => Readiness::refused("layout", format!("{why}: NOT_SERVING until it is changed")),
            },
            Some(true) => Readiness::serving("redis ready: SERVING"),
        }
    }
}

impl ReadinessProbe for RedisProbe {
    /// The start-up checks: the eviction policy, then the layout version; a warning if Redis
    /// expires keys in its main thread.
    async fn check_at_start(&mut self) -> Result<(), String> {
        check_eviction_policy(&self.broker).await?;
        check_layout(&self.broker).await?;
        warn_without_lazy_expire(&self.broker).await;
        Ok(())
    }

    async fn check(&mut self) -> Readiness {
        let readiness = self.poll().await;
        self.was_ready = readiness.serving;
        readiness
    }
}

/// Not serving because Redis does not answer (`why`).
fn unreachable(why: &str) -> Readiness {
    Readiness::waiting("unreachable", format!("redis unreachable: NOT_SERVING: {why}"))
}

/// The start-up check: fails with one line if Redis's `maxmemory-policy` is refused. Anything
/// else — the policy fine or allowed, CONFIG unavailable, Redis unreachable — lets the
/// service start; the polls log and keep checking.
async fn check_eviction_policy(broker: &Broker) -> Result<(), String> {
    match broker.eviction_policy().await {
        Ok(EvictionPolicy::Refused(policy)) => Err(refusal(&policy)),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "redis unreachable at start; its maxmemory-policy is checked once it answers");
            Ok(())
        }
    }
}

/// Logs one warning at start if Redis frees expired keys in its main thread
/// ([`Broker::lazy_expire`]); nothing when it cannot be told.
async fn warn_without_lazy_expire(broker: &Broker) {
    if let Ok(Some(false)) = broker.lazy_expire().await {
        tracing::warn!(
            "redis lazyfree-lazy-expire is not yes: the expiry of a big dedup bucket (a stream that stopped \
             publishing) will stall Redis while it is freed; run `CONFIG SET lazyfree-lazy-expire yes` and set it in \
             redis.conf (docs/operations.md)"
        );
    }
}

/// The start-up check of the data's layout version ([`Broker::check_layout`]): fails with one
/// line if Redis holds data of a newer eventflow layout (or a damaged version); writes the
/// version on a fresh Redis. An unreachable or read-only Redis does not block start-up.
async fn check_layout(broker: &Broker) -> Result<(), String> {
    match layout_refusal(broker).await {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(why),
        Err(e) => {
            tracing::warn!(error = %e, "redis unavailable at start; its layout version is checked once it answers");
            Ok(())
        }
    }
}

/// Why the data's layout refuses this code (one line), `None` if it does not; `Err` only while
/// Redis cannot be reached (or is read-only), so the check must be made again later.
async fn layout_refusal(broker: &Broker) -> Result<Option<String>, BrokerError> {
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
                EvictionPolicy::Allowed(_) | EvictionPolicy::Unknown(_) => self.warn_once(policy),
            }
        }
        Some(self.refused.is_none())
    }

    /// Logs an allowed or unknown policy, once per distinct policy.
    fn warn_once(&mut self, policy: EvictionPolicy) {
        if self.warned.as_ref() == Some(&policy) {
            return;
        }
        match &policy {
            EvictionPolicy::Allowed(name) => tracing::warn!(
                policy = %name,
                "DANGER: redis maxmemory-policy is not noeviction and --allow-eviction-policy accepts it: \
                 when Redis is full it deletes keys, so dedup keys or whole streams with their pending \
                 events can vanish without a trace"
            ),
            EvictionPolicy::Unknown(why) => tracing::warn!(
                reason = %why,
                "cannot read redis maxmemory-policy (CONFIG GET not available); make sure it is noeviction"
            ),
            EvictionPolicy::NoEviction | EvictionPolicy::Refused(_) => return,
        }
        self.warned = Some(policy);
    }
}
