//! PublishStream: many publish requests over one long-lived call, answered in order.
//!
//! One task per call reads requests and answers them. Each request is authorized (the caller
//! needs a `publish` grant on its stream) and begun in the ingest step
//! ([`eventflow_runtime::ingest::Ingest::begin`]), which queues its events in the broker
//! before the next request is read — so requests to one stream are stored in the order they
//! were sent. Their outcomes are awaited in order ([`FuturesOrdered`]) and sent back as they
//! complete; up to [`WINDOW`] requests are in flight, after which the task stops reading (HTTP/2
//! flow control then holds the client back). Memory per call is bounded by the window and by
//! the broker's byte budget, which also bounds what a request may wait for.
//!
//! A request the unary Publish would refuse as a whole gets a response with `error` set and
//! the call goes on. The call ends when the client half-closes (after its last answers), when
//! the client goes away, or at shutdown: the task stops reading, answers what is in flight, and
//! ends the call with UNAVAILABLE.

use std::{future::Future, pin::Pin};

use eventflow_broker::{BrokerError, Order};
use eventflow_proto::v1::{EventError, PublishStreamRequest, PublishStreamResponse};
use eventflow_runtime::{
    CancellationToken,
    auth::{Caller, Service},
    ingest::Ingest,
    status::to_status,
};
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

/// Most requests of one call in flight (read, not yet answered).
pub const WINDOW: usize = 64;

/// The answer to one request, once its events are stored (or it was refused).
type Answer = Pin<Box<dyn Future<Output = PublishStreamResponse> + Send>>;

/// One PublishStream call's task: see the module doc.
pub(crate) struct Pump {
    /// The ingest step every request goes through.
    pub ingest: Ingest,
    /// Who called: each request's stream is authorized for them.
    pub caller: Caller,
    /// The call's trace context, the parent of events that carry none.
    pub cx: opentelemetry::Context,
    /// Cancelled at server shutdown.
    pub shutdown: CancellationToken,
}

impl Pump {
    /// Reads `requests` and answers into `tx` until the call ends.
    pub async fn run(
        self,
        mut requests: Streaming<PublishStreamRequest>,
        tx: mpsc::Sender<Result<PublishStreamResponse, Status>>,
    ) {
        let mut in_flight: FuturesOrdered<Answer> = FuturesOrdered::new();
        let mut reading = true;
        loop {
            tokio::select! {
                biased;
                Some(answer) = in_flight.next() => {
                    if tx.send(Ok(answer)).await.is_err() {
                        return; // the client went away
                    }
                }
                () = self.shutdown.cancelled(), if reading => reading = false,
                () = tx.closed() => return,
                request = requests.message(), if reading && in_flight.len() < WINDOW => match request {
                    Ok(Some(request)) => in_flight.push_back(self.begin(request).await),
                    Ok(None) => reading = false,
                    Err(status) => {
                        tracing::debug!(%status, "publish stream ended by the client");
                        return;
                    }
                },
                else => break,
            }
            if !reading && in_flight.is_empty() {
                break;
            }
        }
        if self.shutdown.is_cancelled() {
            let _ = tx
                .send(Err(Status::unavailable("server shutting down; reconnect and resend what was not answered")))
                .await;
        }
    }

    /// Authorizes `request` and queues its events; returns the future of its answer.
    async fn begin(&self, request: PublishStreamRequest) -> Answer {
        let PublishStreamRequest { stream, events, request_id } = request;
        if let Err(denied) = self.caller.authorize(Service::Publish, &stream, None) {
            return ready(refusal(request_id, Status::from(denied), String::new()));
        }
        match self.ingest.begin(&stream, events, &self.cx, Order::Kept).await {
            Ok(pending) => Box::pin(async move {
                match pending.finish().await {
                    Ok(results) => PublishStreamResponse { request_id, results, error: None },
                    Err(e) => broker_refusal(request_id, e),
                }
            }),
            Err(e) => ready(broker_refusal(request_id, e)),
        }
    }
}

/// An answer ready at once.
fn ready(response: PublishStreamResponse) -> Answer {
    Box::pin(std::future::ready(response))
}

/// The response of a request the broker refused as a whole with `error`, naming the request
/// field at fault when it is an invalid argument (`stream`, `events`).
fn broker_refusal(request_id: u64, error: BrokerError) -> PublishStreamResponse {
    let field = match &error {
        BrokerError::InvalidArgument { field, .. } => field.clone(),
        _ => String::new(),
    };
    refusal(request_id, to_status(error), field)
}

/// The response of a request refused as a whole with `status`; `field` names the request field
/// at fault, if one is.
fn refusal(request_id: u64, status: Status, field: String) -> PublishStreamResponse {
    let error = EventError { code: status.code() as i32, message: status.message().to_string(), field };
    PublishStreamResponse { request_id, results: Vec::new(), error: Some(error) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_request_field_at_fault() {
        let error = |e| broker_refusal(7, e).error.unwrap();
        let bad = error(BrokerError::invalid("stream", "must not be empty"));
        assert_eq!((bad.code, bad.field.as_str()), (tonic::Code::InvalidArgument as i32, "stream"));
        assert_eq!(bad.message, "stream: must not be empty");
        assert_eq!(error(BrokerError::invalid("events", "more than 1000")).field, "events");
        let gone = error(BrokerError::NotFound("stream \"x\"".into()));
        assert_eq!((gone.code, gone.field.as_str()), (tonic::Code::NotFound as i32, ""));
        assert_eq!(broker_refusal(7, BrokerError::Unavailable("x".into())).request_id, 7);
    }
}
