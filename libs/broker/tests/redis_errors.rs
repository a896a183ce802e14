//! Redis error replies classified the same way whether they come from one command or from
//! commands of a pipeline (which redis-rs reports as one error listing every failed command).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_broker::BrokerError;
use eventflow_testkit::RedisServer;

/// Runs `SET a 1; SET b 2` as one pipeline and returns its error.
fn pipeline_error(redis: &RedisServer) -> BrokerError {
    let client = eventflow_broker::connect::client(&redis.url(), &Default::default()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("a").arg(1).cmd("SET").arg("b").arg(2);
    pipe.query::<()>(&mut conn).unwrap_err().into()
}

#[test]
fn out_of_memory_in_a_pipeline_is_resource_exhausted() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    assert!(redis.raw("CONFIG SET maxmemory 1").starts_with("+OK"));
    let error = pipeline_error(&redis);
    assert!(matches!(error, BrokerError::ResourceExhausted(_)), "{error:?}");
}

#[test]
fn read_only_in_a_pipeline_is_unavailable() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    // A replica of a master that does not answer: read-only at once.
    assert!(redis.raw("REPLICAOF 127.0.0.1 1").starts_with("+OK"));
    let error = pipeline_error(&redis);
    assert!(error.is_unavailable(), "{error:?}");
}
