//! Admin and join tokens: where they come from, and the check on every gRPC call.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use std::sync::Arc;

use fulcrum_proto::model::Secret;
use tonic::{Request, Status};

use crate::Error;
use crate::store::random_hex;
use crate::tokens::TokenSet;

/// Takes `from_env` if given; else reads `file` in `dir`; else generates a token, writes it
/// there with mode 0600 and reports it as generated.
pub fn load_or_create(
    dir: &Path,
    file: &str,
    prefix: &str,
    from_env: Option<&str>,
) -> Result<(Secret<String>, bool), Error> {
    if let Some(token) = from_env.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok((Secret::new(token.to_string()), false));
    }
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => {
            return Ok((Secret::new(token.trim().to_string()), false));
        }
        Ok(_) => {
            return Err(Error::Startup(format!(
                "token file {} is empty",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::Startup(format!(
                "cannot read token file {}: {e}",
                path.display()
            )));
        }
    }
    let token = format!("{prefix}{}", random_hex(24).map_err(Error::Startup)?);
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::Startup(format!("cannot create token file {}: {e}", path.display())))?;
    writeln!(out, "{token}")
        .map_err(|e| Error::Startup(format!("cannot write token file {}: {e}", path.display())))?;
    Ok((Secret::new(token), true))
}

/// Checks `authorization: Bearer <token>` on every call of a service, against the
/// tokens valid now (the current one, and a previous one during a rotation).
#[derive(Clone)]
pub struct BearerAuth {
    /// Compares SHA-256 digests in constant time, which leaks neither the token nor its
    /// length.
    valid: Arc<TokenSet>,
    /// What the token is called in error messages ("admin", "join").
    what: &'static str,
}

impl BearerAuth {
    pub fn new(valid: Arc<TokenSet>) -> Self {
        let what = valid.kind().name();
        Self { valid, what }
    }

    fn check(&self, header: Option<&str>) -> Result<(), Status> {
        let Some(header) = header else {
            return Err(Status::unauthenticated(format!(
                "missing {} token: send authorization: Bearer <token>",
                self.what
            )));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or_default()
            .trim();
        if self.valid.accepts(token) && !token.is_empty() {
            return Ok(());
        }
        Err(Status::unauthenticated(format!(
            "invalid {} token",
            self.what
        )))
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.check(header)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), 10).unwrap();
        let token = Secret::new("good-token".to_string());
        let set = TokenSet::load(&store, crate::tokens::Kind::Admin, &token, None).unwrap();
        let auth = BearerAuth::new(set);
        assert!(auth.check(Some("Bearer good-token")).is_ok());
        let missing = auth.check(None).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(missing.message().contains("missing admin token"));
        assert_eq!(
            auth.check(Some("Bearer bad")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(auth.check(Some("good-token")).is_err(), "scheme required");
        assert!(auth.check(Some("Bearer ")).is_err());
    }

    #[test]
    fn tokens_are_generated_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, generated) = load_or_create(dir.path(), "admin.token", "fca_", None).unwrap();
        assert!(generated);
        assert!(first.expose().starts_with("fca_"));
        let mode = fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, generated) = load_or_create(dir.path(), "admin.token", "fca_", None).unwrap();
        assert!(!generated);
        assert_eq!(again.expose(), first.expose());
        let (env, generated) =
            load_or_create(dir.path(), "admin.token", "fca_", Some("from-env")).unwrap();
        assert!(!generated);
        assert_eq!(env.expose(), "from-env");
    }
}
