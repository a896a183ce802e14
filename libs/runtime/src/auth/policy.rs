//! The authorization policy: principals — who a caller is, by bearer token or mTLS client
//! certificate — and their grants — which services on which streams and subscriptions.
//!
//! Read from the JSON file `--auth-file` (format in docs/operations.md "Authorization"):
//! ```json
//! {"principals": [
//!   {"name": "orders-api", "token_sha256": ["<hex sha256 of the bearer token>"],
//!    "grants": [{"services": ["publish"], "streams": ["orders.*"]}]},
//!   {"name": "billing", "tls_subject": "CN=billing,O=acme", "tls_san": ["spiffe://acme/billing"],
//!    "grants": [{"services": ["subscribe", "dlq"], "streams": ["orders.*"], "subscriptions": ["billing-*"]}]}
//! ]}
//! ```
//! plus the full-access tokens of `--auth-tokens`/`--auth-tokens-file`. The file holds only
//! SHA-256 digests of tokens: a presented token is hashed and compared with every digest in
//! constant time (`subtle`), so neither the file nor the timing gives tokens away.

use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{cert::CertIdentity, cert::normalize_subject, glob::Glob};

/// The services grants name. Grants may name others too (services added later); those match
/// by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// PublisherService.
    Publish,
    /// SubscriberService.
    Subscribe,
    /// AdminService.
    Admin,
    /// DeadLetterService.
    Dlq,
    /// ArchiveService.
    Archive,
    /// Server reflection, when `--protect-reflection` is set.
    Reflection,
    /// `/metrics`, when `--protect-metrics` is set.
    Metrics,
}

impl Service {
    /// The name grants use (and the `service` label of `eventflow_auth_denied_total`).
    pub fn name(self) -> &'static str {
        match self {
            Service::Publish => "publish",
            Service::Subscribe => "subscribe",
            Service::Admin => "admin",
            Service::Dlq => "dlq",
            Service::Archive => "archive",
            Service::Reflection => "reflection",
            Service::Metrics => "metrics",
        }
    }
}

/// The policy file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// Every principal.
    principals: Vec<PrincipalFile>,
}

/// One principal as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalFile {
    /// Shown in logs and PERMISSION_DENIED messages.
    name: String,
    /// Hex SHA-256 digests of the bearer tokens that identify it (one string or a list).
    #[serde(default)]
    token_sha256: OneOrMany,
    /// The RFC 4514 subject of client certificates that identify it.
    #[serde(default)]
    tls_subject: Option<String>,
    /// Subject alternative names (DNS, URI, email) of client certificates that identify it
    /// (one string or a list).
    #[serde(default)]
    tls_san: OneOrMany,
    /// What it may do.
    #[serde(default)]
    grants: Vec<GrantFile>,
}

/// A list of strings that may be written as one string (`"token_sha256": "<hex>"`).
#[derive(Debug, Default, Deserialize)]
#[serde(from = "OneOrManyFile")]
struct OneOrMany(Vec<String>);

/// How [`OneOrMany`] may be written.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrManyFile {
    /// One string.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl From<OneOrManyFile> for OneOrMany {
    fn from(file: OneOrManyFile) -> Self {
        match file {
            OneOrManyFile::One(one) => Self(vec![one]),
            OneOrManyFile::Many(many) => Self(many),
        }
    }
}

/// One grant as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    /// Service names (globs: `"*"` is every service).
    services: Vec<String>,
    /// Stream globs; required so that a grant always says where it applies.
    streams: Vec<String>,
    /// Subscription globs (default: every subscription).
    #[serde(default)]
    subscriptions: Option<Vec<String>>,
}

/// What one grant allows: any of `services` on a stream matching one of `streams` and (for
/// calls that name one) a subscription matching one of `subscriptions`.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Service names or globs.
    services: Vec<Glob>,
    /// Stream globs.
    streams: Vec<Glob>,
    /// Subscription globs.
    subscriptions: Vec<Glob>,
}

impl Grant {
    /// Every service on every stream and subscription (the `--auth-tokens` shorthand).
    fn everything() -> Self {
        let all = vec![Glob::new("*")];
        Self { services: all.clone(), streams: all.clone(), subscriptions: all }
    }

    /// Whether this grant covers `service` at all.
    fn covers(&self, service: Service) -> bool {
        self.services.iter().any(|g| g.matches(service.name()))
    }

    /// Whether this grant covers `service` on `stream` and, if given, `subscription`.
    fn allows(&self, service: Service, stream: &str, subscription: Option<&str>) -> bool {
        self.covers(service)
            && self.streams.iter().any(|g| g.matches(stream))
            && subscription.is_none_or(|s| self.subscriptions.iter().any(|g| g.matches(s)))
    }
}

/// An authenticated caller and what it may do.
#[derive(Debug)]
pub struct Principal {
    /// Its name in the policy (shown in PERMISSION_DENIED messages and logs).
    pub name: String,
    /// What it may do.
    grants: Vec<Grant>,
}

impl Principal {
    /// Whether it may call `service` on `stream` (and `subscription`, for calls that name one;
    /// `None` checks the stream only).
    pub fn may(&self, service: Service, stream: &str, subscription: Option<&str>) -> bool {
        self.grants.iter().any(|g| g.allows(service, stream, subscription))
    }

    /// Whether any grant names `service`, whatever the streams (reflection, `/metrics`, and
    /// listings filtered stream by stream).
    pub fn may_use(&self, service: Service) -> bool {
        self.grants.iter().any(|g| g.covers(service))
    }
}

/// How client certificates identify a principal.
#[derive(Debug)]
struct CertMatch {
    /// The normalized subject ([`normalize_subject`]), if the principal is matched by subject.
    subject: Option<String>,
    /// SANs, any of which identifies the principal.
    sans: Vec<String>,
}

impl CertMatch {
    fn matches(&self, identity: &CertIdentity) -> bool {
        self.subject.as_deref().is_some_and(|s| s == normalize_subject(&identity.subject))
            || identity.sans.iter().any(|san| self.sans.iter().any(|want| want.eq_ignore_ascii_case(san)))
    }
}

/// The whole policy: who is who, and what each may do.
#[derive(Debug, Default)]
pub struct Policy {
    /// SHA-256 digests of bearer tokens and the principal each identifies.
    tokens: Vec<([u8; 32], Arc<Principal>)>,
    /// Certificate matchers, in file order: the first match wins.
    certs: Vec<(CertMatch, Arc<Principal>)>,
}

impl Policy {
    /// The policy of the JSON `text` (from the file `source`, for messages) plus one full-access
    /// principal per token of `full_access`. The error is one line naming the file and the
    /// field at fault.
    pub fn parse(text: &str, source: &str, full_access: &[String]) -> Result<Self, String> {
        let file: PolicyFile = serde_json::from_str(text).map_err(|e| format!("{source}: {e}"))?;
        let mut policy = Self::full_access(full_access);
        for (i, p) in file.principals.into_iter().enumerate() {
            let at = format!("{source}: principals[{i}] ({:?})", p.name);
            if p.name.is_empty() {
                return Err(format!("{source}: principals[{i}].name: must not be empty"));
            }
            let mut grants = Vec::with_capacity(p.grants.len());
            for (j, g) in p.grants.into_iter().enumerate() {
                if g.streams.is_empty() {
                    return Err(format!("{at}: grants[{j}].streams: name at least one stream glob (\"*\" for all)"));
                }
                let globs = |names: &[String]| names.iter().map(|n| Glob::new(n)).collect::<Vec<_>>();
                let subscriptions = g.subscriptions.unwrap_or_else(|| vec!["*".into()]);
                grants.push(Grant {
                    services: globs(&g.services),
                    streams: globs(&g.streams),
                    subscriptions: globs(&subscriptions),
                });
            }
            let (token_sha256, tls_san) = (p.token_sha256.0, p.tls_san.0);
            if token_sha256.is_empty() && p.tls_subject.is_none() && tls_san.is_empty() {
                return Err(format!("{at}: needs token_sha256, tls_subject or tls_san to be identified by"));
            }
            let principal = Arc::new(Principal { name: p.name, grants });
            for (j, digest) in token_sha256.iter().enumerate() {
                let digest = parse_digest(digest).ok_or_else(|| {
                    format!("{at}: token_sha256[{j}]: must be 64 hex characters (the SHA-256 of the token)")
                })?;
                policy.tokens.push((digest, principal.clone()));
            }
            if p.tls_subject.is_some() || !tls_san.is_empty() {
                let subject = p.tls_subject.as_deref().map(normalize_subject);
                policy.certs.push((CertMatch { subject, sans: tls_san }, principal));
            }
        }
        Ok(policy)
    }

    /// One full-access principal per token (`full-access token 1`, ...: the tokens themselves
    /// are never shown).
    pub fn full_access(tokens: &[String]) -> Self {
        let tokens = tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                let name = format!("full-access token {}", i + 1);
                (sha256(token), Arc::new(Principal { name, grants: vec![Grant::everything()] }))
            })
            .collect();
        Self { tokens, certs: Vec::new() }
    }

    /// Whether it identifies no one (no tokens, no certificates).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.certs.is_empty()
    }

    /// The principal a bearer token identifies. Every digest is compared, in constant time.
    pub fn by_token(&self, token: &str) -> Option<Arc<Principal>> {
        let digest = sha256(token);
        let mut found = None;
        for (candidate, principal) in &self.tokens {
            if bool::from(candidate.ct_eq(&digest)) && found.is_none() {
                found = Some(principal.clone());
            }
        }
        found
    }

    /// The first principal a verified client certificate identifies.
    pub fn by_certificate(&self, identity: &CertIdentity) -> Option<Arc<Principal>> {
        self.certs.iter().find(|(m, _)| m.matches(identity)).map(|(_, p)| p.clone())
    }
}

/// The SHA-256 digest of a token.
fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The hex SHA-256 of a token, as the policy file's `token_sha256` holds it (what
/// `printf %s "$TOKEN" | sha256sum` prints).
pub fn token_sha256_hex(token: &str) -> String {
    hex(&sha256(token))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 64-character hex digest (either case) as bytes.
fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"principals": [
      {"name": "orders-api", "token_sha256": ["TOKEN_DIGEST"],
       "grants": [{"services": ["publish"], "streams": ["orders.*"]}]},
      {"name": "billing", "tls_subject": "CN=billing, O=acme", "tls_san": ["spiffe://acme/billing", "billing.acme.svc"],
       "grants": [{"services": ["subscribe", "dlq"], "streams": ["orders.*"], "subscriptions": ["billing-*"]}]}
    ]}"#;

    fn example() -> Policy {
        let text = EXAMPLE.replace("TOKEN_DIGEST", &token_sha256_hex("orders-secret"));
        Policy::parse(&text, "policy.json", &["root-token".into()]).unwrap()
    }

    fn error(text: &str) -> String {
        Policy::parse(text, "policy.json", &[]).unwrap_err()
    }

    #[test]
    fn token_digests_are_sha256_hex() {
        // printf %s s3cret | sha256sum
        assert_eq!(token_sha256_hex("s3cret"), "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0");
        assert_eq!(parse_digest(&token_sha256_hex("x").to_uppercase()), Some(sha256("x")));
        assert_eq!(parse_digest("abc"), None);
        assert_eq!(parse_digest(&"zz".repeat(32)), None);
    }

    #[test]
    fn tokens_identify_their_principal() {
        let policy = example();
        let api = policy.by_token("orders-secret").unwrap();
        assert_eq!(api.name, "orders-api");
        assert!(api.may(Service::Publish, "orders.eu", None));
        assert!(!api.may(Service::Publish, "payments", None));
        assert!(!api.may(Service::Subscribe, "orders.eu", Some("x")));
        assert!(policy.by_token("wrong").is_none());
        let root = policy.by_token("root-token").unwrap();
        assert_eq!(root.name, "full-access token 1");
        assert!(root.may(Service::Admin, "anything", Some("any")));
        assert!(root.may_use(Service::Metrics));
    }

    #[test]
    fn certificates_identify_their_principal_by_subject_or_san() {
        let policy = example();
        let by_subject = CertIdentity { subject: "CN=billing,O=acme".into(), sans: vec![] };
        let billing = policy.by_certificate(&by_subject).unwrap();
        assert_eq!(billing.name, "billing");
        assert!(billing.may(Service::Subscribe, "orders.eu", Some("billing-1")));
        assert!(!billing.may(Service::Subscribe, "orders.eu", Some("audit")));
        assert!(billing.may(Service::Dlq, "orders.eu", None), "stream-level check");
        assert!(!billing.may(Service::Publish, "orders.eu", None));
        let by_san = CertIdentity { subject: "CN=other".into(), sans: vec!["spiffe://acme/billing".into()] };
        assert_eq!(policy.by_certificate(&by_san).unwrap().name, "billing");
        let stranger = CertIdentity { subject: "CN=billing,O=evil".into(), sans: vec!["evil.svc".into()] };
        assert!(policy.by_certificate(&stranger).is_none());
    }

    #[test]
    fn one_token_or_san_may_be_written_without_a_list() {
        let text = r#"{"principals": [{"name": "a", "token_sha256": "TD", "tls_san": "a.svc",
            "grants": [{"services": ["publish"], "streams": ["*"]}]}]}"#;
        let policy = Policy::parse(&text.replace("TD", &token_sha256_hex("t")), "p", &[]).unwrap();
        assert_eq!(policy.by_token("t").unwrap().name, "a");
        let identity = CertIdentity { subject: String::new(), sans: vec!["a.svc".into()] };
        assert_eq!(policy.by_certificate(&identity).unwrap().name, "a");
        let e = error(r#"{"principals": [{"name": "a", "token_sha256": 5}]}"#);
        assert!(e.starts_with("policy.json: "), "{e}");
    }

    #[test]
    fn unknown_services_are_names_like_any_other() {
        let text = r#"{"principals": [{"name": "r", "token_sha256": ["TD"],
            "grants": [{"services": ["relay", "metrics"], "streams": ["*"]}]}]}"#;
        let policy = Policy::parse(&text.replace("TD", &token_sha256_hex("t")), "p", &[]).unwrap();
        let p = policy.by_token("t").unwrap();
        assert!(p.may_use(Service::Metrics));
        assert!(!p.may_use(Service::Publish));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = error(r#"{"principals": [{"name": "a", "tokens": []}]}"#);
        assert!(e.starts_with("policy.json: ") && e.contains("unknown field `tokens`"), "{e}");
        let e = error(
            r#"{"principals": [{"name": "a", "token_sha256": ["00"], "grants": [{"services": ["publish"], "stream": ["x"]}]}]}"#,
        );
        assert!(e.contains("unknown field `stream`"), "{e}");
        let e =
            error(r#"{"principals": [{"name": "a", "token_sha256": ["00"], "grants": [{"services": ["publish"]}]}]}"#);
        assert!(e.contains("missing field `streams`"), "{e}");
        let e = error(r#"{"principals": [{"name": "a", "token_sha256": ["00"]}]}"#);
        assert!(e.contains("principals[0] (\"a\"): token_sha256[0]: must be 64 hex"), "{e}");
        let e = error(r#"{"principals": [{"name": "a", "grants": []}]}"#);
        assert!(e.contains("needs token_sha256, tls_subject or tls_san"), "{e}");
        let e = error(
            r#"{"principals": [{"name": "a", "tls_san": ["x"], "grants": [{"services": ["admin"], "streams": []}]}]}"#,
        );
        assert!(e.contains("grants[0].streams"), "{e}");
        let e = error("{not json");
        assert!(e.starts_with("policy.json: ") && !e.contains('\n'), "{e}");
    }
}
