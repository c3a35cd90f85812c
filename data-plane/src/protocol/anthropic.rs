//! The Anthropic Messages surface: `/v1/messages` and `/v1/messages/count_tokens` (also
//! under `/anthropic/v1/` and `/{provider}/v1/`), and errors in Anthropic's shape.

use bytes::Bytes;

use super::{ErrorKind, Operation, Protocol, Target};

/// The API version sent upstream when the client names none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// Recognises an Anthropic path.
pub fn parse_path(path: &str) -> Option<Target<'_>> {
    let path = path.strip_prefix('/')?;
    let (pinned, rest) = match path.strip_prefix("v1/") {
        Some(rest) => (None, rest),
        None => {
            let (first, rest) = path.split_once('/')?;
            let pinned = (first != "anthropic").then_some(first);
            (pinned, rest.strip_prefix("v1/")?)
        }
    };
    let operation = match rest.trim_end_matches('/') {
        "messages" => Operation::Chat,
        "messages/count_tokens" => Operation::CountTokens,
        _ => return None,
    };
    Some(Target {
        protocol: Protocol::Anthropic,
        operation,
        pinned,
        path_model: None,
        path_stream: false,
    })
}

fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::TooLarge => "request_too_large",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Upstream | ErrorKind::Timeout => "api_error",
        ErrorKind::Unavailable => "overloaded_error",
    }
}

/// `{"type": "error", "error": {"type": "rate_limit_error", "message": "..."}}`
pub fn error_body(kind: ErrorKind, message: &str) -> Bytes {
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": error_type(kind), "message": message},
    });
    Bytes::from(body.to_string())
}

/// The `error` event that ends a broken stream; Anthropic's SDKs raise on it.
pub fn stream_error_event(message: &str) -> Bytes {
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": "api_error", "message": message},
    });
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_path("/v1/messages").unwrap();
        assert_eq!((t.operation, t.pinned), (Operation::Chat, None));
        let t = parse_path("/anthropic/v1/messages/count_tokens").unwrap();
        assert_eq!((t.operation, t.pinned), (Operation::CountTokens, None));
        let t = parse_path("/claude-main/v1/messages").unwrap();
        assert_eq!(t.pinned, Some("claude-main"));
        assert_eq!(parse_path("/v1/chat/completions"), None);
    }

    #[test]
    fn stream_error_is_a_named_event() {
        let event = stream_error_event("cut");
        assert!(event.starts_with(b"event: error\ndata: {") && event.ends_with(b"\n\n"));
    }
}
