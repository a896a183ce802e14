//! A local Redis Cluster owned by one test: `masters` redis-server processes started with
//! `--cluster-enabled yes` on free ports (each a [`RedisServer`], so a test can stop, restart
//! or kill one), optionally `replicas` per master, joined by `redis-cli --cluster create
//! --cluster-yes`. Readiness is awaited on `CLUSTER INFO` (`cluster_state:ok` on every node and
//! every slot assigned), never by sleeping a fixed time.
//!
//! The node timeout is short ([`NODE_TIMEOUT_MS`]) so a failover test does not wait long, and
//! each node keeps its `nodes.conf` in its own directory, so a restarted node rejoins with its
//! identity and slots.

use std::{process::Command, time::Duration};

use crate::{RedisServer, wait_until};

/// `cluster-node-timeout` of every node: how long a node may be unreachable before the others
/// mark it failing.
pub const NODE_TIMEOUT_MS: u64 = 2000;
/// How long the cluster may take to agree after creation or a failover.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// How long one `CLUSTER FAILOVER` may take before it is asked again (Redis gives up a manual
/// failover after a few seconds without telling the caller).
const FAILOVER_ATTEMPT: Duration = Duration::from_secs(10);

/// A Redis Cluster of local redis-server processes.
#[derive(Debug)]
pub struct RedisCluster {
    /// Every node: the masters first, then the replicas (as `redis-cli --cluster create`
    /// assigns them at creation; a failover changes roles, see [`RedisCluster::role`]).
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` masters (at least 3, as Redis Cluster requires) with `replicas` replicas
    /// each and waits until the cluster serves every slot.
    pub fn start(masters: usize, replicas: usize) -> Self {
        assert!(masters >= 3, "Redis Cluster needs at least 3 masters");
        let timeout = NODE_TIMEOUT_MS.to_string();
        let flags = [
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &timeout,
        ];
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas)).map(|_| RedisServer::start_with(&flags)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}); install it: apt-get install redis-tools"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok` with all 16384 slots assigned
    /// and agrees on the number of nodes.
    pub fn wait_ok(&self) {
        let total = self.nodes.len().to_string();
        wait_until("the cluster to be ok on every node", SETTLE_DEADLINE, || {
            self.nodes
                .iter()
                .filter(|n| n.is_running())
                .all(|n| {
                    let info = n.raw("CLUSTER INFO");
                    field(&info, "cluster_state") == Some("ok")
                        && field(&info, "cluster_slots_assigned") == Some("16384")
                        && field(&info, "cluster_known_nodes") == Some(total.as_str())
                })
                .then_some(())
        });
    }

    /// The comma-separated `redis://` URLs of every node, as `EVENTFLOW_REDIS_CLUSTER_NODES`
    /// takes them.
    pub fn nodes_setting(&self) -> String {
        self.urls().join(",")
    }

    /// The `redis://` URL of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Node `i` (masters first, in creation order), to stop, restart or query.
    pub fn node(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// Node `i`, to query (`raw`, `info`) while other nodes are looked at too.
    pub fn node_ref(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `"master"` or `"slave"`: node `i`'s role now (`INFO replication`).
    pub fn role(&self, i: usize) -> String {
        self.nodes[i].info("replication", "role").unwrap_or_default()
    }

    /// The index of the master that serves `key` now (the others answer MOVED).
    pub fn owner_of(&self, key: &str) -> usize {
        (0..self.len())
            .find(|&i| self.role(i) == "master" && self.nodes[i].raw(&format!("EXISTS {key}")).starts_with(':'))
            .unwrap_or_else(|| panic!("no master serves {key}"))
    }

    /// The index of a replica of master `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let port = self.nodes[master].port().to_string();
        (0..self.len())
            .find(|&i| self.nodes[i].info("replication", "master_port").as_deref() == Some(port.as_str()))
            .unwrap_or_else(|| panic!("master {master} has no replica"))
    }

    /// Promotes replica `i` with `CLUSTER FAILOVER` (a coordinated failover: its master stops
    /// taking writes until the replica has caught up) and waits until it is a master and the
    /// cluster is ok again. It first waits for the replica's link to its master (a failover
    /// asked before the replica has synced is dropped by Redis without a reply), and asks
    /// again if one attempt did not complete within `FAILOVER_ATTEMPT` (10 s).
    pub fn failover(&self, i: usize) {
        assert_eq!(self.role(i), "slave", "node {i} is not a replica");
        let node = &self.nodes[i];
        wait_until("the replica's link to its master", SETTLE_DEADLINE, || {
            (node.info("replication", "master_link_status").as_deref() == Some("up")).then_some(())
        });
        let start = std::time::Instant::now();
        while self.role(i) != "master" {
            assert!(start.elapsed() < SETTLE_DEADLINE, "node {i} did not become a master in {SETTLE_DEADLINE:?}");
            let reply = node.raw("CLUSTER FAILOVER");
            assert!(reply.starts_with("+OK"), "CLUSTER FAILOVER on node {i}: {reply}");
            let attempt = std::time::Instant::now();
            while self.role(i) != "master" && attempt.elapsed() < FAILOVER_ATTEMPT {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.wait_ok();
    }
}

/// The value of `name` in an `INFO`-style reply (`name:value` lines).
fn field<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    reply.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn fields_are_read_by_exact_name() {
        let reply = "$60\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_state_x:no\r\n";
        assert_eq!(field(reply, "cluster_state"), Some("ok"));
        assert_eq!(field(reply, "cluster_slots_assigned"), Some("16384"));
        assert_eq!(field(reply, "cluster_size"), None);
    }
}
