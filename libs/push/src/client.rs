//! The HTTP client of the pusher: one POST over one fresh connection to a vetted address.
//!
//! Each push resolves the endpoint's host, drops every address [`crate::address`] refuses
//! (unless private endpoints are allowed) and connects to the first remaining one that answers
//! — the address checked is the address connected to, so DNS rebinding cannot slip a private
//! address in between. `https` endpoints get TLS (rustls on ring, the system's roots, SNI from
//! the host; plus the roots of `--push-ca-file`). The whole exchange — resolve, connect, TLS, request, response head and the first
//! [`MAX_BODY_BYTES`] of the body — runs under the subscription's push timeout.
//!
//! No connection pooling yet: a keep-alive pool per endpoint would save the connect and TLS
//! handshake per push (see docs/next-steps.md).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{
    address::{Endpoint, check_endpoint, check_ip},
    outcome::{Attempt, MAX_BODY_IN_REASON},
    request::PushRequest,
    retry_after,
};

/// Body bytes of a response read at most (what a dead letter's reason quotes).
pub const MAX_BODY_BYTES: usize = MAX_BODY_IN_REASON;

/// Sends pushes; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    /// TLS for https endpoints.
    tls: TlsConnector,
    /// `EVENTFLOW_PUSH_ALLOW_PRIVATE`: plain http and non-public addresses allowed.
    allow_private: bool,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("allow_private", &self.allow_private).finish_non_exhaustive()
    }
}

/// The TLS roots could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("push TLS roots: {0}")]
pub struct NoRoots(String);

impl HttpClient {
    /// A client trusting the system's root certificates and those of `extra_roots_pem` (PEM
    /// certificates, e.g. a private CA of internal endpoints; `--push-ca-file`).
    pub fn new(allow_private: bool, extra_roots_pem: Option<&[u8]>) -> Result<Self, NoRoots> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let loaded = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (mut added, _) = roots.add_parsable_certificates(loaded.certs);
        if let Some(pem) = extra_roots_pem {
            let extra = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| NoRoots(format!("the extra CA file: {e}")))?;
            if extra.is_empty() {
                return Err(NoRoots("the extra CA file holds no PEM certificate".into()));
            }
            for cert in extra {
                roots.add(cert).map_err(|e| NoRoots(format!("the extra CA file: {e}")))?;
                added += 1;
            }
        }
        if added == 0 {
            let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
            return Err(NoRoots(format!("no usable root certificates on this system ({})", errors.join("; "))));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| NoRoots(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { tls: TlsConnector::from(Arc::new(config)), allow_private })
    }

    /// POSTs `request` to `endpoint` within `timeout`.
    pub async fn post(&self, endpoint: &str, request: PushRequest, timeout: Duration) -> Attempt {
        let endpoint = match check_endpoint(endpoint, self.allow_private) {
            Ok(endpoint) => endpoint,
            Err(refused) => return Attempt::Refused(refused.to_string()),
        };
        match tokio::time::timeout(timeout, self.exchange(&endpoint, request)).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Timeout,
        }
    }

    /// Resolve, vet, connect, send, read the response head and the start of the body.
    async fn exchange(&self, endpoint: &Endpoint, request: PushRequest) -> Attempt {
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => return Attempt::Failed(format!("cannot resolve {}: {e}", endpoint.host)),
        };
        let mut refused = None;
        let mut last_error = format!("{} resolves to no address", endpoint.host);
        for addr in addrs {
            if let Err(e) = check_ip(addr.ip(), self.allow_private) {
                refused = Some(e.to_string());
                continue;
            }
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return self.send(endpoint, tcp, request).await;
                }
                Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
            }
        }
        match refused {
            Some(why) => Attempt::Refused(why),
            None => Attempt::Failed(last_error),
        }
    }

    /// The request over a connected socket (TLS first for https).
    async fn send(&self, endpoint: &Endpoint, tcp: TcpStream, request: PushRequest) -> Attempt {
        if !endpoint.https {
            return exchange_http1(TokioIo::new(tcp), endpoint, request).await;
        }
        let name = match rustls::pki_types::ServerName::try_from(endpoint.host.clone()) {
            Ok(name) => name,
            Err(e) => return Attempt::Failed(format!("bad TLS server name {}: {e}", endpoint.host)),
        };
        match self.tls.connect(name, tcp).await {
            Ok(tls) => exchange_http1(TokioIo::new(tls), endpoint, request).await,
            Err(e) => Attempt::Failed(format!("TLS handshake with {}: {e}", endpoint.host)),
        }
    }
}

/// One HTTP/1.1 request on `io`.
async fn exchange_http1<T>(io: TokioIo<T>, endpoint: &Endpoint, request: PushRequest) -> Attempt
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(io).await {
        Ok(pair) => pair,
        Err(e) => return Attempt::Failed(format!("HTTP handshake: {e}")),
    };
    // Drives the connection; aborted when the exchange is over or the caller's timeout drops it.
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let attempt = async {
        let target = endpoint.uri.path_and_query().map_or("/", |p| p.as_str());
        let host = match endpoint.uri.authority() {
            Some(a) => a.as_str().to_string(),
            None => endpoint.host.clone(),
        };
        let mut builder = http::Request::post(target).header(http::header::HOST, host);
        if let Some(headers) = builder.headers_mut() {
            headers.extend(request.headers);
        }
        let http_request = match builder.body(Full::new(request.body)) {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(format!("cannot build the request: {e}")),
        };
        let response = match sender.send_request(http_request).await {
            Ok(response) => response,
            Err(e) => return Attempt::Failed(format!("HTTP exchange: {e}")),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after::parse(v, std::time::SystemTime::now()));
        let mut body = Vec::new();
        let mut incoming = response.into_body();
        while body.len() < MAX_BODY_BYTES {
            match incoming.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        body.extend_from_slice(data);
                    }
                }
                // A body cut short still answered with a status: it counts.
                Some(Err(_)) | None => break,
            }
        }
        body.truncate(MAX_BODY_BYTES);
        Attempt::Response { status, retry_after, body }
    };
    attempt.await
}

/// Aborts a task when dropped (also when a timeout drops the future holding it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
