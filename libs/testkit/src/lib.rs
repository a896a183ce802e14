//! Test harness: starts a real `redis-server` on a free port with AOF in its own directory, so
//! a test can stop and restart it and keep its data; gives each test a unique key prefix.
//! Readiness is awaited by polling PING with a deadline, never by sleeping a fixed time.
//! [`cluster::RedisCluster`] starts a local Redis Cluster of such servers;
//! [`postgres::PostgresServer`] starts a real PostgreSQL server the same way.
//!
//! A server started with [`RedisServer::start_tls`] listens only on a TLS port (`--port 0
//! --tls-port`), with certificates from [`certs`] issued for the test; the harness's own PING
//! and [`RedisServer::raw`] then speak TLS too (rustls, presenting the test's client
//! certificate, so they also work with `--tls-auth-clients yes`).
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod certs;
pub mod cluster;
pub mod postgres;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

/// How long a redis-server may take to answer PING after start.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

/// A free TCP port on 127.0.0.1 (bound and released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Starts a server on a free port: `spawn(port)` starts it and waits until it serves, or
/// says why not; a start that fails (the port was taken meanwhile, ...) is retried on another
/// port, three times, then the test panics naming `what`. Returns the port it runs on.
pub fn start_on_free_port(what: &str, mut spawn: impl FnMut(u16) -> Result<(), String>) -> u16 {
    let mut attempt = 0;
    loop {
        let port = free_port();
        match spawn(port) {
            Ok(()) => return port,
            Err(e) if attempt < 3 => eprintln!("{what} start failed ({e}); retrying"),
            Err(e) => panic!("{what} did not start: {e}"),
        }
        attempt += 1;
    }
}

/// How a process started by the harness came up ([`await_start`]).
pub(crate) enum Start {
    /// It answered `ready`.
    Ready,
    /// It exited first, with this status.
    Exited(ExitStatus),
    /// It neither answered nor exited within the deadline; it still runs.
    TimedOut,
}

/// Polls every `poll` until `ready` says the just-spawned `child` serves, it exits, or
/// `deadline` passes: the one start-up wait of every server the harness runs.
pub(crate) fn await_start(
    child: &mut Child,
    deadline: Duration,
    poll: Duration,
    mut ready: impl FnMut() -> bool,
) -> Start {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Start::Exited(status);
        }
        if ready() {
            return Start::Ready;
        }
        std::thread::sleep(poll);
    }
    Start::TimedOut
}

/// Sends `signal` (e.g. `-TERM`) to the process in `child`, if any, and waits for its exit.
pub(crate) fn signal_and_wait(child: &mut Option<Child>, signal: &str) {
    if let Some(mut child) = child.take() {
        let _ = Command::new("kill").arg(signal).arg(child.id().to_string()).status();
        let _ = child.wait();
    }
}

/// Polls `check` every 10 ms until it returns `Some`, or panics with `what` after `deadline`.
pub fn wait_until<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A redis-server process owned by one test.
#[derive(Debug)]
pub struct RedisServer {
    /// Its port on 127.0.0.1; kept across restarts so clients reconnect to the same URL.
    port: u16,
    /// Its working directory, holding the AOF; kept across restarts, removed on drop.
    dir: PathBuf,
    /// The running process, if any.
    child: Option<Child>,
    /// Flags passed to every (re)start: persistence, and cluster mode for a cluster node.
    persistence: Vec<String>,
    /// The TLS set-up when it listens on a TLS port only; `None` = plain TCP.
    tls: Option<TlsSetup>,
}

/// The PEM files of a TLS redis-server and its clients (in the server's directory).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that issued the server and client certificates: what clients verify Redis with.
    pub ca: PathBuf,
    /// The server's certificate (for 127.0.0.1 and localhost).
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate the CA issued (what `--tls-auth-clients yes` requires).
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
}

/// How a TLS redis-server is set up and how the harness talks to it.
#[derive(Debug)]
struct TlsSetup {
    /// The certificate files.
    files: TlsFiles,
    /// Whether redis-server requires client certificates (`--tls-auth-clients`).
    auth_clients: bool,
    /// The harness's own client configuration (trusts the CA, presents the client certificate).
    client: Arc<rustls::ClientConfig>,
}

impl TlsSetup {
    /// Issues a CA, a server and a client certificate into `dir`.
    fn new(dir: &Path, auth_clients: bool) -> Self {
        std::fs::create_dir_all(dir).expect("create tls dir");
        let ca = certs::Ca::new("eventflow test redis ca");
        let (server, client) = (ca.server(), ca.client("eventflow test redis client"));
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("redis.crt"),
            server_key: dir.join("redis.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        };
        for (path, pem) in [
            (&files.ca, ca.pem()),
            (&files.server_cert, server.cert_pem),
            (&files.server_key, server.key_pem),
            (&files.client_cert, client.cert_pem.clone()),
            (&files.client_key, client.key_pem.clone()),
        ] {
            std::fs::write(path, pem).expect("write tls file");
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("ca pem")).expect("ca");
        let chain = vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).expect("client cert pem")];
        let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).expect("client key pem");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client certificate");
        Self { files, auth_clients, client: Arc::new(client) }
    }

    /// The redis-server flags of this set-up.
    fn args(&self) -> Vec<String> {
        let f = &self.files;
        let mut args = Vec::new();
        for (flag, path) in
            [("--tls-cert-file", &f.server_cert), ("--tls-key-file", &f.server_key), ("--tls-ca-cert-file", &f.ca)]
        {
            args.extend([flag.to_string(), path.display().to_string()]);
        }
        args.extend(["--tls-auth-clients".to_string(), if self.auth_clients { "yes" } else { "no" }.to_string()]);
        args
    }
}

/// A byte stream to redis-server: plain TCP or TLS over it.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

impl RedisServer {
    /// Starts a redis-server with AOF (`appendfsync always`, so a restart keeps every
    /// acknowledged write) on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Like [`RedisServer::start`], but with `persistence` flags instead of `appendfsync
    /// always`, e.g. `["--appendonly", "no"]` or `["--appendonly", "yes", "--appendfsync",
    /// "everysec"]` (benchmarks use the durability a deployment runs with, not the tests'), or
    /// with cluster flags ([`cluster::RedisCluster`]).
    pub fn start_with(persistence: &[&str]) -> Self {
        Self::start_listening(persistence, None)
    }

    /// Like [`RedisServer::start`], but listening only on a TLS port with certificates issued
    /// for this server ([`RedisServer::tls_files`]); with `auth_clients` it also requires a
    /// client certificate of the same CA (`--tls-auth-clients yes`). [`RedisServer::url`] is
    /// then `rediss://`.
    pub fn start_tls(auth_clients: bool) -> Self {
        Self::start_listening(&["--appendonly", "yes", "--appendfsync", "always"], Some(auth_clients))
    }

    /// Starts it with `persistence` flags, over TLS when `tls` is set (whether clients need
    /// certificates).
    fn start_listening(persistence: &[&str], tls: Option<bool>) -> Self {
        let persistence = persistence.iter().map(|s| (*s).to_string()).collect();
        let dir = std::env::temp_dir().join(format!("eventflow-redis-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        let tls = tls.map(|auth_clients| TlsSetup::new(&dir.join("tls"), auth_clients));
        let mut server = Self { port: 0, dir, child: None, persistence, tls };
        start_on_free_port("redis-server", |port| {
            server.port = port;
            server.spawn()
        });
        server
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://127.0.0.1:<port>` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The certificate files of a TLS server (`None` for plain TCP).
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|tls| &tls.files)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it gracefully (SIGTERM: Redis flushes the AOF and exits) and waits for the exit.
    pub fn stop(&mut self) {
        signal_and_wait(&mut self.child, "-TERM");
    }

    /// Kills it (SIGKILL: no AOF flush, like a crash) and waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether its process was started and has not been stopped or killed by the harness.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again on the same port and directory (reloading the AOF).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("redis-server did not restart: {e}");
        }
    }

    /// Runs one command with redis-cli semantics kept minimal: sends an inline command and
    /// returns the raw reply. For test assertions on server state.
    pub fn raw(&self, inline: &str) -> String {
        let mut conn = self.connect(Duration::from_secs(5)).expect("connect to redis");
        conn.write_all(format!("{inline}\r\n").as_bytes()).expect("write");
        let mut buf = [0u8; 65536];
        let n = conn.read(&mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// A connection to it (TLS for a TLS server) whose reads time out after `timeout`.
    fn connect(&self, timeout: Duration) -> std::io::Result<Box<dyn Conn>> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(timeout))?;
        let Some(tls) = &self.tls else { return Ok(Box::new(tcp)) };
        let name = ServerName::try_from("127.0.0.1").map_err(std::io::Error::other)?;
        let session = rustls::ClientConnection::new(tls.client.clone(), name).map_err(std::io::Error::other)?;
        Ok(Box::new(rustls::StreamOwned::new(session, tcp)))
    }

    /// The redis-server command line of every (re)start: its listener, persistence and directory,
    /// and lazy freeing of expired keys (as docs/operations.md asks of every Redis: PUBLISH's
    /// dedup buckets are big hashes).
    fn command(&self) -> Command {
        let mut command = Command::new("redis-server");
        let port = self.port.to_string();
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(tls) => command.args(["--port", "0", "--tls-port", &port]).args(tls.args()),
        };
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--lazyfree-lazy-expire", "yes"])
            .args(&self.persistence)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = self
            .command()
            .spawn()
            .map_err(|e| format!("cannot run redis-server ({e}); install it: apt-get install redis-server"))?;
        match await_start(&mut child, START_DEADLINE, Duration::from_millis(10), || self.ping()) {
            Start::Ready => {
                self.child = Some(child);
                Ok(())
            }
            Start::Exited(status) => Err(format!("redis-server exited with {status}")),
            Start::TimedOut => {
                signal_and_wait(&mut Some(child), "-TERM");
                Err("redis-server did not answer PING in time".into())
            }
        }
    }

    /// Whether it answers PING with a reply that starts with one of `replies`.
    fn answers(&self, replies: &[&[u8]]) -> bool {
        let Ok(mut conn) = self.connect(Duration::from_millis(500)) else { return false };
        let mut buf = [0u8; 64];
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read(&mut buf).is_ok_and(|n| replies.iter().any(|r| buf[..n].starts_with(r)))
    }

    fn ping(&self) -> bool {
        self.answers(&[b"+PONG"])
    }
}

impl RedisServer {
    /// Restarts it on the same port and directory (reloading the AOF) with `extra` flags for
    /// this run only, e.g. `["--key-load-delay", "3000"]` to make loading slow. Returns as soon
    /// as it accepts commands — answering PING with PONG or with LOADING — so a test can watch
    /// it load.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        let child = self.command().args(extra).spawn().expect("run redis-server");
        self.child = Some(child);
        wait_until("redis-server accepting commands", START_DEADLINE, || {
            self.answers(&[b"+PONG", b"-LOADING"]).then_some(())
        });
    }

    /// The value of `field` in `INFO <section>` (e.g. `info("persistence", "loading")`).
    pub fn info(&self, section: &str, field: &str) -> Option<String> {
        let reply = self.raw(&format!("INFO {section}"));
        let prefix = format!("{field}:");
        reply.lines().find_map(|line| line.strip_prefix(&prefix)).map(|v| v.trim().to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
