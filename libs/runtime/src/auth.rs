//! Optional bearer-token authentication of the eventflow APIs. When tokens are configured,
//! every call of the service's own API must carry `authorization: Bearer <token>` with one of
//! them, else it fails with UNAUTHENTICATED; health and reflection stay open (probes carry no
//! credentials). No tokens configured = no authentication (the default, for local use).

use std::sync::Arc;

use tonic::{Request, Status, service::Interceptor};

/// Authentication settings shared by every service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Accepted bearer tokens, comma-separated (empty = authentication off).
    #[arg(long, env = "EVENTFLOW_AUTH_TOKENS", hide_env_values = true, value_delimiter = ',')]
    pub auth_tokens: Vec<String>,
    /// A file with accepted bearer tokens, one per line (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "EVENTFLOW_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<std::path::PathBuf>,
}

impl AuthArgs {
    /// The interceptor these settings describe; fails if the tokens file cannot be read.
    pub fn interceptor(&self) -> Result<Auth, String> {
        let mut tokens: Vec<String> = self.auth_tokens.iter().map(|t| t.trim().to_string()).collect();
        if let Some(path) = &self.auth_tokens_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read auth tokens file {}: {e}", path.display()))?;
            tokens.extend(text.lines().map(|l| l.trim().to_string()));
        }
        tokens.retain(|t| !t.is_empty());
        Ok(Auth { tokens: Arc::new(tokens) })
    }
}

/// Checks the bearer token of each call (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Accepted tokens; empty means authentication is off.
    tokens: Arc<Vec<String>>,
}

impl Auth {
    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

impl Interceptor for Auth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.enabled() {
            return Ok(request);
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing bearer token (authorization: Bearer <token>)"))?;
        if self.tokens.iter().any(|t| constant_time_eq(t.as_bytes(), presented.as_bytes())) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn call(auth: &mut Auth, header: Option<&str>) -> Result<(), Code> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        auth.call(request).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn tokens_are_required_only_when_configured() {
        let mut open = AuthArgs::default().interceptor().unwrap();
        assert_eq!(call(&mut open, None), Ok(()));
        let args = AuthArgs { auth_tokens: vec!["s3cret".into(), " other ".into()], auth_tokens_file: None };
        let mut auth = args.interceptor().unwrap();
        assert_eq!(call(&mut auth, Some("Bearer s3cret")), Ok(()));
        assert_eq!(call(&mut auth, Some("Bearer other")), Ok(()));
        assert_eq!(call(&mut auth, Some("Bearer wrong")), Err(Code::Unauthenticated));
        assert_eq!(call(&mut auth, Some("s3cret")), Err(Code::Unauthenticated));
        assert_eq!(call(&mut auth, None), Err(Code::Unauthenticated));
    }

    #[test]
    fn a_missing_tokens_file_is_a_clear_error() {
        let args = AuthArgs { auth_tokens: vec![], auth_tokens_file: Some("/nonexistent/tokens".into()) };
        assert!(args.interceptor().unwrap_err().contains("/nonexistent/tokens"));
    }
}
