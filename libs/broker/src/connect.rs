//! The one place that builds Redis clients, so `rediss://` (TLS) settings reach every
//! connection the broker opens: the pool of ordinary commands, the blocking readers of delivery
//! sessions and the watcher's connection all come from the client built here.
//!
//! How: without TLS material the URL alone decides (`redis://` plain TCP; `rediss://` TLS
//! verified against the system's root certificates). With a CA or a client certificate the
//! client is built with redis-rs's `Client::build_with_tls`, which keeps the parsed material in
//! the client's connection info; the pool is built from that connection info, not from the URL,
//! so it cannot miss it. The TLS handshake happens when a connection is opened, so a server
//! certificate that does not verify surfaces like any other connection failure (an I/O error:
//! [`BrokerError::Unavailable`] carrying the rustls reason). A `rediss://...#insecure` URL (no
//! certificate verification) is refused when the client is built.

use std::fmt;

use redis::{ClientTlsConfig, ConnectionAddr, TlsCertificates};

use crate::{BrokerError, Result};

/// TLS material for connections to a `rediss://` Redis (none = the URL alone decides).
#[derive(Clone, Default)]
pub struct RedisTls {
    /// PEM CA certificate(s) the Redis server's certificate must chain to, for a Redis whose
    /// certificate is not issued by a public CA; `None` = the system's root certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and private key this client presents, for a Redis that requires
    /// client certificates (`tls-auth-clients yes`); `None` = no client certificate.
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate and its key, as PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
}

impl RedisTls {
    /// Whether any TLS material is set.
    pub fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.client_identity.is_some()
    }
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key must never reach a log line.
        f.debug_struct("RedisTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field("client_identity", &self.client_identity.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Whether `url` asks for TLS (`rediss://`).
pub fn is_tls_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("rediss"))
}

/// The client for `url` with `tls` applied; fails on a malformed URL, on TLS material with a
/// URL that is not `rediss://`, and on PEM that does not parse.
pub fn client(url: &str, tls: &RedisTls) -> Result<redis::Client> {
    let invalid = |e: redis::RedisError| BrokerError::invalid("redis_url", e.to_string());
    let client = if !tls.is_set() {
        redis::Client::open(url).map_err(invalid)?
    } else if !is_tls_url(url) {
        return Err(BrokerError::invalid("redis_url", "a CA or client certificate needs a rediss:// URL"));
    } else {
        let certificates = TlsCertificates {
            client_tls: tls
                .client_identity
                .as_ref()
                .map(|id| ClientTlsConfig { client_cert: id.cert_pem.clone(), client_key: id.key_pem.clone() }),
            root_cert: tls.ca_pem.clone(),
        };
        redis::Client::build_with_tls(url, certificates).map_err(invalid)?
    };
    // Built without redis-rs's `tls-rustls-insecure`, such a client would fail every
    // connection (as an internal error); refuse it here, at start.
    if let ConnectionAddr::TcpTls { insecure: true, .. } = client.get_connection_info().addr() {
        return Err(BrokerError::invalid(
            "redis_url",
            "#insecure (no certificate verification) is not supported; trust the server's CA instead",
        ));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_material_needs_a_rediss_url() {
        let tls = RedisTls { ca_pem: Some(b"-----BEGIN CERTIFICATE-----".to_vec()), client_identity: None };
        let Err(error) = client("redis://127.0.0.1:6379", &tls) else { panic!("accepted a CA with redis://") };
        assert!(error.to_string().contains("rediss://"), "{error}");
    }

    #[test]
    fn unverified_tls_is_refused() {
        let Err(error) = client("rediss://127.0.0.1:6380/#insecure", &RedisTls::default()) else {
            panic!("accepted #insecure")
        };
        assert!(error.to_string().contains("#insecure"), "{error}");
        assert!(client("rediss://127.0.0.1:6380", &RedisTls::default()).is_ok());
    }

    #[test]
    fn the_scheme_decides_tls() {
        assert!(is_tls_url("rediss://h:1"));
        assert!(is_tls_url("REDISS://h:1"));
        assert!(!is_tls_url("redis://h:1"));
        assert!(!is_tls_url("redis+unix:///tmp/s"));
    }

    #[test]
    fn debug_output_hides_the_material() {
        let tls = RedisTls {
            ca_pem: Some(b"ca".to_vec()),
            client_identity: Some(ClientIdentity { cert_pem: b"cert".to_vec(), key_pem: b"secret-key".to_vec() }),
        };
        let shown = format!("{tls:?}");
        assert!(!shown.contains("secret-key"), "{shown}");
    }
}
