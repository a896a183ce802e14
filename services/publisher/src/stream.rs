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

use eventflow_broker::Order;
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
            return refused(request_id, Status::from(denied));
        }
        match self.ingest.begin(&stream, events, &self.cx, Order::Kept).await {
            Ok(pending) => Box::pin(async move {
                match pending.finish().await {
                    Ok(results) => PublishStreamResponse { request_id, results, error: None },
                    Err(e) => refusal(request_id, to_status(e)),
                }
            }),
            Err(e) => refused(request_id, to_status(e)),
        }
    }
}

/// An answer ready at once: the request was refused with `status`.
fn refused(request_id: u64, status: Status) -> Answer {
    Box::pin(std::future::ready(refusal(request_id, status)))
}

/// The response of a request refused as a whole with `status`; `field` is the request field
/// the status message names (`stream: ...`, `events: ...`), if any.
fn refusal(request_id: u64, status: Status) -> PublishStreamResponse {
    let message = status.message().to_string();
    let field = match message.split_once(": ") {
        Some((field, _)) if matches!(field, "stream" | "events") => field.to_string(),
        _ => String::new(),
    };
    PublishStreamResponse {
        request_id,
        results: Vec::new(),
        error: Some(EventError { code: status.code() as i32, message, field }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_request_field_its_status_names() {
        let error = |status| refusal(7, status).error.unwrap();
        let bad = error(Status::invalid_argument("stream: must not be empty"));
        assert_eq!((bad.code, bad.field.as_str()), (tonic::Code::InvalidArgument as i32, "stream"));
        assert_eq!(error(Status::invalid_argument("events: more than 1000")).field, "events");
        let gone = error(Status::not_found("stream \"x\" not found"));
        assert_eq!((gone.code, gone.field.as_str()), (tonic::Code::NotFound as i32, ""));
        assert_eq!(refusal(7, Status::unavailable("x")).request_id, 7);
    }
}
