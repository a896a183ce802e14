//! Where the time goes: CPU seconds of redis-server and of this process (clients plus the
//! in-process services) over one timed run, and Redis's own per-command time
//! (`INFO commandstats`, reset before the run). Also the CPU and memory of other processes
//! (nats-server, the service binaries) from `/proc`.

use redis::aio::MultiplexedConnection;

/// CPU readings at the start of a timed run.
pub struct Probe {
    /// redis-server's user + system CPU seconds.
    redis_cpu: f64,
    /// This process's user + system CPU seconds.
    process_cpu: f64,
}

/// What one timed run cost.
pub struct Usage {
    /// redis-server CPU seconds.
    pub redis_cpu: f64,
    /// This process's CPU seconds (clients and in-process services).
    pub process_cpu: f64,
    /// Redis commands by total time: (command, calls, µs). Commands run inside scripts are
    /// counted both on their own and in the script's EVALSHA.
    pub commands: Vec<(String, u64, u64)>,
}

impl Probe {
    /// Waits for an AOF rewrite of the redis-server at `redis_url` to end (see
    /// [`aof_rewrite_done`]), resets its command statistics and reads both CPU counters.
    pub async fn begin(redis_url: &str) -> Self {
        let mut conn = redis_conn(redis_url).await;
        aof_rewrite_done(&mut conn).await;
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await.unwrap();
        Self { redis_cpu: redis_cpu(&mut conn).await, process_cpu: process_cpu() }
    }

    /// What the run since [`Probe::begin`] cost.
    pub async fn end(self, redis_url: &str) -> Usage {
        let mut conn = redis_conn(redis_url).await;
        let redis_cpu = redis_cpu(&mut conn).await - self.redis_cpu;
        let process_cpu = process_cpu() - self.process_cpu;
        let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
        let mut commands: Vec<(String, u64, u64)> = info.lines().filter_map(parse_commandstat).collect();
        commands.sort_by_key(|c| std::cmp::Reverse(c.2));
        Usage { redis_cpu, process_cpu, commands }
    }
}

impl Usage {
    /// "redis CPU x µs/ev, process CPU y µs/ev; redis time: cmd z µs/ev (n calls), ..." for
    /// the top `top` commands, per event of a run of `events`.
    pub fn describe(&self, events: usize, top: usize) -> String {
        let per = |secs: f64| secs * 1e6 / events.max(1) as f64;
        let commands: Vec<String> = self
            .commands
            .iter()
            .filter(|c| !c.0.starts_with("config") && !c.0.starts_with("info"))
            .take(top)
            .map(|(name, calls, usec)| {
                format!("{name} {:.2} µs/ev ({calls} calls)", *usec as f64 / events.max(1) as f64)
            })
            .collect();
        format!(
            "redis-server CPU {:.1} µs/ev, bench process CPU {:.1} µs/ev; redis command time: {}",
            per(self.redis_cpu),
            per(self.process_cpu),
            commands.join(", ")
        )
    }
}

/// A new multiplexed redis-rs connection to `url`.
pub async fn redis_conn(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// redis-server's used CPU seconds (user + system, all its threads).
pub async fn redis_cpu(conn: &mut MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await.unwrap();
    let field = |name: &str| {
        info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    field("used_cpu_user:") + field("used_cpu_sys:")
}

/// Keeps redis-server's AOF rewrites out of the timed run that follows: waits (up to a minute)
/// for one in progress, and first starts one itself when the AOF has grown by half over its
/// last rewrite (the bench's redis-server runs without automatic rewrites, which a run's own
/// writes could set off in its middle, so the AOF is rewritten here, between the runs). The
/// prefills of earlier steps grow the AOF enough to set one off; its child process would share
/// the 2 cores with whichever run happens to be timed then (seen in profiles of the subscribe
/// part: the child took as much CPU as redis-server itself during the eventflow run, none
/// during the baseline's).
async fn aof_rewrite_done(conn: &mut MultiplexedConnection) {
    let persistence = |info: &str, name: &str| {
        info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    let info: String = redis::cmd("INFO").arg("persistence").query_async(conn).await.unwrap();
    let (current, base) = (persistence(&info, "aof_current_size"), persistence(&info, "aof_base_size"));
    if persistence(&info, "aof_enabled") == 1 && current > 32 << 20 && current > base + base / 2 {
        // An error means a rewrite is already under way: waited for below all the same.
        let _: redis::RedisResult<String> = redis::cmd("BGREWRITEAOF").query_async(conn).await;
    }
    for _ in 0..1200 {
        let info: String = redis::cmd("INFO").arg("persistence").query_async(conn).await.unwrap();
        let busy = ["aof_rewrite_in_progress", "aof_rewrite_scheduled"].iter().any(|f| persistence(&info, f) == 1);
        if !busy {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// This process's used CPU seconds.
fn process_cpu() -> f64 {
    cpu_of("self")
}

/// Used CPU seconds of process `pid` (`self` for this one) from `/proc/<pid>/stat` (utime +
/// stime, in clock ticks of 1/100 s, Linux's USER_HZ); 0 where that file does not exist.
pub fn cpu_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Parses `cmdstat_xadd:calls=3,usec=42,usec_per_call=14.00,...` into (xadd, 3, 42).
fn parse_commandstat(line: &str) -> Option<(String, u64, u64)> {
    let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
    let value = |key: &str| {
        stats.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).and_then(|v| v.parse::<u64>().ok())
    };
    Some((name.to_string(), value("calls")?, value("usec")?))
}
