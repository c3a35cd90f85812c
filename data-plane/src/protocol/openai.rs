//! The OpenAI-compatible surface: paths, the few request fields the proxy reads, and
//! errors in OpenAI's shape.

use bytes::Bytes;
use serde::Deserialize;

/// An OpenAI API operation the data plane serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    ImageGenerations,
    AudioSpeech,
    Models,
}

impl Endpoint {
    /// The path below the `/v1` base, as sent upstream.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::ImageGenerations => "/images/generations",
            Endpoint::AudioSpeech => "/audio/speech",
            Endpoint::Models => "/models",
        }
    }

    fn from_rest(rest: &str) -> Option<Self> {
        Some(match rest.trim_end_matches('/') {
            "chat/completions" => Endpoint::ChatCompletions,
            "completions" => Endpoint::Completions,
            "embeddings" => Endpoint::Embeddings,
            "images/generations" => Endpoint::ImageGenerations,
            "audio/speech" => Endpoint::AudioSpeech,
            "models" => Endpoint::Models,
            _ => return None,
        })
    }

    /// Whether the operation takes a POSTed JSON body (all but the model listing).
    pub fn has_body(self) -> bool {
        self != Endpoint::Models
    }

    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::ImageGenerations => "images_generations",
            Endpoint::AudioSpeech => "audio_speech",
            Endpoint::Models => "models",
        }
    }
}

/// Where a request path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// `Some(name)` for `/{name}/v1/...`: a provider if one has that name.
    pub pinned: Option<&'a str>,
    pub endpoint: Option<Endpoint>,
}

/// Splits `/v1/...`, `/openai/v1/...`, `/hf/v1/...` and `/{provider}/v1/...`. Returns
/// `None` for paths outside the OpenAI surface; `endpoint` is `None` for an unknown
/// operation under it.
pub fn parse_path(path: &str) -> Option<Target<'_>> {
    let path = path.strip_prefix('/')?;
    if let Some(rest) = path.strip_prefix("v1/") {
        return Some(Target {
            pinned: None,
            endpoint: Endpoint::from_rest(rest),
        });
    }
    let (first, rest) = path.split_once('/')?;
    let rest = rest.strip_prefix("v1/")?;
    let pinned = match first {
        "openai" | "hf" => None,
        name => Some(name),
    };
    Some(Target {
        pinned,
        endpoint: Endpoint::from_rest(rest),
    })
}

/// The request fields the proxy acts on; everything else passes through untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Sniffed {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
}

impl Sniffed {
    pub fn streaming(&self) -> bool {
        self.stream.unwrap_or(false)
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
        let t = parse_path("/v1/chat/completions").unwrap();
        assert_eq!(
            (t.pinned, t.endpoint),
            (None, Some(Endpoint::ChatCompletions))
        );
        let t = parse_path("/openai/v1/embeddings").unwrap();
        assert_eq!((t.pinned, t.endpoint), (None, Some(Endpoint::Embeddings)));
        let t = parse_path("/hf/v1/models").unwrap();
        assert_eq!((t.pinned, t.endpoint), (None, Some(Endpoint::Models)));
        let t = parse_path("/my-openai/v1/audio/speech").unwrap();
        assert_eq!(
            (t.pinned, t.endpoint),
            (Some("my-openai"), Some(Endpoint::AudioSpeech))
        );
        assert_eq!(parse_path("/v1/nope").unwrap().endpoint, None);
        assert_eq!(parse_path("/healthz"), None);
        assert_eq!(parse_path("/a/b/c"), None);
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
