//! A connection to one eventflow service: a tonic channel (plain or TLS) and the bearer token
//! sent with every call.
//!
//! The channel connects lazily and reconnects by itself, so a [`Connection`] can be built
//! before the service is up and survives the service's restarts; a call made while the
//! service is unreachable fails with UNAVAILABLE, which the publisher and the subscriber retry.

use std::time::Duration;

use eventflow_proto::v1::{
    admin_service_client::AdminServiceClient, publisher_service_client::PublisherServiceClient,
    subscriber_service_client::SubscriberServiceClient,
};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, ClientTlsConfig, Endpoint},
};

use crate::ClientError;

/// The channel type every client of this crate uses: a channel whose calls carry the token.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Debug, Clone, Default)]
pub struct BearerToken {
    /// The header value (`Bearer <token>`), checked for valid characters once at build time.
    header: Option<MetadataValue<Ascii>>,
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// How to reach a service; build with [`Connection::builder`].
#[derive(Debug, Clone)]
pub struct ConnectionBuilder {
    /// `http://host:port` or `https://host:port`.
    url: String,
    /// TLS settings (CA, client identity, domain); `None` with an `https` URL uses tonic's
    /// defaults (the system roots, when its features provide them).
    tls: Option<ClientTlsConfig>,
    /// The bearer token, if the service requires one.
    token: Option<String>,
    /// How long establishing the TCP/TLS connection may take.
    connect_timeout: Duration,
}

impl ConnectionBuilder {
    /// Uses TLS with these settings.
    pub fn tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sends `authorization: Bearer <token>` with every call.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How long establishing a connection may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The connection (connected lazily, on the first call).
    pub fn build(self) -> Result<Connection, ClientError> {
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| ClientError::Config(format!("url {:?}: {e}", self.url)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = self.tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| ClientError::Config(format!("tls: {e}")))?;
        }
        let header = match self.token {
            None => None,
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| ClientError::Config("bearer token: not a valid header value".into()))?,
            ),
        };
        Ok(Connection { channel: endpoint.connect_lazy(), auth: BearerToken { header } })
    }
}

/// A (lazily connected) channel to one service plus its credentials; cheap to clone.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The tonic channel (reconnects by itself).
    channel: Channel,
    /// The token interceptor every client gets.
    auth: BearerToken,
}

impl Connection {
    /// A plain or TLS connection to `url` (`http://` or `https://`), configured further by the
    /// builder's methods.
    pub fn builder(url: impl Into<String>) -> ConnectionBuilder {
        ConnectionBuilder { url: url.into(), tls: None, token: None, connect_timeout: Duration::from_secs(5) }
    }

    /// A plain connection to `url` with no token.
    pub fn plain(url: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(url).build()
    }

    /// A PublisherService client.
    pub fn publisher(&self) -> PublisherServiceClient<AuthChannel> {
        PublisherServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// A SubscriberService client.
    pub fn subscriber(&self) -> SubscriberServiceClient<AuthChannel> {
        SubscriberServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// An AdminService client.
    pub fn admin(&self) -> AdminServiceClient<AuthChannel> {
        AdminServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }
}
