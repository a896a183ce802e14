//! A real PostgreSQL server per test, for the storage work of issues 13 and 14.
//!
//! [`PostgresServer::start`] runs `initdb` into its own temporary directory (trust
//! authentication, superuser `postgres`) and starts `postgres` as a child process on a free
//! port of 127.0.0.1, never the machine's own instance on 5432. Its Unix socket lives in the
//! same temporary directory (`-k`), so it never collides with a system socket in
//! `/var/run/postgresql`. Readiness is polled with `pg_isready` under a deadline, never by
//! sleeping a fixed time. [`PostgresServer::stop`] (fast shutdown), [`PostgresServer::kill`]
//! (SIGKILL to the whole process group, like a crash) and [`PostgresServer::restart`] keep the
//! data directory; dropping the server kills it and removes the directory.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI here), `initdb` and
//! `postgres` run as the unprivileged `postgres` user through `setpriv` (util-linux), and the
//! temporary directory is handed to that user; the user is created with `useradd` when missing.
//! As a normal user they run as that user directly.
//!
//! The binaries are looked up on `PATH` first, then in the newest `/usr/lib/postgresql/*/bin`
//! (Debian installs them there, off `PATH`). `scripts/ensure-deps.sh postgres` installs them.
//!
//! Each test gets its own database with [`PostgresServer::create_database`] (a name from
//! [`crate::unique_prefix`]); [`PostgresServer::psql`] runs SQL for assertions with the `psql`
//! client, so the harness needs no database driver.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long `postgres` may take to accept connections after start (crash recovery included).
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The unprivileged user `initdb` and `postgres` run as when the tests run as root.
const RUN_AS_USER: &str = "postgres";

/// The superuser `initdb` creates, the user of every URL the harness hands out.
const SUPERUSER: &str = "postgres";

/// A PostgreSQL server owned by one test.
#[derive(Debug)]
pub struct PostgresServer {
    /// Its port on 127.0.0.1; kept across restarts so clients reconnect to the same URL.
    port: u16,
    /// The temporary directory holding `data/`, `socket/` and `postgres.log`; removed on drop.
    dir: PathBuf,
    /// The directory holding `initdb`, `postgres` and `pg_isready`.
    bin: PathBuf,
    /// The running postmaster (leader of its own process group), if any.
    child: Option<Child>,
    /// Whether it runs with `fsync=on`: off by default (see [`PostgresServer::start`]).
    fsync: bool,
    /// `Some(user)` when the tests run as root and postgres must run as `user`.
    run_as: Option<String>,
}

impl PostgresServer {
    /// Initialises a cluster in a fresh temporary directory and starts it on a free port with
    /// `fsync=off`: tests never survive an operating-system crash, and a killed `postgres`
    /// (see [`PostgresServer::kill`]) loses nothing with fsync off, because its writes are
    /// already in the kernel's page cache. Skipping fsync makes `initdb` and every commit much
    /// faster on the shared test machine. Use [`PostgresServer::start_durable`] for a test
    /// that needs the real durability cost.
    pub fn start() -> Self {
        Self::start_with_fsync(false)
    }

    /// Like [`PostgresServer::start`], but with `fsync=on` (and a synced `initdb`).
    pub fn start_durable() -> Self {
        Self::start_with_fsync(true)
    }

    fn start_with_fsync(fsync: bool) -> Self {
        let bin = find_bin_dir().unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!("eventflow-pg-{}", uuid::Uuid::now_v7().simple()));
        for sub in ["data", "socket"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        let run_as =
            if running_as_root() { Some(ensure_user(RUN_AS_USER).unwrap_or_else(|e| panic!("{e}"))) } else { None };
        let mut server = Self { port: 0, dir, bin, child: None, fsync, run_as };
        if let Some(user) = &server.run_as {
            chown_recursive(&server.dir, user).unwrap_or_else(|e| panic!("{e}"));
        }
        server.initdb().unwrap_or_else(|e| panic!("{e}"));
        crate::start_on_free_port("postgres", |port| {
            server.port = port;
            server.spawn()
        });
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`: the maintenance database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` (letters, digits and `_`, e.g. [`crate::unique_prefix`]) and
    /// returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.len() < 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?}: use 1 to 63 ASCII letters, digits or '_'"
        );
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.database_url(name)
    }

    /// Runs `sql` in database `db` with `psql` (stop on the first error) and returns its
    /// unaligned, tuples-only output, trimmed: one row per line, columns separated by `|`.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(psql_path(&self.bin))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", SUPERUSER])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql ({e}); install the PostgreSQL client tools"));
        assert!(
            out.status.success(),
            "psql -d {db} -c {sql:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops it with a fast shutdown (SIGINT: open sessions are ended, the data is checkpointed)
    /// and waits for the exit.
    pub fn stop(&mut self) {
        crate::signal_and_wait(&mut self.child, "-INT");
    }

    /// Kills the postmaster and every backend at once (SIGKILL to its process group, like a
    /// crash: the next start runs crash recovery) and waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }

    /// Whether its process was started and has not been stopped or killed by the harness.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again on the same port and data directory (after a crash: crash recovery),
    /// stopping it first if it runs.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("postgres did not restart: {e}");
        }
    }

    /// The server's log so far (stderr of every start), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// A command for one of the server binaries, run as the unprivileged user when root.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            None => Command::new(program),
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([&format!("--reuid={user}"), &format!("--regid={user}"), "--init-groups", "--"]).arg(program);
                c
            }
        };
        // The test's working directory may not be readable by the unprivileged user.
        command.current_dir(&self.dir);
        command
    }

    /// `initdb` with trust authentication for local and 127.0.0.1 connections.
    fn initdb(&self) -> Result<(), String> {
        let mut command = self.server_command("initdb");
        command.arg("-D").arg(self.dir.join("data")).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]);
        if !self.fsync {
            command.arg("--no-sync");
        }
        let out =
            command.output().map_err(|e| format!("cannot run initdb ({e}); run scripts/ensure-deps.sh postgres"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Starts `postgres` in its own process group and waits until `pg_isready` says it accepts
    /// connections.
    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.join("postgres.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("clone log file handle: {e}"))?;
        let mut command = self.server_command("postgres");
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.join("socket"))
            .args(["-c", "listen_addresses=127.0.0.1", "-c", if self.fsync { "fsync=on" } else { "fsync=off" }])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        let mut child =
            command.spawn().map_err(|e| format!("cannot run postgres ({e}); run scripts/ensure-deps.sh postgres"))?;
        match crate::await_start(&mut child, START_DEADLINE, Duration::from_millis(20), || self.ready()) {
            crate::Start::Ready => {
                self.child = Some(child);
                Ok(())
            }
            crate::Start::Exited(status) => Err(format!("postgres exited with {status}; log:\n{}", self.log())),
            crate::Start::TimedOut => {
                kill_group(&mut child);
                Err(format!("postgres did not accept connections in {START_DEADLINE:?}; log:\n{}", self.log()))
            }
        }
    }

    /// Whether `pg_isready` reports that it accepts connections on its TCP port.
    fn ready(&self) -> bool {
        Command::new(pg_isready_path(&self.bin))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER, "-d", "postgres"])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILLs the postmaster `child` and every process it started, reaps it, and waits (10 s at
/// most) until none of them is alive. PostgreSQL's children each call `setsid()`, so they are
/// not in the postmaster's process group: they are found by parent pid while the postmaster is
/// stopped (SIGSTOP: it cannot fork meanwhile). A restart that found one still attached to the
/// shared memory would refuse to start ("pre-existing shared memory block is still in use").
fn kill_group(child: &mut Child) {
    let postmaster = child.id();
    let _ = Command::new("kill").args(["-STOP", &postmaster.to_string()]).status();
    let mut doomed = children_of(postmaster);
    doomed.push(postmaster);
    let mut args = vec!["-KILL".to_string(), "--".to_string(), format!("-{postmaster}")];
    args.extend(doomed.iter().map(u32::to_string));
    let _ = Command::new("kill").args(&args).status();
    let _ = child.kill();
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while doomed.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `(pid, state, ppid)` of every process, from `/proc` (Linux; elsewhere: none).
fn processes() -> Vec<(u32, String, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.to_string();
            let ppid = fields.next()?.parse::<u32>().ok()?;
            Some((pid, state, ppid))
        })
        .collect()
}

/// The pids of the live children of `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    processes().into_iter().filter(|(_, state, ppid)| *ppid == parent && state != "Z").map(|(pid, ..)| pid).collect()
}

/// Whether process `pid` is alive (a zombie has released its memory: not alive).
fn alive(pid: u32) -> bool {
    processes().into_iter().any(|(p, state, _)| p == pid && state != "Z" && state != "X")
}

/// The directory holding `initdb` and `postgres`: on `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn find_bin_dir() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file());
    if let Some(dir) = on_path {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: \
         run scripts/ensure-deps.sh postgres"
            .to_string()
    })
}

/// A client tool: next to the server binaries if there, else from `PATH`.
fn client_path(bin: &Path, name: &str) -> PathBuf {
    let local = bin.join(name);
    if local.is_file() { local } else { PathBuf::from(name) }
}

fn psql_path(bin: &Path) -> PathBuf {
    client_path(bin, "psql")
}

fn pg_isready_path(bin: &Path) -> PathBuf {
    client_path(bin, "pg_isready")
}

/// Whether this process runs as root (`id -u` is 0).
fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Makes sure system user `user` exists (creating it with `useradd` if not) and returns it.
fn ensure_user(user: &str) -> Result<String, String> {
    let exists = |u: &str| Command::new("id").arg("-u").arg(u).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if exists(user).is_ok_and(|s| s.success()) {
        return Ok(user.to_string());
    }
    let out = Command::new("useradd")
        .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user])
        .output()
        .map_err(|e| format!("postgres cannot run as root and user {user:?} is missing; useradd failed to run: {e}"))?;
    // Another test may have created it at the same time.
    if out.status.success() || exists(user).is_ok_and(|s| s.success()) {
        Ok(user.to_string())
    } else {
        Err(format!(
            "postgres cannot run as root and user {user:?} is missing; `useradd {user}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Hands `dir` and everything under it to `user`.
fn chown_recursive(dir: &Path, user: &str) -> Result<(), String> {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(dir)
        .status()
        .map_err(|e| format!("cannot run chown: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("chown -R {user}: {} failed ({status})", dir.display())) }
}
