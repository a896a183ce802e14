//! Settings every binary takes, as flags with `EVENTFLOW_*` environment fallbacks.

use std::{net::SocketAddr, time::Duration};

use eventflow_broker::{Broker, BrokerError, BrokerOptions};

/// Redis and key settings shared by every service.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL (redis://[user:password@]host:port[/db]; rediss:// for TLS).
    #[arg(long, env = "EVENTFLOW_REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long, env = "EVENTFLOW_KEY_PREFIX", default_value = "ef")]
    pub key_prefix: String,
    /// Timeout of one Redis command or connection attempt, in milliseconds.
    #[arg(long, env = "EVENTFLOW_REDIS_TIMEOUT_MS", default_value_t = 2000)]
    pub redis_timeout_ms: u64,
}

impl RedisArgs {
    /// The broker these settings describe; fails on a malformed URL or prefix.
    pub fn broker(&self) -> Result<Broker, BrokerError> {
        let options = BrokerOptions {
            prefix: self.key_prefix.clone(),
            command_timeout: Duration::from_millis(self.redis_timeout_ms.max(1)),
            ..BrokerOptions::default()
        };
        Broker::new(&self.redis_url, options)
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
