//! The cluster harness itself: a 3-master cluster with a replica each serves keys of every
//! slot through redis-cli's cluster mode, and a coordinated failover promotes a replica.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use eventflow_testkit::cluster::RedisCluster;

/// Runs `redis-cli -c` (following MOVED) against the cluster's first node.
fn cli(cluster: &RedisCluster, args: &[&str]) -> String {
    let url = &cluster.urls()[0];
    let out = Command::new("redis-cli").args(["-u", url, "-c"]).args(args).output().expect("redis-cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_cluster_serves_every_slot_and_survives_a_failover() {
    let cluster = RedisCluster::start(3, 1);
    assert_eq!(cluster.len(), 6);
    assert_eq!(cluster.nodes_setting().split(',').count(), 6);
    // Keys of different hash tags land on different masters; -c follows the redirections.
    for tag in ["a", "b", "c", "d", "e", "f"] {
        let key = format!("ef:{{{tag}}}:k");
        assert_eq!(cli(&cluster, &["SET", &key, tag]), "OK");
    }
    let masters = (0..cluster.len()).filter(|&i| cluster.role(i) == "master").count();
    assert_eq!(masters, 3);
    let replica = (0..cluster.len()).find(|&i| cluster.role(i) == "slave").expect("a replica");
    cluster.failover(replica);
    assert_eq!(cluster.role(replica), "master");
    for tag in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(cli(&cluster, &["GET", &format!("ef:{{{tag}}}:k")]), tag, "key of {tag} after the failover");
    }
}
