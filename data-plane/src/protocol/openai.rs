//! The OpenAI-compatible surface: paths, the few request fields the proxy reads, and
//! errors in OpenAI's shape.

use bytes::Bytes;
use serde::Deserialize;

use super::{ErrorKind, Operation, Protocol, Target};

/// The path below the `/v1` base of an OpenAI operation, as sent upstream.
pub fn upstream_path(operation: Operation) -> Option<&'static str> {
    Some(match operation {
        Operation::Chat => "/chat/completions",
        Operation::Completions => "/completions",
        Operation::Embed => "/embeddings",
        Operation::Images => "/images/generations",
        Operation::Speech => "/audio/speech",
        Operation::ListModels | Operation::GetModel => "/models",
        Operation::CountTokens | Operation::BatchEmbed => return None,
    })
}

fn operation(rest: &str) -> Option<(Operation, Option<&str>)> {
    let rest = rest.trim_end_matches('/');
    Some(match rest {
        "chat/completions" => (Operation::Chat, None),
        "completions" => (Operation::Completions, None),
        "embeddings" => (Operation::Embed, None),
        "images/generations" => (Operation::Images, None),
        "audio/speech" => (Operation::Speech, None),
        "models" => (Operation::ListModels, None),
        _ => {
            let model = rest.strip_prefix("models/")?;
            if model.is_empty() || model.contains(':') {
                return None;
            }
            (Operation::GetModel, Some(model))
        }
    })
}

/// Splits `/v1/...`, `/openai/v1/...`, `/hf/v1/...` and `/{provider}/v1/...`. Returns
/// `None` for paths outside the OpenAI surface.
pub fn parse_path(path: &str) -> Option<Target<'_>> {
    let path = path.strip_prefix('/')?;
    let (pinned, rest) = match path.strip_prefix("v1/") {
        Some(rest) => (None, rest),
        None => {
            let (first, rest) = path.split_once('/')?;
            let rest = rest.strip_prefix("v1/")?;
            let pinned = match first {
                "openai" | "hf" => None,
                name => Some(name),
            };
            (pinned, rest)
        }
    };
    let (operation, path_model) = operation(rest)?;
    Some(Target {
        protocol: Protocol::OpenAi,
        operation,
        pinned,
        path_model,
        path_stream: false,
    })
}

/// OpenAI's `error.type` for an error kind.
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::TooLarge => {
            "invalid_request_error"
        }
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Upstream | ErrorKind::Timeout => "upstream_error",
        ErrorKind::Unavailable => "service_unavailable",
    }
}

/// The request fields the proxy acts on; everything else passes through untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Sniffed {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<SniffedStreamOptions>,
}

/// `stream_options` as far as the proxy cares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SniffedStreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

impl Sniffed {
    pub fn streaming(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether an OpenAI client asked for the usage chunk at the end of a stream.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

/// Reads `model` and `stream` from a JSON body; the message says why a body is refused.
pub fn sniff(body: &[u8]) -> Result<Sniffed, String> {
    serde_json::from_slice::<Sniffed>(body).map_err(|e| format!("invalid JSON body: {e}"))
}

/// The body with `model` replaced, for routes that send another model upstream.
pub fn with_model(body: &[u8], model: &str) -> Result<Bytes, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| "the JSON body must be an object".to_string())?;
    object.insert("model".into(), serde_json::Value::String(model.to_string()));
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| format!("cannot encode the body: {e}"))
}

/// An error body in OpenAI's shape.
pub fn error_body(message: &str, error_type: &str, code: Option<&str>) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": error_type,
            "param": null,
            "code": code,
        }
    });
    Bytes::from(body.to_string())
}

/// The SSE event that ends a stream that failed after its first byte: OpenAI's SDKs raise
/// an `APIError` when an event carries `error`.
pub fn stream_error_event(message: &str) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": "upstream_error",
            "param": null,
            "code": "stream_interrupted",
        }
    });
    Bytes::from(format!("data: {body}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = |path| parse_path(path).map(|t| (t.pinned, t.operation, t.path_model));
        assert_eq!(
            p("/v1/chat/completions"),
            Some((None, Operation::Chat, None))
        );
        assert_eq!(
            p("/openai/v1/embeddings"),
            Some((None, Operation::Embed, None))
        );
        assert_eq!(
            p("/hf/v1/models"),
            Some((None, Operation::ListModels, None))
        );
        assert_eq!(
            p("/my-openai/v1/audio/speech"),
            Some((Some("my-openai"), Operation::Speech, None))
        );
        assert_eq!(
            p("/v1/models/gpt-4o"),
            Some((None, Operation::GetModel, Some("gpt-4o")))
        );
        assert_eq!(p("/v1/nope"), None);
        assert_eq!(p("/healthz"), None);
        assert_eq!(p("/a/b/c"), None);
    }

    #[test]
    fn sniffing_and_rewriting() {
        let s = sniff(br#"{"model":"gpt-4o","stream":true,"messages":[]}"#).unwrap();
        assert_eq!(s.model.as_deref(), Some("gpt-4o"));
        assert!(s.streaming());
        assert!(!sniff(br#"{"model":"x"}"#).unwrap().streaming());
        assert!(
            sniff(b"{not json")
                .unwrap_err()
                .starts_with("invalid JSON body")
        );
        let rewritten = with_model(br#"{"model":"a","n":1}"#, "b").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&rewritten).unwrap();
        assert_eq!((v["model"].as_str(), v["n"].as_i64()), (Some("b"), Some(1)));
    }

    #[test]
    fn error_shapes() {
        let v: serde_json::Value =
            serde_json::from_slice(&error_body("nope", "invalid_request_error", Some("x")))
                .unwrap();
        assert_eq!(v["error"]["message"], "nope");
        assert_eq!(v["error"]["code"], "x");
        let event = stream_error_event("cut");
        assert!(event.starts_with(b"data: {") && event.ends_with(b"\n\n"));
    }
}
