//! Anthropic Messages <-> OpenAI Chat Completions, both directions.
//!
//! Anthropic clients (Claude Code, the Anthropic SDKs) in front of an OpenAI or
//! OpenAI-compatible provider: [`anthropic_request_to_openai`],
//! [`openai_response_to_anthropic`], [`OpenAiToAnthropicStream`].
//! OpenAI clients in front of an Anthropic provider: [`openai_request_to_anthropic`],
//! [`anthropic_response_to_openai`], [`AnthropicToOpenAiStream`].
//!
//! Reasoning: an Anthropic `thinking` block becomes the assistant message's
//! `reasoning_content` (the field DeepSeek-style endpoints use; `reasoning`, as some other
//! compatible servers name it, is read too), and its signature travels
//! next to it in the non-standard field [`REASONING_SIGNATURE`] on the message or stream
//! delta. An OpenAI client that sends the message back unchanged thereby returns the signed
//! thinking block to Anthropic, which needs it in tool-use loops.
//!
//! What has no equivalent on the other side, and how it degrades (the request still works):
//! - `cache_control` is dropped (OpenAI caches prompt prefixes on its own); Anthropic's
//!   cache-read count and OpenAI's `cached_tokens` are mapped onto each other.
//! - OpenAI's `response_format` (JSON mode, JSON schema) is dropped towards Anthropic, which
//!   has no such parameter; the model still answers, only without the format guarantee.
//! - `top_k` is dropped towards OpenAI (OpenAI rejects unknown parameters); an OpenAI
//!   request may carry `top_k` as a compatible-server extension, which is passed on.
//! - `is_error` on a tool result is dropped towards OpenAI (tool messages have no flag; the
//!   error text itself reaches the model); `redacted_thinking` and server-tool blocks are
//!   dropped towards OpenAI clients; `n`, `seed`, penalties, `logit_bias` and `logprobs` are
//!   dropped towards Anthropic, except `n > 1`, which is refused.
//! - `metadata.user_id` and `user` are not mapped onto each other: their length and content
//!   rules differ, and a refused identifier would fail a request that otherwise works.
//! - Anthropic reports which stop sequence matched; OpenAI only says `stop`, which becomes
//!   `end_turn`.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::anthropic::{self, ContentBlock};
use crate::openai::{self, Role};
use crate::sse::SseEvent;
use crate::translate::parse_data_url;
use crate::{StreamTranslator, TranslateError, TranslateOptions};

/// `max_tokens` of an Anthropic request whose OpenAI client set no limit (Anthropic requires
/// one). When thinking is on, the thinking budget is added on top of it.
pub const DEFAULT_MAX_TOKENS: u32 = 8192;

/// The field of an OpenAI assistant message (and of a stream delta) that carries the
/// signature of the Anthropic thinking block whose text is in `reasoning_content`. It is
/// not an OpenAI field: clients keep it as an unknown field of the message and send it back
/// with the history, where [`openai_request_to_anthropic`] reads it.
pub const REASONING_SIGNATURE: &str = "reasoning_signature";

/// Thinking budgets for `reasoning_effort` low / medium / high; the same buckets the Gemini
/// translations use.
const BUDGET_LOW: u32 = 1024;
const BUDGET_MEDIUM: u32 = 8192;
const BUDGET_HIGH: u32 = 24576;

/// The smallest `budget_tokens` Anthropic accepts.
const MIN_THINKING_BUDGET: u32 = 1024;

/// The `top_p` range Anthropic accepts while thinking.
const THINKING_TOP_P: (f64, f64) = (0.95, 1.0);

/// Joins the text blocks of one request message where OpenAI gets one string (system
/// prompt, user text, tool result): many OpenAI-compatible servers accept only a string.
const BLOCK_SEPARATOR: &str = "\n\n";

/// What the OpenAI-compatible servers that stream reasoning under another name call it.
const REASONING_ALIAS: &str = "reasoning";

// ===== Anthropic request -> OpenAI =====

/// Translates an Anthropic Messages request into an OpenAI chat request for the same model.
///
/// The system prompt (a string or text blocks) becomes one system message; each tool result
/// becomes a `tool` message right after the assistant's calls, images in tool results
/// follow in a user message (tool messages cannot carry images); thinking blocks become
/// `reasoning_content` with [`REASONING_SIGNATURE`]; `thinking.budget_tokens` becomes a
/// `reasoning_effort` bucket. A streaming request asks for `stream_options.include_usage`,
/// since the Anthropic stream ends with the token counts.
pub fn anthropic_request_to_openai(
    req: &anthropic::MessagesRequest,
    opts: &TranslateOptions,
) -> Result<openai::ChatRequest, TranslateError> {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system
        && let Some(text) = system_to_openai(system)?
    {
        messages.push(openai::ChatMessage::text(Role::System, text));
    }
    for message in &req.messages {
        match message.role {
            anthropic::Role::User => user_to_openai(&message.content, opts, &mut messages)?,
            anthropic::Role::Assistant => {
                if let Some(translated) = assistant_to_openai(&message.content)? {
                    messages.push(translated);
                }
            }
        }
    }

    let tools = tools_to_openai(req.tools.as_deref())?;
    // OpenAI refuses `tool_choice` and `parallel_tool_calls` without tools.
    let (tool_choice, parallel_tool_calls) = match (&tools, &req.tool_choice) {
        (Some(_), Some(choice)) => tool_choice_to_openai(choice),
        _ => (None, None),
    };
    let streaming = req.stream == Some(true);
    Ok(openai::ChatRequest {
        model: req.model.clone(),
        messages,
        temperature: req.temperature,
        top_p: req.top_p,
        stream: req.stream,
        stream_options: streaming.then(|| openai::StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        stop: req
            .stop_sequences
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| openai::Stop::Many(s.clone())),
        // OpenAI's reasoning models refuse the deprecated `max_tokens`; a compatible server
        // that predates this field ignores it, which costs the limit, not the request.
        max_completion_tokens: Some(req.max_tokens),
        tools,
        tool_choice,
        parallel_tool_calls,
        reasoning_effort: req
            .thinking
            .as_ref()
            .and_then(thinking_to_effort)
            .map(str::to_owned),
        ..Default::default()
    })
}

fn system_to_openai(system: &anthropic::System) -> Result<Option<String>, TranslateError> {
    let text = match system {
        anthropic::System::Text(text) => text.clone(),
        anthropic::System::Blocks(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for block in blocks {
                match block {
                    ContentBlock::Text(text) => texts.push(text.text.as_str()),
                    other => return Err(unsupported("system", other.kind())),
                }
            }
            join_texts(texts)
        }
    };
    Ok((!text.is_empty()).then_some(text))
}

/// Appends the OpenAI messages for one Anthropic user turn: first a `tool` message per
/// tool result (OpenAI wants them right after the assistant's calls), then one user message
/// with the images of those results and the turn's own content.
fn user_to_openai(
    content: &anthropic::MessageContent,
    opts: &TranslateOptions,
    out: &mut Vec<openai::ChatMessage>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        anthropic::MessageContent::Text(text) => {
            out.push(openai::ChatMessage::text(Role::User, text.clone()));
            return Ok(());
        }
        anthropic::MessageContent::Blocks(blocks) => blocks,
    };
    let mut media = Vec::new();
    let mut parts = Vec::new();
    for block in blocks {
        match block {
            ContentBlock::ToolResult(result) => {
                let text = tool_result_to_openai(result, opts, &mut media)?;
                let mut message =
                    chat_message(Role::Tool, Some(openai::MessageContent::Text(text)));
                message.tool_call_id = Some(result.tool_use_id.clone());
                out.push(message);
            }
            other => parts.push(block_to_openai_part("user", other, opts)?),
        }
    }
    media.extend(parts);
    if !media.is_empty() {
        out.push(chat_message(Role::User, Some(parts_to_content(media))));
    }
    Ok(())
}

/// The text of a tool result; its images and documents go to `media`.
fn tool_result_to_openai(
    result: &anthropic::ToolResultBlock,
    opts: &TranslateOptions,
    media: &mut Vec<openai::ContentPart>,
) -> Result<String, TranslateError> {
    match &result.content {
        None => Ok(String::new()),
        Some(anthropic::ToolResultContent::Text(text)) => Ok(text.clone()),
        Some(anthropic::ToolResultContent::Blocks(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for block in blocks {
                match block {
                    ContentBlock::Text(text) => texts.push(text.text.as_str()),
                    ContentBlock::Image(_) | ContentBlock::Document(_) => {
                        media.push(block_to_openai_part("tool_result", block, opts)?);
                    }
                    other => return Err(unsupported("tool_result", other.kind())),
                }
            }
            Ok(join_texts(texts))
        }
    }
}

/// One user-side content block (text, image, document) as an OpenAI content part.
fn block_to_openai_part(
    role: &str,
    block: &ContentBlock,
    opts: &TranslateOptions,
) -> Result<openai::ContentPart, TranslateError> {
    match block {
        ContentBlock::Text(text) => Ok(openai::ContentPart::Text {
            text: text.text.clone(),
        }),
        ContentBlock::Image(image) => {
            let url = match &image.source {
                anthropic::ImageSource::Base64 { media_type, data } => {
                    format!("data:{media_type};base64,{data}")
                }
                anthropic::ImageSource::Url { url } if opts.allow_image_urls => url.clone(),
                anthropic::ImageSource::Url { .. } => {
                    return Err(TranslateError::ImageUrlNotAllowed);
                }
                anthropic::ImageSource::Other(source) => {
                    return Err(unsupported(role, &source_kind("image", source)));
                }
            };
            Ok(openai::ContentPart::ImageUrl {
                image_url: openai::ImageUrl {
                    url,
                    detail: None,
                    extra: Map::new(),
                },
            })
        }
        ContentBlock::Document(document) => document_to_openai(role, document),
        other => Err(unsupported(role, other.kind())),
    }
}

/// A base64 document becomes an OpenAI `file` part with `file_data`; a plain-text document
/// becomes text. URL and Files-API sources have no OpenAI form.
fn document_to_openai(
    role: &str,
    document: &anthropic::DocumentBlock,
) -> Result<openai::ContentPart, TranslateError> {
    let source = &document.source;
    let field = |name: &str| source.get(name).and_then(Value::as_str);
    match (field("type"), field("media_type"), field("data")) {
        (Some("base64"), Some(media_type), Some(data)) => {
            let filename = document
                .extra
                .get("title")
                .and_then(Value::as_str)
                .map_or_else(|| "document.pdf".to_owned(), str::to_owned);
            Ok(openai::ContentPart::Other(serde_json::json!({
                "type": "file",
                "file": {
                    "filename": filename,
                    "file_data": format!("data:{media_type};base64,{data}"),
                },
            })))
        }
        (Some("text"), _, Some(text)) => Ok(openai::ContentPart::Text {
            text: text.to_owned(),
        }),
        _ => Err(unsupported(role, &source_kind("document", source))),
    }
}

/// Text-only content becomes one string (what every OpenAI-compatible server accepts);
/// anything with an image or file stays an array of parts.
fn parts_to_content(parts: Vec<openai::ContentPart>) -> openai::MessageContent {
    let mut texts = Vec::with_capacity(parts.len());
    for part in &parts {
        match part {
            openai::ContentPart::Text { text } => texts.push(text.as_str()),
            _ => return openai::MessageContent::Parts(parts),
        }
    }
    openai::MessageContent::Text(join_texts(texts))
}

/// One Anthropic assistant turn as an OpenAI assistant message; `None` when it holds
/// nothing OpenAI can carry (only redacted thinking).
fn assistant_to_openai(
    content: &anthropic::MessageContent,
) -> Result<Option<openai::ChatMessage>, TranslateError> {
    let blocks = match content {
        anthropic::MessageContent::Text(text) => {
            return Ok(Some(openai::ChatMessage::text(
                Role::Assistant,
                text.clone(),
            )));
        }
        anthropic::MessageContent::Blocks(blocks) => blocks,
    };
    let mut texts = Vec::new();
    let mut thinking = Vec::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block {
            ContentBlock::Text(text) => texts.push(text.text.as_str()),
            ContentBlock::Thinking(thinking_block) => thinking.push(thinking_block),
            // Encrypted reasoning only Anthropic can read.
            ContentBlock::RedactedThinking(_) => {}
            ContentBlock::ToolUse(call) => calls.push(openai::ToolCall {
                id: call.id.clone(),
                kind: openai::FunctionType::Function,
                function: openai::FunctionCall {
                    name: call.name.clone(),
                    arguments: call.input.to_string(),
                },
                extra_content: None,
                extra: Map::new(),
            }),
            other => return Err(unsupported("assistant", other.kind())),
        }
    }
    let text = join_texts(texts);
    let reasoning = join_texts(thinking.iter().map(|t| t.thinking.as_str()));
    if text.is_empty() && reasoning.is_empty() && calls.is_empty() {
        return Ok(None);
    }
    let mut message = chat_message(
        Role::Assistant,
        // OpenAI sends `content: null` beside tool calls; keep that shape.
        (!text.is_empty() || calls.is_empty()).then_some(openai::MessageContent::Text(text)),
    );
    // `reasoning_content` goes back upstream: such history only exists when the upstream
    // produced reasoning itself, and DeepSeek-style thinking modes want it echoed in tool
    // loops. A signature is only there when Anthropic (or a gateway in front of it) signed
    // the block; one signature vouches for one block's exact text, so it is only worth
    // carrying when the turn had a single thinking block.
    if let [only] = thinking.as_slice()
        && let Some(signature) = only.signature.as_deref().filter(|s| !s.is_empty())
    {
        message.extra.insert(
            REASONING_SIGNATURE.into(),
            Value::String(signature.to_owned()),
        );
    }
    message.reasoning_content = (!reasoning.is_empty()).then_some(reasoning);
    message.tool_calls = (!calls.is_empty()).then_some(calls);
    Ok(Some(message))
}

fn tools_to_openai(
    tools: Option<&[anthropic::Tool]>,
) -> Result<Option<Vec<openai::Tool>>, TranslateError> {
    // OpenAI refuses an empty `tools` array.
    let Some(tools) = tools.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    tools
        .iter()
        .map(|tool| match tool {
            anthropic::Tool::Custom(tool) => Ok(openai::Tool::Function {
                function: openai::FunctionDefinition {
                    name: tool.name.clone(),
                    description: tool.description.clone(),
                    parameters: Some(tool.input_schema.clone()),
                    strict: None,
                    extra: Map::new(),
                },
            }),
            // Server tools (web search, code execution, ...) run inside Anthropic's API.
            anthropic::Tool::Server(tool) => Err(TranslateError::UnsupportedValue {
                field: "tools",
                value: tool
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_owned(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Anthropic's `tool_choice` as OpenAI's `tool_choice` and `parallel_tool_calls`.
fn tool_choice_to_openai(
    choice: &anthropic::ToolChoice,
) -> (Option<openai::ToolChoice>, Option<bool>) {
    use anthropic::ToolChoice as A;
    let mode = |mode| Some(openai::ToolChoice::Mode(mode));
    match choice {
        A::Auto {
            disable_parallel_tool_use,
        } => (
            mode(openai::ToolChoiceMode::Auto),
            disable_parallel_tool_use.map(|d| !d),
        ),
        A::Any {
            disable_parallel_tool_use,
        } => (
            mode(openai::ToolChoiceMode::Required),
            disable_parallel_tool_use.map(|d| !d),
        ),
        A::Tool {
            name,
            disable_parallel_tool_use,
        } => (
            Some(openai::ToolChoice::Function(openai::NamedToolChoice {
                kind: openai::FunctionType::Function,
                function: openai::FunctionName { name: name.clone() },
            })),
            disable_parallel_tool_use.map(|d| !d),
        ),
        A::None => (mode(openai::ToolChoiceMode::None), None),
    }
}

/// `thinking: {type: enabled, budget_tokens}` as a `reasoning_effort` bucket. Disabled and
/// later forms (adaptive thinking) ask for nothing.
fn thinking_to_effort(thinking: &anthropic::ThinkingConfig) -> Option<&'static str> {
    match thinking {
        anthropic::ThinkingConfig::Enabled { budget_tokens } => {
            Some(if *budget_tokens <= BUDGET_LOW {
                "low"
            } else if *budget_tokens <= BUDGET_MEDIUM {
                "medium"
            } else {
                "high"
            })
        }
        anthropic::ThinkingConfig::Disabled | anthropic::ThinkingConfig::Other(_) => None,
    }
}

// ===== OpenAI response -> Anthropic =====

/// Translates an OpenAI chat completion into an Anthropic message. Only the first choice is
/// used (an Anthropic request never asks for more). Fails only when the model produced tool
/// call arguments that are not a JSON object.
pub fn openai_response_to_anthropic(
    resp: &openai::ChatResponse,
) -> Result<anthropic::MessagesResponse, TranslateError> {
    let choice = resp.choices.iter().min_by_key(|c| c.index);
    let mut content = Vec::new();
    let mut calls = 0;
    if let Some(choice) = choice {
        let message = &choice.message;
        if let Some(reasoning) = reasoning_of(message.reasoning_content.as_deref(), &message.extra)
        {
            content.push(ContentBlock::Thinking(anthropic::ThinkingBlock {
                thinking: reasoning.to_owned(),
                // Anthropic clients expect the field; an unknown signature is empty, and
                // an empty one is never sent back upstream.
                signature: Some(signature_of(&message.extra).unwrap_or_default()),
                extra: Map::new(),
            }));
        }
        let text = non_empty(message.content.as_deref()).or(non_empty(message.refusal.as_deref()));
        if let Some(text) = text {
            content.push(ContentBlock::text(text));
        }
        for call in message.tool_calls.iter().flatten() {
            let id = upstream_tool_id(&call.id, &resp.id, calls);
            calls += 1;
            let input =
                parse_arguments(&call.function.name, &call.function.arguments).map_err(|err| {
                    TranslateError::InvalidUpstreamJson {
                        what: "tool call arguments",
                        reason: err.to_string(),
                    }
                })?;
            content.push(ContentBlock::ToolUse(tool_use_block(
                id,
                call.function.name.clone(),
                input,
            )));
        }
    }
    Ok(anthropic::MessagesResponse {
        id: message_id(&resp.id),
        kind: "message".into(),
        role: anthropic::Role::Assistant,
        model: resp.model.clone(),
        content,
        stop_reason: Some(finish_reason_to_anthropic(
            choice.and_then(|c| c.finish_reason.as_ref()),
            calls > 0,
        )),
        stop_sequence: None,
        usage: resp
            .usage
            .as_ref()
            .map(usage_to_anthropic)
            .unwrap_or_default(),
        extra: Map::new(),
    })
}

/// OpenAI says `stop` both for a natural end and for a stop sequence, and some servers say
/// `stop` after tool calls: calls win.
fn finish_reason_to_anthropic(
    reason: Option<&openai::FinishReason>,
    has_calls: bool,
) -> anthropic::StopReason {
    use openai::FinishReason as F;
    match reason {
        Some(F::Length) => anthropic::StopReason::MaxTokens,
        Some(F::ContentFilter) => anthropic::StopReason::Refusal,
        Some(F::ToolCalls | F::FunctionCall) => anthropic::StopReason::ToolUse,
        Some(F::Stop | F::Other(_)) | None if has_calls => anthropic::StopReason::ToolUse,
        Some(F::Stop | F::Other(_)) | None => anthropic::StopReason::EndTurn,
    }
}

/// OpenAI's `prompt_tokens` include the cached ones; Anthropic's `input_tokens` do not.
/// Reasoning tokens are already inside `completion_tokens`, as in Anthropic's
/// `output_tokens`, which has no separate count for them.
fn usage_to_anthropic(usage: &openai::Usage) -> anthropic::Usage {
    let cached = cached_tokens(usage);
    anthropic::Usage {
        input_tokens: usage
            .prompt_tokens
            .saturating_sub(cached.unwrap_or_default()),
        output_tokens: usage.completion_tokens,
        cache_creation_input_tokens: None,
        cache_read_input_tokens: cached,
        extra: Map::new(),
    }
}

fn cached_tokens(usage: &openai::Usage) -> Option<u64> {
    usage.prompt_tokens_details.as_ref()?.cached_tokens
}

// ===== OpenAI stream -> Anthropic =====

/// The block [`OpenAiToAnthropicStream`] has open.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Thinking,
    /// A tool call: OpenAI's index for it and the id it had upstream.
    Tool {
        upstream_index: u32,
        id: String,
    },
}

/// OpenAI `chat.completion.chunk`s -> Anthropic stream events.
///
/// Emits the sequence Anthropic documents: `message_start` (on the first chunk, with
/// `input_tokens` 0 unless that chunk already carries usage), then per content block
/// `content_block_start`, `content_block_delta`s and `content_block_stop` with increasing
/// indexes: reasoning deltas become a `thinking` block (`thinking_delta`, and a
/// `signature_delta` when the delta carries [`REASONING_SIGNATURE`]), text deltas a `text`
/// block, each tool call a `tool_use` block fed by `input_json_delta`s. A block closes when
/// another kind of delta or another call starts. `message_delta` (stop reason and usage)
/// and `message_stop` wait for `[DONE]` (or the end of the stream after a
/// `finish_reason`), since OpenAI sends its usage chunk after the finish reason.
///
/// Only the first choice is translated. Calls are expected one after the other, as OpenAI
/// streams them; a fragment for a call whose block is already closed is refused. A call
/// fragment with a new id at the index of the open call starts a new call (Ollama-style
/// servers reuse index 0 for parallel calls).
#[derive(Debug, Default)]
pub struct OpenAiToAnthropicStream {
    started: bool,
    /// The upstream completion id, which generated tool call ids derive from.
    response_id: String,
    next_index: u32,
    open: Option<(u32, OpenBlock)>,
    closed_calls: HashSet<u32>,
    calls: usize,
    finish_reason: Option<openai::FinishReason>,
    usage: Option<openai::Usage>,
    done: bool,
}

// === impl OpenAiToAnthropicStream ===

impl OpenAiToAnthropicStream {
    /// A translator for one stream.
    pub fn new() -> Self {
        OpenAiToAnthropicStream::default()
    }

    fn start(&mut self, chunk: &openai::ChatChunk, out: &mut Vec<SseEvent>) {
        self.started = true;
        self.response_id.clone_from(&chunk.id);
        let usage = chunk
            .usage
            .as_ref()
            .map(usage_to_anthropic)
            .map(|counts| anthropic::Usage {
                output_tokens: 0,
                ..counts
            })
            .unwrap_or_default();
        let message = anthropic::MessagesResponse {
            id: message_id(&chunk.id),
            kind: "message".into(),
            role: anthropic::Role::Assistant,
            model: chunk.model.clone(),
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage,
            extra: Map::new(),
        };
        push_event(out, &anthropic::StreamEvent::MessageStart { message });
    }

    fn close_block(&mut self, out: &mut Vec<SseEvent>) {
        if let Some((index, block)) = self.open.take() {
            if let OpenBlock::Tool { upstream_index, .. } = block {
                self.closed_calls.insert(upstream_index);
            }
            push_event(out, &anthropic::StreamEvent::ContentBlockStop { index });
        }
    }

    fn open_block(
        &mut self,
        block: OpenBlock,
        content_block: ContentBlock,
        out: &mut Vec<SseEvent>,
    ) -> u32 {
        self.close_block(out);
        debug_assert!(self.open.is_none(), "one block at a time");
        let index = self.next_index;
        self.next_index += 1;
        push_event(
            out,
            &anthropic::StreamEvent::ContentBlockStart {
                index,
                content_block,
            },
        );
        self.open = Some((index, block));
        index
    }

    /// The index of the open text or thinking block, opening one if needed.
    fn ensure_block(&mut self, block: OpenBlock, out: &mut Vec<SseEvent>) -> u32 {
        if let Some((index, open)) = &self.open
            && *open == block
        {
            return *index;
        }
        let content_block = match block {
            OpenBlock::Thinking => ContentBlock::Thinking(anthropic::ThinkingBlock {
                thinking: String::new(),
                signature: None,
                extra: Map::new(),
            }),
            _ => ContentBlock::text(""),
        };
        self.open_block(block, content_block, out)
    }

    fn on_call_fragment(
        &mut self,
        fragment: &openai::ToolCallDelta,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), TranslateError> {
        let id = non_empty(fragment.id.as_deref());
        let continues = match &self.open {
            Some((
                _,
                OpenBlock::Tool {
                    upstream_index,
                    id: open_id,
                },
            )) => *upstream_index == fragment.index && id.is_none_or(|new_id| new_id == open_id),
            _ => false,
        };
        let index = if continues {
            self.open.as_ref().map_or(0, |(index, _)| *index)
        } else {
            if id.is_none() && self.closed_calls.contains(&fragment.index) {
                return Err(TranslateError::InvalidUpstreamJson {
                    what: "openai stream chunk",
                    reason: format!(
                        "a fragment of tool call {} came after a later block started",
                        fragment.index
                    ),
                });
            }
            let upstream_id = id.map_or_else(
                || generated_tool_id(&self.response_id, self.calls),
                str::to_owned,
            );
            self.calls += 1;
            let name = fragment
                .function
                .as_ref()
                .and_then(|f| f.name.clone())
                .unwrap_or_default();
            let block = tool_use_block(
                anthropic_tool_use_id(&upstream_id),
                name,
                Value::Object(Map::new()),
            );
            self.open_block(
                OpenBlock::Tool {
                    upstream_index: fragment.index,
                    id: upstream_id,
                },
                ContentBlock::ToolUse(block),
                out,
            )
        };
        let arguments = fragment
            .function
            .as_ref()
            .and_then(|f| f.arguments.as_deref());
        if let Some(partial_json) = non_empty(arguments) {
            push_delta(
                out,
                index,
                anthropic::ContentDelta::InputJsonDelta {
                    partial_json: partial_json.to_owned(),
                },
            );
        }
        Ok(())
    }

    fn on_chunk(
        &mut self,
        chunk: &openai::ChatChunk,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), TranslateError> {
        if !self.started {
            self.start(chunk, out);
        }
        if chunk.usage.is_some() {
            self.usage.clone_from(&chunk.usage);
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            let delta = &choice.delta;
            if let Some(reasoning) = reasoning_of(delta.reasoning_content.as_deref(), &delta.extra)
            {
                let index = self.ensure_block(OpenBlock::Thinking, out);
                push_delta(
                    out,
                    index,
                    anthropic::ContentDelta::ThinkingDelta {
                        thinking: reasoning.to_owned(),
                    },
                );
            }
            if let Some(signature) = signature_of(&delta.extra) {
                let index = self.ensure_block(OpenBlock::Thinking, out);
                push_delta(
                    out,
                    index,
                    anthropic::ContentDelta::SignatureDelta { signature },
                );
            }
            if let Some(text) =
                non_empty(delta.content.as_deref()).or(non_empty(delta.refusal.as_deref()))
            {
                let index = self.ensure_block(OpenBlock::Text, out);
                push_delta(
                    out,
                    index,
                    anthropic::ContentDelta::TextDelta {
                        text: text.to_owned(),
                    },
                );
            }
            for fragment in delta.tool_calls.iter().flatten() {
                self.on_call_fragment(fragment, out)?;
            }
            if let Some(reason) = &choice.finish_reason {
                self.finish_reason = Some(reason.clone());
                self.close_block(out);
            }
        }
        Ok(())
    }

    /// Closes the message: the open block, `message_delta` and `message_stop`.
    fn end(&mut self, out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        if !self.started {
            return Err(TranslateError::InvalidUpstreamJson {
                what: "openai stream",
                reason: "the stream ended before its first chunk".into(),
            });
        }
        self.done = true;
        self.close_block(out);
        let totals = self.usage.as_ref().map(usage_to_anthropic);
        let delta = anthropic::MessageDelta {
            stop_reason: Some(finish_reason_to_anthropic(
                self.finish_reason.as_ref(),
                self.calls > 0,
            )),
            stop_sequence: None,
            extra: Map::new(),
        };
        let usage = anthropic::DeltaUsage {
            input_tokens: totals.as_ref().map(|u| u.input_tokens),
            output_tokens: totals.as_ref().map_or(0, |u| u.output_tokens),
            cache_creation_input_tokens: None,
            cache_read_input_tokens: totals.and_then(|u| u.cache_read_input_tokens),
            extra: Map::new(),
        };
        push_event(out, &anthropic::StreamEvent::MessageDelta { delta, usage });
        push_event(out, &anthropic::StreamEvent::MessageStop);
        Ok(())
    }
}

impl StreamTranslator for OpenAiToAnthropicStream {
    fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), TranslateError> {
        let data = event.data.trim();
        if data.is_empty() || self.done {
            return Ok(());
        }
        if data == "[DONE]" {
            return self.end(out);
        }
        let chunk = parse_openai_chunk(data)?;
        self.on_chunk(&chunk, out)
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        if self.done {
            return Ok(());
        }
        // Some compatible servers end the body without `[DONE]`; a finish reason is proof
        // enough that the answer is complete. Without one the stream was cut.
        if self.finish_reason.is_none() {
            return Err(TranslateError::InvalidUpstreamJson {
                what: "openai stream",
                reason: "the stream ended before a finish_reason".into(),
            });
        }
        self.end(out)
    }
}

/// Parses one OpenAI stream chunk, turning an `{"error": ...}` event (which compatible
/// servers send mid-stream) into [`TranslateError::Upstream`].
fn parse_openai_chunk(data: &str) -> Result<openai::ChatChunk, TranslateError> {
    if let Some(parsed) = super::parse_unless_error(data, "openai stream chunk") {
        return parsed;
    }
    let value: Value = serde_json::from_str(data)
        .map_err(|e| TranslateError::upstream_json("openai stream chunk", e))?;
    if let Some(error) = value.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_owned();
        let status = match (error.get("type"), error.get("code")) {
            (Some(Value::String(kind)), _) => Some(kind.clone()),
            (_, Some(Value::String(code))) => Some(code.clone()),
            (_, Some(code @ Value::Number(_))) => Some(code.to_string()),
            _ => None,
        };
        return Err(TranslateError::Upstream { status, message });
    }
    serde_json::from_value(value)
        .map_err(|e| TranslateError::upstream_json("openai stream chunk", e))
}

fn push_event(out: &mut Vec<SseEvent>, event: &anthropic::StreamEvent) {
    out.push(SseEvent::named(event.name(), to_json(event)));
}

fn push_delta(out: &mut Vec<SseEvent>, index: u32, delta: anthropic::ContentDelta) {
    push_event(
        out,
        &anthropic::StreamEvent::ContentBlockDelta { index, delta },
    );
}

// ===== OpenAI request -> Anthropic =====

/// Translates an OpenAI chat request into an Anthropic Messages request for the same model.
///
/// System and developer messages (wherever they stand) become `system`; consecutive
/// messages of one role are merged into one turn, as Anthropic wants strictly alternating
/// turns; tool messages become `tool_result` blocks in the user turn after the calls,
/// ahead of any user text; `reasoning_effort` becomes a thinking budget, which Anthropic's
/// rules may shrink or turn off (see [`DEFAULT_MAX_TOKENS`] and the comments below);
/// `temperature` is clamped to Anthropic's 0..=1.
pub fn openai_request_to_anthropic(
    req: &openai::ChatRequest,
    opts: &TranslateOptions,
) -> Result<anthropic::MessagesRequest, TranslateError> {
    if let Some(n) = req.n.filter(|n| *n > 1) {
        return Err(TranslateError::UnsupportedValue {
            field: "n",
            value: n.to_string(),
        });
    }
    let mut system = Vec::new();
    let mut turns: Vec<(anthropic::Role, Vec<ContentBlock>)> = Vec::new();
    // Ids of the calls made so far: a tool message must answer one of them.
    let mut called: HashSet<&str> = HashSet::new();
    for message in &req.messages {
        match message.role {
            Role::System | Role::Developer => system.extend(system_blocks(message)?),
            Role::User => push_turn(
                &mut turns,
                anthropic::Role::User,
                user_blocks(message, opts)?,
            ),
            Role::Assistant => push_turn(
                &mut turns,
                anthropic::Role::Assistant,
                assistant_blocks(message, &mut called)?,
            ),
            Role::Tool => {
                let id = message.tool_call_id.as_deref().ok_or_else(|| {
                    TranslateError::InvalidRequest("tool message without tool_call_id".into())
                })?;
                if !called.contains(id) {
                    return Err(TranslateError::UnknownToolCallId { id: id.to_owned() });
                }
                let block = tool_result_block(id, message, opts)?;
                push_turn(&mut turns, anthropic::Role::User, vec![block]);
            }
            Role::Function => {
                return Err(TranslateError::UnsupportedValue {
                    field: "role",
                    value: Role::Function.as_str().into(),
                });
            }
        }
    }
    let messages: Vec<anthropic::Message> = turns.into_iter().map(turn_to_message).collect();

    let tools = tools_to_anthropic(req.tools.as_deref())?;
    let tool_choice = match tools {
        Some(_) => tool_choice_to_anthropic(req.tool_choice.as_ref(), req.parallel_tool_calls)?,
        None => None,
    };

    let mut budget = effort_to_budget(req.reasoning_effort.as_deref())?;
    // Anthropic refuses thinking together with a forced tool.
    if matches!(
        tool_choice,
        Some(anthropic::ToolChoice::Any { .. } | anthropic::ToolChoice::Tool { .. })
    ) {
        budget = None;
    }
    // With thinking on, Anthropic wants the last assistant turn of a tool loop to start with
    // its (signed) thinking block; a client that dropped it cannot have thinking.
    if budget.is_some() && !last_tool_turn_keeps_thinking(&messages) {
        budget = None;
    }
    let requested_max = req.max_completion_tokens.or(req.max_tokens);
    let max_tokens = match (requested_max, budget) {
        (Some(max), _) => max,
        // OpenAI's limit counts reasoning too; without one, leave room for both.
        (None, Some(budget)) => DEFAULT_MAX_TOKENS + budget,
        (None, None) => DEFAULT_MAX_TOKENS,
    };
    // The budget must be at least 1024 and below `max_tokens`: a limit that leaves no room
    // for thinking turns it off rather than being raised past what the client allowed.
    let thinking = budget
        .map(|b| b.min(max_tokens.saturating_sub(1)))
        .filter(|b| *b >= MIN_THINKING_BUDGET)
        .map(|budget_tokens| anthropic::ThinkingConfig::Enabled { budget_tokens });
    let requested_top_k = req
        .extra
        .get("top_k")
        .and_then(Value::as_u64)
        .and_then(|k| u32::try_from(k).ok());
    // Thinking does not go with `temperature` or `top_k`, and takes `top_p` only in 0.95..=1.
    let (temperature, top_p, top_k) = if thinking.is_some() {
        (
            None,
            req.top_p
                .map(|p| p.clamp(THINKING_TOP_P.0, THINKING_TOP_P.1)),
            None,
        )
    } else {
        (
            req.temperature.map(|t| t.clamp(0.0, 1.0)),
            req.top_p,
            requested_top_k,
        )
    };
    let stop_sequences = req
        .stop
        .as_ref()
        .map(openai::Stop::to_vec)
        .filter(|s| !s.is_empty());

    Ok(anthropic::MessagesRequest {
        model: req.model.clone(),
        max_tokens,
        messages,
        system: system_to_anthropic(system),
        tools,
        tool_choice,
        stop_sequences,
        temperature,
        top_p,
        top_k,
        stream: req.stream,
        thinking,
        metadata: None,
        extra: Map::new(),
    })
}

/// Appends a turn's blocks, merging them into the previous turn of the same role.
fn push_turn(
    turns: &mut Vec<(anthropic::Role, Vec<ContentBlock>)>,
    role: anthropic::Role,
    blocks: Vec<ContentBlock>,
) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// A merged turn as a message. Anthropic wants tool results first in a user turn and
/// thinking first in an assistant turn; a lone plain text block becomes a string.
fn turn_to_message((role, mut blocks): (anthropic::Role, Vec<ContentBlock>)) -> anthropic::Message {
    // A stable sort keeps the order within each group.
    blocks.sort_by_key(|block| match (role, block) {
        (anthropic::Role::User, ContentBlock::ToolResult(_)) => 0,
        (
            anthropic::Role::Assistant,
            ContentBlock::Thinking(_) | ContentBlock::RedactedThinking(_),
        ) => 0,
        _ => 1,
    });
    let content = match blocks.as_slice() {
        [ContentBlock::Text(text)] if text.cache_control.is_none() && text.extra.is_empty() => {
            anthropic::MessageContent::Text(text.text.clone())
        }
        _ => anthropic::MessageContent::Blocks(blocks),
    };
    anthropic::Message {
        role,
        content,
        extra: Map::new(),
    }
}

fn system_blocks(message: &openai::ChatMessage) -> Result<Vec<ContentBlock>, TranslateError> {
    let role = message.role.as_str();
    match &message.content {
        None => Ok(Vec::new()),
        Some(openai::MessageContent::Text(text)) => Ok(text_block(text).into_iter().collect()),
        Some(openai::MessageContent::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for part in parts {
                match part {
                    openai::ContentPart::Text { text } => blocks.extend(text_block(text)),
                    other => return Err(unsupported(role, other.kind())),
                }
            }
            Ok(blocks)
        }
    }
}

fn system_to_anthropic(blocks: Vec<ContentBlock>) -> Option<anthropic::System> {
    match blocks.as_slice() {
        [] => None,
        [ContentBlock::Text(text)] => Some(anthropic::System::Text(text.text.clone())),
        _ => Some(anthropic::System::Blocks(blocks)),
    }
}

fn user_blocks(
    message: &openai::ChatMessage,
    opts: &TranslateOptions,
) -> Result<Vec<ContentBlock>, TranslateError> {
    content_blocks("user", message.content.as_ref(), opts)
}

/// The blocks of a user or tool message's content. Empty text is left out: Anthropic
/// refuses empty text blocks.
fn content_blocks(
    role: &str,
    content: Option<&openai::MessageContent>,
    opts: &TranslateOptions,
) -> Result<Vec<ContentBlock>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(openai::MessageContent::Text(text)) => Ok(text_block(text).into_iter().collect()),
        Some(openai::MessageContent::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for part in parts {
                blocks.extend(part_to_anthropic(role, part, opts)?);
            }
            Ok(blocks)
        }
    }
}

fn part_to_anthropic(
    role: &str,
    part: &openai::ContentPart,
    opts: &TranslateOptions,
) -> Result<Option<ContentBlock>, TranslateError> {
    match part {
        openai::ContentPart::Text { text } => Ok(text_block(text)),
        openai::ContentPart::Refusal { refusal } => Ok(text_block(refusal)),
        openai::ContentPart::ImageUrl { image_url } => {
            image_from_url(&image_url.url, opts).map(Some)
        }
        openai::ContentPart::Other(value)
            if value.get("type").and_then(Value::as_str) == Some("file") =>
        {
            file_to_document(role, value).map(Some)
        }
        other => Err(unsupported(role, other.kind())),
    }
}

fn image_from_url(url: &str, opts: &TranslateOptions) -> Result<ContentBlock, TranslateError> {
    let source = if url.starts_with("data:") {
        let (media_type, data) = parse_data_url(url)?;
        anthropic::ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        }
    } else if opts.allow_image_urls {
        anthropic::ImageSource::Url {
            url: url.to_owned(),
        }
    } else {
        return Err(TranslateError::ImageUrlNotAllowed);
    };
    Ok(ContentBlock::Image(anthropic::ImageBlock {
        source,
        cache_control: None,
        extra: Map::new(),
    }))
}

/// An OpenAI `file` part with inline `file_data` (a PDF) as a base64 document; files
/// uploaded to OpenAI (`file_id`) cannot be read by Anthropic.
fn file_to_document(role: &str, part: &Value) -> Result<ContentBlock, TranslateError> {
    let file_data = part
        .get("file")
        .and_then(|f| f.get("file_data"))
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported(role, "file (file_id)"))?;
    let (media_type, data) = parse_data_url(file_data)?;
    Ok(ContentBlock::Document(anthropic::DocumentBlock {
        source: serde_json::json!({
            "type": "base64",
            "media_type": media_type,
            "data": data,
        }),
        cache_control: None,
        extra: Map::new(),
    }))
}

fn assistant_blocks<'a>(
    message: &'a openai::ChatMessage,
    called: &mut HashSet<&'a str>,
) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut blocks = Vec::new();
    // Anthropic checks the signature of a thinking block it gets back; reasoning without
    // one cannot be sent.
    if let Some(reasoning) = non_empty(message.reasoning_content.as_deref())
        && let Some(signature) = signature_of(&message.extra)
    {
        blocks.push(ContentBlock::Thinking(anthropic::ThinkingBlock {
            thinking: reasoning.to_owned(),
            signature: Some(signature),
            extra: Map::new(),
        }));
    }
    match &message.content {
        None => {}
        Some(openai::MessageContent::Text(text)) => blocks.extend(text_block(text)),
        Some(openai::MessageContent::Parts(parts)) => {
            for part in parts {
                match part {
                    openai::ContentPart::Text { text } => blocks.extend(text_block(text)),
                    openai::ContentPart::Refusal { refusal } => blocks.extend(text_block(refusal)),
                    other => return Err(unsupported("assistant", other.kind())),
                }
            }
        }
    }
    if message.content.is_none()
        && let Some(refusal) = &message.refusal
    {
        blocks.extend(text_block(refusal));
    }
    for call in message.tool_calls.iter().flatten() {
        called.insert(call.id.as_str());
        let input = parse_arguments(&call.function.name, &call.function.arguments)?;
        blocks.push(ContentBlock::ToolUse(tool_use_block(
            anthropic_tool_use_id(&call.id),
            call.function.name.clone(),
            input,
        )));
    }
    Ok(blocks)
}

fn tool_result_block(
    id: &str,
    message: &openai::ChatMessage,
    opts: &TranslateOptions,
) -> Result<ContentBlock, TranslateError> {
    let content = match &message.content {
        Some(openai::MessageContent::Text(text)) => {
            (!text.is_empty()).then(|| anthropic::ToolResultContent::Text(text.clone()))
        }
        other => {
            let blocks = content_blocks("tool", other.as_ref(), opts)?;
            (!blocks.is_empty()).then_some(anthropic::ToolResultContent::Blocks(blocks))
        }
    };
    Ok(ContentBlock::ToolResult(anthropic::ToolResultBlock {
        tool_use_id: anthropic_tool_use_id(id),
        content,
        is_error: None,
        cache_control: None,
        extra: Map::new(),
    }))
}

fn tools_to_anthropic(
    tools: Option<&[openai::Tool]>,
) -> Result<Option<Vec<anthropic::Tool>>, TranslateError> {
    let Some(tools) = tools.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    tools
        .iter()
        .map(|tool| match tool {
            openai::Tool::Function { function } => {
                Ok(anthropic::Tool::Custom(anthropic::CustomTool {
                    name: function.name.clone(),
                    description: function.description.clone(),
                    // Anthropic requires an object schema; a function without parameters
                    // takes none.
                    input_schema: function
                        .parameters
                        .clone()
                        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                    kind: None,
                    cache_control: None,
                    extra: Map::new(),
                }))
            }
            openai::Tool::Other(tool) => Err(TranslateError::UnsupportedValue {
                field: "tools",
                value: tool
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_owned(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// OpenAI's `tool_choice` and `parallel_tool_calls` as Anthropic's `tool_choice`.
fn tool_choice_to_anthropic(
    choice: Option<&openai::ToolChoice>,
    parallel_tool_calls: Option<bool>,
) -> Result<Option<anthropic::ToolChoice>, TranslateError> {
    use anthropic::ToolChoice as A;
    let disable_parallel_tool_use = (parallel_tool_calls == Some(false)).then_some(true);
    let translated = match choice {
        None => disable_parallel_tool_use.map(|_| A::Auto {
            disable_parallel_tool_use,
        }),
        Some(openai::ToolChoice::Mode(openai::ToolChoiceMode::None)) => Some(A::None),
        Some(openai::ToolChoice::Mode(openai::ToolChoiceMode::Auto)) => Some(A::Auto {
            disable_parallel_tool_use,
        }),
        Some(openai::ToolChoice::Mode(openai::ToolChoiceMode::Required)) => Some(A::Any {
            disable_parallel_tool_use,
        }),
        Some(openai::ToolChoice::Function(named)) => Some(A::Tool {
            name: named.function.name.clone(),
            disable_parallel_tool_use,
        }),
        Some(openai::ToolChoice::Other(other)) => {
            return Err(TranslateError::UnsupportedValue {
                field: "tool_choice",
                value: other.to_string(),
            });
        }
    };
    Ok(translated)
}

/// `reasoning_effort` as a thinking budget; `none` and `minimal` mean no thinking.
fn effort_to_budget(effort: Option<&str>) -> Result<Option<u32>, TranslateError> {
    match effort {
        None | Some("none" | "minimal") => Ok(None),
        Some("low") => Ok(Some(BUDGET_LOW)),
        Some("medium") => Ok(Some(BUDGET_MEDIUM)),
        Some("high" | "xhigh") => Ok(Some(BUDGET_HIGH)),
        Some(other) => Err(TranslateError::UnsupportedValue {
            field: "reasoning_effort",
            value: other.to_owned(),
        }),
    }
}

/// Whether the last assistant turn, if it called tools, starts with a thinking block.
fn last_tool_turn_keeps_thinking(messages: &[anthropic::Message]) -> bool {
    let Some(last) = messages
        .iter()
        .rev()
        .find(|m| m.role == anthropic::Role::Assistant)
    else {
        return true;
    };
    let anthropic::MessageContent::Blocks(blocks) = &last.content else {
        return true;
    };
    let calls = blocks.iter().any(|b| matches!(b, ContentBlock::ToolUse(_)));
    !calls
        || matches!(
            blocks.first(),
            Some(ContentBlock::Thinking(_) | ContentBlock::RedactedThinking(_))
        )
}

// ===== Anthropic response -> OpenAI =====

/// Translates an Anthropic message into an OpenAI chat completion with one choice.
///
/// Text blocks are concatenated into `content` (Anthropic splits one answer into several
/// blocks around citations); thinking goes to `reasoning_content`, with
/// [`REASONING_SIGNATURE`] when there is one thinking block; tool_use blocks become
/// `tool_calls` with their ids. Redacted thinking and server-tool blocks have no OpenAI form
/// and are left out.
pub fn anthropic_response_to_openai(resp: &anthropic::MessagesResponse) -> openai::ChatResponse {
    let mut text = String::new();
    let mut thinking = Vec::new();
    let mut calls = Vec::new();
    for block in &resp.content {
        match block {
            ContentBlock::Text(text_block) => text.push_str(&text_block.text),
            ContentBlock::Thinking(thinking_block) => thinking.push(thinking_block),
            ContentBlock::ToolUse(call) => calls.push(openai::ToolCall {
                id: call.id.clone(),
                kind: openai::FunctionType::Function,
                function: openai::FunctionCall {
                    name: call.name.clone(),
                    arguments: call.input.to_string(),
                },
                extra_content: None,
                extra: Map::new(),
            }),
            _ => {}
        }
    }
    let mut extra = Map::new();
    if let [only] = thinking.as_slice()
        && let Some(signature) = only.signature.as_deref().filter(|s| !s.is_empty())
    {
        extra.insert(
            REASONING_SIGNATURE.into(),
            Value::String(signature.to_owned()),
        );
    }
    let reasoning: String = thinking.iter().map(|t| t.thinking.as_str()).collect();
    let has_calls = !calls.is_empty();
    let message = openai::ResponseMessage {
        role: Role::Assistant,
        content: (!text.is_empty() || !has_calls).then_some(text),
        reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls: has_calls.then_some(calls),
        refusal: None,
        extra,
    };
    openai::ChatResponse {
        id: completion_id(&resp.id),
        object: "chat.completion".into(),
        created: unix_now(),
        model: resp.model.clone(),
        choices: vec![openai::Choice {
            index: 0,
            message,
            finish_reason: Some(stop_reason_to_openai(resp.stop_reason.as_ref(), has_calls)),
            logprobs: None,
            extra: Map::new(),
        }],
        usage: Some(usage_to_openai(&resp.usage)),
        system_fingerprint: None,
        service_tier: None,
        extra: Map::new(),
    }
}

fn stop_reason_to_openai(
    reason: Option<&anthropic::StopReason>,
    has_calls: bool,
) -> openai::FinishReason {
    use anthropic::StopReason as S;
    match reason {
        Some(S::ToolUse) => openai::FinishReason::ToolCalls,
        Some(S::MaxTokens | S::ModelContextWindowExceeded) => openai::FinishReason::Length,
        Some(S::Refusal) => openai::FinishReason::ContentFilter,
        _ if has_calls => openai::FinishReason::ToolCalls,
        // end_turn, stop_sequence, pause_turn (a server tool paused; the text so far is
        // complete) and later reasons.
        _ => openai::FinishReason::Stop,
    }
}

/// Anthropic counts cached and cache-writing input apart from `input_tokens`; OpenAI's
/// `prompt_tokens` hold all of it, with the cached part detailed.
fn usage_to_openai(usage: &anthropic::Usage) -> openai::Usage {
    let prompt = usage.input_tokens
        + usage.cache_read_input_tokens.unwrap_or_default()
        + usage.cache_creation_input_tokens.unwrap_or_default();
    openai::Usage {
        prompt_tokens: prompt,
        completion_tokens: usage.output_tokens,
        total_tokens: prompt + usage.output_tokens,
        prompt_tokens_details: usage.cache_read_input_tokens.map(|cached| {
            openai::PromptTokensDetails {
                cached_tokens: Some(cached),
                extra: Map::new(),
            }
        }),
        completion_tokens_details: None,
        extra: Map::new(),
    }
}

// ===== Anthropic stream -> OpenAI =====

/// What the deltas of one upstream content block become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamBlock {
    Text,
    Thinking,
    /// A tool_use block, with the OpenAI tool call index it was given.
    Tool(u32),
    /// Redacted thinking, server tools and later block types.
    Ignored,
}

/// Anthropic stream events -> OpenAI `chat.completion.chunk`s.
///
/// `message_start` gives the first chunk (`role: assistant`, empty content); `text_delta`s
/// become `content` deltas, `thinking_delta`s `reasoning_content` deltas and a
/// `signature_delta` a delta carrying [`REASONING_SIGNATURE`]; each tool_use block becomes
/// one tool call, numbered from 0 in order, whose first delta has the id, type and name and
/// whose `input_json_delta`s append to `arguments`. The `message_delta`'s stop reason
/// becomes the closing chunk's `finish_reason`. At the end, after `message_stop`, comes the
/// usage chunk (empty `choices`) when the client asked for `stream_options.include_usage`,
/// then `[DONE]`. An `error` event is a [`TranslateError::Upstream`]; a stream cut before
/// `message_stop` is an error too, never a silently truncated answer.
#[derive(Debug)]
pub struct AnthropicToOpenAiStream {
    include_usage: bool,
    id: String,
    model: String,
    created: u64,
    started: bool,
    blocks: HashMap<u32, UpstreamBlock>,
    next_tool: u32,
    finished: bool,
    stopped: bool,
    usage: anthropic::Usage,
}

// === impl AnthropicToOpenAiStream ===

impl AnthropicToOpenAiStream {
    /// A translator for one stream; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(include_usage: bool) -> Self {
        AnthropicToOpenAiStream {
            include_usage,
            id: String::new(),
            model: String::new(),
            created: unix_now(),
            started: false,
            blocks: HashMap::new(),
            next_tool: 0,
            finished: false,
            stopped: false,
            usage: anthropic::Usage::default(),
        }
    }

    fn chunk(&self, choices: Vec<openai::ChunkChoice>, usage: Option<openai::Usage>) -> SseEvent {
        let chunk = openai::ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            system_fingerprint: None,
            service_tier: None,
            extra: Map::new(),
        };
        SseEvent::data(to_json(&chunk))
    }

    fn push(
        &self,
        out: &mut Vec<SseEvent>,
        delta: openai::Delta,
        finish: Option<openai::FinishReason>,
    ) {
        let choice = openai::ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
            logprobs: None,
            extra: Map::new(),
        };
        out.push(self.chunk(vec![choice], None));
    }

    fn push_finish(&mut self, out: &mut Vec<SseEvent>, reason: Option<&anthropic::StopReason>) {
        let finish = stop_reason_to_openai(reason, self.next_tool > 0);
        self.push(out, openai::Delta::default(), Some(finish));
        self.finished = true;
    }

    /// The first chunk, when `message_start` brings it (or, from a server that skipped
    /// it, the first content event).
    fn start(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let delta = openai::Delta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            ..Default::default()
        };
        self.push(out, delta, None);
    }

    fn merge_usage(&mut self, usage: &anthropic::DeltaUsage) {
        self.usage.output_tokens = usage.output_tokens;
        if let Some(input) = usage.input_tokens {
            self.usage.input_tokens = input;
        }
        if usage.cache_read_input_tokens.is_some() {
            self.usage.cache_read_input_tokens = usage.cache_read_input_tokens;
        }
        if usage.cache_creation_input_tokens.is_some() {
            self.usage.cache_creation_input_tokens = usage.cache_creation_input_tokens;
        }
    }

    fn on_block_start(&mut self, index: u32, block: &ContentBlock, out: &mut Vec<SseEvent>) {
        let kind = match block {
            ContentBlock::Text(text) => {
                if !text.text.is_empty() {
                    self.push(out, text_delta(&text.text), None);
                }
                UpstreamBlock::Text
            }
            ContentBlock::Thinking(thinking) => {
                if !thinking.thinking.is_empty() {
                    self.push(out, reasoning_delta(&thinking.thinking), None);
                }
                UpstreamBlock::Thinking
            }
            ContentBlock::ToolUse(call) => {
                let tool = self.next_tool;
                self.next_tool += 1;
                // The input comes as `input_json_delta`s; a start that already carries a
                // non-empty input (not what Anthropic sends) gives it whole.
                let arguments = match &call.input {
                    Value::Object(map) if map.is_empty() => String::new(),
                    input => input.to_string(),
                };
                let fragment = openai::ToolCallDelta {
                    index: tool,
                    id: Some(call.id.clone()),
                    kind: Some(openai::FunctionType::Function),
                    function: Some(openai::FunctionCallDelta {
                        name: Some(call.name.clone()),
                        arguments: Some(arguments),
                    }),
                    extra_content: None,
                    extra: Map::new(),
                };
                self.push(out, tool_delta(fragment), None);
                UpstreamBlock::Tool(tool)
            }
            _ => UpstreamBlock::Ignored,
        };
        self.blocks.insert(index, kind);
    }

    fn on_block_delta(
        &mut self,
        index: u32,
        delta: anthropic::ContentDelta,
        out: &mut Vec<SseEvent>,
    ) {
        let block = self
            .blocks
            .get(&index)
            .copied()
            .unwrap_or(UpstreamBlock::Ignored);
        match (delta, block) {
            (anthropic::ContentDelta::TextDelta { text }, UpstreamBlock::Text) => {
                self.push(out, text_delta(&text), None);
            }
            (anthropic::ContentDelta::ThinkingDelta { thinking }, UpstreamBlock::Thinking) => {
                self.push(out, reasoning_delta(&thinking), None);
            }
            (anthropic::ContentDelta::SignatureDelta { signature }, UpstreamBlock::Thinking) => {
                let mut delta = openai::Delta::default();
                delta
                    .extra
                    .insert(REASONING_SIGNATURE.into(), Value::String(signature));
                self.push(out, delta, None);
            }
            (
                anthropic::ContentDelta::InputJsonDelta { partial_json },
                UpstreamBlock::Tool(tool),
            ) if !partial_json.is_empty() => {
                let fragment = openai::ToolCallDelta {
                    index: tool,
                    function: Some(openai::FunctionCallDelta {
                        name: None,
                        arguments: Some(partial_json),
                    }),
                    ..Default::default()
                };
                self.push(out, tool_delta(fragment), None);
            }
            // Citations, deltas of ignored blocks, and later delta types.
            _ => {}
        }
    }
}

impl StreamTranslator for AnthropicToOpenAiStream {
    fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), TranslateError> {
        let data = event.data.trim();
        if data.is_empty() || self.stopped {
            return Ok(());
        }
        let parsed: anthropic::StreamEvent = serde_json::from_str(data)
            .map_err(|e| TranslateError::upstream_json("anthropic stream event", e))?;
        match parsed {
            anthropic::StreamEvent::MessageStart { message } => {
                self.id = completion_id(&message.id);
                self.model = message.model;
                self.usage = message.usage;
                self.start(out);
            }
            anthropic::StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                self.start(out);
                self.on_block_start(index, &content_block, out);
            }
            anthropic::StreamEvent::ContentBlockDelta { index, delta } => {
                self.start(out);
                self.on_block_delta(index, delta, out);
            }
            anthropic::StreamEvent::MessageDelta { delta, usage } => {
                self.merge_usage(&usage);
                if let Some(reason) = &delta.stop_reason {
                    self.start(out);
                    self.push_finish(out, Some(reason));
                }
            }
            anthropic::StreamEvent::MessageStop => {
                self.start(out);
                if !self.finished {
                    self.push_finish(out, None);
                }
                self.stopped = true;
            }
            anthropic::StreamEvent::Error { error } => {
                return Err(TranslateError::Upstream {
                    status: Some(error.kind),
                    message: error.message,
                });
            }
            anthropic::StreamEvent::ContentBlockStop { .. }
            | anthropic::StreamEvent::Ping
            | anthropic::StreamEvent::Other(_) => {}
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        if !self.stopped {
            return Err(TranslateError::InvalidUpstreamJson {
                what: "anthropic stream",
                reason: "the stream ended before message_stop".into(),
            });
        }
        if self.include_usage {
            out.push(self.chunk(Vec::new(), Some(usage_to_openai(&self.usage))));
        }
        out.push(SseEvent::data("[DONE]"));
        Ok(())
    }
}

fn text_delta(text: &str) -> openai::Delta {
    openai::Delta {
        content: Some(text.to_owned()),
        ..Default::default()
    }
}

fn reasoning_delta(reasoning: &str) -> openai::Delta {
    openai::Delta {
        reasoning_content: Some(reasoning.to_owned()),
        ..Default::default()
    }
}

fn tool_delta(fragment: openai::ToolCallDelta) -> openai::Delta {
    openai::Delta {
        tool_calls: Some(vec![fragment]),
        ..Default::default()
    }
}

// ===== Shared helpers =====

/// `id` as an Anthropic tool_use id, which must match `^[a-zA-Z0-9_-]+$`: other characters
/// (some OpenAI-compatible servers use ids like `functions.get_weather:0`) become `_`. The
/// same id maps to the same result, so calls and their results still match.
pub fn anthropic_tool_use_id(id: &str) -> String {
    let sanitized: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if sanitized.is_empty() {
        return "toolu_".to_owned();
    }
    sanitized
}

/// A stable id for the `position`-th call of the upstream answer `response_id` that came
/// without one: the same answer always gives the same ids, and different answers differ.
fn generated_tool_id(response_id: &str, position: usize) -> String {
    anthropic_tool_use_id(&format!("toolu_{response_id}_{position}"))
}

/// The Anthropic id of an upstream tool call, generated when the server sent none.
fn upstream_tool_id(id: &str, response_id: &str, position: usize) -> String {
    if id.is_empty() {
        return generated_tool_id(response_id, position);
    }
    anthropic_tool_use_id(id)
}

fn tool_use_block(id: String, name: String, input: Value) -> anthropic::ToolUseBlock {
    anthropic::ToolUseBlock {
        id,
        name,
        input,
        cache_control: None,
        extra: Map::new(),
    }
}

/// Parses a tool call's `arguments` string into the JSON object Anthropic wants as `input`.
/// An empty string (sent by some servers for calls without parameters) is `{}`.
fn parse_arguments(name: &str, arguments: &str) -> Result<Value, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(TranslateError::InvalidToolArguments {
            name: name.to_owned(),
            reason: "not a JSON object".into(),
        }),
        Err(err) => Err(TranslateError::InvalidToolArguments {
            name: name.to_owned(),
            reason: err.to_string(),
        }),
    }
}

/// The reasoning text of a message or delta: `reasoning_content`, or `reasoning` as some
/// compatible servers name it.
fn reasoning_of<'a>(
    reasoning_content: Option<&'a str>,
    extra: &'a Map<String, Value>,
) -> Option<&'a str> {
    non_empty(reasoning_content)
        .or_else(|| non_empty(extra.get(REASONING_ALIAS).and_then(Value::as_str)))
}

/// The [`REASONING_SIGNATURE`] a message or delta carries, if any.
fn signature_of(extra: &Map<String, Value>) -> Option<String> {
    non_empty(extra.get(REASONING_SIGNATURE).and_then(Value::as_str)).map(str::to_owned)
}

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.filter(|t| !t.is_empty())
}

fn text_block(text: &str) -> Option<ContentBlock> {
    (!text.is_empty()).then(|| ContentBlock::text(text))
}

fn join_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    texts
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(BLOCK_SEPARATOR)
}

fn chat_message(role: Role, content: Option<openai::MessageContent>) -> openai::ChatMessage {
    openai::ChatMessage {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        reasoning_content: None,
        refusal: None,
        extra: Map::new(),
    }
}

fn unsupported(role: &str, kind: &str) -> TranslateError {
    TranslateError::UnsupportedContent {
        role: role.to_owned(),
        kind: kind.to_owned(),
    }
}

/// `image (file source)`, for an error about a source form OpenAI cannot take.
fn source_kind(block: &str, source: &Value) -> String {
    let kind = source
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    format!("{block} ({kind} source)")
}

/// An OpenAI completion id for an Anthropic message id.
fn completion_id(id: &str) -> String {
    if id.starts_with("chatcmpl-") {
        return id.to_owned();
    }
    format!("chatcmpl-{id}")
}

/// An Anthropic message id for an OpenAI completion id.
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        return id.to_owned();
    }
    format!("msg_{id}")
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("protocol types serialize: string keys only")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

    use serde_json::json;

    use super::*;

    const NO_URLS: TranslateOptions = TranslateOptions {
        allow_image_urls: false,
    };
    const URLS: TranslateOptions = TranslateOptions {
        allow_image_urls: true,
    };

    fn to_openai_with(request: Value, opts: TranslateOptions) -> Result<Value, TranslateError> {
        let request: anthropic::MessagesRequest = serde_json::from_value(request).unwrap();
        anthropic_request_to_openai(&request, &opts).map(|r| serde_json::to_value(r).unwrap())
    }

    fn to_openai(request: Value) -> Value {
        to_openai_with(request, NO_URLS).unwrap()
    }

    fn to_anthropic_with(request: Value, opts: TranslateOptions) -> Result<Value, TranslateError> {
        let request: openai::ChatRequest = serde_json::from_value(request).unwrap();
        openai_request_to_anthropic(&request, &opts).map(|r| serde_json::to_value(r).unwrap())
    }

    fn to_anthropic(request: Value) -> Value {
        to_anthropic_with(request, NO_URLS).unwrap()
    }

    /// An Anthropic request with the given messages and extra top-level fields.
    fn anthropic_request(messages: Value, more: Value) -> Value {
        let mut request = json!({"model": "claude", "max_tokens": 100, "messages": messages});
        request
            .as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        request
    }

    /// An OpenAI request with the given messages and extra top-level fields.
    fn openai_request(messages: Value, more: Value) -> Value {
        let mut request = json!({"model": "gpt", "messages": messages});
        request
            .as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        request
    }

    fn weather_tool() -> Value {
        json!({"name": "get_weather", "description": "Weather", "input_schema": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
    }

    fn openai_weather_tool() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}})
    }

    // === Anthropic request -> OpenAI ===

    #[test]
    fn system_string_and_blocks_become_one_system_message() {
        let out = to_openai(anthropic_request(
            json!([{"role": "user", "content": "hi"}]),
            json!({"system": "be brief"}),
        ));
        assert_eq!(
            out["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );

        // Claude Code's shape: text blocks with cache_control, which OpenAI has no use for.
        let out = to_openai(anthropic_request(
            json!([{"role": "user", "content": "hi"}]),
            json!({"system": [
                {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be careful.", "cache_control": {"type": "ephemeral"}}
            ]}),
        ));
        assert_eq!(
            out["messages"][0],
            json!({"role": "system", "content": "You are Claude Code.\n\nBe careful."})
        );
        assert_eq!(out["messages"][1], json!({"role": "user", "content": "hi"}));
        assert!(!out.to_string().contains("cache_control"));
    }

    #[test]
    fn system_blocks_other_than_text_are_refused() {
        let err = to_openai_with(
            anthropic_request(
                json!([{"role": "user", "content": "hi"}]),
                json!({"system": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}),
            ),
            NO_URLS,
        )
        .unwrap_err();
        assert!(
            matches!(err, TranslateError::UnsupportedContent { ref role, ref kind } if role == "system" && kind == "image")
        );
    }

    #[test]
    fn user_text_blocks_become_a_string_and_images_data_urls() {
        let out = to_openai(anthropic_request(
            json!([{"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                {"type": "text", "text": "list files", "cache_control": {"type": "ephemeral"}}
            ]}]),
            json!({}),
        ));
        assert_eq!(
            out["messages"][0],
            json!({"role": "user", "content": "<system-reminder>x</system-reminder>\n\nlist files"})
        );

        let out = to_openai(anthropic_request(
            json!([{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo"}},
                {"type": "text", "text": "what is this?"}
            ]}]),
            json!({}),
        ));
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo"}},
                {"type": "text", "text": "what is this?"}
            ])
        );
    }

    #[test]
    fn url_images_need_the_option() {
        let request = anthropic_request(
            json!([{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
            ]}]),
            json!({}),
        );
        assert!(matches!(
            to_openai_with(request.clone(), NO_URLS),
            Err(TranslateError::ImageUrlNotAllowed)
        ));
        let out = to_openai_with(request, URLS).unwrap();
        assert_eq!(
            out["messages"][0]["content"][0]["image_url"]["url"],
            "https://example.com/a.jpg"
        );

        let files_api = anthropic_request(
            json!([{"role": "user", "content": [
                {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
            ]}]),
            json!({}),
        );
        let err = to_openai_with(files_api, URLS).unwrap_err();
        assert!(
            matches!(err, TranslateError::UnsupportedContent { ref kind, .. } if kind == "image (file source)")
        );
    }

    #[test]
    fn documents_become_file_parts_or_text() {
        let out = to_openai(anthropic_request(
            json!([{"role": "user", "content": [
                {"type": "document", "title": "paper.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}}
            ]}]),
            json!({}),
        ));
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "file", "file": {"filename": "paper.pdf", "file_data": "data:application/pdf;base64,JVBERi0"}},
                {"type": "text", "text": "plain words"}
            ])
        );
    }

    #[test]
    fn tool_calls_and_results_keep_their_ids() {
        let out = to_openai(anthropic_request(
            json!([
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15C"},
                    // Claude Code sends results as arrays of text blocks.
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [
                        {"type": "text", "text": "18C"}, {"type": "text", "text": "sunny"}
                    ], "is_error": false}
                ]}
            ]),
            json!({"tools": [weather_tool()]}),
        ));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": "Checking both.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "15C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "18C\n\nsunny"}
            ])
        );
    }

    #[test]
    fn tool_results_come_first_and_their_images_follow_in_a_user_message() {
        let out = to_openai(anthropic_request(
            json!([
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "text", "text": "here you go"},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [
                        {"type": "text", "text": "captured"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                    ]}
                ]}
            ]),
            json!({}),
        ));
        assert_eq!(
            out["messages"],
            json!([
                // No text: no `content`, which OpenAI allows beside `tool_calls`.
                {"role": "assistant", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "captured"},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": "here you go"}
                ]}
            ])
        );
    }

    #[test]
    fn thinking_becomes_reasoning_content_with_its_signature() {
        let out = to_openai(anthropic_request(
            json!([
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "simple sum", "signature": "sig-1"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "4"}
                ]}
            ]),
            json!({}),
        ));
        assert_eq!(
            out["messages"][1],
            json!({"role": "assistant", "content": "4", "reasoning_content": "simple sum", "reasoning_signature": "sig-1"})
        );

        // Two blocks: the text is kept, but no single signature vouches for it.
        let out = to_openai(anthropic_request(
            json!([{"role": "assistant", "content": [
                {"type": "thinking", "thinking": "a", "signature": "s1"},
                {"type": "thinking", "thinking": "b", "signature": "s2"},
                {"type": "text", "text": "x"}
            ]}]),
            json!({}),
        ));
        assert_eq!(out["messages"][0]["reasoning_content"], "a\n\nb");
        assert!(out["messages"][0].get(REASONING_SIGNATURE).is_none());
    }

    #[test]
    fn unsupported_blocks_in_history_are_refused() {
        let err = to_openai_with(
            anthropic_request(
                json!([{"role": "assistant", "content": [
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
                ]}]),
                json!({}),
            ),
            NO_URLS,
        )
        .unwrap_err();
        assert!(
            matches!(err, TranslateError::UnsupportedContent { ref role, ref kind } if role == "assistant" && kind == "server_tool_use")
        );
    }

    #[test]
    fn tools_and_tool_choice() {
        let out = to_openai(anthropic_request(
            json!([{"role": "user", "content": "hi"}]),
            json!({"tools": [weather_tool()], "tool_choice": {"type": "any", "disable_parallel_tool_use": true}}),
        ));
        assert_eq!(
            out["tools"],
            json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
        );
        assert_eq!(out["tool_choice"], "required");
        assert_eq!(out["parallel_tool_calls"], false);

        let cases = [
            (json!({"type": "auto"}), json!("auto"), None),
            (
                json!({"type": "auto", "disable_parallel_tool_use": false}),
                json!("auto"),
                Some(true),
            ),
            (json!({"type": "none"}), json!("none"), None),
            (
                json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}),
                json!({"type": "function", "function": {"name": "get_weather"}}),
                Some(false),
            ),
        ];
        for (choice, expected, parallel) in cases {
            let out = to_openai(anthropic_request(
                json!([{"role": "user", "content": "hi"}]),
                json!({"tools": [weather_tool()], "tool_choice": choice}),
            ));
            assert_eq!(out["tool_choice"], expected);
            assert_eq!(
                out.get("parallel_tool_calls").and_then(Value::as_bool),
                parallel
            );
        }
    }

    #[test]
    fn no_tools_means_no_tool_choice() {
        let out = to_openai(anthropic_request(
            json!([{"role": "user", "content": "hi"}]),
            json!({"tools": [], "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}}),
        ));
        assert!(out.get("tools").is_none());
        assert!(out.get("tool_choice").is_none());
        assert!(out.get("parallel_tool_calls").is_none());
    }

    #[test]
    fn server_tools_are_refused() {
        let err = to_openai_with(
            anthropic_request(
                json!([{"role": "user", "content": "hi"}]),
                json!({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}),
            ),
            NO_URLS,
        )
        .unwrap_err();
        assert!(
            matches!(err, TranslateError::UnsupportedValue { field: "tools", ref value } if value == "web_search_20250305")
        );
    }

    #[test]
    fn sampling_parameters_and_limits() {
        let out = to_openai(anthropic_request(
            json!([{"role": "user", "content": "hi"}]),
            json!({"temperature": 0.3, "top_p": 0.8, "top_k": 40, "stop_sequences": ["END", "\n\nHuman:"],
                   "stream": true, "metadata": {"user_id": "u1"}, "service_tier": "auto"}),
        ));
        assert_eq!(
            out,
            json!({
                "model": "claude",
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0.3,
                "top_p": 0.8,
                "stream": true,
                "stream_options": {"include_usage": true},
                "stop": ["END", "\n\nHuman:"],
                "max_completion_tokens": 100
            })
        );
    }

    #[test]
    fn thinking_budget_becomes_a_reasoning_effort_bucket() {
        let cases = [
            (
                json!({"type": "enabled", "budget_tokens": 1024}),
                Some("low"),
            ),
            (
                json!({"type": "enabled", "budget_tokens": 1025}),
                Some("medium"),
            ),
            (
                json!({"type": "enabled", "budget_tokens": 8192}),
                Some("medium"),
            ),
            (
                json!({"type": "enabled", "budget_tokens": 10000}),
                Some("high"),
            ),
            (
                json!({"type": "enabled", "budget_tokens": 24576}),
                Some("high"),
            ),
            (json!({"type": "disabled"}), None),
            (json!({"type": "adaptive"}), None),
        ];
        for (thinking, effort) in cases {
            let out = to_openai(anthropic_request(
                json!([{"role": "user", "content": "hi"}]),
                json!({"max_tokens": 32000, "thinking": thinking}),
            ));
            assert_eq!(
                out.get("reasoning_effort").and_then(Value::as_str),
                effort,
                "{thinking}"
            );
        }
    }

    // === OpenAI request -> Anthropic ===

    #[test]
    fn system_and_developer_messages_become_system() {
        let out = to_anthropic(openai_request(
            json!([
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"}
            ]),
            json!({}),
        ));
        assert_eq!(
            out,
            json!({
                "model": "gpt",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "system": "be brief",
                "messages": [{"role": "user", "content": "hi"}]
            })
        );

        let out = to_anthropic(openai_request(
            json!([
                {"role": "developer", "content": [{"type": "text", "text": "one"}]},
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "two"}
            ]),
            json!({}),
        ));
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two"}])
        );
        assert_eq!(out["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn consecutive_turns_merge_and_tool_results_come_first() {
        let out = to_anthropic(openai_request(
            json!([
                {"role": "user", "content": "weather?"},
                {"role": "user", "content": [{"type": "text", "text": "in Paris and Rome"}, {"type": "text", "text": ""}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "15C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "18C"}]},
                {"role": "user", "content": "thanks"},
                {"role": "assistant", "content": "You're welcome."},
                {"role": "assistant", "content": "Anything else?"}
            ]),
            json!({"tools": [openai_weather_tool()]}),
        ));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "weather?"},
                    {"type": "text", "text": "in Paris and Rome"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "15C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "18C"}]},
                    {"type": "text", "text": "thanks"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "You're welcome."},
                    {"type": "text", "text": "Anything else?"}
                ]}
            ])
        );
    }

    #[test]
    fn tool_messages_must_answer_an_earlier_call() {
        let err = to_anthropic_with(
            openai_request(
                json!([{"role": "tool", "tool_call_id": "call_9", "content": "x"}]),
                json!({}),
            ),
            NO_URLS,
        )
        .unwrap_err();
        assert!(matches!(err, TranslateError::UnknownToolCallId { ref id } if id == "call_9"));

        let err = to_anthropic_with(
            openai_request(json!([{"role": "tool", "content": "x"}]), json!({})),
            NO_URLS,
        )
        .unwrap_err();
        assert!(matches!(err, TranslateError::InvalidRequest(_)));
    }

    #[test]
    fn tool_call_arguments_must_be_a_json_object() {
        let request = |arguments: &str| {
            openai_request(
                json!([{"role": "assistant", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
                ]}]),
                json!({}),
            )
        };
        let err = to_anthropic_with(request("{\"a\":"), NO_URLS).unwrap_err();
        assert!(
            matches!(err, TranslateError::InvalidToolArguments { ref name, .. } if name == "f")
        );
        let err = to_anthropic_with(request("[1]"), NO_URLS).unwrap_err();
        assert!(matches!(err, TranslateError::InvalidToolArguments { .. }));
        let out = to_anthropic(request(""));
        assert_eq!(out["messages"][0]["content"][0]["input"], json!({}));
    }

    #[test]
    fn tool_ids_are_made_valid_for_anthropic_on_both_ends() {
        let out = to_anthropic(openai_request(
            json!([
                {"role": "assistant", "tool_calls": [
                    {"id": "functions.get_weather:0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "ok"}
            ]),
            json!({}),
        ));
        assert_eq!(
            out["messages"][0]["content"][0]["id"],
            "functions_get_weather_0"
        );
        assert_eq!(
            out["messages"][1]["content"][0]["tool_use_id"],
            "functions_get_weather_0"
        );
        assert_eq!(anthropic_tool_use_id("toolu_01A-b"), "toolu_01A-b");
        assert_eq!(anthropic_tool_use_id(""), "toolu_");
    }

    #[test]
    fn images_and_files_become_base64_sources() {
        let out = to_anthropic(openai_request(
            json!([{"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "high"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0"}}
            ]}]),
            json!({}),
        ));
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0"}}
            ])
        );

        let remote = openai_request(
            json!([{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]}]),
            json!({}),
        );
        assert!(matches!(
            to_anthropic_with(remote.clone(), NO_URLS),
            Err(TranslateError::ImageUrlNotAllowed)
        ));
        let out = to_anthropic_with(remote, URLS).unwrap();
        assert_eq!(
            out["messages"][0]["content"][0]["source"],
            json!({"type": "url", "url": "https://example.com/a.png"})
        );

        let broken = openai_request(
            json!([{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}
            ]}]),
            json!({}),
        );
        assert!(matches!(
            to_anthropic_with(broken, URLS),
            Err(TranslateError::InvalidDataUrl)
        ));
    }

    #[test]
    fn audio_files_by_id_and_legacy_functions_are_refused() {
        let audio = openai_request(
            json!([{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
            ]}]),
            json!({}),
        );
        assert!(matches!(
            to_anthropic_with(audio, NO_URLS),
            Err(TranslateError::UnsupportedContent { ref kind, .. }) if kind == "input_audio"
        ));
        let file_id = openai_request(
            json!([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]),
            json!({}),
        );
        assert!(matches!(
            to_anthropic_with(file_id, NO_URLS),
            Err(TranslateError::UnsupportedContent { .. })
        ));
        let function = openai_request(
            json!([{"role": "function", "name": "f", "content": "x"}]),
            json!({}),
        );
        assert!(matches!(
            to_anthropic_with(function, NO_URLS),
            Err(TranslateError::UnsupportedValue { field: "role", .. })
        ));
        let several = openai_request(json!([{"role": "user", "content": "x"}]), json!({"n": 2}));
        assert!(matches!(
            to_anthropic_with(several, NO_URLS),
            Err(TranslateError::UnsupportedValue { field: "n", .. })
        ));
    }

    #[test]
    fn reasoning_goes_back_only_with_its_signature() {
        let out = to_anthropic(openai_request(
            json!([
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4", "reasoning_content": "simple", "reasoning_signature": "sig-1"},
                {"role": "user", "content": "and 3+3?"},
                {"role": "assistant", "content": "6", "reasoning_content": "unsigned"}
            ]),
            json!({}),
        ));
        assert_eq!(
            out["messages"][1]["content"],
            json!([
                {"type": "thinking", "thinking": "simple", "signature": "sig-1"},
                {"type": "text", "text": "4"}
            ])
        );
        assert_eq!(out["messages"][3]["content"], "6");
    }

    #[test]
    fn sampling_parameters_and_limits_to_anthropic() {
        let out = to_anthropic(openai_request(
            json!([{"role": "user", "content": "hi"}]),
            json!({"temperature": 1.6, "top_p": 0.5, "max_tokens": 300, "max_completion_tokens": 200,
                   "stop": "END", "stream": true, "stream_options": {"include_usage": true},
                   "seed": 1, "user": "u", "top_k": 12, "response_format": {"type": "json_object"}}),
        ));
        assert_eq!(
            out,
            json!({
                "model": "gpt",
                "max_tokens": 200,
                "messages": [{"role": "user", "content": "hi"}],
                "stop_sequences": ["END"],
                "temperature": 1.0,
                "top_p": 0.5,
                "top_k": 12,
                "stream": true
            })
        );
        let out = to_anthropic(openai_request(
            json!([{"role": "user", "content": "hi"}]),
            json!({"max_tokens": 300, "stop": ["a", "b"]}),
        ));
        assert_eq!(out["max_tokens"], 300);
        assert_eq!(out["stop_sequences"], json!(["a", "b"]));
    }

    #[test]
    fn tool_choice_and_parallel_calls_to_anthropic() {
        let cases = [
            (json!("auto"), None, json!({"type": "auto"})),
            (
                json!("auto"),
                Some(false),
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            ),
            (json!("required"), Some(true), json!({"type": "any"})),
            (json!("none"), Some(false), json!({"type": "none"})),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                Some(false),
                json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}),
            ),
        ];
        for (choice, parallel, expected) in cases {
            let mut more = json!({"tools": [openai_weather_tool()], "tool_choice": choice});
            if let Some(parallel) = parallel {
                more["parallel_tool_calls"] = json!(parallel);
            }
            let out = to_anthropic(openai_request(
                json!([{"role": "user", "content": "hi"}]),
                more,
            ));
            assert_eq!(out["tool_choice"], expected);
        }
        let out = to_anthropic(openai_request(
            json!([{"role": "user", "content": "hi"}]),
            json!({"tools": [openai_weather_tool()], "parallel_tool_calls": false}),
        ));
        assert_eq!(
            out["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            out["tools"],
            json!([{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
        );

        let err = to_anthropic_with(
            openai_request(
                json!([{"role": "user", "content": "hi"}]),
                json!({"tools": [openai_weather_tool()], "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}}),
            ),
            NO_URLS,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            TranslateError::UnsupportedValue {
                field: "tool_choice",
                ..
            }
        ));
        let err = to_anthropic_with(
            openai_request(
                json!([{"role": "user", "content": "hi"}]),
                json!({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}),
            ),
            NO_URLS,
        )
        .unwrap_err();
        assert!(
            matches!(err, TranslateError::UnsupportedValue { field: "tools", ref value } if value == "custom")
        );
    }

    #[test]
    fn reasoning_effort_becomes_a_thinking_budget() {
        let thinking = |more: Value| {
            to_anthropic(openai_request(
                json!([{"role": "user", "content": "hi"}]),
                more,
            ))
        };
        let out = thinking(json!({"reasoning_effort": "medium"}));
        assert_eq!(
            out["thinking"],
            json!({"type": "enabled", "budget_tokens": BUDGET_MEDIUM})
        );
        // No limit given: room for the answer on top of the budget.
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS + BUDGET_MEDIUM);
        for (effort, budget) in [
            ("low", BUDGET_LOW),
            ("high", BUDGET_HIGH),
            ("xhigh", BUDGET_HIGH),
        ] {
            let out = thinking(json!({"reasoning_effort": effort, "max_completion_tokens": 64000}));
            assert_eq!(out["thinking"]["budget_tokens"], budget);
            assert_eq!(out["max_tokens"], 64000);
        }
        for effort in ["none", "minimal"] {
            assert!(
                thinking(json!({"reasoning_effort": effort}))
                    .get("thinking")
                    .is_none()
            );
        }
        // The budget stays below the client's limit, and thinking goes when it cannot fit.
        let out = thinking(json!({"reasoning_effort": "high", "max_completion_tokens": 4000}));
        assert_eq!(out["thinking"]["budget_tokens"], 3999);
        let out = thinking(json!({"reasoning_effort": "low", "max_tokens": 1024}));
        assert!(out.get("thinking").is_none());
        let err = to_anthropic_with(
            openai_request(
                json!([{"role": "user", "content": "hi"}]),
                json!({"reasoning_effort": "max"}),
            ),
            NO_URLS,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            TranslateError::UnsupportedValue {
                field: "reasoning_effort",
                ..
            }
        ));
    }

    #[test]
    fn thinking_drops_what_anthropic_refuses_with_it() {
        let out = to_anthropic(openai_request(
            json!([{"role": "user", "content": "hi"}]),
            json!({"reasoning_effort": "low", "temperature": 0.2, "top_p": 0.5, "top_k": 5}),
        ));
        assert!(out.get("thinking").is_some());
        assert!(out.get("temperature").is_none());
        assert!(out.get("top_k").is_none());
        assert_eq!(out["top_p"], 0.95);

        // A forced tool and thinking do not go together: the tool wins.
        let out = to_anthropic(openai_request(
            json!([{"role": "user", "content": "hi"}]),
            json!({"reasoning_effort": "low", "tools": [openai_weather_tool()], "tool_choice": "required"}),
        ));
        assert!(out.get("thinking").is_none());
        assert_eq!(out["tool_choice"], json!({"type": "any"}));
    }

    #[test]
    fn thinking_is_off_when_the_last_tool_turn_lost_its_thinking() {
        let history = |assistant: Value| {
            json!([
                {"role": "user", "content": "weather?"},
                assistant,
                {"role": "tool", "tool_call_id": "call_1", "content": "15C"}
            ])
        };
        let call = json!([{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]);
        let more = json!({"reasoning_effort": "low", "tools": [openai_weather_tool()]});
        let out = to_anthropic(openai_request(
            history(json!({"role": "assistant", "tool_calls": call})),
            more.clone(),
        ));
        assert!(out.get("thinking").is_none());
        let out = to_anthropic(openai_request(
            history(
                json!({"role": "assistant", "tool_calls": call, "reasoning_content": "check", "reasoning_signature": "sig"}),
            ),
            more,
        ));
        assert_eq!(out["thinking"]["type"], "enabled");
        assert_eq!(out["messages"][1]["content"][0]["type"], "thinking");
    }

    // === responses ===

    fn openai_response(message: Value, finish: &str, usage: Value) -> openai::ChatResponse {
        serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
            "usage": usage
        }))
        .unwrap()
    }

    #[test]
    fn openai_response_to_anthropic_message() {
        let resp = openai_response(
            json!({"role": "assistant", "content": "Let me check.", "reasoning_content": "thinking", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ]}),
            "tool_calls",
            json!({"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                   "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 5}}),
        );
        let out = serde_json::to_value(openai_response_to_anthropic(&resp).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({
                "id": "msg_chatcmpl-1",
                "type": "message",
                "role": "assistant",
                "model": "gpt-4o",
                "content": [
                    {"type": "thinking", "thinking": "thinking", "signature": ""},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_chatcmpl-1_1", "name": "get_weather", "input": {}}
                ],
                "stop_reason": "tool_use",
                "stop_sequence": null,
                "usage": {"input_tokens": 40, "output_tokens": 20, "cache_read_input_tokens": 60}
            })
        );
    }

    #[test]
    fn openai_finish_reasons_to_anthropic() {
        let cases = [
            ("stop", false, "end_turn"),
            ("stop", true, "tool_use"),
            ("length", true, "max_tokens"),
            ("tool_calls", true, "tool_use"),
            ("content_filter", false, "refusal"),
            ("function_call", true, "tool_use"),
            ("eos", false, "end_turn"),
        ];
        for (finish, with_call, expected) in cases {
            let mut message = json!({"role": "assistant", "content": "x"});
            if with_call {
                message["tool_calls"] = json!([{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]);
            }
            let resp = openai_response(
                message,
                finish,
                json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
            );
            let out = openai_response_to_anthropic(&resp).unwrap();
            assert_eq!(
                serde_json::to_value(out.stop_reason).unwrap(),
                expected,
                "{finish}"
            );
        }
    }

    #[test]
    fn openai_response_signature_refusal_and_bad_arguments() {
        let resp = openai_response(
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that.",
                   "reasoning_content": "r", "reasoning_signature": "sig"}),
            "stop",
            json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
        );
        let out = serde_json::to_value(openai_response_to_anthropic(&resp).unwrap()).unwrap();
        assert_eq!(
            out["content"],
            json!([
                {"type": "thinking", "thinking": "r", "signature": "sig"},
                {"type": "text", "text": "I can't help with that."}
            ])
        );
        assert_eq!(out["usage"], json!({"input_tokens": 1, "output_tokens": 1}));

        let resp = openai_response(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
            ]}),
            "tool_calls",
            json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
        );
        let err = openai_response_to_anthropic(&resp).unwrap_err();
        assert!(matches!(
            err,
            TranslateError::InvalidUpstreamJson {
                what: "tool call arguments",
                ..
            }
        ));
        assert!(!err.is_client_error());
    }

    fn anthropic_response(content: Value, stop: &str, usage: Value) -> anthropic::MessagesResponse {
        serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage
        }))
        .unwrap()
    }

    #[test]
    fn anthropic_response_to_openai_completion() {
        let resp = anthropic_response(
            json!([
                {"type": "thinking", "thinking": "plan", "signature": "sig"},
                {"type": "text", "text": "It is "},
                {"type": "text", "text": "sunny.", "citations": []},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
            ]),
            "tool_use",
            json!({"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}),
        );
        let mut out = serde_json::to_value(anthropic_response_to_openai(&resp)).unwrap();
        assert!(out["created"].as_u64().unwrap() > 0);
        out.as_object_mut().unwrap().remove("created");
        assert_eq!(
            out,
            json!({
                "id": "chatcmpl-msg_1",
                "object": "chat.completion",
                "model": "claude-sonnet-4",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "It is sunny.",
                        "reasoning_content": "plan",
                        "reasoning_signature": "sig",
                        "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]
                    },
                    "finish_reason": "tool_calls",
                    "logprobs": null
                }],
                "usage": {"prompt_tokens": 115, "completion_tokens": 7, "total_tokens": 122,
                          "prompt_tokens_details": {"cached_tokens": 100}}
            })
        );
    }

    #[test]
    fn anthropic_stop_reasons_to_openai() {
        let cases = [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("model_context_window_exceeded", "length"),
            ("something_new", "stop"),
        ];
        for (stop, expected) in cases {
            let resp = anthropic_response(
                json!([{"type": "text", "text": "x"}]),
                stop,
                json!({"input_tokens": 1, "output_tokens": 1}),
            );
            let out = anthropic_response_to_openai(&resp);
            assert_eq!(
                serde_json::to_value(&out.choices[0].finish_reason).unwrap(),
                expected,
                "{stop}"
            );
        }
        // Only tool calls: `content` is null, as OpenAI sends it.
        let resp = anthropic_response(
            json!([{"type": "tool_use", "id": "t", "name": "f", "input": {}}]),
            "tool_use",
            json!({"input_tokens": 1, "output_tokens": 1}),
        );
        let out = serde_json::to_value(anthropic_response_to_openai(&resp)).unwrap();
        assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
        );
    }
}
