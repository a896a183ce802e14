//! The PostgreSQL harness itself: a server on a free port gives each test its own database,
//! and the data of both survives a kill (crash recovery) and a graceful restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_testkit::{postgres::PostgresServer, unique_prefix};

#[test]
fn two_databases_keep_their_rows_across_a_kill_and_a_restart() {
    let mut pg = PostgresServer::start();
    assert!(pg.is_running());
    assert_ne!(pg.port(), 5432, "never the machine's own instance");
    assert_eq!(pg.url(), format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port()));

    let (a, b) = (unique_prefix(), unique_prefix());
    let url_a = pg.create_database(&a);
    let url_b = pg.create_database(&b);
    assert_eq!(url_a, format!("postgres://postgres@127.0.0.1:{}/{a}", pg.port()));
    assert_ne!(url_a, url_b);
    pg.psql(&a, "CREATE TABLE t (v text); INSERT INTO t VALUES ('in a')");
    pg.psql(&b, "CREATE TABLE t (v text); INSERT INTO t VALUES ('in b'), ('also in b')");

    pg.kill();
    assert!(!pg.is_running());
    pg.restart();
    assert!(pg.is_running());
    assert_eq!(pg.psql(&a, "SELECT v FROM t ORDER BY v"), "in a");
    assert_eq!(pg.psql(&b, "SELECT v FROM t ORDER BY v"), "also in b\nin b");

    pg.psql(&a, "INSERT INTO t VALUES ('after the crash')");
    pg.stop();
    assert!(!pg.is_running());
    pg.restart();
    assert_eq!(pg.psql(&a, "SELECT count(*) FROM t"), "2");
}

#[test]
fn a_durable_server_starts_with_fsync_on() {
    let pg = PostgresServer::start_durable();
    assert_eq!(pg.psql("postgres", "SHOW fsync"), "on");
    let plain = PostgresServer::start();
    assert_eq!(plain.psql("postgres", "SHOW fsync"), "off");
}
