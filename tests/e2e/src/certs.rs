//! Test certificates for the services' gRPC TLS: PEM files a service reads through
//! `--tls-*-file`, and the client TLS settings that trust them. The CAs and leaves come from
//! `eventflow_testkit::certs` (re-exported here).

use std::path::{Path, PathBuf};

pub use eventflow_testkit::certs::{Ca, Leaf, SERVER_NAME};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A directory of PEM files for one test's server (removed on drop).
#[derive(Debug)]
pub struct TlsDir {
    /// The directory.
    pub dir: PathBuf,
}

impl TlsDir {
    /// A new empty directory.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("eventflow-tls-{}", crate::unique_prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    /// The server certificate file.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    /// The server key file.
    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// The client CA file.
    pub fn client_ca(&self) -> PathBuf {
        self.dir.join("client-ca.crt")
    }

    /// Installs `leaf` as the server certificate and key, each replaced atomically by a
    /// rename (as a rotation does).
    pub fn install(&self, leaf: &Leaf) {
        write_atomically(&self.cert(), &leaf.cert_pem);
        write_atomically(&self.key(), &leaf.key_pem);
    }

    /// Writes the client CA file.
    pub fn install_client_ca(&self, ca: &Ca) {
        write_atomically(&self.client_ca(), &ca.pem());
    }

    /// The service flags for the server certificate (and the client CA when `mtls`).
    pub fn args(&self, mtls: bool) -> Vec<String> {
        let mut args = vec![
            "--tls-cert-file".to_string(),
            self.cert().display().to_string(),
            "--tls-key-file".to_string(),
            self.key().display().to_string(),
        ];
        if mtls {
            args.extend(["--tls-client-ca-file".to_string(), self.client_ca().display().to_string()]);
        }
        args
    }
}

impl Default for TlsDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TlsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Client TLS settings trusting `ca` for [`SERVER_NAME`], presenting `identity` if given.
pub fn client_tls(ca: &Ca, identity: Option<&Leaf>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name(SERVER_NAME);
    match identity {
        Some(leaf) => tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem)),
        None => tls,
    }
}
