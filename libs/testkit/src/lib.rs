//! Test harness: starts a real `redis-server` on a free port with AOF in its own directory, so
//! a test can stop and restart it and keep its data; gives each test a unique key prefix.
//! Readiness is awaited by polling PING with a deadline, never by sleeping a fixed time.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

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
    /// Persistence flags passed to every (re)start.
    persistence: Vec<String>,
}

impl RedisServer {
    /// Starts a redis-server with AOF (`appendfsync always`, so a restart keeps every
    /// acknowledged write) on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Like [`RedisServer::start`], but with `persistence` flags instead of `appendfsync
    /// always`, e.g. `["--appendonly", "no"]` or `["--appendonly", "yes", "--appendfsync",
    /// "everysec"]` (benchmarks use the durability a deployment runs with, not the tests').
    pub fn start_with(persistence: &[&str]) -> Self {
        let persistence = persistence.iter().map(|s| (*s).to_string()).collect();
        let dir = std::env::temp_dir().join(format!("eventflow-redis-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        let mut server = Self { port: 0, dir, child: None, persistence };
        for attempt in 0.. {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) if attempt < 3 => eprintln!("redis-server start failed ({e}); retrying"),
                Err(e) => panic!("redis-server did not start: {e}"),
            }
        }
        unreachable!()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it gracefully (SIGTERM: Redis flushes the AOF and exits) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
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
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        conn.write_all(format!("{inline}\r\n").as_bytes()).expect("write");
        let mut buf = [0u8; 65536];
        let n = conn.read(&mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(&self.persistence)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server ({e}); install it: apt-get install redis-server"))?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < START_DEADLINE {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("redis-server exited with {status}"));
            }
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        Err("redis-server did not answer PING in time".into())
    }

    fn ping(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 64];
        conn.write_all(b"PING\r\n").is_ok() && conn.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }
}

impl RedisServer {
    /// Restarts it on the same port and directory (reloading the AOF) with `extra` flags for
    /// this run only, e.g. `["--key-load-delay", "3000"]` to make loading slow. Returns as soon
    /// as it accepts commands — answering PING with PONG or with LOADING — so a test can watch
    /// it load.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(&self.persistence)
            .arg("--dir")
            .arg(&self.dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server");
        self.child = Some(child);
        wait_until("redis-server accepting commands", START_DEADLINE, || {
            let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) else { return None };
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 64];
            let answered = conn.write_all(b"PING\r\n").is_ok()
                && conn
                    .read(&mut buf)
                    .is_ok_and(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-LOADING"));
            answered.then_some(())
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
