//! Whether a TLS server requires a client certificate, asked before connecting without one.
//!
//! Why: under TLS 1.3 a client finishes its handshake before the server has looked at its
//! (missing) certificate, so a mutual-TLS server's refusal reaches the client only as the first
//! call fails — sometimes as the server's `certificate required` alert, sometimes (when the
//! connection is reset first) as a bare "connection closed" that says nothing. So when the CLI
//! talks TLS without `--cert-file`, it first makes one handshake of its own and watches whether
//! the server sends a CertificateRequest: then it stops with a line saying to give
//! `--cert-file` and `--key-file`.
//!
//! How: a rustls client whose certificate resolver only notes that it was asked (and offers
//! none). This handshake does not check the server's certificate — it sends no data and is
//! closed at once; the real connection that follows checks it as configured.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, Error, SignatureScheme,
    client::{
        ResolvesClientCert,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, ServerName, UnixTime},
    sign::CertifiedKey,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::Uri;

/// Whether the TLS server at `uri` asks for a client certificate; `false` when it cannot be
/// reached (the real connection then reports why).
pub async fn requires_client_certificate(uri: &Uri) -> bool {
    let Some(host) = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string()) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(host.clone()) else { return false };
    let provider = Arc::new(ring::default_provider());
    let asked = Arc::new(Asked::default());
    let Ok(builder) = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_cert_resolver(asked.clone());
    let Ok(tcp) = TcpStream::connect((host.as_str(), uri.port_u16().unwrap_or(443))).await else { return false };
    // Succeeds under TLS 1.3 even when a certificate was required; fails under TLS 1.2.
    let _handshake = TlsConnector::from(Arc::new(config)).connect(name, tcp).await;
    asked.0.load(Ordering::Relaxed)
}

/// Notes that the server asked for a client certificate, and offers none.
#[derive(Debug, Default)]
struct Asked(AtomicBool);

impl ResolvesClientCert for Asked {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate: the probe only watches the handshake (see the module docs).
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
