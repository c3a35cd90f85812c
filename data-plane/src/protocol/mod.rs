//! Client protocols: how a request path is recognised, which operation it asks for, and how
//! errors are shaped for each protocol's clients.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fulcrum_proto::model::ProviderType;
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// The API dialect a client speaks, and the one a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    OpenAi,
    Gemini,
    Anthropic,
}

impl Protocol {
    /// The dialect a provider type speaks; the local `mock` answers like OpenAI.
    pub fn of(provider_type: ProviderType) -> Self {
        match provider_type {
            ProviderType::OpenAi | ProviderType::Mock => Protocol::OpenAi,
            ProviderType::Gemini | ProviderType::VertexExpress => Protocol::Gemini,
            ProviderType::Anthropic => Protocol::Anthropic,
        }
    }

    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::Gemini => "gemini",
            Protocol::Anthropic => "anthropic",
        }
    }

    pub fn to_routing(self) -> fulcrum_proto::model::ClientProtocol {
        match self {
            Protocol::OpenAi => fulcrum_proto::model::ClientProtocol::OpenAi,
            Protocol::Gemini => fulcrum_proto::model::ClientProtocol::Gemini,
            Protocol::Anthropic => fulcrum_proto::model::ClientProtocol::Anthropic,
        }
    }
}

/// What a client asks for, whatever its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// OpenAI chat completions, Gemini generateContent, Anthropic messages: the one
    /// operation every protocol has, and the one translated between them.
    Chat,
    /// Gemini countTokens, Anthropic messages/count_tokens.
    CountTokens,
    /// OpenAI embeddings, Gemini embedContent.
    Embed,
    /// Gemini batchEmbedContents.
    BatchEmbed,
    /// OpenAI legacy completions.
    Completions,
    /// OpenAI images/generations.
    Images,
    /// OpenAI audio/speech.
    Speech,
    ListModels,
    GetModel,
}

impl Operation {
    /// Whether the operation takes a POSTed JSON body.
    pub fn has_body(self) -> bool {
        !matches!(self, Operation::ListModels | Operation::GetModel)
    }

    /// Whether the request must name a model.
    pub fn needs_model(self) -> bool {
        !matches!(self, Operation::ListModels | Operation::Images)
    }

    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::CountTokens => "count_tokens",
            Operation::Embed => "embed",
            Operation::BatchEmbed => "batch_embed",
            Operation::Completions => "completions",
            Operation::Images => "images",
            Operation::Speech => "speech",
            Operation::ListModels => "list_models",
            Operation::GetModel => "get_model",
        }
    }
}

/// Where a request path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub protocol: Protocol,
    pub operation: Operation,
    /// `Some(name)` for `/{name}/v1/...`-style paths: the provider the client pinned.
    pub pinned: Option<&'a str>,
    /// The model named in the path (Gemini puts it there).
    pub path_model: Option<&'a str>,
    /// Gemini's `:streamGenerateContent` asks for a stream in the path.
    pub path_stream: bool,
}

/// Recognises a request path. `Err` carries the protocol whose error shape suits the
/// unknown path best.
pub fn parse_path<'a>(
    path: &'a str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Target<'a>, Protocol> {
    let listing_protocol = listing_protocol(headers, query);
    if let Some(target) = gemini::parse_path(path, listing_protocol) {
        return Ok(target);
    }
    if let Some(target) = anthropic::parse_path(path) {
        return Ok(target);
    }
    if let Some(target) = openai::parse_path(path) {
        // `GET /v1/models` is the one path all three protocols share: a client that
        // authenticates the Gemini or Anthropic way gets that protocol's listing.
        if matches!(
            target.operation,
            Operation::ListModels | Operation::GetModel
        ) && listing_protocol != Protocol::OpenAi
        {
            return Ok(Target {
                protocol: listing_protocol,
                ..target
            });
        }
        return Ok(target);
    }
    Err(listing_protocol)
}

/// The protocol a client's credentials and headers suggest.
fn listing_protocol(headers: &HeaderMap, query: Option<&str>) -> Protocol {
    if headers.contains_key("anthropic-version") {
        Protocol::Anthropic
    } else if headers.contains_key("x-goog-api-key")
        || query.is_some_and(|q| q.split('&').any(|pair| pair.starts_with("key=")))
    {
        Protocol::Gemini
    } else {
        Protocol::OpenAi
    }
}

/// What went wrong, in words every protocol has a name for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    RateLimited,
    /// The upstream failed or could not be reached.
    Upstream,
    Timeout,
    Unavailable,
}

impl ErrorKind {
    /// The kind an HTTP status stands for, for errors re-shaped from another protocol.
    pub fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::TooLarge,
            429 => ErrorKind::RateLimited,
            504 => ErrorKind::Timeout,
            503 | 529 => ErrorKind::Unavailable,
            400..=499 => ErrorKind::InvalidRequest,
            _ => ErrorKind::Upstream,
        }
    }
}

/// An error a client of `protocol` understands. `code` is OpenAI's machine-readable code;
/// the other protocols have none.
pub fn error_body(
    protocol: Protocol,
    status: StatusCode,
    kind: ErrorKind,
    message: &str,
    code: Option<&str>,
) -> Bytes {
    match protocol {
        Protocol::OpenAi => openai::error_body(message, openai::error_type(kind), code),
        Protocol::Gemini => gemini::error_body(status, kind, message),
        Protocol::Anthropic => anthropic::error_body(kind, message),
    }
}

/// [`error_body`] as a response.
pub fn error_response(
    protocol: Protocol,
    status: StatusCode,
    kind: ErrorKind,
    message: &str,
    code: Option<&str>,
) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        error_body(protocol, status, kind, message, code),
    )
        .into_response()
}

/// The SSE event that ends a stream which failed after its first byte, in the shape the
/// protocol's SDKs raise on.
pub fn stream_error_event(protocol: Protocol, message: &str) -> Bytes {
    match protocol {
        Protocol::OpenAi => openai::stream_error_event(message),
        Protocol::Gemini => gemini::stream_error_event(message),
        Protocol::Anthropic => anthropic::stream_error_event(message),
    }
}

/// The message of an error body of any of the three protocols (they all put it at
/// `error.message`), for re-shaping it for a client of another protocol.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: String,
    }
    serde_json::from_slice::<Outer>(body)
        .ok()
        .map(|o| o.error.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_shared_listing_path_follows_the_credentials() {
        let none = HeaderMap::new();
        let p = |h: &HeaderMap, q: Option<&str>| parse_path("/v1/models", h, q).unwrap().protocol;
        assert_eq!(p(&none, None), Protocol::OpenAi);
        assert_eq!(p(&none, Some("key=abc")), Protocol::Gemini);
        assert_eq!(
            p(&headers(&[("x-goog-api-key", "k")]), None),
            Protocol::Gemini
        );
        assert_eq!(
            p(&headers(&[("anthropic-version", "2023-06-01")]), None),
            Protocol::Anthropic
        );
    }

    #[test]
    fn each_protocol_is_recognised() {
        let none = HeaderMap::new();
        let t = parse_path("/v1/chat/completions", &none, None).unwrap();
        assert_eq!(
            (t.protocol, t.operation),
            (Protocol::OpenAi, Operation::Chat)
        );
        let t = parse_path("/v1/messages", &none, None).unwrap();
        assert_eq!(
            (t.protocol, t.operation),
            (Protocol::Anthropic, Operation::Chat)
        );
        let t = parse_path(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            &none,
            None,
        )
        .unwrap();
        assert_eq!(
            (t.protocol, t.operation, t.path_model, t.path_stream),
            (
                Protocol::Gemini,
                Operation::Chat,
                Some("gemini-2.5-flash"),
                true
            )
        );
        assert_eq!(parse_path("/nowhere", &none, None), Err(Protocol::OpenAi));
    }

    #[test]
    fn error_messages_are_found_in_every_shape() {
        for protocol in [Protocol::OpenAi, Protocol::Gemini, Protocol::Anthropic] {
            let body = error_body(
                protocol,
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::RateLimited,
                "slow down",
                None,
            );
            assert_eq!(
                error_message(&body).as_deref(),
                Some("slow down"),
                "{protocol:?}"
            );
        }
    }
}
