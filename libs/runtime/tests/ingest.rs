//! The ingest step against a real redis-server, without gRPC: per-event errors beside stored
//! neighbours, ids assigned, duplicates found, sizes checked, and events to a stream that does
//! not exist counted under the fixed `unknown` label.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_broker::{Broker, BrokerError, BrokerOptions, StreamConfig};
use eventflow_proto::v1::{CloudEvent, cloud_event::Data};
use eventflow_runtime::{
    ingest::{Ingest, UNKNOWN_STREAM},
    metrics::EventMetrics,
};
use eventflow_testkit::{RedisServer, unique_prefix};
use opentelemetry::Context;
use tonic::Code;

fn event(id: &str, data: &str) -> CloudEvent {
    CloudEvent {
        id: id.into(),
        source: "/ingest-test".into(),
        spec_version: "1.0".into(),
        r#type: "t".into(),
        data: Some(Data::TextData(data.into())),
        ..Default::default()
    }
}

fn ingest(redis: &RedisServer, max_event_bytes: usize) -> (Ingest, Broker, EventMetrics) {
    let broker =
        Broker::new(&redis.url(), BrokerOptions { prefix: unique_prefix(), ..BrokerOptions::default() }).unwrap();
    let metrics = EventMetrics::register(&prometheus::Registry::new()).unwrap();
    (Ingest::new(broker.clone(), max_event_bytes, metrics.clone()), broker, metrics)
}

#[tokio::test]
async fn each_event_gets_its_own_result_and_bad_ones_do_not_stop_their_neighbours() {
    let redis = RedisServer::start();
    let (ingest, broker, metrics) = ingest(&redis, 200);
    broker.create_stream(&StreamConfig::new("s")).await.unwrap();
    let mut no_source = event("bad", "x");
    no_source.source.clear();
    let events = vec![event("a", "x"), no_source, event("", "x"), event("big", &"x".repeat(300)), event("a", "y")];
    let results = ingest.publish("s", events, &Context::new()).await.unwrap();

    assert!(results[0].error.is_none() && !results[0].entry_id.is_empty() && !results[0].duplicate);
    let invalid = results[1].error.as_ref().unwrap();
    assert_eq!((invalid.code, invalid.field.as_str()), (Code::InvalidArgument as i32, "events[1].source"));
    assert!(results[1].entry_id.is_empty());
    assert!(uuid::Uuid::parse_str(&results[2].event_id).is_ok(), "an empty id gets a UUID: {:?}", results[2]);
    assert!(!results[2].entry_id.is_empty());
    let too_big = results[3].error.as_ref().unwrap();
    assert_eq!((too_big.code, too_big.field.as_str()), (Code::ResourceExhausted as i32, "events[3]"));
    assert!(results[4].duplicate && results[4].entry_id == results[0].entry_id, "{:?}", results[4]);

    assert_eq!(metrics.published.with_label_values(&["s"]).get(), 2);
    assert_eq!(metrics.duplicates.with_label_values(&["s"]).get(), 1);
    assert_eq!(metrics.publish_rejected.with_label_values(&["s", "invalid"]).get(), 1);
    assert_eq!(metrics.publish_rejected.with_label_values(&["s", "too_large"]).get(), 1);
}

#[tokio::test]
async fn a_stream_that_does_not_exist_fails_the_call_and_counts_as_unknown() {
    let redis = RedisServer::start();
    let (ingest, _broker, metrics) = ingest(&redis, 1 << 20);
    let error = ingest.publish("nope", vec![event("a", "x"), event("b", "x")], &Context::new()).await.unwrap_err();
    assert!(matches!(error, BrokerError::NotFound(_)), "{error:?}");
    let error = ingest.publish("bad name!", vec![event("c", "x")], &Context::new()).await.unwrap_err();
    assert!(matches!(&error, BrokerError::InvalidArgument { field, .. } if field == "stream"), "{error:?}");
    assert_eq!(metrics.publish_rejected.with_label_values(&[UNKNOWN_STREAM, "unknown_stream"]).get(), 3);
    let error = ingest.publish("nope", Vec::new(), &Context::new()).await.unwrap_err();
    assert!(matches!(&error, BrokerError::InvalidArgument { field, .. } if field == "events"), "{error:?}");
}
