//! The command line: global flags (service addresses, output format, timeout) and the command
//! groups, each defined in its own module. Value parsers shared by several commands live here.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, builder::BoolishValueParser};
use eventflow_proto::v1::{Position, position};

use crate::{archive, dlq, duration, health, output::Format, publish, stream, sub, tail, time};

/// Shown by `eventflow --help`.
const LONG_ABOUT: &str = "\
Operator CLI for eventflow: manage streams and subscriptions, publish and tail events, inspect \
and requeue dead letters, and check the health of the four gRPC services.

Output is an aligned table by default; `--output json` prints one JSON document (JSON lines for \
`tail`). Errors are one line on stderr: `eventflow: <what>: <message>`.

Exit codes:
  0  success
  1  any other error
  2  usage error (bad flags or arguments)
  3  not found (stream, subscription, dead letter)
  4  the server refused the request: invalid argument, already exists, failed precondition,
     too large, not authenticated (also a TLS handshake failing on a certificate)
  5  unavailable or unreachable, or deadline exceeded (retryable)
  6  partial failure: some events or ids failed while the others succeeded";

/// `eventflow`: the operator CLI over the eventflow gRPC API.
#[derive(Debug, Parser)]
#[command(
    name = "eventflow",
    version,
    about = "Operator CLI for eventflow",
    long_about = LONG_ABOUT,
    after_help = "Exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 refused, 5 unavailable, 6 partial (--help).",
    after_long_help = "Examples and the JSON shapes: services/cli/README.md."
)]
pub struct Cli {
    /// Flags every command accepts.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the services are and how to talk to them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// PublisherService address.
    #[arg(long, global = true, env = "EVENTFLOW_PUBLISHER_ADDR", default_value = "http://127.0.0.1:50051")]
    pub publisher: String,
    /// SubscriberService address.
    #[arg(long, global = true, env = "EVENTFLOW_SUBSCRIBER_ADDR", default_value = "http://127.0.0.1:50052")]
    pub subscriber: String,
    /// AdminService address.
    #[arg(long, global = true, env = "EVENTFLOW_ADMIN_ADDR", default_value = "http://127.0.0.1:50053")]
    pub admin: String,
    /// DeadLetterService address.
    #[arg(long, global = true, env = "EVENTFLOW_DLQ_ADDR", default_value = "http://127.0.0.1:50054")]
    pub dlq: String,
    /// ArchiveService address.
    #[arg(long, global = true, env = "EVENTFLOW_ARCHIVE_ADDR", default_value = "http://127.0.0.1:50055")]
    pub archive: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, env = "EVENTFLOW_OUTPUT", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Deadline of each call (and of connecting), e.g. 5s [default: 30s]. For `tail`: how long
    /// to tail before stopping (default: until --max events, --idle-timeout or Ctrl-C).
    #[arg(long, global = true, env = "EVENTFLOW_TIMEOUT", value_parser = duration::parse)]
    pub timeout: Option<Duration>,
    /// Bearer token for services started with --auth-tokens.
    #[arg(long, global = true, env = "EVENTFLOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Talk TLS to every service (services started with --tls-cert-file), checking their
    /// certificates against the system's root certificates, or --ca-file. An `https://` address
    /// means TLS for that service; --ca-file, --cert-file and --key-file imply --tls. The
    /// variable takes true/false, 1/0, yes/no, on/off.
    #[arg(long, global = true, env = "EVENTFLOW_TLS", value_parser = BoolishValueParser::new())]
    pub tls: bool,
    /// PEM file of the CA certificate(s) the services' certificates are checked against, instead
    /// of the system's roots (a private CA, cert-manager's issuer).
    #[arg(long, global = true, env = "EVENTFLOW_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate for services that require mutual TLS (started with
    /// --tls-client-ca-file); needs --key-file.
    #[arg(long, global = true, env = "EVENTFLOW_CERT_FILE", value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the private key of --cert-file.
    #[arg(long, global = true, env = "EVENTFLOW_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

/// Deadline of a call when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Global {
    /// The deadline of one call.
    pub fn call_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// The command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show, update and delete streams.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Create, list, show, update, delete and seek subscriptions.
    #[command(subcommand)]
    Sub(sub::SubCommand),
    /// Publish one event from arguments, or one per stdin line with --stdin.
    Publish(publish::PublishArgs),
    /// Subscribe and print events as they arrive, acknowledging them or not.
    Tail(tail::TailArgs),
    /// List, show, requeue, delete and purge dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Query, show, replay and export archived events.
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// Check the grpc.health.v1 status of the services.
    Health(health::HealthArgs),
}

/// Parses a position: `earliest`, `latest`, an entry id (`<ms>-<seq>`) or an RFC 3339 time.
pub fn parse_position(text: &str) -> Result<Position, String> {
    let position = match text {
        "earliest" => position::Position::Earliest(true),
        "latest" => position::Position::Latest(true),
        id if is_entry_id(id) => position::Position::EntryId(id.to_string()),
        other => position::Position::Time(time::parse_rfc3339(other).map_err(|_| {
            format!("invalid position {other:?}: use earliest, latest, an entry id (<ms>-<seq>) or an RFC 3339 time")
        })?),
    };
    Ok(Position { position: Some(position) })
}

/// Whether `text` looks like a stream entry id: `<ms>-<seq>` or `<ms>`.
fn is_entry_id(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match text.split_once('-') {
        Some((ms, seq)) => digits(ms) && digits(seq),
        None => digits(text),
    }
}

/// Parses a duration flag that the API takes in whole seconds (e.g. `--ack-deadline 30s`).
pub fn parse_seconds(text: &str) -> Result<i32, String> {
    duration::whole_seconds(duration::parse(text)?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn positions_parse() {
        let at = |t: &str| parse_position(t).unwrap().position.unwrap();
        assert_eq!(at("earliest"), position::Position::Earliest(true));
        assert_eq!(at("latest"), position::Position::Latest(true));
        assert_eq!(at("1700000000000-3"), position::Position::EntryId("1700000000000-3".into()));
        assert!(matches!(at("2024-05-01T12:00:00Z"), position::Position::Time(t) if t.seconds == 1_714_564_800));
        assert!(parse_position("yesterday").is_err());
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_seconds("30s"), Ok(30));
        assert_eq!(parse_seconds("2m"), Ok(120));
        assert!(parse_seconds("500ms").is_err());
    }
}
