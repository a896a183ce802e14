//! gRPC health (grpc.health.v1) over a readiness probe.
//!
//! Readiness — reported for "" (the whole server) and each service name — follows a
//! [`ReadinessProbe`]: the watch ([`spawn_watch`]) asks it every [`PING_INTERVAL`] and reports
//! SERVING while it says the service can serve, NOT_SERVING otherwise and while the server shuts
//! down. A change of the probe's state is logged once (its line; an error when it needs an
//! operator, a warning when it passes by itself), not on every poll. The probe also has a
//! start-up check ([`ReadinessProbe::check_at_start`]) that may stop the service with one line.
//! Health knows nothing of what is probed: the services' probe over Redis (master, not
//! loading, eviction policy, layout version) is [`crate::redis_probe::RedisProbe`].
//!
//! The extra name [`LIVENESS`] stays SERVING while the process runs (until shutdown), so a
//! liveness probe does not restart pods during a Redis outage or failover.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

/// The health service name for liveness probes: SERVING from start until shutdown.
pub const LIVENESS: &str = "liveness";

/// How often the readiness probe is polled.
pub const PING_INTERVAL: Duration = Duration::from_millis(500);

/// What a readiness probe found in one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Whether the service can serve now.
    pub serving: bool,
    /// A short stable name of the state (`"ready"`, `"unreachable"`, ...): a change of it is
    /// logged, once.
    pub state: &'static str,
    /// The line logged when the state changes to this one.
    pub line: String,
    /// Whether leaving this state needs an operator (logged as an error) rather than passing
    /// by itself (a warning).
    pub needs_operator: bool,
}

impl Readiness {
    /// Serving (state `"ready"`), logged as `line`.
    pub fn serving(line: impl Into<String>) -> Self {
        Self { serving: true, state: "ready", line: line.into(), needs_operator: false }
    }

    /// Not serving in `state` until it passes by itself (an outage, a failover).
    pub fn waiting(state: &'static str, line: impl Into<String>) -> Self {
        Self { serving: false, state, line: line.into(), needs_operator: false }
    }

    /// Not serving in `state` until an operator changes something.
    pub fn refused(state: &'static str, line: impl Into<String>) -> Self {
        Self { serving: false, state, line: line.into(), needs_operator: true }
    }

    /// Logs the line at the level the state calls for.
    fn log(&self) {
        if self.serving {
            tracing::info!("{}", self.line);
        } else if self.needs_operator {
            tracing::error!("{}", self.line);
        } else {
            tracing::warn!("{}", self.line);
        }
    }
}

/// What tells health whether the service can serve: polled by [`spawn_watch`].
pub trait ReadinessProbe: Send + 'static {
    /// The start-up check: `Err(line)` stops the service with that one line. What may pass by
    /// itself (the backend unreachable) is `Ok`, left to [`ReadinessProbe::check`].
    fn check_at_start(&mut self) -> impl Future<Output = Result<(), String>> + Send;

    /// One poll: whether the service can serve now, and why.
    fn check(&mut self) -> impl Future<Output = Readiness> + Send;
}

/// Sets `status` for "" and every name in `services`.
pub async fn set_all(reporter: &HealthReporter, services: &[&str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in services {
        reporter.set_service_status(*name, status).await;
    }
}

/// Polls `probe` every [`PING_INTERVAL`] and reports readiness (see the module doc) until
/// `shutdown`, then reports NOT_SERVING.
pub fn spawn_watch(
    reporter: HealthReporter,
    services: Vec<&'static str>,
    mut probe: impl ReadinessProbe,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        reporter.set_service_status(LIVENESS, ServingStatus::Serving).await;
        let mut last: Option<&'static str> = None;
        loop {
            let now = probe.check().await;
            if last != Some(now.state) {
                now.log();
                let status = if now.serving { ServingStatus::Serving } else { ServingStatus::NotServing };
                set_all(&reporter, &services, status).await;
                last = Some(now.state);
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

/// A probe that is ready when both of its probes are: the service of a binary with two
/// dependencies (the relay: Redis and PostgreSQL). The first probe's state is reported while
/// it is not serving, then the second's; when both serve, their lines are joined (an empty
/// line is left out); both start-up checks must pass.
#[derive(Debug)]
pub struct Both<A, B>(pub A, pub B);

impl<A: ReadinessProbe, B: ReadinessProbe> ReadinessProbe for Both<A, B> {
    async fn check_at_start(&mut self) -> Result<(), String> {
        self.0.check_at_start().await?;
        self.1.check_at_start().await
    }

    async fn check(&mut self) -> Readiness {
        let first = self.0.check().await;
        if !first.serving {
            return first;
        }
        let second = self.1.check().await;
        if !second.serving {
            return second;
        }
        match (first.line.is_empty(), second.line.is_empty()) {
            (_, true) => first,
            (true, false) => second,
            (false, false) => Readiness::serving(format!("{}; {}", first.line, second.line)),
        }
    }
}

/// The probe of no further dependency: always ready. What a service with Redis as its only
/// dependency adds to [`crate::redis_probe::RedisProbe`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NothingElse;

impl ReadinessProbe for NothingElse {
    async fn check_at_start(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Serving, with no line of its own (the other probe's line is logged alone).
    async fn check(&mut self) -> Readiness {
        Readiness::serving("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe answering `readiness` every time.
    struct Fixed(Readiness);

    impl ReadinessProbe for Fixed {
        async fn check_at_start(&mut self) -> Result<(), String> {
            Ok(())
        }

        async fn check(&mut self) -> Readiness {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn both_serve_only_when_each_does_and_report_the_first_that_does_not() {
        let down = || Fixed(Readiness::waiting("postgres_unreachable", "postgres unreachable"));
        let up = |line: &str| Fixed(Readiness::serving(line));
        let mut probe = Both(up("redis ready"), down());
        assert_eq!(probe.check().await.state, "postgres_unreachable");
        let mut probe = Both(Fixed(Readiness::waiting("unreachable", "redis unreachable")), down());
        assert_eq!(probe.check().await.state, "unreachable");
        let both = Both(up("redis ready"), up("postgres ready")).check().await;
        assert!(both.serving && both.line == "redis ready; postgres ready", "{}", both.line);
        let alone = Both(up("redis ready"), NothingElse).check().await;
        assert_eq!(alone.line, "redis ready");
    }
}
