//! Connecting to the services and making calls with a deadline. Every error of a call becomes a
//! [`CliError`] here, naming what the CLI was doing.

use std::{future::Future, time::Duration};

use eventflow_proto::v1::{
    admin_service_client::AdminServiceClient, archive_service_client::ArchiveServiceClient,
    dead_letter_service_client::DeadLetterServiceClient, publisher_service_client::PublisherServiceClient,
    subscriber_service_client::SubscriberServiceClient,
};
use tonic::{
    Request, Response, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::{args::Global, exit::CliError, output::Format, tls::Tls};

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

    /// The client TLS settings of the flags (`None` = plaintext unless an address says https).
    pub fn tls(&self) -> Result<Option<Tls>, CliError> {
        crate::tls::settings(&self.global)
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
        let channel = connect("admin", &self.global.admin, self.timeout(), self.tls()?.as_ref()).await?;
        Ok(AdminServiceClient::with_interceptor(channel, self.token()?).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A client of the PublisherService.
    pub async fn publisher(&self) -> Result<PublisherServiceClient<Conn>, CliError> {
        let channel = connect("publisher", &self.global.publisher, self.timeout(), self.tls()?.as_ref()).await?;
        Ok(PublisherServiceClient::with_interceptor(channel, self.token()?)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A client of the SubscriberService.
    pub async fn subscriber(&self) -> Result<SubscriberServiceClient<Conn>, CliError> {
        let channel = connect("subscriber", &self.global.subscriber, self.timeout(), self.tls()?.as_ref()).await?;
        Ok(SubscriberServiceClient::with_interceptor(channel, self.token()?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A client of the ArchiveService.
    pub async fn archive(&self) -> Result<ArchiveServiceClient<Conn>, CliError> {
        let channel = connect("archive", &self.global.archive, self.timeout(), self.tls()?.as_ref()).await?;
        Ok(ArchiveServiceClient::with_interceptor(channel, self.token()?).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A client of the DeadLetterService.
    pub async fn dlq(&self) -> Result<DeadLetterServiceClient<Conn>, CliError> {
        let channel = connect("dlq", &self.global.dlq, self.timeout(), self.tls()?.as_ref()).await?;
        Ok(DeadLetterServiceClient::with_interceptor(channel, self.token()?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// An endpoint for `addr` with the TLS settings `tls` (see [`crate::tls`]): `host:port` without
/// a scheme means `https://` with TLS settings and `http://` without; an `https://` address
/// without TLS settings trusts the system's roots. Also says whether the endpoint talks TLS
/// without a client certificate.
pub fn endpoint(service: &str, addr: &str, timeout: Duration, tls: Option<&Tls>) -> Result<(Endpoint, bool), CliError> {
    let uri = match (addr.split_once("://"), tls) {
        (Some(("http", rest)), Some(_)) => format!("https://{rest}"),
        (Some(_), _) => addr.to_string(),
        (None, Some(_)) => format!("https://{addr}"),
        (None, None) => format!("http://{addr}"),
    };
    let invalid = |e: &dyn std::fmt::Display| CliError::Usage(format!("invalid {service} address {addr:?}: {e}"));
    let mut endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| invalid(&e))?;
    let tls = tls.cloned().or_else(|| uri.starts_with("https://").then(crate::tls::for_https));
    let without_cert = tls.as_ref().is_some_and(|tls| !tls.client_cert);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.config).map_err(|e| invalid(&e))?;
    }
    Ok((endpoint.connect_timeout(timeout), without_cert))
}

/// Connects to `service` at `addr` within `timeout`; failure is [`CliError::Unreachable`], or a
/// refusal naming the flag to fix when the TLS handshake failed or the server requires a client
/// certificate the flags do not give.
pub async fn connect(service: &str, addr: &str, timeout: Duration, tls: Option<&Tls>) -> Result<Channel, CliError> {
    let (endpoint, without_cert) = endpoint(service, addr, timeout, tls)?;
    let what = format!("connect to {service} at {addr}");
    let connecting = async {
        if without_cert && crate::probe::requires_client_certificate(endpoint.uri()).await {
            let why = "the server requires a client certificate (mutual TLS): give --cert-file and --key-file";
            return Err(CliError::status(what.clone(), Status::unauthenticated(why)));
        }
        endpoint.connect().await.map_err(|e| match crate::tls::refusal(&e) {
            Some(why) => CliError::status(what.clone(), Status::unauthenticated(why)),
            None => CliError::Unreachable(format!("{what}: {}", crate::exit::chain(&e))),
        })
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(result) => result,
        Err(_) => {
            Err(CliError::Unreachable(format!("{what}: no connection within {}", crate::duration::format(timeout))))
        }
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
