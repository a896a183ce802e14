//! The processes under test: one redis-server (AOF, `appendfsync always`) and the real release
//! binaries of the four services as child processes on fixed free ports, so a SIGKILLed service
//! restarts on the same address and clients reconnect to it.
//!
//! Every child is spawned with `kill_on_drop`, and the redis-server is owned by
//! [`RedisServer`], which kills it on drop: whatever ends the run (return, panic, ctrl-c in
//! `main`), no process outlives it. Signals the standard library cannot send (SIGSTOP, SIGCONT)
//! go through `kill(1)`, as in the test harness. Readiness is the service's grpc.health.v1
//! status, polled with a deadline; never a fixed sleep.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use eventflow_e2e::{Kind, RedisServer};
use tokio::{process::Child, sync::Mutex};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// How long a (re)started service may take to report SERVING.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (bound and released at once).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("bind 127.0.0.1:0: {e}"))
}

/// A lazily connecting channel to `addr` that reconnects after the server restarts, with
/// HTTP/2 keepalive so a dead peer is noticed within seconds rather than never.
pub fn channel(addr: SocketAddr) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| format!("endpoint {addr}: {e}"))?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// Sends `signal` (e.g. `STOP`, `CONT`) to `pid` with `kill(1)`.
pub fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill -{signal} {pid}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("kill -{signal} {pid}: {status}")) }
}

/// The larger of VmHWM and VmRSS of `pid`, in KiB (None when the process is gone).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .filter(|l| l.starts_with("VmHWM:") || l.starts_with("VmRSS:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .max()
}

/// What every service of a run shares.
#[derive(Clone, Copy)]
struct Common<'a> {
    /// Where the release binaries are.
    bin_dir: &'a Path,
    /// The run's redis-server.
    redis_url: &'a str,
    /// The run's key prefix.
    prefix: &'a str,
    /// Where service logs go.
    log_dir: &'a Path,
}

/// One service binary, (re)startable on its fixed ports.
pub struct Service {
    /// Name in the report and the log file, e.g. `subscriber-2`.
    pub name: String,
    /// Which service, for its health service name.
    kind: Kind,
    /// The release binary.
    binary: PathBuf,
    /// Its command line (same on every start, so it comes back on the same ports).
    args: Vec<String>,
    /// Its gRPC address: what clients connect to across restarts.
    pub addr: SocketAddr,
    /// Where its stdout and stderr go, appended across restarts, for evidence after a failure.
    log: PathBuf,
    /// The running process, if any; a lock so a kill and a restart never interleave.
    child: Mutex<Option<Child>>,
    /// Pid of the running process (0 when none), read by the RSS sampler (and the scale
    /// figures' CPU readings) without the lock.
    pub pid: AtomicU32,
    /// Times it was started (1 + restarts).
    pub starts: AtomicU32,
    /// Largest VmHWM/VmRSS seen over all its processes, KiB: VmHWM resets when a killed process
    /// is replaced, so the peak is the maximum over samples, not the last one.
    pub peak_rss_kib: AtomicU64,
}

impl Service {
    /// A service of `kind` (binary `eventflow-<binary>`) set up by `common`, on two fresh
    /// ports, with `extra` flags; not started yet.
    fn new(common: &Common<'_>, name: &str, kind: Kind, binary: &str, extra: &[&str]) -> Result<Self, String> {
        let Common { bin_dir, redis_url, prefix, log_dir } = *common;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut args: Vec<String> = [
            "--redis-url",
            redis_url,
            "--key-prefix",
            prefix,
            "--grpc-addr",
            &addr.to_string(),
            "--metrics-addr",
            &metrics.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_string()));
        Ok(Self {
            name: name.into(),
            kind,
            binary: bin_dir.join(format!("eventflow-{binary}")),
            args,
            addr,
            log: log_dir.join(format!("{name}.log")),
            child: Mutex::new(None),
            pid: AtomicU32::new(0),
            starts: AtomicU32::new(0),
            peak_rss_kib: AtomicU64::new(0),
        })
    }

    /// Starts the process and waits until its health reports SERVING.
    pub async fn start(&self) -> Result<(), String> {
        let mut slot = self.child.lock().await;
        if slot.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("log {}: {e}", self.log.display()))?;
        let mut command = tokio::process::Command::new(&self.binary);
        command.args(&self.args).stdin(Stdio::null()).stdout(log).stderr(log_err).kill_on_drop(true);
        // The services read EVENTFLOW_* and OTEL_* from the environment: the caller's settings
        // (auth tokens, a collector) must not change what is being tested.
        for (key, _) in std::env::vars_os() {
            let key_str = key.to_string_lossy();
            if key_str.starts_with("EVENTFLOW_") || key_str.starts_with("OTEL_") {
                command.env_remove(&key);
            }
        }
        command.env("RUST_LOG", "warn");
        let child = command.spawn().map_err(|e| {
            format!("cannot run {} ({e}); build it first: cargo build --release --bins", self.binary.display())
        })?;
        self.pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
        self.starts.fetch_add(1, Ordering::Relaxed);
        *slot = Some(child);
        let ready = self.wait_ready(&mut slot).await;
        if ready.is_err() {
            // Not a half-started service left behind: a retry starts from scratch.
            if let Some(mut child) = slot.take() {
                let _ = child.kill().await;
            }
            self.pid.store(0, Ordering::Relaxed);
        }
        ready
    }

    /// Polls grpc.health.v1 for the service's own name until SERVING, failing early when the
    /// process exits and after [`READY_DEADLINE`].
    async fn wait_ready(&self, slot: &mut Option<Child>) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READY_DEADLINE;
        let mut client = HealthClient::new(channel(self.addr)?);
        loop {
            if let Some(child) = slot.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("{} exited during start-up ({status}); see {}", self.name, self.log.display()));
            }
            let mut request = tonic::Request::new(HealthCheckRequest { service: self.kind.service_name().into() });
            request.set_timeout(Duration::from_secs(1));
            if let Ok(reply) = client.check(request).await
                && reply.into_inner().status == ServingStatus::Serving as i32
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("{} not SERVING after {READY_DEADLINE:?}; see {}", self.name, self.log.display()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the process (no graceful shutdown: in-flight calls and held deliveries are cut
    /// off) and reaps it.
    pub async fn kill(&self) {
        let mut slot = self.child.lock().await;
        if let Some(mut child) = slot.take() {
            let _ = child.kill().await;
        }
        self.pid.store(0, Ordering::Relaxed);
    }

    /// Samples the process's memory into [`Service::peak_rss_kib`].
    pub fn sample_rss(&self) {
        let pid = self.pid.load(Ordering::Relaxed);
        if pid != 0
            && let Some(kib) = rss_kib(pid)
        {
            self.peak_rss_kib.fetch_max(kib, Ordering::Relaxed);
        }
    }

    /// Peak RSS in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    /// Times it was restarted (after a SIGKILL).
    pub fn restarts(&self) -> u32 {
        self.starts.load(Ordering::Relaxed).saturating_sub(1)
    }
}

/// redis-server and the services of one soak run.
pub struct Fleet {
    /// The redis-server; dropping it kills it and removes its directory (AOF included).
    pub redis: RedisServer,
    /// redis-server's pid, for SIGSTOP / SIGCONT.
    pub redis_pid: u32,
    /// Largest RSS of redis-server seen, KiB.
    pub redis_peak_rss_kib: AtomicU64,
    /// The key prefix every service uses.
    pub prefix: String,
    /// The publisher (SIGKILLed and restarted by the chaos).
    pub publisher: Service,
    /// Subscriber replicas (one at a time is SIGKILLed and restarted by the chaos).
    pub subscribers: Vec<Service>,
    /// The admin service (never killed: only used to set up and audit).
    pub admin: Service,
    /// The dead-letter service (never killed: only used to audit).
    pub dlq: Service,
}

impl Fleet {
    /// Starts redis-server (AOF, fsync on every write) and the services over it on free ports,
    /// each ready before this returns.
    pub async fn start(bin_dir: &Path, log_dir: &Path, subscriber_replicas: usize) -> Result<Self, String> {
        // Blocking start (it polls PING); done once, before any load.
        let redis = tokio::task::spawn_blocking(RedisServer::start).await.map_err(|e| format!("redis-server: {e}"))?;
        Self::start_on(redis, bin_dir, log_dir, subscriber_replicas, &[]).await
    }

    /// Like [`Fleet::start`], over a redis-server already started (with other persistence),
    /// with `subscriber_flags` added to every subscriber replica's command line.
    pub async fn start_on(
        redis: RedisServer,
        bin_dir: &Path,
        log_dir: &Path,
        subscriber_replicas: usize,
        subscriber_flags: &[&str],
    ) -> Result<Self, String> {
        let redis_pid = redis_pid(&redis.url()).await?;
        let prefix = format!("soak{}", eventflow_e2e::unique_prefix());
        let url = redis.url();
        let common = Common { bin_dir, redis_url: &url, prefix: &prefix, log_dir };
        let publisher = Service::new(&common, "publisher", Kind::Publisher, "publisher", &[])?;
        let subscribers = (1..=subscriber_replicas.max(1))
            .map(|i| {
                // One ack key for every replica, so a settlement may reach any of them.
                let mut flags = vec!["--ack-key-file", eventflow_e2e::shared_ack_key_file()];
                flags.extend_from_slice(subscriber_flags);
                Service::new(&common, &format!("subscriber-{i}"), Kind::Subscriber, "subscriber", &flags)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let admin = Service::new(&common, "admin", Kind::Admin, "admin", &[])?;
        let dlq = Service::new(&common, "dlq", Kind::Dlq, "dlq", &[])?;
        let fleet = Self {
            redis,
            redis_pid,
            redis_peak_rss_kib: AtomicU64::new(0),
            prefix,
            publisher,
            subscribers,
            admin,
            dlq,
        };
        for service in fleet.services() {
            service.start().await?;
        }
        Ok(fleet)
    }

    /// Every service process.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        std::iter::once(&self.publisher).chain(&self.subscribers).chain([&self.admin, &self.dlq])
    }

    /// Samples every process's memory four times a second until `stop`, and once more after.
    pub async fn sample_rss_until(self: std::sync::Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        while !stop.is_cancelled() {
            self.sample_rss();
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        self.sample_rss();
    }

    /// Samples the memory of every process (services and redis-server).
    pub fn sample_rss(&self) {
        for service in self.services() {
            service.sample_rss();
        }
        if let Some(kib) = rss_kib(self.redis_pid) {
            self.redis_peak_rss_kib.fetch_max(kib, Ordering::Relaxed);
        }
    }

    /// Largest RSS of any subscriber replica, MiB.
    pub fn subscriber_peak_rss_mib(&self) -> f64 {
        self.subscribers.iter().map(Service::peak_rss_mib).fold(0.0, f64::max)
    }

    /// SIGKILLs every service (the redis-server goes when the fleet drops).
    pub async fn kill_all(&self) {
        for service in self.services() {
            service.kill().await;
        }
    }
}

/// redis-server's pid, from `INFO server`.
async fn redis_pid(url: &str) -> Result<u32, String> {
    let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| format!("redis connect: {e}"))?;
    let info: String =
        redis::cmd("INFO").arg("server").query_async(&mut conn).await.map_err(|e| format!("INFO server: {e}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| "INFO server has no process_id".to_string())
}
