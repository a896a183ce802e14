//! Connecting to the services and making calls with a deadline. Every error of a call becomes a
//! [`CliError`] here, naming what the CLI was doing.

use std::{future::Future, time::Duration};

use eventflow_proto::v1::{
    admin_service_client::AdminServiceClient, dead_letter_service_client::DeadLetterServiceClient,
    publisher_service_client::PublisherServiceClient, subscriber_service_client::SubscriberServiceClient,
};
use tonic::{
    Request, Response, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::{args::Global, exit::CliError, output::Format};

/// Largest message the CLI accepts (dead-letter pages of large events).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A connection that sends the `--token`, if any, as `authorization: Bearer <token>`.
pub type Conn = InterceptedService<Channel, Token>;

/// Adds the bearer token to every call.
#[derive(Debug, Clone)]
pub struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// What every command gets: the global flags.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The parsed global flags.
    pub global: Global,
}

impl Ctx {
    /// The output format.
    pub fn format(&self) -> Format {
        self.global.output
    }

    /// The deadline of one call.
    pub fn timeout(&self) -> Duration {
        self.global.call_timeout()
    }

    /// Makes a unary call with the call deadline; see [`call`].
    pub async fn call<T>(
        &self,
        what: impl Into<String>,
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, CliError> {
        call(what, self.timeout(), fut).await
    }

    /// The bearer-token interceptor of `--token`.
    fn token(&self) -> Result<Token, CliError> {
        let Some(token) = &self.global.token else { return Ok(Token(None)) };
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| CliError::Usage("--token: not a valid header value".into()))?;
        Ok(Token(Some(value)))
    }

    /// A client of the AdminService.
    pub async fn admin(&self) -> Result<AdminServiceClient<Conn>, CliError> {
        let channel = connect("admin", &self.global.admin, self.timeout()).await?;
        Ok(AdminServiceClient::with_interceptor(channel, self.token()?).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A client of the PublisherService.
    pub async fn publisher(&self) -> Result<PublisherServiceClient<Conn>, CliError> {
        let channel = connect("publisher", &self.global.publisher, self.timeout()).await?;
        Ok(PublisherServiceClient::with_interceptor(channel, self.token()?)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A client of the SubscriberService.
    pub async fn subscriber(&self) -> Result<SubscriberServiceClient<Conn>, CliError> {
        let channel = connect("subscriber", &self.global.subscriber, self.timeout()).await?;
        Ok(SubscriberServiceClient::with_interceptor(channel, self.token()?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A client of the DeadLetterService.
    pub async fn dlq(&self) -> Result<DeadLetterServiceClient<Conn>, CliError> {
        let channel = connect("dlq", &self.global.dlq, self.timeout()).await?;
        Ok(DeadLetterServiceClient::with_interceptor(channel, self.token()?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// An endpoint for `addr`; `host:port` without a scheme means `http://host:port`.
pub fn endpoint(service: &str, addr: &str, timeout: Duration) -> Result<Endpoint, CliError> {
    let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    let endpoint =
        Endpoint::from_shared(uri).map_err(|e| CliError::Usage(format!("invalid {service} address {addr:?}: {e}")))?;
    Ok(endpoint.connect_timeout(timeout))
}

/// Connects to `service` at `addr` within `timeout`; failure is [`CliError::Unreachable`].
pub async fn connect(service: &str, addr: &str, timeout: Duration) -> Result<Channel, CliError> {
    let endpoint = endpoint(service, addr, timeout)?;
    let unreachable = |detail: String| CliError::Unreachable(format!("connect to {service} at {addr}: {detail}"));
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(unreachable(crate::exit::chain(&e))),
        Err(_) => Err(unreachable(format!("no connection within {}", crate::duration::format(timeout)))),
    }
}

/// Awaits a call for at most `timeout` (then DEADLINE_EXCEEDED); its error names `what`.
pub async fn call<T>(
    what: impl Into<String>,
    timeout: Duration,
    fut: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, CliError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(CliError::status(what, status)),
        Err(_) => Err(CliError::status(what, Status::deadline_exceeded("no answer within the --timeout"))),
    }
}
