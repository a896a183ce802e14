//! A real webhook receiver for push tests: a hyper HTTP/1.1 server (plain or TLS) on `127.0.0.1:0` that
//! records every request (in arrival order, with its arrival time) and answers each by a
//! script of the request's number, and a Standard Webhooks signature check.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its headers.
    pub headers: http::HeaderMap,
    /// Its body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// A header as text ('' when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    /// How many of the request's `webhook-signature` entries verify with `secret`
    /// (`whsec_<base64>`), by the Standard Webhooks scheme.
    pub fn valid_signatures(&self, secret: &str) -> usize {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        let signed = format!("{}.{}.", self.header("webhook-id"), self.header("webhook-timestamp"));
        mac.update(signed.as_bytes());
        mac.update(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.header("webhook-signature").split(' ').filter(|s| *s == expected).count()
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status and body, with these extra headers.
    Status(u16, &'static str, Vec<(&'static str, String)>),
    /// No answer at all (the connection stays open until the test ends): a stuck endpoint.
    Hang,
    /// This status once the test adds a permit to the gate (an endpoint the test holds).
    Gated(Arc<tokio::sync::Semaphore>, u16),
}

impl Reply {
    /// A plain status with an empty body.
    pub fn status(status: u16) -> Self {
        Reply::Status(status, "", Vec::new())
    }
}

/// The running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// The requests, in arrival order.
    requests: mpsc::UnboundedReceiver<Received>,
    /// The accept loop.
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts a receiver answering request number `n` (0-based) with `script(n, &request)`.
    pub async fn start(script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(None, script).await
    }

    /// [`Receiver::start`] serving https with `leaf` (a test server certificate for
    /// `localhost` and 127.0.0.1).
    pub async fn start_tls(
        leaf: &crate::certs::Leaf,
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))), script).await
    }

    /// Starts a receiver, over TLS when `tls` is set.
    async fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, requests) = mpsc::unbounded_channel();
        let script = Arc::new(script);
        let count = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, script, count) = (tx.clone(), script.clone(), count.clone());
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (tx, script, count) = (tx.clone(), script.clone(), count.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let received = Received { headers: parts.headers, body, at: Instant::now() };
                        let reply = script(n, &received);
                        let _ = tx.send(received);
                        match reply {
                            Reply::Status(status, body, headers) => {
                                let mut response = http::Response::builder().status(status);
                                for (name, value) in headers {
                                    response = response.header(name, value);
                                }
                                Ok::<_, std::convert::Infallible>(
                                    response.body(Full::new(bytes::Bytes::from_static(body.as_bytes()))).unwrap(),
                                )
                            }
                            Reply::Hang => std::future::pending().await,
                            Reply::Gated(gate, status) => {
                                let _permit = gate.acquire().await;
                                Ok(http::Response::builder().status(status).body(Full::default()).unwrap())
                            }
                        }
                    }
                });
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        None => {
                            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, requests, task }
    }

    /// The endpoint URL (plain http on loopback: needs the allow-private flag).
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The https endpoint URL of a [`Receiver::start_tls`] receiver.
    pub fn https_url(&self) -> String {
        format!("https://{}/hook", self.addr)
    }

    /// The next request; fails the test if none comes within `deadline`.
    pub async fn next(&mut self, deadline: Duration) -> Received {
        tokio::time::timeout(deadline, self.requests.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook request within {deadline:?}"))
            .unwrap()
    }

    /// A request that already arrived, if any (without waiting).
    pub fn try_next(&mut self) -> Option<Received> {
        self.requests.try_recv().ok()
    }
}
