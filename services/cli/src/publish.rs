//! `eventflow publish`: one event from arguments (a Publish call), or with `--stdin` one event
//! per input line (a CloudEvents JSON object, or with `--raw` the line as text data), sent in
//! batches over one PublishStream call with a window of unanswered requests (stored in input
//! order), with progress on stderr and a summary of published / duplicate / failed events.

use clap::Args;
use std::collections::VecDeque;

use eventflow_proto::v1::{
    CloudEvent, EventError, PublishRequest, PublishResult, PublishStreamRequest, PublishStreamResponse,
    cloud_event::{CloudEventAttributeValue, Data, cloud_event_attribute_value::Attr},
    publisher_service_client::PublisherServiceClient,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use crate::{
    client::{Conn, Ctx},
    event::{self, Defaults},
    exit::CliError,
    output::{self, Format, fields},
};

/// Progress goes to stderr every this many events.
const PROGRESS_EVERY: u64 = 1000;
/// Most `--stdin` requests sent and not yet answered.
const WINDOW: usize = 16;

/// `eventflow publish` flags.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The stream to publish to.
    stream: String,
    /// The event's data (stored as text data), e.g. '{"order":1}'.
    #[arg(conflicts_with = "stdin")]
    data: Option<String>,
    /// The event type; with --stdin, the type of lines that have none.
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "stdin")]
    event_type: Option<String>,
    /// The event source (a URI-reference); with --stdin, the source of lines that have none.
    #[arg(long, default_value = "eventflow-cli")]
    source: String,
    /// The event id [default: a UUIDv7 assigned by the server].
    #[arg(long, conflicts_with = "stdin")]
    id: Option<String>,
    /// The data's content type (the `datacontenttype` attribute), e.g. application/json.
    #[arg(long, value_name = "MIME")]
    content_type: Option<String>,
    /// An extension attribute (a string), e.g. --attr partitionkey=order-7; repeatable.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    attrs: Vec<(String, String)>,
    /// Read events from stdin, one per line: CloudEvents JSON objects (id, source, type,
    /// specversion, data or data_base64, other attributes).
    #[arg(long)]
    stdin: bool,
    /// With --stdin: each line is the text data of one event of --type.
    #[arg(long, requires = "stdin")]
    raw: bool,
    /// Events per request with --stdin.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    batch_size: u16,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Parses `KEY=VALUE`.
fn parse_attr(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

/// A string attribute value.
fn string_attr(value: &str) -> CloudEventAttributeValue {
    CloudEventAttributeValue { attr: Some(Attr::CeString(value.into())) }
}

impl PublishArgs {
    /// Adds `--content-type` and `--attr` to an event unless it sets them itself.
    fn decorate(&self, mut event: CloudEvent) -> CloudEvent {
        let flags = self.content_type.iter().map(|ct| ("datacontenttype".to_string(), ct.clone()));
        for (key, value) in flags.chain(self.attrs.iter().cloned()) {
            event.attributes.entry(key).or_insert_with(|| string_attr(&value));
        }
        event
    }

    /// An event of `--type` / `--source` with `data` as text.
    fn event_of(&self, id: String, data: Option<String>) -> CloudEvent {
        let event = CloudEvent {
            id,
            source: self.source.clone(),
            spec_version: "1.0".into(),
            r#type: self.event_type.clone().unwrap_or_default(),
            data: data.map(Data::TextData),
            ..Default::default()
        };
        self.decorate(event)
    }

    /// The event one stdin line describes; `None` for a blank line.
    fn parse_line(&self, bytes: &[u8], defaults: &Defaults) -> Result<Option<CloudEvent>, String> {
        let line = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            return Ok(None);
        }
        if self.raw {
            return Ok(Some(self.event_of(String::new(), Some(line.to_string()))));
        }
        event::from_json(line, defaults).map(|e| Some(self.decorate(e)))
    }
}

/// Runs `eventflow publish`.
pub async fn run(ctx: &Ctx, args: PublishArgs) -> Result<(), CliError> {
    if args.raw && args.event_type.is_none() {
        return Err(CliError::Usage("publish --raw: --type is required".into()));
    }
    let mut publisher = ctx.publisher().await?;
    if args.stdin { from_stdin(ctx, &mut publisher, &args).await } else { one(ctx, &mut publisher, &args).await }
}

/// Publishes the one event the arguments describe.
async fn one(ctx: &Ctx, publisher: &mut PublisherServiceClient<Conn>, args: &PublishArgs) -> Result<(), CliError> {
    let event = args.event_of(args.id.clone().unwrap_or_default(), args.data.clone());
    let what = format!("publish to {}", args.stream);
    let request = PublishRequest { stream: args.stream.clone(), events: vec![event] };
    let reply = ctx.call(what.clone(), publisher.publish(request)).await?;
    let result = reply.results.into_iter().next().ok_or_else(|| CliError::Other(format!("{what}: no result")))?;
    if let Some(error) = result.error {
        return Err(CliError::status(what, Status::new(Code::from(error.code), describe(&error))));
    }
    match ctx.format() {
        Format::Json => output::json(&result_json(&result)),
        Format::Table => output::print(&fields(&[
            ("event_id", result.event_id.clone()),
            ("entry_id", result.entry_id.clone()),
            ("partition", result.partition.to_string()),
            ("duplicate", result.duplicate.to_string()),
        ])),
    }
}

/// A publish result as JSON.
fn result_json(result: &PublishResult) -> Value {
    json!({
        "event_id": result.event_id,
        "entry_id": result.entry_id,
        "partition": result.partition,
        "duplicate": result.duplicate,
    })
}

/// An event error as `field: message`, the field relative to the event (`type`, not
/// `events[3].type`) and not repeated when the message already starts with it.
fn describe(error: &EventError) -> String {
    let relative = |s: &'_ str| -> String {
        match s.strip_prefix("events[").and_then(|rest| rest.split_once("].")) {
            Some((index, rest)) if index.bytes().all(|b| b.is_ascii_digit()) => rest.to_string(),
            _ => s.to_string(),
        }
    };
    let (field, message) = (relative(&error.field), relative(&error.message));
    if field.is_empty() || message.starts_with(&field) { message } else { format!("{field}: {message}") }
}

/// Counts of a `--stdin` publish so far.
#[derive(Debug, Default)]
struct Tally {
    /// Events stored.
    published: u64,
    /// Events whose id was already published within the dedup window.
    duplicates: u64,
    /// Events not stored (unparsable lines and events the server refused).
    failed: u64,
    /// Each failure's input line and its JSON report (line, code, message).
    errors: Vec<(usize, Value)>,
}

impl Tally {
    /// Events accounted for.
    fn total(&self) -> u64 {
        self.published + self.duplicates + self.failed
    }

    /// Records a failed line and reports it on stderr.
    fn fail(&mut self, line: usize, code: Code, message: &str) {
        output::note(&format!("line {line}: {message}"));
        self.failed += 1;
        self.errors.push((line, json!({ "line": line, "code": code as i32, "message": message })));
    }

    /// Records the server's result for the event of `line`.
    fn record(&mut self, line: usize, result: &PublishResult) {
        match &result.error {
            Some(error) => self.fail(line, Code::from(error.code), &describe(error)),
            None if result.duplicate => self.duplicates += 1,
            None => self.published += 1,
        }
    }

    /// The failures in input order (a batch's server-side failures are recorded after the
    /// parse failures of later lines).
    fn errors_by_line(&self) -> Vec<Value> {
        let mut errors = self.errors.clone();
        errors.sort_by_key(|(line, _)| *line);
        errors.into_iter().map(|(_, error)| error).collect()
    }

    /// `published N, duplicates N, failed N`.
    fn counts(&self) -> String {
        format!("published {}, duplicates {}, failed {}", self.published, self.duplicates, self.failed)
    }
}

/// The events of one Publish call and the input lines they came from.
#[derive(Debug, Default)]
struct Batch {
    /// Input line number of each event.
    lines: Vec<usize>,
    /// The events.
    events: Vec<CloudEvent>,
}

impl Batch {
    /// Adds the event of input line `line`.
    fn push(&mut self, line: usize, event: CloudEvent) {
        self.lines.push(line);
        self.events.push(event);
    }
}

/// Publishes one event per stdin line, `--batch-size` per request, over one PublishStream
/// call with up to [`WINDOW`] requests unanswered: events are stored in input order.
async fn from_stdin(
    ctx: &Ctx,
    publisher: &mut PublisherServiceClient<Conn>,
    args: &PublishArgs,
) -> Result<(), CliError> {
    let what = format!("publish to {}", args.stream);
    let (requests, outgoing) = mpsc::channel(WINDOW);
    let mut answers = ctx.call(what.clone(), publisher.publish_stream(ReceiverStream::new(outgoing))).await?;
    let defaults = Defaults { event_type: args.event_type.clone(), source: args.source.clone() };
    let mut input = stdin_lines();
    let mut sent = Sent { requests: Some(requests), in_flight: VecDeque::new(), next_id: 0 };
    let (mut tally, mut batch, mut number, mut next_progress) = (Tally::default(), Batch::default(), 0, PROGRESS_EVERY);
    while sent.requests.is_some() || !sent.in_flight.is_empty() {
        tokio::select! {
            line = input.recv(), if sent.requests.is_some() && sent.in_flight.len() < WINDOW => match line {
                Some(buf) => {
                    number += 1;
                    let buf = buf?;
                    match args.parse_line(&buf, &defaults) {
                        Ok(None) => {}
                        Ok(Some(event)) => batch.push(number, event),
                        Err(message) => tally.fail(number, Code::InvalidArgument, &message),
                    }
                    if batch.events.len() >= usize::from(args.batch_size) {
                        sent.send(&args.stream, std::mem::take(&mut batch)).await;
                    }
                }
                None => {
                    sent.send(&args.stream, std::mem::take(&mut batch)).await;
                    sent.requests = None; // half-close: the server answers the rest, then ends
                }
            },
            answer = tokio::time::timeout(ctx.timeout(), answers.message()), if !sent.in_flight.is_empty() => {
                let lines = sent.in_flight.pop_front().unwrap_or_default();
                record(&what, answer, &lines, &mut tally)?;
            }
        }
        if !args.quiet && tally.total() >= next_progress {
            output::note(&format!("publish: {} events so far ({})", tally.total(), tally.counts()));
            next_progress = tally.total() + PROGRESS_EVERY;
        }
    }
    summary(ctx.format(), &tally)
}

/// The sending side of a `--stdin` publish.
struct Sent {
    /// Where requests go; `None` once the input ended (the call is half-closed).
    requests: Option<mpsc::Sender<PublishStreamRequest>>,
    /// The input lines of each request not answered yet, in the order sent.
    in_flight: VecDeque<Vec<usize>>,
    /// The `request_id` of the next request.
    next_id: u64,
}

impl Sent {
    /// Sends `batch` (if it has events) as the next request.
    async fn send(&mut self, stream: &str, batch: Batch) {
        let Some(requests) = &self.requests else { return };
        if batch.events.is_empty() {
            return;
        }
        let request = PublishStreamRequest { stream: stream.into(), events: batch.events, request_id: self.next_id };
        self.next_id += 1;
        // A closed call shows as the error of its next answer.
        if requests.send(request).await.is_ok() {
            self.in_flight.push_back(batch.lines);
        }
    }
}

/// Records the answer to the request of input `lines`; a refused request, a failed call or no
/// answer within the timeout stops the publish (after saying how far it got).
fn record(
    what: &str,
    answer: Result<Result<Option<PublishStreamResponse>, Status>, tokio::time::error::Elapsed>,
    lines: &[usize],
    tally: &mut Tally,
) -> Result<(), CliError> {
    let stopped = |tally: &Tally| {
        output::note(&format!("publish: stopped at line {} ({})", lines.first().unwrap_or(&0), tally.counts()));
    };
    let status = match answer {
        Ok(Ok(Some(PublishStreamResponse { error: None, results, .. }))) => {
            for (line, result) in lines.iter().zip(&results) {
                tally.record(*line, result);
            }
            return Ok(());
        }
        Ok(Ok(Some(PublishStreamResponse { error: Some(error), .. }))) => {
            Status::new(Code::from(error.code), error.message)
        }
        Ok(Ok(None)) => Status::internal("the call ended before answering every request"),
        Ok(Err(status)) => status,
        Err(_) => Status::deadline_exceeded("no answer within the --timeout"),
    };
    stopped(tally);
    Err(CliError::status(what, status))
}

/// Stdin's lines (with their newline), read on a thread of their own because reading stdin
/// blocks; the channel closes at end of input, after an error if reading failed.
fn stdin_lines() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let item = match std::io::BufRead::read_until(&mut stdin, b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => Ok(line),
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// Prints the summary; any failed event makes the publish a partial failure.
fn summary(format: Format, tally: &Tally) -> Result<(), CliError> {
    match format {
        Format::Json => output::json(&json!({
            "published": tally.published,
            "duplicates": tally.duplicates,
            "failed": tally.failed,
            "errors": tally.errors_by_line(),
        }))?,
        Format::Table => output::print(&format!("{}\n", tally.counts()))?,
    }
    if tally.failed > 0 {
        return Err(CliError::Partial(format!("publish: {} of {} events failed", tally.failed, tally.total())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_within_the_event() {
        let error = EventError { code: 3, message: "required".into(), field: "events[12].type".into() };
        assert_eq!(describe(&error), "type: required");
        assert_eq!(describe(&EventError { code: 3, message: "bad".into(), field: String::new() }), "bad");
        let repeated =
            EventError { code: 3, message: "events[1].type: required".into(), field: "events[1].type".into() };
        assert_eq!(describe(&repeated), "type: required");
    }

    #[test]
    fn attributes_parse() {
        assert_eq!(parse_attr("partitionkey=a=b"), Ok(("partitionkey".into(), "a=b".into())));
        assert!(parse_attr("nokey").is_err());
    }
}
