//! TLS to Redis (`rediss://`): the files of `--redis-ca-file`, `--redis-client-cert-file` and
//! `--redis-client-key-file`, read and checked once at start.
//!
//! Why at start: redis-rs parses this material only when it opens a connection, so a broken
//! file would otherwise show up as every connection failing (a service that never becomes
//! ready). Here each mistake fails start-up with one line naming its flag: a file that cannot
//! be read or holds no PEM certificate/key, a key that does not belong to its certificate, a
//! certificate without its key (or the reverse), and TLS material with a `redis://` URL (which
//! would silently connect in clear text). The checked PEM bytes go to the broker
//! ([`RedisTls`]), which builds every Redis client from them.

use std::path::Path;

use eventflow_broker::{ClientIdentity, RedisTls, connect::is_tls_url};
use rustls::{pki_types::PrivateKeyDer, pki_types::pem::PemObject, sign::CertifiedKey};

use crate::tls::{parse_certs, parse_roots, read_file};

/// The flag of the CA file (named in errors).
const CA_FLAG: &str = "--redis-ca-file";
/// The flag of the client certificate file (named in errors).
const CERT_FLAG: &str = "--redis-client-cert-file";
/// The flag of the client key file (named in errors).
const KEY_FLAG: &str = "--redis-client-key-file";

/// Reads and checks the TLS files for connections to `url`; all `None` gives no TLS material
/// (a `rediss://` URL is then verified against the system's root certificates).
pub fn load(url: &str, ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<RedisTls, String> {
    if cert.is_some() != key.is_some() {
        return Err(format!("{CERT_FLAG} and {KEY_FLAG} must be set together"));
    }
    if (ca.is_some() || cert.is_some()) && !is_tls_url(url) {
        // The URL is not printed: it may hold a password.
        return Err(format!(
            "{CA_FLAG} and {CERT_FLAG} need a rediss:// --redis-url or --redis-cluster-nodes (TLS); the URL given is not"
        ));
    }
    let ca_pem = ca
        .map(|path| {
            let pem = read_file(path, CA_FLAG)?;
            parse_roots(&pem, path, CA_FLAG)?;
            Ok::<_, String>(pem)
        })
        .transpose()?;
    let client_identity = match (cert, key) {
        (Some(cert), Some(key)) => Some(identity(cert, key)?),
        _ => None,
    };
    Ok(RedisTls { ca_pem, client_identity })
}

/// The client certificate and key, checked to parse and to belong together.
fn identity(cert: &Path, key: &Path) -> Result<ClientIdentity, String> {
    let cert_pem = read_file(cert, CERT_FLAG)?;
    let key_pem = read_file(key, KEY_FLAG)?;
    let chain = parse_certs(&cert_pem, cert, CERT_FLAG)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{KEY_FLAG} {}: no readable PEM private key: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, &rustls::crypto::ring::default_provider())
        .map_err(|e| format!("{CERT_FLAG} {} with {KEY_FLAG} {}: {e}", cert.display(), key.display()))?;
    Ok(ClientIdentity { cert_pem, key_pem })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use eventflow_testkit::certs::Ca;

    use super::*;

    const TLS_URL: &str = "rediss://127.0.0.1:6380";

    /// A directory with a CA file, a client certificate and its key, and another key.
    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("ef-redis-tls-{}", eventflow_testkit::unique_prefix()));
            std::fs::create_dir_all(&dir).unwrap();
            let ca = Ca::new("redis test ca");
            let leaf = ca.client("eventflow");
            std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
            std::fs::write(dir.join("client.pem"), &leaf.cert_pem).unwrap();
            std::fs::write(dir.join("client.key"), &leaf.key_pem).unwrap();
            std::fs::write(dir.join("other.key"), ca.client("other").key_pem).unwrap();
            std::fs::write(dir.join("garbage.pem"), "not a certificate\n").unwrap();
            Self { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.join(name)
        }

        fn load(&self, url: &str, ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> Result<RedisTls, String> {
            let (ca, cert, key) = (ca.map(|n| self.path(n)), cert.map(|n| self.path(n)), key.map(|n| self.path(n)));
            load(url, ca.as_deref(), cert.as_deref(), key.as_deref())
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Asserts a one-line error that contains `want`.
    fn fails_with(result: Result<RedisTls, String>, want: &str) {
        let Err(error) = result else { panic!("accepted; expected an error with {want:?}") };
        assert!(error.contains(want), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn no_files_means_no_tls_material_with_either_scheme() {
        let files = Files::new();
        assert!(!files.load("redis://127.0.0.1:6379", None, None, None).unwrap().is_set());
        assert!(!files.load(TLS_URL, None, None, None).unwrap().is_set());
    }

    #[test]
    fn a_ca_and_a_client_certificate_load() {
        let files = Files::new();
        let tls = files.load(TLS_URL, Some("ca.pem"), Some("client.pem"), Some("client.key")).unwrap();
        assert!(tls.ca_pem.is_some() && tls.client_identity.is_some());
    }

    #[test]
    fn tls_files_with_a_plain_url_fail() {
        let files = Files::new();
        fails_with(files.load("redis://:secret@127.0.0.1:6379", Some("ca.pem"), None, None), "need a rediss://");
        fails_with(
            files.load("redis://127.0.0.1:6379", None, Some("client.pem"), Some("client.key")),
            "need a rediss://",
        );
        let Err(error) = files.load("redis://:secret@127.0.0.1:6379", Some("ca.pem"), None, None) else {
            unreachable!()
        };
        assert!(!error.contains("secret"), "the URL's password leaked: {error}");
    }

    #[test]
    fn a_certificate_without_its_key_fails() {
        let files = Files::new();
        fails_with(files.load(TLS_URL, None, Some("client.pem"), None), "must be set together");
        fails_with(files.load(TLS_URL, None, None, Some("client.key")), "must be set together");
    }

    #[test]
    fn unreadable_or_wrong_files_fail_naming_the_flag() {
        let files = Files::new();
        fails_with(files.load(TLS_URL, Some("missing.pem"), None, None), "--redis-ca-file ");
        fails_with(files.load(TLS_URL, Some("garbage.pem"), None, None), "--redis-ca-file ");
        fails_with(files.load(TLS_URL, None, Some("missing.pem"), Some("client.key")), "--redis-client-cert-file ");
        fails_with(files.load(TLS_URL, None, Some("client.pem"), Some("missing.key")), "--redis-client-key-file ");
        fails_with(files.load(TLS_URL, None, Some("client.pem"), Some("garbage.pem")), "--redis-client-key-file ");
    }

    #[test]
    fn a_key_of_another_certificate_fails() {
        let files = Files::new();
        fails_with(files.load(TLS_URL, None, Some("client.pem"), Some("other.key")), "--redis-client-cert-file");
    }
}
