//! Settings every binary takes, as flags with `EVENTFLOW_*` environment fallbacks.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use eventflow_broker::{Broker, BrokerOptions};
use prometheus::Registry;

use crate::{
    auth::{Auth, AuthArgs},
    metrics::EventMetrics,
    redis_tls,
    serve::ServeError,
    tls::TlsFiles,
};

/// Settings every service takes besides its listen addresses.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Redis settings.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Authentication and authorization (off unless tokens or a policy file are given).
    #[command(flatten)]
    pub auth: AuthArgs,
    /// gRPC server settings.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Settings of the gRPC server every service runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Seconds between the HTTP/2 keepalive pings the server sends on every connection (0 = off).
    /// A client that does not answer one within --http2-keepalive-timeout-secs is disconnected
    /// and its calls end, so a vanished client's Subscribe session (and the events it held) is
    /// released within about keepalive + timeout seconds. Clients need no setting for this.
    #[arg(long, env = "EVENTFLOW_HTTP2_KEEPALIVE_SECS", default_value_t = 20)]
    pub http2_keepalive_secs: u64,
    /// Seconds to wait for the answer to an HTTP/2 keepalive ping before disconnecting (at least 1).
    #[arg(long, env = "EVENTFLOW_HTTP2_KEEPALIVE_TIMEOUT_SECS", default_value_t = 10)]
    pub http2_keepalive_timeout_secs: u64,
    /// Most calls (HTTP/2 streams) one client connection may have open at once; a client with
    /// more queues the rest until one ends. Bounds what one connection makes the server hold
    /// (a task and the unread request frames per open call). Without a bound, a client sending
    /// calls on one connection faster than they were served had that connection closed by the
    /// HTTP/2 layer (GOAWAY ENHANCE_YOUR_CALM, too many unread small DATA frames) and every
    /// call on it failed. Keep it above the Subscribe calls a client opens on one connection.
    #[arg(long, env = "EVENTFLOW_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,
    /// PEM certificate chain to serve gRPC over TLS with (leaf first; needs --tls-key-file).
    /// Unset = plain TCP. Re-read before the next handshake whenever the file changes, so a
    /// rotated certificate (cert-manager) is used without a restart.
    #[arg(long, env = "EVENTFLOW_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file (needs --tls-cert-file); reloaded with it.
    #[arg(long, env = "EVENTFLOW_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s): when set, clients must present a certificate signed by one of
    /// them (mutual TLS) or the handshake is refused. Needs --tls-cert-file; reloaded with it.
    #[arg(long, env = "EVENTFLOW_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The keepalive interval and timeout, or `None` when keepalive is off; fails with one
    /// clear line on a zero timeout.
    pub fn http2_keepalive(&self) -> Result<Option<(Duration, Duration)>, ServeError> {
        if self.http2_keepalive_secs == 0 {
            return Ok(None);
        }
        if self.http2_keepalive_timeout_secs == 0 {
            return Err(ServeError::Config("--http2-keepalive-timeout-secs must be at least 1".into()));
        }
        Ok(Some((
            Duration::from_secs(self.http2_keepalive_secs),
            Duration::from_secs(self.http2_keepalive_timeout_secs),
        )))
    }

    /// The TLS files, or `None` for plain TCP; fails with one clear line when only some of
    /// them are set.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, ServeError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                Ok(Some(TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: self.tls_client_ca_file.clone() }))
            }
            (None, None) if self.tls_client_ca_file.is_none() => Ok(None),
            _ => Err(ServeError::Config(
                "--tls-cert-file and --tls-key-file must be set together (and --tls-client-ca-file only with them)"
                    .into(),
            )),
        }
    }
}

/// What every service builds from [`CommonArgs`] before its handler.
#[derive(Debug)]
pub struct Basics {
    /// The broker over the configured Redis.
    pub broker: Broker,
    /// Authentication of the service's API (its interceptor) and authorization (the policy).
    pub auth: Auth,
    /// The registry `/metrics` serves.
    pub registry: Registry,
    /// The event metrics, registered in `registry`.
    pub metrics: EventMetrics,
}

impl CommonArgs {
    /// Builds the broker, auth check and metrics; fails with one clear line on bad settings.
    pub fn basics(&self) -> Result<Basics, ServeError> {
        self.basics_with(|_| {})
    }

    /// Like [`CommonArgs::basics`], with `tune` applied to the broker's options (settings of
    /// one service, e.g. the publisher's byte budget).
    pub fn basics_with(&self, tune: impl FnOnce(&mut BrokerOptions)) -> Result<Basics, ServeError> {
        let broker = self.redis.broker_with(tune)?;
        let registry = Registry::new();
        let auth = self.auth.auth(&registry).map_err(ServeError::Config)?;
        let metrics = EventMetrics::register(&registry).map_err(|e| ServeError::Config(format!("metrics: {e}")))?;
        Ok(Basics { broker, auth, registry, metrics })
    }
}

/// Redis and key settings shared by every service.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://[user:password@]host:port[/db]`; `rediss://` for TLS, verified
    /// against --redis-ca-file or else the system's root certificates).
    #[arg(long, env = "EVENTFLOW_REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: String,
    /// Redis Cluster mode: comma-separated node URLs (`redis://host:port,...`, all `redis://` or
    /// all `rediss://`; the TLS flags below apply to every node). Any reachable nodes will do:
    /// the rest of the cluster is discovered, MOVED/ASK redirections and failovers are followed.
    /// Replaces --redis-url (setting both is refused).
    #[arg(
        long,
        env = "EVENTFLOW_REDIS_CLUSTER_NODES",
        value_delimiter = ',',
        conflicts_with = "redis_url",
        hide_env_values = true
    )]
    pub redis_cluster_nodes: Vec<String>,
    /// PEM CA certificate(s) the Redis server's certificate must chain to (needs a rediss://
    /// URL), for a Redis whose certificate a private CA issued. Unset = the system's root
    /// certificates; replaces them when set. Read at start. Every connection (pool, blocking
    /// readers, watcher) verifies with it.
    #[arg(long, env = "EVENTFLOW_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate chain to present to Redis, for a Redis that requires client
    /// certificates (`tls-auth-clients yes`); needs --redis-client-key-file and a rediss:// URL.
    #[arg(long, env = "EVENTFLOW_REDIS_CLIENT_CERT_FILE")]
    pub redis_client_cert_file: Option<PathBuf>,
    /// PEM private key of --redis-client-cert-file (needs it).
    #[arg(long, env = "EVENTFLOW_REDIS_CLIENT_KEY_FILE")]
    pub redis_client_key_file: Option<PathBuf>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long, env = "EVENTFLOW_KEY_PREFIX", default_value = "ef")]
    pub key_prefix: String,
    /// Timeout of one Redis command or connection attempt, in milliseconds.
    #[arg(long, env = "EVENTFLOW_REDIS_TIMEOUT_MS", default_value_t = 2000)]
    pub redis_timeout_ms: u64,
    /// Most dead letters one subscription keeps (0 = no cap); beyond it the oldest are removed
    /// and counted in `eventflow_dlq_overflow_total`. Every service that dead-letters (all of
    /// them: publisher and admin through retention, subscriber through delivery) should agree.
    #[arg(long, env = "EVENTFLOW_DLQ_MAX_LENGTH", default_value_t = eventflow_broker::DEFAULT_DLQ_MAX_LEN)]
    pub dlq_max_length: u64,
    /// Serve although Redis's maxmemory-policy is not noeviction. Without it the service refuses
    /// to start on such a Redis (and is not ready while one is behind it), because a full Redis
    /// under another policy silently deletes dedup keys or events. Logged as a warning.
    #[arg(long, env = "EVENTFLOW_ALLOW_EVICTION_POLICY", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_eviction_policy: bool,
}

impl RedisArgs {
    /// The broker these settings describe; fails with one line on a malformed URL or prefix
    /// or unusable TLS settings.
    pub fn broker(&self) -> Result<Broker, ServeError> {
        self.broker_with(|_| {})
    }

    /// Like [`RedisArgs::broker`], with `tune` applied to the options.
    pub fn broker_with(&self, tune: impl FnOnce(&mut BrokerOptions)) -> Result<Broker, ServeError> {
        // On a cluster every node has the first one's scheme (the broker checks).
        let redis_tls = redis_tls::load(
            self.redis_cluster_nodes.first().unwrap_or(&self.redis_url),
            self.redis_ca_file.as_deref(),
            self.redis_client_cert_file.as_deref(),
            self.redis_client_key_file.as_deref(),
        )
        .map_err(ServeError::Config)?;
        let mut options = BrokerOptions {
            redis_tls,
            prefix: self.key_prefix.clone(),
            command_timeout: Duration::from_millis(self.redis_timeout_ms.max(1)),
            dlq_max_len: self.dlq_max_length,
            allow_eviction_policy: self.allow_eviction_policy,
            ..BrokerOptions::default()
        };
        tune(&mut options);
        if self.redis_cluster_nodes.is_empty() {
            Broker::new(&self.redis_url, options)
        } else {
            Broker::cluster(&self.redis_cluster_nodes, options)
        }
        .map_err(|e| ServeError::Config(e.to_string()))
    }
}

/// Listen addresses of one service.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Where gRPC is served.
    pub grpc: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics: SocketAddr,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use clap::Parser;

    use super::*;

    /// The Redis settings alone, parsed like a service's command line.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        redis: RedisArgs,
    }

    fn parse(args: &[&str]) -> Result<RedisArgs, clap::Error> {
        Cli::try_parse_from([&["svc"], args].concat()).map(|cli| cli.redis)
    }

    #[test]
    fn cluster_nodes_are_a_comma_separated_list_that_replaces_the_url() {
        let args = parse(&["--redis-cluster-nodes", "redis://127.0.0.1:7000,redis://127.0.0.1:7001"]).unwrap();
        assert_eq!(args.redis_cluster_nodes, ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
        assert!(args.broker().is_ok(), "does not connect at start");
        let both = ["--redis-url", "redis://127.0.0.1:6379", "--redis-cluster-nodes", "redis://127.0.0.1:7000"];
        assert!(parse(&both).is_err(), "a URL and cluster nodes are refused together");
    }

    #[test]
    fn bad_cluster_nodes_fail_with_one_line_naming_the_setting() {
        for nodes in ["redis://127.0.0.1:7000,rediss://127.0.0.1:7001", "redis://127.0.0.1:7000,not a url"] {
            let args = parse(&["--redis-cluster-nodes", nodes]).unwrap();
            let Err(ServeError::Config(line)) = args.broker() else { panic!("{nodes} accepted") };
            assert!(line.contains("redis_cluster_nodes") && !line.contains('\n'), "{line}");
        }
    }
}
