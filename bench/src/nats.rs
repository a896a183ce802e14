//! The JetStream peer: the bench's own `nats-server -js` and the three JetStream figures beside
//! eventflow's, with the same payload size and parallelism.
//!
//! [`NatsServer::start`] runs `nats-server -js` (Debian package `nats-server`; found on PATH or
//! at `/usr/sbin/nats-server`) on a free 127.0.0.1 port with file storage in a temporary
//! directory, waits until JetStream answers, and kills the server and removes the directory
//! when dropped: the machine's own NATS is never touched. Each figure uses a stream of its own
//! (file storage, one subject):
//! * [`async_publish`]: batches of publishes whose acks are awaited together, like batch Publish;
//! * [`publish_ack`]: concurrent callers each awaiting the ack of one publish, like unary Publish;
//! * [`pull_consume`]: a durable pull consumer with explicit acks, fetching batches and acking
//!   every message, like Subscribe + Acknowledge.
//!
//! With dedup on (the eventflow default) every publish carries a unique `Nats-Msg-Id`, so
//! JetStream does its duplicate check too. Cost lines report nats-server's CPU and this
//! process's per event.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self, Context,
    consumer::{AckPolicy, pull},
    message::PublishMessage,
    stream::{Config as StreamConfig, StorageType},
};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;

use crate::{measure::cpu_of, per_second, setup::payload};

/// How long nats-server may take to start answering.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The bench's own nats-server; killed and its store removed on drop.
pub struct NatsServer {
    /// The process.
    child: Child,
    /// Its JetStream store directory.
    dir: PathBuf,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}

impl NatsServer {
    /// Starts `nats-server -js` on a free port with a fresh store and waits until JetStream
    /// answers.
    pub async fn start() -> Self {
        let port = eventflow_testkit::free_port();
        let dir = std::env::temp_dir().join(format!("eventflow-bench-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nats-server ({e}): run scripts/ensure-deps.sh nats"));
        let server = Self { child, dir, url: format!("nats://127.0.0.1:{port}") };
        server.wait_ready().await;
        server
    }

    /// Polls until a client connects and JetStream answers its API's INFO request (raw: the
    /// parsed account of this client needs fields nats-server 2.9 does not send), or panics
    /// after [`READY_DEADLINE`].
    async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last: String;
        loop {
            match async_nats::connect(&self.url).await {
                Ok(client) => match client.request("$JS.API.INFO", bytes::Bytes::new()).await {
                    Ok(reply) if !String::from_utf8_lossy(&reply.payload).contains("\"error\"") => return,
                    Ok(reply) => last = String::from_utf8_lossy(&reply.payload).into_owned(),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            assert!(
                Instant::now() < deadline,
                "nats-server on {} not ready after {READY_DEADLINE:?}: {last}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A JetStream context on a new connection.
    pub async fn jetstream(&self) -> Context {
        jetstream::new(async_nats::connect(&self.url).await.unwrap())
    }

    /// `nats-server <version>`, for the setup line.
    pub fn version() -> String {
        let out = Command::new(binary()).arg("--version").output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    }

    /// The server's pid, for its CPU.
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nats-server` from PATH, else the Debian package's `/usr/sbin/nats-server` (not on a
/// non-root PATH).
fn binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/nats-server");
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("nats-server").is_file()));
    if on_path || !sbin.is_file() { PathBuf::from("nats-server") } else { sbin.to_path_buf() }
}

/// One timed JetStream run: its rate and what it cost.
pub struct PeerRun {
    /// Messages per second.
    pub rate: f64,
    /// nats-server CPU µs per message.
    nats_cpu_us: f64,
    /// This process's CPU µs per message.
    process_cpu_us: f64,
}

impl PeerRun {
    /// "nats-server CPU x µs/ev, bench process CPU y µs/ev".
    pub fn describe(&self) -> String {
        format!("nats-server CPU {:.1} µs/ev, bench process CPU {:.1} µs/ev", self.nats_cpu_us, self.process_cpu_us)
    }
}

/// CPU readings at the start of a JetStream run.
struct Clock {
    nats: f64,
    process: f64,
    start: Instant,
}

impl Clock {
    fn start(server: &NatsServer) -> Self {
        Self { nats: cpu_of(&server.pid()), process: cpu_of("self"), start: Instant::now() }
    }

    fn finish(self, server: &NatsServer, events: usize) -> PeerRun {
        let rate = per_second(events, self.start.elapsed());
        let per = |secs: f64| secs * 1e6 / events.max(1) as f64;
        PeerRun {
            rate,
            nats_cpu_us: per(cpu_of(&server.pid()) - self.nats),
            process_cpu_us: per(cpu_of("self") - self.process),
        }
    }
}

/// What every JetStream publishing run shares.
#[derive(Clone)]
pub struct Plan {
    /// The stream (and its one subject).
    pub stream: String,
    /// Bytes of payload per message.
    pub bytes: usize,
    /// Whether each message carries a unique `Nats-Msg-Id` (JetStream's dedup).
    pub dedup: bool,
}

impl Plan {
    /// The same plan on a stream of round `round`'s own (`<stream><round>`).
    pub fn round(&self, round: usize) -> Self {
        Self { stream: format!("{}{round}", self.stream), ..self.clone() }
    }
}

/// Creates `stream` with file storage and the one subject of the same name.
pub async fn create_stream(js: &Context, stream: &str) {
    let config = StreamConfig {
        name: stream.into(),
        subjects: vec![stream.into()],
        storage: StorageType::File,
        ..Default::default()
    };
    js.create_stream(config).await.unwrap();
}

/// Publishes `n` messages from `workers` tasks, each publishing `size` messages and then
/// awaiting their `size` acks, until the shared batch counter runs out; `tag` makes the message
/// ids unique per run.
pub async fn async_publish(
    server: &NatsServer,
    plan: &Plan,
    tag: &str,
    n: usize,
    size: usize,
    workers: usize,
) -> PeerRun {
    let batches = n.div_ceil(size);
    let next = Arc::new(AtomicUsize::new(0));
    let mut contexts = Vec::with_capacity(workers);
    for _ in 0..workers {
        contexts.push(server.jetstream().await);
    }
    let clock = Clock::start(server);
    let mut tasks = JoinSet::new();
    for js in contexts {
        let (next, plan, tag) = (next.clone(), plan.clone(), tag.to_string());
        tasks.spawn(async move {
            let data = bytes::Bytes::from(payload(plan.bytes));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= batches {
                    break;
                }
                let mut acks = Vec::with_capacity(size);
                for j in 0..size {
                    acks.push(js.send_publish(plan.stream.clone(), message(&plan, &data, &tag, i, j)).await.unwrap());
                }
                for ack in acks {
                    ack.await.unwrap();
                }
            }
        });
    }
    tasks.join_all().await;
    clock.finish(server, batches * size)
}

/// Publishes `n` messages from `callers` tasks on one connection, each awaiting the ack of its
/// publish before the next.
pub async fn publish_ack(server: &NatsServer, plan: &Plan, tag: &str, n: usize, callers: usize) -> PeerRun {
    let next = Arc::new(AtomicUsize::new(0));
    let js = server.jetstream().await;
    let clock = Clock::start(server);
    let mut tasks = JoinSet::new();
    for _ in 0..callers {
        let (next, plan, tag, js) = (next.clone(), plan.clone(), tag.to_string(), js.clone());
        tasks.spawn(async move {
            let data = bytes::Bytes::from(payload(plan.bytes));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let ack = js.send_publish(plan.stream.clone(), message(&plan, &data, &tag, i, 0)).await.unwrap();
                ack.await.unwrap();
            }
        });
    }
    tasks.join_all().await;
    clock.finish(server, n)
}

/// Consumes `n` messages of `stream` through durable pull consumer `durable` (created here,
/// explicit acks, from the start of the stream or where the durable left off), fetching
/// batches of up to `fetch` and acking every message; the clock stops when the connection has
/// flushed the last ack.
pub async fn pull_consume(server: &NatsServer, stream: &str, durable: &str, n: usize, fetch: usize) -> PeerRun {
    let js = server.jetstream().await;
    let config = pull::Config {
        durable_name: Some(durable.into()),
        ack_policy: AckPolicy::Explicit,
        max_ack_pending: i64::try_from(fetch * 10).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let consumer = js.get_stream(stream).await.unwrap().get_or_create_consumer(durable, config).await.unwrap();
    let clock = Clock::start(server);
    let mut received = 0;
    while received < n {
        let want = fetch.min(n - received);
        let mut batch = consumer.fetch().max_messages(want).messages().await.unwrap();
        while let Some(message) = batch.next().await {
            message.unwrap().ack().await.unwrap();
            received += 1;
        }
    }
    js.client().flush().await.unwrap();
    clock.finish(server, n)
}

/// Message `j` of batch `i`: the payload, and with dedup a unique id.
fn message(plan: &Plan, data: &bytes::Bytes, tag: &str, i: usize, j: usize) -> PublishMessage {
    let publish = PublishMessage::build().payload(data.clone());
    if plan.dedup { publish.message_id(format!("{tag}-{i}-{j}")) } else { publish }
}

/// The peer of batch Publish: a warm-up, then `n` messages in batches of `size` from `workers`
/// tasks, on a stream of its own.
pub async fn batch(server: &NatsServer, plan: &Plan, n: usize, size: usize, workers: usize) -> PeerRun {
    create_stream(&server.jetstream().await, &plan.stream).await;
    async_publish(server, plan, "w", crate::warmup(n), size, workers).await;
    async_publish(server, plan, "m", n, size, workers).await
}

/// The peer of unary Publish: a warm-up, then `n` publishes each awaiting its ack from
/// `callers` tasks, on a stream of its own.
pub async fn unary(server: &NatsServer, plan: &Plan, n: usize, callers: usize) -> PeerRun {
    create_stream(&server.jetstream().await, &plan.stream).await;
    publish_ack(server, plan, "w", crate::warmup(n), callers).await;
    publish_ack(server, plan, "m", n, callers).await
}

/// The peer of Subscribe + Acknowledge: fills a stream of its own with a warm-up's and `n`
/// messages (not timed), then drains the warm-up and `n` through one durable pull consumer.
pub async fn subscribe(server: &NatsServer, plan: &Plan, n: usize, fetch: usize) -> PeerRun {
    create_stream(&server.jetstream().await, &plan.stream).await;
    async_publish(server, plan, "p", crate::warmup(n) + n, 100, 4).await;
    pull_consume(server, &plan.stream, "bench", crate::warmup(n), fetch).await;
    pull_consume(server, &plan.stream, "bench", n, fetch).await
}
