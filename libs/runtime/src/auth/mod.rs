//! Authentication and authorization of the eventflow APIs.
//!
//! Who may call: the policy ([`policy`]) from `--auth-file` (principals identified by a bearer
//! token's SHA-256 or by their mTLS client certificate's subject/SANs, each with grants of
//! services on stream and subscription globs) plus one full-access principal per token of
//! `--auth-tokens`/`--auth-tokens-file`. The files are reloaded when they change ([`Watched`],
//! checked at most once a second); a bad new file keeps the previous policy. Neither set = auth
//! off (the default, for local use): every call is allowed.
//!
//! How, in two steps:
//! 1. *Authentication*, in the tonic interceptor ([`Auth::interceptor`]) around each service:
//!    the caller's principal is resolved — a bearer token first, else the verified client
//!    certificate — and put in the request's extensions as a [`Caller`]. No credential or an
//!    unknown token → UNAUTHENTICATED; a client certificate matching no principal →
//!    PERMISSION_DENIED.
//! 2. *Authorization*, in each handler, against exactly what the call touches:
//!    [`authorize`]`(&request, Service::Publish, stream, None)?`. A request that reached a
//!    handler without passing the interceptor is refused (fails closed).
//!
//! Health is never wrapped: probes carry no credentials. Reflection (`--protect-reflection`)
//! and `/metrics` (`--protect-metrics`) need a principal with the `reflection` / `metrics`
//! grant when protected. Refusals count in `eventflow_auth_denied_total{service,reason}`, with
//! fixed label sets: no principal or stream names.

pub mod cert;
pub mod glob;
pub mod policy;

use std::{path::PathBuf, sync::Arc, time::Duration};

use prometheus::{IntCounterVec, Opts, Registry};
use tonic::{Request, Status, service::Interceptor};

pub use policy::{Policy, Principal, Service, token_sha256_hex};

use crate::watched::Watched;
use cert::CertIdentity;

/// How often the policy files' metadata is compared, at most: a change applies within this.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Authentication and authorization settings shared by every service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Full-access bearer tokens, comma-separated: each may call everything, like a principal
    /// with every service on every stream. Without tokens and --auth-file, auth is off.
    #[arg(long, env = "EVENTFLOW_AUTH_TOKENS", hide_env_values = true, value_delimiter = ',')]
    pub auth_tokens: Vec<String>,
    /// A file of full-access bearer tokens, one per line (e.g. a mounted Kubernetes Secret);
    /// reloaded when it changes.
    #[arg(long, env = "EVENTFLOW_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Authorization policy, JSON, reloaded when it changes (a bad new file keeps the previous
    /// policy and logs a warning). Principals are identified by a bearer token's SHA-256
    /// (`printf %s "$TOKEN" | sha256sum`) or an mTLS client certificate's subject/SANs, and
    /// granted services on streams and subscriptions (globs: `*`, `?`):
    /// {"principals": [{"name": "orders-api", "token_sha256": ["HEX"],
    /// "grants": [{"services": ["publish"], "streams": ["orders.*"]}]},
    /// {"name": "billing", "tls_subject": "CN=billing,O=acme", "tls_san": ["spiffe://acme/billing"],
    /// "grants": [{"services": ["subscribe", "dlq"], "streams": ["orders.*"], "subscriptions": ["billing-*"]}]}]}.
    /// Services: publish, subscribe, admin, dlq, reflection, metrics. See docs/operations.md.
    #[arg(long, env = "EVENTFLOW_AUTH_FILE", verbatim_doc_comment)]
    pub auth_file: Option<PathBuf>,
    /// Require a principal with the `reflection` grant for server reflection (open otherwise).
    /// Needs --auth-file or tokens.
    #[arg(long, env = "EVENTFLOW_PROTECT_REFLECTION", value_parser = clap::builder::BoolishValueParser::new())]
    pub protect_reflection: bool,
    /// Require `authorization: Bearer <token>` of a principal with the `metrics` grant on
    /// `/metrics` (401 without a known token, 403 without the grant; open otherwise). Needs
    /// --auth-file or tokens.
    #[arg(long, env = "EVENTFLOW_PROTECT_METRICS", value_parser = clap::builder::BoolishValueParser::new())]
    pub protect_metrics: bool,
}

impl AuthArgs {
    /// The authentication these settings describe, counting refusals in `registry`; fails with
    /// one clear line on an unreadable or invalid file, or protection asked for with auth off.
    pub fn auth(&self, registry: &Registry) -> Result<Auth, String> {
        let (tokens, tokens_file, auth_file) =
            (self.auth_tokens.clone(), self.auth_tokens_file.clone(), self.auth_file.clone());
        let paths = [tokens_file.clone(), auth_file.clone()].into_iter().flatten().collect();
        let policy = Watched::new("authorization policy", paths, CHECK_EVERY, move || {
            load(&tokens, tokens_file.as_ref(), auth_file.as_ref())
        })?;
        let enabled = self.auth_file.is_some() || !policy.current().is_empty();
        for (set, flag) in
            [(self.protect_reflection, "--protect-reflection"), (self.protect_metrics, "--protect-metrics")]
        {
            if set && !enabled {
                return Err(format!("{flag} needs --auth-file or --auth-tokens: authentication is off"));
            }
        }
        let denied = IntCounterVec::new(
            Opts::new("eventflow_auth_denied_total", "Calls refused by authentication or authorization."),
            &["service", "reason"],
        )
        .and_then(|c| registry.register(Box::new(c.clone())).map(|()| c))
        .map_err(|e| format!("metrics: {e}"))?;
        Ok(Auth {
            policy: enabled.then(|| Arc::new(policy)),
            protect_reflection: self.protect_reflection,
            protect_metrics: self.protect_metrics,
            denied,
        })
    }
}

/// Builds the policy from the tokens and files (the loader [`Watched`] calls on changes).
fn load(tokens: &[String], tokens_file: Option<&PathBuf>, auth_file: Option<&PathBuf>) -> Result<Policy, String> {
    let mut tokens: Vec<String> = tokens.iter().map(|t| t.trim().to_string()).collect();
    if let Some(path) = tokens_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--auth-tokens-file {}: cannot read: {e}", path.display()))?;
        tokens.extend(text.lines().map(|l| l.trim().to_string()));
    }
    tokens.retain(|t| !t.is_empty());
    match auth_file {
        None => Ok(Policy::full_access(&tokens)),
        Some(path) => {
            let source = format!("--auth-file {}", path.display());
            let text = std::fs::read_to_string(path).map_err(|e| format!("{source}: cannot read: {e}"))?;
            Policy::parse(&text, &source, &tokens)
        }
    }
}

/// Authentication of a server (see the module doc). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The policy; `None` = auth off, every call allowed.
    policy: Option<Arc<Watched<Policy>>>,
    /// Whether reflection needs the `reflection` grant.
    protect_reflection: bool,
    /// Whether `/metrics` needs the `metrics` grant.
    protect_metrics: bool,
    /// `eventflow_auth_denied_total{service,reason}`.
    denied: IntCounterVec,
}

impl Auth {
    /// Whether calls need credentials.
    pub fn enabled(&self) -> bool {
        self.policy.is_some()
    }

    /// The interceptor that authenticates calls of `service`'s API (see the module doc).
    pub fn interceptor(&self, service: Service) -> Authenticate {
        Authenticate { auth: self.clone(), service, required: Required::Authentication }
    }

    /// The interceptor around server reflection: open, or with `--protect-reflection` a
    /// principal with the `reflection` grant.
    pub fn reflection_interceptor(&self) -> Authenticate {
        let required = if self.protect_reflection { Required::Grant } else { Required::Nothing };
        Authenticate { auth: self.clone(), service: Service::Reflection, required }
    }

    /// Whether a scrape of `/metrics` with this `authorization` header value may proceed.
    pub fn check_metrics(&self, authorization: Option<&str>) -> Result<(), AuthError> {
        if !self.protect_metrics {
            return Ok(());
        }
        let result = self.by_header(authorization).and_then(|found| {
            let principal = found.ok_or(AuthError::MissingCredential)?;
            if principal.may_use(Service::Metrics) {
                Ok(())
            } else {
                Err(AuthError::denied(&principal, Service::Metrics, ""))
            }
        });
        result.inspect_err(|e| self.count(Service::Metrics, e))
    }

    /// The caller of `request`: resolves its principal when auth is on.
    fn authenticate<T>(&self, request: &Request<T>, service: Service) -> Result<Caller, AuthError> {
        let caller = |principal| Caller { principal, service, denied: self.denied.clone() };
        if self.policy.is_none() {
            return Ok(caller(None));
        }
        let header = request.metadata().get("authorization").map(|v| v.to_str().unwrap_or(""));
        if let Some(principal) = self.by_header(header)? {
            return Ok(caller(Some(principal)));
        }
        let certs = request.peer_certs();
        let Some(leaf) = certs.as_ref().and_then(|certs| certs.first()) else {
            return Err(AuthError::MissingCredential);
        };
        let identity = CertIdentity::from_der(leaf)
            .ok_or_else(|| AuthError::UnknownCertificate { subject: "unreadable certificate".into() })?;
        match self.policy().by_certificate(&identity) {
            Some(principal) => Ok(caller(Some(principal))),
            None => Err(AuthError::UnknownCertificate { subject: identity.subject }),
        }
    }

    /// The principal of an `authorization: Bearer <token>` header; `None` without a header.
    fn by_header(&self, header: Option<&str>) -> Result<Option<Arc<Principal>>, AuthError> {
        let Some(header) = header else { return Ok(None) };
        let token = header.strip_prefix("Bearer ").ok_or(AuthError::MalformedHeader)?;
        self.policy().by_token(token.trim()).map(Some).ok_or(AuthError::UnknownToken)
    }

    /// The policy now (reloaded first if its files changed); empty when auth is off.
    fn policy(&self) -> Arc<Policy> {
        self.policy.as_ref().map(|p| p.current()).unwrap_or_default()
    }

    /// Counts a refusal.
    fn count(&self, service: Service, error: &AuthError) {
        self.denied.with_label_values(&[service.name(), error.reason()]).inc();
    }
}

/// What [`Authenticate`] requires before a call reaches the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Required {
    /// Nothing: the service is open (unprotected reflection).
    Nothing,
    /// A known principal; the handler authorizes.
    Authentication,
    /// A known principal with a grant of the service (on any stream).
    Grant,
}

/// The tonic interceptor of [`Auth`] for one service.
#[derive(Debug, Clone)]
pub struct Authenticate {
    /// The policy and counters.
    auth: Auth,
    /// Which service it guards (for the grant check and the counter's label).
    service: Service,
    /// What it requires.
    required: Required,
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if self.required == Required::Nothing {
            return Ok(request);
        }
        let caller =
            self.auth.authenticate(&request, self.service).inspect_err(|e| self.auth.count(self.service, e))?;
        if self.required == Required::Grant {
            caller.authorize_use(self.service)?;
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Who made a call, as the interceptor found: put in the request's extensions for handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal; `None` when auth is off (everything allowed).
    principal: Option<Arc<Principal>>,
    /// The service called, for the refusal counter.
    service: Service,
    /// `eventflow_auth_denied_total`, counting refusals of handlers.
    denied: IntCounterVec,
}

impl Caller {
    /// The caller of `request`; fails closed when the interceptor did not run.
    pub fn of<T>(request: &Request<T>) -> Result<&Caller, AuthError> {
        request.extensions().get::<Caller>().ok_or(AuthError::NotAuthenticated)
    }

    /// Whether checks can refuse anything (auth is on): lets handlers skip work that only
    /// feeds checks.
    pub fn is_restricted(&self) -> bool {
        self.principal.is_some()
    }

    /// Whether the caller may call `service` on `stream` (and `subscription`, when the call
    /// names one): for filtering listings.
    pub fn permits(&self, service: Service, stream: &str, subscription: Option<&str>) -> bool {
        self.principal.as_ref().is_none_or(|p| p.may(service, stream, subscription))
    }

    /// Ok if the caller may call `service` on `stream` (and `subscription`), else
    /// PERMISSION_DENIED naming them.
    pub fn authorize(&self, service: Service, stream: &str, subscription: Option<&str>) -> Result<(), AuthError> {
        match &self.principal {
            Some(p) if !p.may(service, stream, subscription) => {
                let target = match subscription {
                    Some(s) => format!(" on stream {stream:?} subscription {s:?}"),
                    None => format!(" on stream {stream:?}"),
                };
                Err(self.refuse(AuthError::denied(p, service, &target)))
            }
            _ => Ok(()),
        }
    }

    /// Ok if some grant of the caller names `service` (whatever its streams).
    pub fn authorize_use(&self, service: Service) -> Result<(), AuthError> {
        match &self.principal {
            Some(p) if !p.may_use(service) => {
                let target =
                    if matches!(service, Service::Reflection | Service::Metrics) { "" } else { " on any stream" };
                Err(self.refuse(AuthError::denied(p, service, target)))
            }
            _ => Ok(()),
        }
    }

    fn refuse(&self, error: AuthError) -> AuthError {
        self.denied.with_label_values(&[self.service.name(), error.reason()]).inc();
        error
    }
}

/// Ok if the caller of `request` may call `service` on `stream` (and `subscription`, when the
/// call names one): the one check every handler makes.
pub fn authorize<T>(
    request: &Request<T>,
    service: Service,
    stream: &str,
    subscription: Option<&str>,
) -> Result<(), AuthError> {
    Caller::of(request)?.authorize(service, stream, subscription)
}

/// Why a call was refused. Mapped to a status in `crate::status` (the one mapping).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token and no client certificate (UNAUTHENTICATED).
    #[error("missing bearer token (authorization: Bearer <token>) or client certificate")]
    MissingCredential,
    /// An `authorization` header that is not `Bearer <token>` (UNAUTHENTICATED).
    #[error("the authorization header must be \"Bearer <token>\"")]
    MalformedHeader,
    /// A bearer token no principal has (UNAUTHENTICATED).
    #[error("invalid bearer token")]
    UnknownToken,
    /// A verified client certificate no principal matches (PERMISSION_DENIED).
    #[error("the client certificate {subject:?} matches no principal of the authorization policy")]
    UnknownCertificate {
        /// The certificate's subject, so the operator can add it.
        subject: String,
    },
    /// A principal without the grant the call needs (PERMISSION_DENIED).
    #[error("principal {principal:?} may not {service}{target}")]
    Denied {
        /// The principal's name.
        principal: String,
        /// The service name (`publish`, ...).
        service: &'static str,
        /// What it touched (` on stream "s" subscription "b"`), or empty.
        target: String,
    },
    /// A handler ran without the interceptor having resolved the caller: a wiring bug, so the
    /// call is refused rather than allowed (INTERNAL).
    #[error("authentication did not run for this call")]
    NotAuthenticated,
}

impl AuthError {
    fn denied(principal: &Principal, service: Service, target: &str) -> Self {
        AuthError::Denied { principal: principal.name.clone(), service: service.name(), target: target.to_string() }
    }

    /// Whether the caller is not known (UNAUTHENTICATED, HTTP 401) rather than refused.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, AuthError::MissingCredential | AuthError::MalformedHeader | AuthError::UnknownToken)
    }

    /// The `reason` label of `eventflow_auth_denied_total`.
    fn reason(&self) -> &'static str {
        if self.is_unauthenticated() { "unauthenticated" } else { "permission_denied" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn call(auth: &Auth, header: Option<&str>) -> Result<Option<String>, Code> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        let request = auth.interceptor(Service::Publish).call(request).map_err(|s| s.code())?;
        let caller = Caller::of(&request).unwrap();
        Ok(caller.principal.as_ref().map(|p| p.name.clone()))
    }

    fn auth(args: AuthArgs) -> Result<Auth, String> {
        args.auth(&Registry::new())
    }

    #[test]
    fn tokens_are_required_only_when_configured() {
        let open = auth(AuthArgs::default()).unwrap();
        assert!(!open.enabled());
        assert_eq!(call(&open, None), Ok(None));
        let args = AuthArgs { auth_tokens: vec!["s3cret".into(), " other ".into()], ..Default::default() };
        let guarded = auth(args).unwrap();
        assert_eq!(call(&guarded, Some("Bearer s3cret")), Ok(Some("full-access token 1".into())));
        assert_eq!(call(&guarded, Some("Bearer other")), Ok(Some("full-access token 2".into())));
        assert_eq!(call(&guarded, Some("Bearer wrong")), Err(Code::Unauthenticated));
        assert_eq!(call(&guarded, Some("s3cret")), Err(Code::Unauthenticated));
        assert_eq!(call(&guarded, None), Err(Code::Unauthenticated));
    }

    #[test]
    fn handlers_fail_closed_without_the_interceptor() {
        let request = Request::new(());
        let error = authorize(&request, Service::Publish, "s", None).unwrap_err();
        assert_eq!(error, AuthError::NotAuthenticated);
        assert_eq!(Status::from(error).code(), Code::Internal);
    }

    #[test]
    fn a_policy_file_scopes_what_a_token_may_do() {
        let dir = std::env::temp_dir().join(format!("ef-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.json");
        let policy = format!(
            r#"{{"principals": [{{"name": "api", "token_sha256": ["{}"],
                "grants": [{{"services": ["publish"], "streams": ["orders.*"]}}]}}]}}"#,
            token_sha256_hex("t1")
        );
        std::fs::write(&path, policy).unwrap();
        let registry = Registry::new();
        let args = AuthArgs { auth_file: Some(path.clone()), protect_metrics: true, ..Default::default() };
        let auth = args.auth(&registry).unwrap();
        let mut request = Request::new(());
        request.metadata_mut().insert("authorization", "Bearer t1".parse().unwrap());
        let request = auth.interceptor(Service::Publish).call(request).unwrap();
        assert_eq!(authorize(&request, Service::Publish, "orders.eu", None), Ok(()));
        let denied = authorize(&request, Service::Publish, "payments", None).unwrap_err();
        assert_eq!(denied.to_string(), r#"principal "api" may not publish on stream "payments""#);
        assert_eq!(Status::from(denied).code(), Code::PermissionDenied);
        assert!(auth.check_metrics(None).unwrap_err().is_unauthenticated());
        assert!(!auth.check_metrics(Some("Bearer t1")).unwrap_err().is_unauthenticated(), "403: no metrics grant");
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        assert!(text.contains(r#"eventflow_auth_denied_total{reason="permission_denied",service="publish"} 1"#));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_settings_fail_with_one_clear_line() {
        let missing = AuthArgs { auth_tokens_file: Some("/nonexistent/tokens".into()), ..Default::default() };
        assert!(auth(missing).unwrap_err().contains("--auth-tokens-file /nonexistent/tokens"));
        let missing = AuthArgs { auth_file: Some("/nonexistent/policy.json".into()), ..Default::default() };
        assert!(auth(missing).unwrap_err().starts_with("--auth-file /nonexistent/policy.json: cannot read"));
        let unprotectable = AuthArgs { protect_metrics: true, ..Default::default() };
        assert!(auth(unprotectable).unwrap_err().contains("--protect-metrics needs --auth-file"));
    }
}
