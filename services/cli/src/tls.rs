//! TLS to the services: the client TLS settings of `--tls`, `--ca-file`, `--cert-file` and
//! `--key-file` (and `https://` addresses), and the one place that turns a TLS handshake
//! failure into a line saying which flag to fix.
//!
//! With TLS on, the services' certificates are checked against `--ca-file` when given, else
//! against the system's root certificates; `--cert-file`/`--key-file` present a client
//! certificate to services that require mutual TLS (`EVENTFLOW_TLS_CLIENT_CA_FILE`); without
//! them, [`crate::probe`] detects a server that requires one.

use std::path::Path;

use rustls::{AlertDescription, CertificateError, Error as TlsError, InvalidMessage};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::{args::Global, exit::CliError};

/// Client TLS settings.
#[derive(Debug, Clone)]
pub struct Tls {
    /// What tonic's TLS connector uses.
    pub config: ClientTlsConfig,
    /// Whether a client certificate is presented; without one, [`crate::probe`] first asks
    /// whether the server requires one, to say so clearly.
    pub client_cert: bool,
}

/// The client TLS settings the flags ask for; `None` = plaintext (unless an address says
/// `https://`, see [`for_https`]).
pub fn settings(global: &Global) -> Result<Option<Tls>, CliError> {
    let wanted = global.tls || global.ca_file.is_some() || global.cert_file.is_some() || global.key_file.is_some();
    if !wanted {
        return Ok(None);
    }
    let config = match &global.ca_file {
        Some(path) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca-file", path)?)),
        None => for_https().config,
    };
    let tls = match (&global.cert_file, &global.key_file) {
        (Some(cert), Some(key)) => {
            let identity = Identity::from_pem(read("--cert-file", cert)?, read("--key-file", key)?);
            Tls { config: config.identity(identity), client_cert: true }
        }
        (None, None) => Tls { config, client_cert: false },
        _ => return Err(CliError::Usage("--cert-file and --key-file go together".into())),
    };
    Ok(Some(tls))
}

/// The settings of an `https://` address without TLS flags: the system's root certificates.
pub fn for_https() -> Tls {
    Tls { config: ClientTlsConfig::new().with_native_roots(), client_cert: false }
}

/// The bytes of the PEM file of `flag`.
fn read(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Usage(format!("{flag} {}: {e}", path.display())))
}

/// The handshake failures [`refusal`] recognises by their text: between rustls and the caller
/// the error is turned into a string (an `io::Error` holding the message), so its type is gone.
fn known() -> [TlsError; 7] {
    [
        TlsError::AlertReceived(AlertDescription::CertificateRequired),
        TlsError::AlertReceived(AlertDescription::BadCertificate),
        TlsError::AlertReceived(AlertDescription::UnknownCA),
        TlsError::AlertReceived(AlertDescription::CertificateUnknown),
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
        TlsError::InvalidCertificate(CertificateError::NotValidForName),
        TlsError::InvalidMessage(InvalidMessage::InvalidContentType),
    ]
}

/// What to do about a failed TLS handshake somewhere in `err`'s chain, or `None` when the
/// error is not one.
pub fn refusal(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<TlsError>() {
            return Some(explain(tls));
        }
        let text = e.to_string();
        if let Some(tls) = known().iter().find(|tls| text.contains(&tls.to_string())) {
            return Some(explain(tls));
        }
        next = e.source();
    }
    None
}

/// One line on what `error` means for the flags.
fn explain(error: &TlsError) -> String {
    match error {
        TlsError::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate (mutual TLS): give --cert-file and --key-file".into()
        }
        TlsError::AlertReceived(
            AlertDescription::BadCertificate | AlertDescription::UnknownCA | AlertDescription::CertificateUnknown,
        ) => format!("the server refused the client certificate of --cert-file ({error})"),
        TlsError::InvalidCertificate(_) => {
            format!("the server's certificate is not trusted ({error}): give the CA that signed it with --ca-file")
        }
        TlsError::InvalidMessage(InvalidMessage::InvalidContentType) => {
            "the server does not serve TLS: use an http:// address without --tls, --ca-file, --cert-file".into()
        }
        other => format!("TLS handshake failed: {other}"),
    }
}
