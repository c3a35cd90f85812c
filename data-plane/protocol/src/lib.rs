//! Wire types of the three client protocols Fulcrum speaks, and pure translations between them.
//!
//! Everything here is pure: no I/O, no async runtime, no HTTP. The data plane owns the
//! network; this crate turns bytes it already has into typed requests, responses and
//! stream events, and one protocol's shapes into another's.
//!
//! - [`openai`], [`gemini`], [`anthropic`]: serde types for each protocol. They accept
//!   unknown fields (kept in an `extra` map so a same-protocol round trip loses nothing) and
//!   omit absent fields when serialized, except where the provider itself always sends
//!   `null` (OpenAI's `finish_reason`, Anthropic's `stop_sequence`, ...).
//! - [`sse`]: an incremental server-sent-events decoder and an encoder.
//! - [`schema`]: reduces a JSON Schema to the OpenAPI subset Gemini accepts.
//! - [`translate`]: one module per protocol pair; each offers request, response and
//!   streaming translation (see [`StreamTranslator`]).

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod schema;
pub mod sse;
pub mod translate;

/// What the caller allows a translation to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranslateOptions {
    /// Whether an image given by a remote URL may be passed on as a URL. Fetching is the
    /// data plane's job: when this is false, only `data:` URLs are accepted and any other
    /// image URL is a [`TranslateError::ImageUrlNotAllowed`]. When true, the URL is kept
    /// where the target protocol takes URLs (Gemini `fileData`, Anthropic `url` source).
    pub allow_image_urls: bool,
}

/// Why a translation failed. The messages speak about the client's request in the client's
/// terms, so that they can be returned as the message of a 400; [`TranslateError::is_client_error`]
/// tells those apart from upstream failures (a 502).
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// A content part or block type the target protocol cannot carry.
    #[error("unsupported content part `{kind}` in a {role} message")]
    UnsupportedContent { role: String, kind: String },
    /// An image given by a remote URL while the gateway does not fetch images.
    #[error("image urls must be base64 `data:` urls; remote image urls are not fetched")]
    ImageUrlNotAllowed,
    /// A `data:` URL that is not `data:<mime type>;base64,<data>`.
    #[error("malformed data url: expected `data:<mime type>;base64,<data>`")]
    InvalidDataUrl,
    /// A tool call whose `arguments` string is not a JSON object.
    #[error("arguments of tool call `{name}` are not a valid JSON object: {reason}")]
    InvalidToolArguments { name: String, reason: String },
    /// A tool result that refers to no earlier tool call.
    #[error(
        "tool message refers to tool_call_id `{id}`, which no earlier assistant message called"
    )]
    UnknownToolCallId { id: String },
    /// A tool or response schema the target cannot express.
    #[error("invalid schema in {location}: {reason}")]
    InvalidSchema { location: String, reason: String },
    /// A field whose value has no equivalent in the target protocol.
    #[error("unsupported value {value:?} for `{field}`")]
    UnsupportedValue { field: &'static str, value: String },
    /// Any other request the target cannot represent, with the reason.
    #[error("{0}")]
    InvalidRequest(String),
    /// The upstream sent a body or stream event that is not the JSON its protocol promises.
    #[error("upstream sent an invalid {what}: {reason}")]
    InvalidUpstreamJson { what: &'static str, reason: String },
    /// The upstream reported an error inside a stream (after the status line was sent).
    #[error("upstream error{}: {message}", status.as_deref().map(|s| format!(" ({s})")).unwrap_or_default())]
    Upstream {
        status: Option<String>,
        message: String,
    },
}

// === impl TranslateError ===

impl TranslateError {
    /// Whether the client's request is at fault (answer 400) rather than the upstream
    /// (answer 502, and count it against the upstream, never the key).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            TranslateError::InvalidUpstreamJson { .. } | TranslateError::Upstream { .. }
        )
    }

    /// An [`TranslateError::InvalidUpstreamJson`] for an upstream body or event of the
    /// given kind that did not parse.
    pub fn upstream_json(what: &'static str, err: serde_json::Error) -> Self {
        TranslateError::InvalidUpstreamJson {
            what,
            reason: err.to_string(),
        }
    }
}

/// Turns the upstream's stream, one decoded SSE event at a time, into the client's events.
pub trait StreamTranslator: Send {
    /// Translates one upstream event, pushing zero or more client events onto `out`.
    fn on_event(
        &mut self,
        event: &sse::SseEvent,
        out: &mut Vec<sse::SseEvent>,
    ) -> Result<(), TranslateError>;
    /// Called once at the end of the upstream stream; emits closing events (e.g. OpenAI `[DONE]`,
    /// Anthropic `message_stop`).
    fn finish(&mut self, out: &mut Vec<sse::SseEvent>) -> Result<(), TranslateError>;
}
