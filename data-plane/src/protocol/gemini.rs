//! The Gemini-native surface: `/v1beta/models/{model}:{method}` paths (also under
//! `/gemini/v1beta/`, `/v1/` and `/{provider}/v1beta/`), the model-name suffixes
//! gemini-balance users rely on, and errors in Google's shape.

use bytes::Bytes;
use http::StatusCode;

use super::{ErrorKind, Operation, Protocol, Target};

/// Recognises a Gemini path. `listing` is the protocol the client's credentials suggest:
/// it decides who owns the shared `/v1/models` listing.
pub fn parse_path(path: &str, listing: Protocol) -> Option<Target<'_>> {
    let path = path.strip_prefix('/')?;
    let (pinned, rest, shared_v1) = if let Some(rest) = path.strip_prefix("v1beta/") {
        (None, rest, false)
    } else if let Some(rest) = path.strip_prefix("gemini/v1beta/") {
        (None, rest, false)
    } else if let Some(rest) = path.strip_prefix("v1/") {
        (None, rest, true)
    } else {
        let (first, rest) = path.split_once('/')?;
        (Some(first), rest.strip_prefix("v1beta/")?, false)
    };
    let rest = rest.strip_prefix("models")?;
    if rest.is_empty() || rest == "/" {
        // `/v1/models` belongs to OpenAI unless the client authenticates the Gemini way.
        if shared_v1 && listing != Protocol::Gemini {
            return None;
        }
        return Some(target(pinned, Operation::ListModels, None, false));
    }
    let rest = rest.strip_prefix('/')?;
    let Some((model, method)) = rest.split_once(':') else {
        if shared_v1 && listing != Protocol::Gemini {
            return None;
        }
        return (!rest.is_empty() && !rest.contains('/'))
            .then(|| target(pinned, Operation::GetModel, Some(rest), false));
    };
    if model.is_empty() || model.contains('/') {
        return None;
    }
    let (operation, stream) = match method {
        "generateContent" => (Operation::Chat, false),
        "streamGenerateContent" => (Operation::Chat, true),
        "countTokens" => (Operation::CountTokens, false),
        "embedContent" => (Operation::Embed, false),
        "batchEmbedContents" => (Operation::BatchEmbed, false),
        _ => return None,
    };
    Some(target(pinned, operation, Some(model), stream))
}

fn target<'a>(
    pinned: Option<&'a str>,
    operation: Operation,
    path_model: Option<&'a str>,
    path_stream: bool,
) -> Target<'a> {
    Target {
        protocol: Protocol::Gemini,
        operation,
        pinned,
        path_model,
        path_stream,
    }
}

/// The method name of an operation in Gemini's paths.
pub fn method(operation: Operation, stream: bool) -> Option<&'static str> {
    Some(match operation {
        Operation::Chat if stream => "streamGenerateContent",
        Operation::Chat => "generateContent",
        Operation::CountTokens => "countTokens",
        Operation::Embed => "embedContent",
        Operation::BatchEmbed => "batchEmbedContents",
        _ => return None,
    })
}

/// What a model name's gemini-balance suffix asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelOptions {
    /// `-search`: add the Google Search tool.
    pub search: bool,
    /// `-non-thinking`: thinking budget 0.
    pub non_thinking: bool,
}

/// Splits the gemini-balance suffixes off a model name: `gemini-2.5-flash-search` asks
/// `gemini-2.5-flash` with the Google Search tool, `-non-thinking` turns thinking off.
/// Suffixes combine in either order.
pub fn split_model_suffixes(model: &str) -> (&str, ModelOptions) {
    let mut options = ModelOptions::default();
    let mut base = model;
    loop {
        if let Some(stripped) = base.strip_suffix("-search") {
            options.search = true;
            base = stripped;
        } else if let Some(stripped) = base.strip_suffix("-non-thinking") {
            options.non_thinking = true;
            base = stripped;
        } else {
            return (base, options);
        }
    }
}

/// Google's canonical status name for an error kind.
fn status_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::TooLarge => "INVALID_ARGUMENT",
        ErrorKind::Authentication => "UNAUTHENTICATED",
        ErrorKind::Permission => "PERMISSION_DENIED",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::RateLimited => "RESOURCE_EXHAUSTED",
        ErrorKind::Upstream => "INTERNAL",
        ErrorKind::Timeout => "DEADLINE_EXCEEDED",
        ErrorKind::Unavailable => "UNAVAILABLE",
    }
}

/// `{"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED"}}`
pub fn error_body(status: StatusCode, kind: ErrorKind, message: &str) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "status": status_name(kind),
        }
    });
    Bytes::from(body.to_string())
}

/// The event that ends a broken stream: the google-genai SDK raises on an `error` object.
pub fn stream_error_event(message: &str) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "code": 502,
            "message": message,
            "status": "INTERNAL",
        }
    });
    Bytes::from(format!("data: {body}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_path(
            "/v1beta/models/gemini-2.5-pro:generateContent",
            Protocol::OpenAi,
        )
        .unwrap();
        assert_eq!(
            (t.operation, t.path_model, t.path_stream, t.pinned),
            (Operation::Chat, Some("gemini-2.5-pro"), false, None)
        );
        let t = parse_path(
            "/gemini/v1beta/models/m:streamGenerateContent",
            Protocol::OpenAi,
        )
        .unwrap();
        assert_eq!((t.operation, t.path_stream), (Operation::Chat, true));
        let t = parse_path("/v1/models/m:countTokens", Protocol::OpenAi).unwrap();
        assert_eq!(t.operation, Operation::CountTokens);
        let t = parse_path("/v1beta/models/m:batchEmbedContents", Protocol::OpenAi).unwrap();
        assert_eq!(t.operation, Operation::BatchEmbed);
        let t = parse_path("/my-gemini/v1beta/models/m:embedContent", Protocol::OpenAi).unwrap();
        assert_eq!(
            (t.operation, t.pinned),
            (Operation::Embed, Some("my-gemini"))
        );
        let t = parse_path("/v1beta/models", Protocol::OpenAi).unwrap();
        assert_eq!(t.operation, Operation::ListModels);
        let t = parse_path("/v1beta/models/gemini-2.5-pro", Protocol::OpenAi).unwrap();
        assert_eq!(
            (t.operation, t.path_model),
            (Operation::GetModel, Some("gemini-2.5-pro"))
        );
        // The shared listing stays OpenAI's unless the client speaks Gemini.
        assert_eq!(parse_path("/v1/models", Protocol::OpenAi), None);
        assert!(parse_path("/v1/models", Protocol::Gemini).is_some());
        assert_eq!(
            parse_path("/v1beta/models/m:unknownMethod", Protocol::OpenAi),
            None
        );
        assert_eq!(parse_path("/v1/chat/completions", Protocol::OpenAi), None);
    }

    #[test]
    fn suffixes() {
        assert_eq!(
            split_model_suffixes("gemini-2.5-flash"),
            ("gemini-2.5-flash", ModelOptions::default())
        );
        let (base, o) = split_model_suffixes("gemini-2.5-flash-search");
        assert_eq!(
            (base, o.search, o.non_thinking),
            ("gemini-2.5-flash", true, false)
        );
        let (base, o) = split_model_suffixes("gemini-2.5-flash-non-thinking-search");
        assert_eq!(
            (base, o.search, o.non_thinking),
            ("gemini-2.5-flash", true, true)
        );
    }
}
