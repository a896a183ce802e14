//! Redis Cluster figures (issue 12): batch Publish and Subscribe + Acknowledge over several
//! streams at once, on one redis-server and on a local 3-master Redis Cluster, each with its own
//! publisher, subscriber and admin in-process. The streams are picked so that on the cluster
//! each master serves the same number of them; the per-node Redis CPU of each run shows where
//! the work went (on 2 cores the rates cannot scale: the cluster's three servers and the
//! services share the same cores; the CPU split shows how it would on separate machines).
//!
//! A stream is one key, so one stream never uses more than one master; the partitioned figure
//! publishes to and consumes from one stream of [`PARTITIONS`] partitions (one Subscribe call
//! over all of them), which spreads one stream over the masters.

use std::time::Instant;

use eventflow_e2e::{Kind, RedisCluster, RedisServer, Running, start, unique_prefix};
use futures_util::future::join_all;

use crate::{
    Args,
    consume::ef_consume,
    measure::{redis_conn, redis_cpu},
    per_second,
    publish::ef_publish,
    result::{self, Target},
    setup::{self, Services},
};

/// Streams published to and consumed at once (two per master on the cluster).
const STREAMS: usize = 6;

/// Partitions of the partitioned stream of the partitioned figure.
const PARTITIONS: i32 = 6;

/// Name of the partitioned stream.
const PARTITIONED: &str = "parted";

/// What the services of one figure run on.
enum Backend {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Backend {
    /// Node URLs (for CPU readings and command statistics).
    fn urls(&self) -> Vec<String> {
        match self {
            Self::Single(redis) => vec![redis.url()],
            Self::Cluster(cluster) => cluster.urls(),
        }
    }

    /// The services' `--redis-url` (empty on a cluster: see [`Backend::flags`]).
    fn url(&self) -> String {
        match self {
            Self::Single(redis) => redis.url(),
            Self::Cluster(_) => String::new(),
        }
    }

    /// The services' cluster flags (none on one redis-server).
    fn flags(&self) -> Vec<String> {
        match self {
            Self::Single(_) => Vec::new(),
            Self::Cluster(cluster) => vec!["--redis-cluster-nodes".into(), cluster.nodes_setting()],
        }
    }

    /// `STREAMS` stream names; on a cluster, as many on each master.
    fn streams(&self, prefix: &str) -> Vec<String> {
        let Self::Cluster(cluster) = self else {
            return (0..STREAMS).map(|i| format!("c{i}")).collect();
        };
        let per_master = STREAMS / 3;
        let mut taken = std::collections::BTreeMap::<usize, usize>::new();
        let mut names = Vec::new();
        for i in 0.. {
            let name = format!("c{i}");
            let owner = cluster.owner_of(&setup::stream_key(prefix, &name));
            let count = taken.entry(owner).or_default();
            if *count < per_master {
                *count += 1;
                names.push(name);
            }
            if names.len() == STREAMS {
                break;
            }
        }
        names
    }
}

/// The services over one backend.
struct Fleet {
    backend: Backend,
    services: Services,
    admin: Running,
    running: Vec<Running>,
    streams: Vec<String>,
}

impl Fleet {
    async fn start(backend: Backend, args: &Args) -> Self {
        let prefix = unique_prefix();
        let flags = backend.flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let url = backend.url();
        let publisher = start(Kind::Publisher, &url, &prefix, &flags).await;
        let subscriber = start(Kind::Subscriber, &url, &prefix, &flags).await;
        let admin = start(Kind::Admin, &url, &prefix, &flags).await;
        let services = Services {
            publisher: publisher.channel().await,
            subscriber: subscriber.channel().await,
            redis_url: backend.urls()[0].clone(),
        };
        let streams = backend.streams(&prefix);
        for stream in streams.iter().chain(std::iter::once(&"prime".to_string())) {
            setup::create_stream(admin.channel().await, stream, args.dedup).await;
            setup::create_subscription(admin.channel().await, stream, "ef", true).await;
        }
        setup::create_partitioned_stream(admin.channel().await, PARTITIONED, args.dedup, PARTITIONS).await;
        setup::create_subscription(admin.channel().await, PARTITIONED, "ef", true).await;
        setup::prime(&services).await;
        Self { backend, services, admin, running: vec![publisher, subscriber], streams }
    }

    /// Redis CPU seconds of every node.
    async fn cpu(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for url in self.backend.urls() {
            out.push(redis_cpu(&mut redis_conn(&url).await).await);
        }
        out
    }

    /// Publishes `n` events spread over the streams, then consumes them; prints both rates and
    /// where the Redis CPU went.
    async fn measure(&self, label: &str, n: usize, args: &Args) -> (f64, f64) {
        // Whole requests per stream: ef_publish rounds up to a multiple of the batch size.
        let each = (n / self.streams.len() / args.batch_size).max(1) * args.batch_size;
        let publish = |tag: &'static str| {
            join_all(self.streams.iter().map(move |s| {
                ef_publish(&self.services, s, tag, each, args.batch_size, args.batch_concurrency, args.event_bytes)
            }))
        };
        publish("warm").await;
        join_all(self.streams.iter().map(|s| ef_consume(&self.services, s, each, args.max_outstanding))).await;

        let (before, start) = (self.cpu().await, Instant::now());
        publish("run").await;
        let publish_rate = per_second(each * self.streams.len(), start.elapsed());
        let published_cpu = delta(&before, &self.cpu().await);
        let (before, start) = (self.cpu().await, Instant::now());
        join_all(self.streams.iter().map(|s| ef_consume(&self.services, s, each, args.max_outstanding))).await;
        let consume_rate = per_second(each * self.streams.len(), start.elapsed());
        let consumed_cpu = delta(&before, &self.cpu().await);
        let events = (each * self.streams.len()) as f64;
        let per_node =
            |cpu: &[f64]| cpu.iter().map(|s| format!("{:.1}", s * 1e6 / events)).collect::<Vec<_>>().join(" / ");
        println!(
            "cluster {label}: batch Publish {publish_rate:.0} ev/s over {} streams (redis CPU per node {} µs/ev); \
             Subscribe+Ack {consume_rate:.0} ev/s (redis CPU per node {} µs/ev); every node AOF appendfsync always",
            self.streams.len(),
            per_node(&published_cpu),
            per_node(&consumed_cpu)
        );
        (publish_rate, consume_rate)
    }

    /// Publishes `n` events to the partitioned stream, then consumes them with one Subscribe
    /// call; prints both rates and where the Redis CPU went.
    async fn measure_partitioned(&self, label: &str, n: usize, args: &Args) -> (f64, f64) {
        let publish = |tag: &'static str| {
            ef_publish(&self.services, PARTITIONED, tag, n, args.batch_size, args.batch_concurrency, args.event_bytes)
        };
        publish("warm").await;
        ef_consume(&self.services, PARTITIONED, n, args.max_outstanding).await;
        let (before, start) = (self.cpu().await, Instant::now());
        publish("run").await;
        let publish_rate = per_second(n, start.elapsed());
        let published_cpu = delta(&before, &self.cpu().await);
        let (before, start) = (self.cpu().await, Instant::now());
        ef_consume(&self.services, PARTITIONED, n, args.max_outstanding).await;
        let consume_rate = per_second(n, start.elapsed());
        let consumed_cpu = delta(&before, &self.cpu().await);
        let per_node =
            |cpu: &[f64]| cpu.iter().map(|s| format!("{:.1}", s * 1e6 / n as f64)).collect::<Vec<_>>().join(" / ");
        println!(
            "cluster {label}: one stream of {PARTITIONS} partitions: batch Publish {publish_rate:.0} ev/s (redis CPU \
             per node {} µs/ev); one Subscribe+Ack call {consume_rate:.0} ev/s (redis CPU per node {} µs/ev)",
            per_node(&published_cpu),
            per_node(&consumed_cpu)
        );
        (publish_rate, consume_rate)
    }

    async fn stop(self) {
        for running in self.running {
            running.stop().await;
        }
        self.admin.stop().await;
        drop(self.backend);
    }
}

/// Each node's CPU seconds between two readings.
fn delta(before: &[f64], after: &[f64]) -> Vec<f64> {
    before.iter().zip(after).map(|(b, a)| a - b).collect()
}

/// The figures on one redis-server and on a 3-master cluster, with their `RESULT` lines.
pub async fn run(args: &Args) {
    let n = (args.batch_events / args.batch_size).max(1) * args.batch_size;
    let single = Fleet::start(Backend::Single(RedisServer::start()), args).await;
    let (single_publish, single_consume) = single.measure("1 master (one redis-server)", n, args).await;
    let (single_parted_publish, single_parted_consume) =
        single.measure_partitioned("1 master (one redis-server)", n, args).await;
    single.stop().await;
    let cluster = Fleet::start(Backend::Cluster(RedisCluster::start(3, 0)), args).await;
    let (cluster_publish, cluster_consume) = cluster.measure("3 masters (Redis Cluster)", n, args).await;
    let (parted_publish, parted_consume) = cluster.measure_partitioned("3 masters (Redis Cluster)", n, args).await;
    cluster.stop().await;
    result::print("partitioned_publish", parted_publish, Some(("one_redis", single_parted_publish)), Target::None);
    result::print(
        "partitioned_subscribe_ack",
        parted_consume,
        Some(("one_redis", single_parted_consume)),
        Target::None,
    );
    result::print("cluster_publish", cluster_publish, Some(("one_redis", single_publish)), Target::None);
    result::print("cluster_subscribe_ack", cluster_consume, Some(("one_redis", single_consume)), Target::None);
}
