//! Test certificates: throwaway CAs issuing server and client certificates (rcgen), written as
//! PEM files a service reads through `--tls-*-file`, and the client TLS settings that trust
//! them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The name every test server certificate is issued for (and clients ask for).
pub const SERVER_NAME: &str = "localhost";

/// A certificate authority of one test.
#[derive(Debug)]
pub struct Ca {
    /// The CA's certificate and key; issues the leaves.
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// The certificate's DER, to compare with what a handshake presents.
    pub der: Vec<u8>,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// The CA certificate as PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for [`SERVER_NAME`] and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        self.leaf("eventflow test server", &[SERVER_NAME, "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with common name `name`.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate with subject `CN=<common_name>,O=<organization>` (RFC 4514 order)
    /// and subject alternative names `sans`: URIs (with `://`, e.g. SPIFFE ids) or DNS names.
    pub fn client_with(&self, common_name: &str, organization: &str, sans: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, organization);
        params.distinguished_name.push(DnType::CommonName, common_name);
        for san in sans {
            params.subject_alt_names.push(if san.contains("://") {
                SanType::URI((*san).try_into().unwrap())
            } else {
                SanType::DnsName((*san).try_into().unwrap())
            });
        }
        self.sign(params, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        self.sign(params, usage)
    }

    fn sign(&self, mut params: CertificateParams, usage: ExtendedKeyUsagePurpose) -> Leaf {
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }
}

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
