//! Rules for names, URLs and secrets, shared by both planes.

use super::InvalidResource;

/// Path segments the data plane serves itself; a provider of that name could not be
/// addressed as `/{provider}/v1`.
const RESERVED_PROVIDER_NAMES: &[&str] =
    &["v1", "v1beta", "hf", "healthz", "readyz", "metrics", "api"];

/// `[a-z0-9][a-z0-9_-]{0,62}`, and not a path the data plane serves itself.
pub fn validate_provider_name(name: &str) -> Result<(), InvalidResource> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'-' || b == b'_'))
        });
    if !ok {
        return Err(InvalidResource::new(
            "provider",
            name,
            format!(
                "invalid provider name {name:?}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
            ),
        ));
    }
    if RESERVED_PROVIDER_NAMES.contains(&name) {
        return Err(InvalidResource::new(
            "provider",
            name,
            format!("provider name {name:?} is reserved (it is a path the data plane serves)"),
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
pub fn validate_token_name(name: &str) -> Result<(), InvalidResource> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'-' | b'_' | b'.')));
    if ok {
        return Ok(());
    }
    Err(InvalidResource::new(
        "client token",
        name,
        format!(
            "invalid token name {name:?}: use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ),
    ))
}

/// An absolute `http` or `https` URL with a host, no query and no fragment.
pub fn validate_base_url(url: &str) -> Result<(), InvalidResource> {
    let bad = |why: &str| {
        InvalidResource::new("base url", url, format!("invalid base URL {url:?}: {why}"))
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(bad("the scheme must be http or https")),
        None => {
            return Err(bad(
                "it must be absolute, starting with http:// or https://",
            ));
        }
    }
    match uri.host() {
        Some(host) if !host.is_empty() => {}
        _ => return Err(bad("it has no host")),
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(bad("it must not have a query or fragment"));
    }
    Ok(())
}

/// A plausible API key: 8 to 512 visible ASCII characters, no spaces.
///
/// The message never contains the secret.
pub fn validate_key_secret(secret: &str) -> Result<(), String> {
    if secret.len() < 8 {
        return Err(format!(
            "too short to be a key ({} characters, at least 8)",
            secret.len()
        ));
    }
    if secret.len() > 512 {
        return Err(format!(
            "too long to be a key ({} characters, at most 512)",
            secret.len()
        ));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("contains spaces, control or non-ASCII characters".to_string());
    }
    Ok(())
}

/// An exact model name or a glob with `*`: 1 to 256 visible ASCII characters.
pub fn validate_model_pattern(pattern: &str) -> Result<(), InvalidResource> {
    if !pattern.is_empty() && pattern.len() <= 256 && pattern.bytes().all(|b| b.is_ascii_graphic())
    {
        return Ok(());
    }
    Err(InvalidResource::new(
        "route",
        pattern,
        format!(
            "invalid model pattern {pattern:?}: use 1-256 visible ASCII characters, '*' as a wildcard"
        ),
    ))
}

/// A route's model pattern as it may be written: [`validate_model_pattern`], and a glob
/// in the one syntax routes understand, where only `*` is special.
///
/// Checked when a route is written (by the control plane and `fulcrumctl`), not when a
/// stored route is read: a pattern stored before these rules stays usable, as a literal.
pub fn validate_route_pattern(pattern: &str) -> Result<(), InvalidResource> {
    validate_model_pattern(pattern)?;
    let bad = |why: &str| {
        InvalidResource::new("route", pattern, format!("invalid glob {pattern:?}: {why}"))
    };
    if let Some(c) = pattern
        .chars()
        .find(|c| matches!(c, '?' | '[' | ']' | '{' | '}'))
    {
        return Err(bad(&format!(
            "{c:?} is not supported; only '*' is a wildcard (any run of characters)"
        )));
    }
    if pattern.contains("**") {
        return Err(bad("'**' means the same as '*'; write one '*'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names() {
        assert!(validate_provider_name("gemini-main").is_ok());
        assert!(validate_provider_name("p_1").is_ok());
        assert!(validate_provider_name("").is_err());
        assert!(validate_provider_name("-x").is_err());
        assert!(validate_provider_name("Upper").is_err());
        assert!(validate_provider_name("has space").is_err());
        assert!(validate_provider_name("v1beta").is_err());
        assert!(validate_provider_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn base_urls() {
        assert!(validate_base_url("https://api.openai.com/v1").is_ok());
        assert!(validate_base_url("http://127.0.0.1:8080").is_ok());
        assert!(validate_base_url("ftp://example.com").is_err());
        assert!(validate_base_url("not a url").is_err());
        assert!(validate_base_url("/relative").is_err());
        assert!(validate_base_url("https://x.com/?a=b").is_err());
    }

    #[test]
    fn route_patterns() {
        for ok in [
            "*",
            "gpt-4o",
            "gemini-2.5-*",
            "claude-*-latest",
            "models/x@001",
        ] {
            assert!(validate_route_pattern(ok).is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("gpt-?", "only '*' is a wildcard"),
            ("gpt-[45]*", "only '*' is a wildcard"),
            ("{a,b}", "only '*' is a wildcard"),
            ("gpt-**", "write one '*'"),
            ("", "1-256 visible"),
            ("has space", "1-256 visible"),
        ] {
            let err = validate_route_pattern(bad).unwrap_err();
            assert!(err.message.contains(needle), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn key_secrets_and_message_hides_them() {
        assert!(validate_key_secret("sk-1234567890").is_ok());
        let err = validate_key_secret("xq7z9").unwrap_err();
        assert!(!err.contains("xq7z9"), "{err}");
        assert!(validate_key_secret("has a space in it").is_err());
    }
}
