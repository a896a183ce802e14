//! `make run` and `make stop` (scripts/run-local.sh, scripts/stop-local.sh) as a user runs them,
//! with the workspace's built service binaries (`target/debug`, which `make test` builds first) on
//! free ports, over a redis-server the test starts, with a run directory of its own:
//! - both scripts read one list of services, scripts/services.sh, which names every service
//!   binary of the workspace;
//! - `make run` starts every listed service and records its pid, with EVENTFLOW_DATABASE_URL unset
//!   a PostgreSQL of its own in the run directory for the relay and the archive, and the demo
//!   shows an outbox row published by the relay and consumed, and an archive query; `make stop`
//!   stops each one, PostgreSQL too;
//! - `make run` refuses, with one line, a port held by a process it did not start, even a healthy
//!   eventflow service, instead of reporting that process healthy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use eventflow_e2e::{Kind, RedisServer, start, unique_prefix, wait_for_health};
use eventflow_testkit::free_port;
use tokio::process::Command;
use tonic_health::pb::health_check_response::ServingStatus;

/// Upper bound on one run of a script (`make run` includes the Python demo).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The service names scripts/services.sh defines (every one `make run` starts), as bash sees them.
fn listed_services() -> Vec<String> {
    let output = std::process::Command::new("bash")
        .args(["-c", "source scripts/services.sh && printf '%s\\n' \"${SERVICES[@]}\""])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(output.status.success(), "sourcing scripts/services.sh failed: {output:?}");
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect()
}

/// `<name>` of every `eventflow-<name>` binary built by a workspace member under services/.
fn service_binaries() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(output.status.success(), "cargo metadata failed: {output:?}");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let services_dir = root().join("services").canonicalize().unwrap();
    let mut names = BTreeSet::new();
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = Path::new(package["manifest_path"].as_str().unwrap());
        if !manifest.starts_with(&services_dir) {
            continue;
        }
        for target in package["targets"].as_array().unwrap() {
            let is_bin = target["kind"].as_array().unwrap().iter().any(|k| k == "bin");
            if let Some(name) = target["name"].as_str().and_then(|n| n.strip_prefix("eventflow-"))
                && is_bin
            {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn the_service_list_names_every_service_binary_and_both_scripts_read_it() {
    let listed = listed_services();
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "a service is listed twice: {listed:?}");
    let binaries = service_binaries();
    assert!(binaries.contains("dlq"), "cargo metadata found no service binaries: {binaries:?}");
    assert_eq!(unique, binaries, "scripts/services.sh must list every eventflow-<name> binary of services/");
    for script in ["scripts/run-local.sh", "scripts/stop-local.sh"] {
        let text = std::fs::read_to_string(root().join(script)).unwrap();
        assert!(text.contains("\nsource scripts/services.sh\n"), "{script} does not source scripts/services.sh");
    }
}

/// A `make run` environment of one test: its run directory, binaries, Redis, key prefix and a
/// free port for each address. Dropping it runs `make stop` for it, so a failed test leaves no
/// process behind.
struct Local {
    /// The run directory (pid files, logs).
    run_dir: PathBuf,
    /// The environment both scripts get.
    env: Vec<(String, String)>,
    /// The gRPC address of each listed service.
    grpc: Vec<(String, String)>,
}

impl Local {
    /// An environment over `redis` for the listed services, with `grpc` overriding the gRPC
    /// address of some.
    fn new(redis: &RedisServer, grpc_overrides: &[(&str, String)]) -> Self {
        let run_dir = std::env::temp_dir().join(format!("eventflow-run-{}", unique_prefix()));
        let bin_dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
        let mut env = vec![
            ("EVENTFLOW_RUN_DIR".to_string(), run_dir.display().to_string()),
            ("EVENTFLOW_BIN_DIR".to_string(), bin_dir.display().to_string()),
            ("EVENTFLOW_REDIS_URL".to_string(), redis.url()),
            ("EVENTFLOW_KEY_PREFIX".to_string(), unique_prefix()),
        ];
        let mut grpc = Vec::new();
        for service in listed_services() {
            let binary = bin_dir.join(format!("eventflow-{service}"));
            assert!(
                binary.exists(),
                "{} is missing: build it first (cargo build --bins; make test does)",
                binary.display()
            );
            let var = format!("EVENTFLOW_{}", service.to_uppercase().replace('-', "_"));
            let addr = grpc_overrides
                .iter()
                .find(|(name, _)| *name == service)
                .map_or_else(|| format!("127.0.0.1:{}", free_port()), |(_, addr)| addr.clone());
            env.push((format!("{var}_ADDR"), addr.clone()));
            env.push((format!("{var}_METRICS_ADDR"), format!("127.0.0.1:{}", free_port())));
            grpc.push((service, addr));
        }
        Self { run_dir, env, grpc }
    }

    /// Runs `scripts/<name> ARGS` in this environment, within [`SCRIPT_DEADLINE`].
    async fn script(&self, name: &str, args: &[&str]) -> Output {
        let child = Command::new("bash")
            .arg(root().join("scripts").join(name))
            .args(args)
            .env_remove("EVENTFLOW_DATABASE_URL")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::timeout(SCRIPT_DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("scripts/{name} did not finish within {SCRIPT_DEADLINE:?}"))
            .unwrap()
    }

    /// The pid of the local PostgreSQL `make run` started (its postmaster.pid), if any.
    fn postgres_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.run_dir.join("pg/data/postmaster.pid")).ok()?;
        Some(text.lines().next()?.trim().parse().unwrap())
    }

    /// The pid recorded for `service`, if any.
    fn pid(&self, service: &str) -> Option<u32> {
        let text = std::fs::read_to_string(self.run_dir.join(format!("{service}.pid"))).ok()?;
        Some(text.trim().parse().unwrap())
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(root().join("scripts/stop-local.sh"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// `make run` over `redis` on free ports. The ports are picked before the services bind them
/// (after PostgreSQL's initdb, seconds later), so another test may take one meanwhile: a run that
/// failed only because an address was in use is stopped and started again on new ports.
async fn run_on_free_ports(redis: &RedisServer) -> (Local, Output) {
    for _ in 0..3 {
        let local = Local::new(redis, &[]);
        let run = local.script("run-local.sh", &[]).await;
        let failed = run.status.code() != Some(0);
        if failed && String::from_utf8_lossy(&run.stderr).contains("Address already in use") {
            eprintln!("make run lost a port to another process, trying new ports: {}", shown(&run));
            continue; // dropping `local` stops what it started
        }
        return (local, run);
    }
    panic!("make run lost a port to another process three times");
}

/// Whether `pid` runs the program `name` (a zombie's cmdline is empty: it does not).
fn runs(pid: u32, name: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(name))
}

/// Shows a script's output in an assertion message.
fn shown(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_starts_every_listed_service_and_a_postgresql_and_make_stop_stops_each() {
    let redis = RedisServer::start();
    let (local, run) = run_on_free_ports(&redis).await;
    assert_eq!(run.status.code(), Some(0), "{}", shown(&run));
    let said = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(said.contains("eventflow is running"), "{}", shown(&run));

    // EVENTFLOW_DATABASE_URL is unset: a PostgreSQL of the run directory serves the relay and
    // the archive.
    assert!(said.contains("run: started postgres on 127.0.0.1:"), "{}", shown(&run));
    assert!(local.run_dir.join("pg/data/PG_VERSION").is_file(), "no cluster in the run directory");
    let postgres = local.postgres_pid().unwrap_or_else(|| panic!("no postmaster.pid: {}", shown(&run)));
    assert!(runs(postgres, "postgres"), "pid {postgres} of the local PostgreSQL does not run postgres");
    // The demo's outbox row was published by the relay and consumed, and the archive has it.
    for line in ["outbox: committed row ", "(from the outbox)", "demo: all events delivered and acknowledged"] {
        assert!(said.contains(line), "the demo did not print {line:?}: {}", shown(&run));
    }
    assert!(said.contains("archive: QueryEvents(stream='demo') holds all 6 events of this run"), "{}", shown(&run));

    let mut pids = Vec::new();
    for (service, addr) in &local.grpc {
        let pid = local.pid(service).unwrap_or_else(|| panic!("no pid file for {service}: {}", shown(&run)));
        let program = format!("eventflow-{service}");
        assert!(runs(pid, &program), "pid {pid} of {service} does not run {program}");
        tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{service} at {addr}: {e}"));
        pids.push((service.clone(), program, pid));
    }

    let stop = local.script("stop-local.sh", &[]).await;
    assert_eq!(stop.status.code(), Some(0), "{}", shown(&stop));
    let said = String::from_utf8_lossy(&stop.stdout).into_owned();
    for (service, program, pid) in pids {
        assert!(said.contains(&format!("stopped {service} (pid {pid})")), "{}", shown(&stop));
        assert!(!runs(pid, &program), "{service} (pid {pid}) still runs after make stop");
        assert!(local.pid(&service).is_none(), "the pid file of {service} is left");
    }
    assert!(said.contains(&format!("stopped postgres (pid {postgres})")), "{}", shown(&stop));
    assert!(!runs(postgres, "postgres"), "the local PostgreSQL (pid {postgres}) still runs after make stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_refuses_a_port_held_by_a_process_it_did_not_start() {
    let redis = RedisServer::start();
    // A healthy DLQ service that no `make run` started, on the port `make run` wants for its DLQ.
    let squatter = start(Kind::Dlq, &redis.url(), &unique_prefix(), &[]).await;
    let held = squatter.addr.to_string();
    let local = Local::new(&redis, &[("dlq", held.clone())]);

    let run = local.script("run-local.sh", &[]).await;
    assert_eq!(run.status.code(), Some(1), "{}", shown(&run));
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "not one line: {}", shown(&run));
    assert!(
        stderr.starts_with(&format!("run: dlq: {held} is held by a process `make run` did not start")),
        "{}",
        shown(&run)
    );
    assert!(!String::from_utf8_lossy(&run.stdout).contains("eventflow is running"), "{}", shown(&run));
    for (service, _) in &local.grpc {
        assert!(local.pid(service).is_none(), "{service} was started: {}", shown(&run));
    }
    assert!(!local.run_dir.join("pg").exists(), "a PostgreSQL was set up: {}", shown(&run));
    wait_for_health(&squatter, "", ServingStatus::Serving).await;
    squatter.stop().await;
}
