//! TLS for the gRPC server, with certificates reloaded from their files without a restart.
//!
//! What: when `--tls-cert-file`/`--tls-key-file` are set, every accepted TCP connection goes
//! through a rustls handshake (ALPN `h2`) before tonic sees it; with `--tls-client-ca-file` the
//! handshake also requires a client certificate signed by that CA (mutual TLS).
//!
//! How: [`TlsIncoming`] wraps tonic's [`TcpIncoming`] (so TCP_NODELAY and TCP keepalive stay as
//! they are for plain TCP) and runs each handshake in its own task, so a slow or silent client
//! never holds up the accept loop; it yields only completed handshakes, which tonic serves like
//! any other connection (`tokio_rustls::server::TlsStream` implements tonic's `Connected`, so
//! handlers can read the peer's certificates). Before each handshake starts, [`Reloader`] asks
//! its [`Watched`] configuration for the current one, which is rebuilt when the files changed
//! (see [`crate::watched`]): a rotated certificate is used from the next handshake, open
//! connections stay on the certificate they negotiated, and a rotation that leaves unreadable
//! or mismatched files keeps the previous configuration.

use std::{
    fmt,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{net::TcpStream, task::JoinSet};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::Stream;
use tonic::transport::server::TcpIncoming;

use crate::watched::Watched;

/// How long a client may take to complete its handshake before the connection is dropped: a
/// client that connects and says nothing must not hold a socket (and a task) forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in progress at once; beyond it no connection is accepted until one finishes,
/// which bounds the memory a flood of connecting clients can take.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// The files the server's TLS configuration is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain the server presents, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to; `None` = no client certificates.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Reads the files and builds the server configuration; the error names the file and flag
    /// at fault in one line.
    pub fn load(&self) -> Result<Arc<ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs(&self.cert, "--tls-cert-file")?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("--tls-key-file {}: no readable PEM private key: {e}", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            format!("--tls-cert-file {} with --tls-key-file {}: {e}", self.cert.display(), self.key.display())
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Reads every certificate of a PEM file; fails when there is none.
fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    parse_certs(&read_file(path, flag)?, path, flag)
}

/// The contents of the file given by `flag`; the error names the flag and the file.
pub(crate) fn read_file(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// Every certificate of `pem`, read from `path` (given by `flag`); fails when there is none.
pub(crate) fn parse_certs(pem: &[u8], path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {}: no PEM certificate in the file", path.display()));
    }
    Ok(certs)
}

/// The CA certificates of `pem`, read from `path` (given by `flag`), as trust anchors; fails
/// when there is none or one is not a usable CA certificate.
pub(crate) fn parse_roots(pem: &[u8], path: &Path, flag: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(pem, path, flag)? {
        roots.add(cert).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The verifier that requires a client certificate chaining to one of the CAs in `ca`.
fn client_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let flag = "--tls-client-ca-file";
    let roots = parse_roots(&read_file(ca, flag)?, ca, flag)?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("--tls-client-ca-file {}: {e}", ca.display()))
}

/// The TLS configuration in use, rebuilt when its files change.
#[derive(Debug)]
pub struct Reloader {
    /// The acceptor built from the files; cloned into each handshake.
    acceptor: Watched<TlsAcceptor>,
}

impl Reloader {
    /// Loads the configuration; fails (one line) on missing, unreadable or mismatched files.
    pub fn new(files: TlsFiles) -> Result<Self, String> {
        let paths = [Some(files.cert.clone()), Some(files.key.clone()), files.client_ca.clone()];
        let paths = paths.into_iter().flatten().collect();
        // Compared on every handshake: a few `stat` calls, and a rotation applies at once.
        let acceptor =
            Watched::new("TLS certificate", paths, Duration::ZERO, move || files.load().map(TlsAcceptor::from))?;
        Ok(Self { acceptor })
    }

    /// The acceptor for the next handshake, reloaded first if the files changed.
    pub fn acceptor(&mut self) -> TlsAcceptor {
        TlsAcceptor::clone(&self.acceptor.current())
    }
}

/// Accepted connections after a completed TLS handshake (see the module docs).
pub struct TlsIncoming {
    /// Accepted TCP connections, with TCP_NODELAY and keepalive set.
    tcp: TcpIncoming,
    /// False once the listener ended (it never does for a TCP listener; kept for correctness).
    tcp_open: bool,
    /// The configuration handshakes use.
    reloader: Reloader,
    /// Handshakes in progress; dropping the stream (the server stopped) aborts them.
    handshakes: JoinSet<std::io::Result<TlsStream<TcpStream>>>,
}

impl fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIncoming").field("reloader", &self.reloader).finish_non_exhaustive()
    }
}

impl TlsIncoming {
    /// TLS over the connections `tcp` accepts, configured by `reloader`.
    pub fn new(tcp: TcpIncoming, reloader: Reloader) -> Self {
        Self { tcp, tcp_open: true, reloader, handshakes: JoinSet::new() }
    }
}

impl Stream for TlsIncoming {
    type Item = std::io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while this.tcp_open && this.handshakes.len() < MAX_PENDING_HANDSHAKES {
            match Pin::new(&mut this.tcp).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let acceptor = this.reloader.acceptor();
                    this.handshakes.spawn(async move {
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
                    });
                }
                // An accept error (e.g. out of file descriptors): tonic logs it and polls again.
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.tcp_open = false,
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Ok(stream)))) => return Poll::Ready(Some(Ok(stream))),
                // A client that failed its handshake (wrong CA, no client certificate, plain
                // HTTP/2 on a TLS port, timeout) is its own problem, not the server's.
                Poll::Ready(Some(Ok(Err(error)))) => tracing::debug!(%error, "TLS handshake failed"),
                Poll::Ready(Some(Err(error))) => tracing::debug!(%error, "TLS handshake task ended"),
                Poll::Ready(None) if this.tcp_open => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), client_ca: None }
    }

    #[test]
    fn missing_files_fail_in_one_line_naming_the_flag() {
        let dir = std::env::temp_dir().join(format!("ef-tls-missing-{}", std::process::id()));
        let Err(error) = files(&dir).load() else { panic!("loaded missing files") };
        assert!(error.starts_with("--tls-cert-file "), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("ef-tls-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), "not a certificate\n").unwrap();
        std::fs::write(dir.join("key.pem"), "not a key\n").unwrap();
        let Err(error) = files(&dir).load() else { panic!("loaded garbage") };
        assert!(error.contains("no PEM certificate"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
