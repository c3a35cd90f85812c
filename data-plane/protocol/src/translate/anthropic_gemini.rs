//! Anthropic Messages <-> Gemini generateContent, both directions.
//!
//! Anthropic clients (Claude Code among them) in front of a Gemini provider:
//! [`anthropic_request_to_gemini`], [`gemini_response_to_anthropic`],
//! [`GeminiToAnthropicStream`], and for `/v1/messages/count_tokens`
//! [`anthropic_count_tokens_to_gemini`] and [`gemini_count_tokens_response_to_anthropic`].
//! Gemini clients in front of an Anthropic provider:
//! [`gemini_request_to_anthropic`], [`anthropic_response_to_gemini`],
//! [`AnthropicToGeminiStream`], and for `:countTokens` [`gemini_count_tokens_to_anthropic`]
//! and [`anthropic_count_tokens_response_to_gemini`].
//!
//! # Thinking and its signatures
//!
//! Each side must get back, unchanged, the opaque signatures the other side's model
//! produced, and neither side has a slot shaped like the other's:
//!
//! - A Gemini `thoughtSignature` reaches an Anthropic client as the `signature` of a
//!   `thinking` block, behind a prefix that says which part it belonged to:
//!   `gemini:` — the thought part the block was made from; `gemini-next:` — the part of the
//!   block that follows (Gemini signs the first `functionCall` of each step, so the block
//!   sits right before that `tool_use`, and carries the thought summary that preceded the
//!   call, if any); `gemini-prev:` — the part of the block before it (Gemini signs the last
//!   text part of an answer, which a stream has already sent when the signature arrives).
//!   On the way back each signature is put on that part again, and a thinking block without
//!   one of these prefixes (unsigned, or signed by Claude) is dropped: Gemini can verify
//!   neither. For Gemini 3, whose API refuses a step of the current turn whose first
//!   `functionCall` has no signature, history it never signed (another model's turns) gets
//!   the placeholder Google documents for that case, `skip_thought_signature_validator`.
//! - A Claude `thinking` block reaches a Gemini client as a thought part whose
//!   `thoughtSignature` is the block's signature behind the marker `CLAUDETH`, and a
//!   `redacted_thinking` block as a thought part whose signature is its `data` behind
//!   `CLAUDERT`. The markers are 8 base64 characters, so the value stays the valid base64
//!   that Gemini SDKs decode into bytes; a thought signature without a marker came from
//!   Gemini and is not sent to Anthropic.
//!
//! # What has no counterpart
//!
//! - Anthropic has no JSON mode or response schema: a Gemini `responseMimeType` or
//!   `responseSchema` adds nothing to the Anthropic request (the client still gets the
//!   model's text, and a prompt asking for JSON usually gets JSON).
//! - Gemini has no switch for parallel calls: `disable_parallel_tool_use` is dropped.
//! - `cache_control` is dropped (Gemini caches implicitly or through `cachedContent`).
//! - Gemini does not say whether a stop sequence ended an answer: `stop_sequence` stays null
//!   and the stop reason is `end_turn`.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::anthropic::{self, ContentBlock};
use crate::gemini::{self, ROLE_MODEL, ROLE_USER};
use crate::sse::SseEvent;
use crate::translate::{is_function_responses, parse_data_url, push_gemini_turn};
use crate::{StreamTranslator, TranslateError, TranslateOptions, schema};

/// `max_tokens` of an Anthropic request when the Gemini request sets no `maxOutputTokens`
/// (Anthropic requires it; Gemini's default is the model's own limit).
pub const DEFAULT_MAX_TOKENS: u32 = 8192;

/// Anthropic's smallest `budget_tokens`.
const MIN_THINKING_BUDGET: u32 = 1024;

/// Thinking budgets for Gemini 3's `thinkingLevel` and for a dynamic budget (`-1`), the
/// buckets used for OpenAI's `reasoning_effort` too.
const BUDGET_LOW: u32 = 1024;
const BUDGET_MEDIUM: u32 = 8192;
const BUDGET_HIGH: u32 = 24576;

/// The prefix of the tool_use ids this module makes up for Gemini calls that have none.
/// Such ids are left out when the history goes back to Gemini, which never saw them.
pub const GENERATED_TOOL_ID_PREFIX: &str = "toolu_gemini_";

/// The thought signature Google documents for function calls Gemini did not make.
const FOREIGN_CALL_SIGNATURE: &str = "skip_thought_signature_validator";

const SIGNATURE_OWN: &str = "gemini:";
const SIGNATURE_NEXT: &str = "gemini-next:";
const SIGNATURE_PREV: &str = "gemini-prev:";

const CLAUDE_THINKING_MARK: &str = "CLAUDETH";
const CLAUDE_REDACTED_MARK: &str = "CLAUDERT";

// ===== Signatures and ids =====

/// Which Gemini part a thought signature carried by an Anthropic thinking block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The thought part the block itself stands for.
    Own,
    /// The part made from the block after it.
    Next,
    /// The part made from the block before it.
    Prev,
}

fn encode_gemini_signature(slot: Slot, signature: &str) -> String {
    let prefix = match slot {
        Slot::Own => SIGNATURE_OWN,
        Slot::Next => SIGNATURE_NEXT,
        Slot::Prev => SIGNATURE_PREV,
    };
    format!("{prefix}{signature}")
}

fn decode_gemini_signature(signature: &str) -> Option<(Slot, &str)> {
    [
        (SIGNATURE_OWN, Slot::Own),
        (SIGNATURE_NEXT, Slot::Next),
        (SIGNATURE_PREV, Slot::Prev),
    ]
    .into_iter()
    .find_map(|(prefix, slot)| {
        signature
            .strip_prefix(prefix)
            .filter(|s| !s.is_empty())
            .map(|s| (slot, s))
    })
}

/// What a Gemini client's thought signature says about the Claude block it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClaudeSignature {
    Thinking(String),
    Redacted(String),
}

fn encode_claude_signature(signature: &ClaudeSignature) -> String {
    match signature {
        ClaudeSignature::Thinking(s) => format!("{CLAUDE_THINKING_MARK}{s}"),
        ClaudeSignature::Redacted(data) => format!("{CLAUDE_REDACTED_MARK}{data}"),
    }
}

/// Reads a signature back. Gemini SDKs hold signatures as bytes and may write them again
/// in the URL-safe alphabet; Anthropic's are standard base64, so the alphabet is restored.
fn decode_claude_signature(signature: &str) -> Option<ClaudeSignature> {
    let standard = |s: &str| s.replace('-', "+").replace('_', "/");
    if let Some(rest) = signature.strip_prefix(CLAUDE_THINKING_MARK) {
        return Some(ClaudeSignature::Thinking(standard(rest)));
    }
    signature
        .strip_prefix(CLAUDE_REDACTED_MARK)
        .map(|rest| ClaudeSignature::Redacted(standard(rest)))
}

/// FNV-1a: a stable, dependency-free hash for made-up ids.
fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// A tool_use id for a Gemini call without one: the same `seed` (response id, call name
/// and arguments) and position always give the same id, so a replayed answer or a retried
/// request gets the ids it had, and calls of different answers do not collide.
fn generated_tool_id(seed: &str, position: usize) -> String {
    let hash = fnv1a(
        &(position as u64).to_le_bytes(),
        fnv1a(seed.as_bytes(), FNV_OFFSET),
    );
    format!("{GENERATED_TOOL_ID_PREFIX}{hash:016x}")
}

fn is_generated_tool_id(id: &str) -> bool {
    id.starts_with(GENERATED_TOOL_ID_PREFIX)
}

// ===== Anthropic request -> Gemini =====

/// Translates an Anthropic Messages request into a Gemini generateContent request,
/// returning the requested model name with it (the caller routes on it and builds the
/// URL; `stream` decides between `generateContent` and `streamGenerateContent?alt=sse`).
pub fn anthropic_request_to_gemini(
    req: &anthropic::MessagesRequest,
    opts: &TranslateOptions,
) -> Result<(String, gemini::GenerateContentRequest), TranslateError> {
    let tools = tools_to_gemini(req.tools.as_deref())?;
    // Gemini wants no function-calling config without functions.
    let tool_config = tools
        .as_ref()
        .and_then(|_| tool_choice_to_gemini(req.tool_choice.as_ref()));
    let config = gemini::GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        max_output_tokens: Some(req.max_tokens),
        stop_sequences: req.stop_sequences.clone().filter(|s| !s.is_empty()),
        thinking_config: req.thinking.as_ref().and_then(thinking_to_gemini),
        ..Default::default()
    };
    let out = gemini::GenerateContentRequest {
        contents: messages_to_gemini(&req.messages, opts)?,
        system_instruction: system_to_gemini(req.system.as_ref())?,
        tools,
        tool_config,
        generation_config: Some(config),
        ..Default::default()
    };
    Ok((req.model.clone(), out))
}

fn system_to_gemini(
    system: Option<&anthropic::System>,
) -> Result<Option<gemini::Content>, TranslateError> {
    let mut parts = Vec::new();
    match system {
        None => {}
        Some(anthropic::System::Text(text)) => push_text(&mut parts, text),
        // Claude Code sends text blocks with `cache_control`; the text is what counts.
        Some(anthropic::System::Blocks(blocks)) => {
            for block in blocks {
                match block {
                    ContentBlock::Text(text) => push_text(&mut parts, &text.text),
                    other => return Err(unsupported("system", other.kind())),
                }
            }
        }
    }
    Ok((!parts.is_empty()).then(|| gemini::Content {
        role: None,
        parts,
        extra: Map::new(),
    }))
}

fn push_text(parts: &mut Vec<gemini::Part>, text: &str) {
    // Gemini refuses empty text parts in requests.
    if !text.is_empty() {
        parts.push(gemini::Part::text(text));
    }
}

fn unsupported(role: &str, kind: &str) -> TranslateError {
    TranslateError::UnsupportedContent {
        role: role.to_owned(),
        kind: kind.to_owned(),
    }
}

fn messages_to_gemini(
    messages: &[anthropic::Message],
    opts: &TranslateOptions,
) -> Result<Vec<gemini::Content>, TranslateError> {
    let mut contents = Vec::with_capacity(messages.len());
    // tool_use id -> name, from the assistant messages so far: a tool_result names only
    // the id, a functionResponse needs the name.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for message in messages {
        match message.role {
            anthropic::Role::User => {
                let (responses, parts) = user_to_gemini(&message.content, &call_names, opts)?;
                push_gemini_turn(&mut contents, ROLE_USER, responses);
                push_gemini_turn(&mut contents, ROLE_USER, parts);
            }
            anthropic::Role::Assistant => {
                let parts = assistant_to_gemini(&message.content, &mut call_names)?;
                push_gemini_turn(&mut contents, ROLE_MODEL, parts);
            }
        }
    }
    sign_current_turn(&mut contents);
    Ok(contents)
}

/// Gemini 3 refuses a request when the first `functionCall` of a step in the current turn
/// (the model turns after the last user turn with more than function responses) has no
/// signature. Calls Gemini never signed (another model's, or a client's own) get the
/// placeholder Google documents for them.
fn sign_current_turn(contents: &mut [gemini::Content]) {
    let start = contents
        .iter()
        .rposition(|c| c.role.as_deref() != Some(ROLE_MODEL) && !is_function_responses(&c.parts))
        .map_or(0, |i| i + 1);
    for content in &mut contents[start..] {
        if content.role.as_deref() != Some(ROLE_MODEL) {
            continue;
        }
        if let Some(first_call) = content.parts.iter_mut().find(|p| p.function_call.is_some())
            && first_call.thought_signature.is_none()
        {
            first_call.thought_signature = Some(FOREIGN_CALL_SIGNATURE.to_owned());
        }
    }
}

/// A user message: its tool results (as `functionResponse` parts, which Gemini wants in a
/// turn of their own) and everything else.
fn user_to_gemini(
    content: &anthropic::MessageContent,
    call_names: &HashMap<String, String>,
    opts: &TranslateOptions,
) -> Result<(Vec<gemini::Part>, Vec<gemini::Part>), TranslateError> {
    let mut responses = Vec::new();
    let mut parts = Vec::new();
    let blocks = match content {
        anthropic::MessageContent::Text(text) => {
            push_text(&mut parts, text);
            return Ok((responses, parts));
        }
        anthropic::MessageContent::Blocks(blocks) => blocks,
    };
    for block in blocks {
        match block {
            ContentBlock::Text(text) => push_text(&mut parts, &text.text),
            ContentBlock::Image(image) => parts.push(image_to_gemini(&image.source, opts)?),
            ContentBlock::Document(document) => {
                parts.extend(document_to_gemini(&document.source, opts)?);
            }
            ContentBlock::ToolResult(result) => {
                let name = call_names.get(&result.tool_use_id).ok_or_else(|| {
                    TranslateError::UnknownToolCallId {
                        id: result.tool_use_id.clone(),
                    }
                })?;
                let (response, attachments) = tool_result_to_gemini(result, name, opts)?;
                responses.push(response);
                // Images a tool returned (a screenshot, a read image file) follow the
                // results as ordinary parts: every Gemini model takes those.
                parts.extend(attachments);
            }
            other => return Err(unsupported("user", other.kind())),
        }
    }
    Ok((responses, parts))
}

fn inline_part(mime_type: &str, data: &str) -> gemini::Part {
    gemini::Part {
        inline_data: Some(gemini::Blob {
            mime_type: mime_type.to_owned(),
            data: data.to_owned(),
            extra: Map::new(),
        }),
        ..Default::default()
    }
}

fn file_part(mime_type: &str, uri: &str) -> gemini::Part {
    gemini::Part {
        file_data: Some(gemini::FileData {
            mime_type: Some(mime_type.to_owned()),
            file_uri: uri.to_owned(),
            extra: Map::new(),
        }),
        ..Default::default()
    }
}

/// A remote URL, kept only when the gateway lets URLs through; a `data:` URL given as a
/// URL source is inline data.
fn url_part(
    url: &str,
    mime_type: &str,
    opts: &TranslateOptions,
) -> Result<gemini::Part, TranslateError> {
    if url.starts_with("data:") {
        let (mime_type, data) = parse_data_url(url)?;
        return Ok(inline_part(mime_type, data));
    }
    if !opts.allow_image_urls {
        return Err(TranslateError::ImageUrlNotAllowed);
    }
    Ok(file_part(mime_type, url))
}

fn image_to_gemini(
    source: &anthropic::ImageSource,
    opts: &TranslateOptions,
) -> Result<gemini::Part, TranslateError> {
    match source {
        anthropic::ImageSource::Base64 { media_type, data } => Ok(inline_part(media_type, data)),
        anthropic::ImageSource::Url { url } => url_part(url, guess_image_mime(url), opts),
        anthropic::ImageSource::Other(value) => Err(unsupported(
            "user",
            &format!("image with a {} source", source_kind(value)),
        )),
    }
}

fn source_kind(source: &Value) -> &str {
    source
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
}

/// Gemini wants a MIME type with a file URI; the URL's extension is all there is to go on.
fn guess_image_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match extension.as_deref() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => "image/jpeg",
    }
}

/// A document block: base64 data (a PDF) is inline data, plain text and content-block
/// sources are text, a URL is a file URI when URLs may pass.
fn document_to_gemini(
    source: &Value,
    opts: &TranslateOptions,
) -> Result<Vec<gemini::Part>, TranslateError> {
    let field = |name: &str| source.get(name).and_then(Value::as_str);
    let mut parts = Vec::new();
    match source_kind(source) {
        "base64" => {
            let (Some(media_type), Some(data)) = (field("media_type"), field("data")) else {
                return Err(TranslateError::InvalidRequest(
                    "document base64 source needs `media_type` and `data`".into(),
                ));
            };
            parts.push(inline_part(media_type, data));
        }
        "text" => push_text(&mut parts, field("data").unwrap_or_default()),
        "content" => match source.get("content") {
            Some(Value::String(text)) => push_text(&mut parts, text),
            Some(Value::Array(blocks)) => {
                for block in blocks {
                    match (block.get("type").and_then(Value::as_str), block.get("text")) {
                        (Some("text"), Some(Value::String(text))) => push_text(&mut parts, text),
                        (kind, _) => {
                            return Err(unsupported(
                                "user",
                                &format!("document content `{}`", kind.unwrap_or("unknown")),
                            ));
                        }
                    }
                }
            }
            _ => {}
        },
        "url" => {
            let url = field("url").ok_or_else(|| {
                TranslateError::InvalidRequest("document url source needs `url`".into())
            })?;
            parts.push(url_part(url, "application/pdf", opts)?);
        }
        other => {
            return Err(unsupported(
                "user",
                &format!("document with a {other} source"),
            ));
        }
    }
    Ok(parts)
}

/// A tool result as a `functionResponse`, in the shape Google documents: the text under
/// `output`, or under `error` when `is_error` is set. Images and documents in the result
/// come back apart, as parts of their own.
fn tool_result_to_gemini(
    result: &anthropic::ToolResultBlock,
    name: &str,
    opts: &TranslateOptions,
) -> Result<(gemini::Part, Vec<gemini::Part>), TranslateError> {
    let mut texts = Vec::new();
    let mut attachments = Vec::new();
    match &result.content {
        None => {}
        Some(anthropic::ToolResultContent::Text(text)) => texts.push(text.as_str()),
        // Claude Code sends tool output as an array of text blocks.
        Some(anthropic::ToolResultContent::Blocks(blocks)) => {
            for block in blocks {
                match block {
                    ContentBlock::Text(text) => texts.push(text.text.as_str()),
                    ContentBlock::Image(image) => {
                        attachments.push(image_to_gemini(&image.source, opts)?);
                    }
                    ContentBlock::Document(document) => {
                        attachments.extend(document_to_gemini(&document.source, opts)?);
                    }
                    other => {
                        return Err(unsupported(
                            "user",
                            &format!("tool_result {}", other.kind()),
                        ));
                    }
                }
            }
        }
    }
    let key = if result.is_error == Some(true) {
        "error"
    } else {
        "output"
    };
    let mut response = Map::new();
    response.insert(key.into(), Value::String(texts.join("\n")));
    let id = Some(result.tool_use_id.clone()).filter(|id| !is_generated_tool_id(id));
    let part = gemini::Part {
        function_response: Some(gemini::FunctionResponse {
            id,
            name: name.to_owned(),
            response: Value::Object(response),
            extra: Map::new(),
        }),
        ..Default::default()
    };
    Ok((part, attachments))
}

/// An assistant message. Thinking blocks come back as the thought signatures they carry
/// (see the module docs); tool_use blocks as `functionCall` parts with their ids.
fn assistant_to_gemini(
    content: &anthropic::MessageContent,
    call_names: &mut HashMap<String, String>,
) -> Result<Vec<gemini::Part>, TranslateError> {
    let mut parts = Vec::new();
    let blocks = match content {
        anthropic::MessageContent::Text(text) => {
            push_text(&mut parts, text);
            return Ok(parts);
        }
        anthropic::MessageContent::Blocks(blocks) => blocks,
    };
    // A `gemini-next:` signature waiting for the part of the following block.
    let mut next_signature: Option<String> = None;
    for block in blocks {
        let mut part = match block {
            ContentBlock::Thinking(thinking) => {
                let Some((slot, signature)) = thinking
                    .signature
                    .as_deref()
                    .and_then(decode_gemini_signature)
                else {
                    // Unsigned, or signed by Claude: nothing Gemini can read.
                    continue;
                };
                let thought = (!thinking.thinking.is_empty()).then(|| gemini::Part {
                    text: Some(thinking.thinking.clone()),
                    thought: Some(true),
                    ..Default::default()
                });
                match slot {
                    Slot::Own => {
                        let mut part = thought.unwrap_or_else(|| gemini::Part {
                            thought: Some(true),
                            ..Default::default()
                        });
                        part.thought_signature = Some(signature.to_owned());
                        parts.push(part);
                    }
                    Slot::Next => {
                        parts.extend(thought);
                        next_signature = Some(signature.to_owned());
                    }
                    Slot::Prev => {
                        match parts.last_mut() {
                            Some(last) if last.thought_signature.is_none() => {
                                last.thought_signature = Some(signature.to_owned());
                            }
                            _ => parts.push(signature_part(signature)),
                        }
                        parts.extend(thought);
                    }
                }
                continue;
            }
            // Claude's encrypted thinking means nothing to Gemini.
            ContentBlock::RedactedThinking(_) => continue,
            ContentBlock::Text(text) if text.text.is_empty() => continue,
            ContentBlock::Text(text) => gemini::Part::text(text.text.clone()),
            ContentBlock::ToolUse(call) => {
                let args = match &call.input {
                    Value::Object(_) => call.input.clone(),
                    Value::Null => Value::Object(Map::new()),
                    _ => {
                        return Err(TranslateError::InvalidToolArguments {
                            name: call.name.clone(),
                            reason: "tool_use input is not a JSON object".into(),
                        });
                    }
                };
                call_names.insert(call.id.clone(), call.name.clone());
                gemini::Part {
                    function_call: Some(gemini::FunctionCall {
                        id: Some(call.id.clone()).filter(|id| !is_generated_tool_id(id)),
                        name: call.name.clone(),
                        args: Some(args),
                        extra: Map::new(),
                    }),
                    ..Default::default()
                }
            }
            other => return Err(unsupported("assistant", other.kind())),
        };
        part.thought_signature = next_signature.take();
        parts.push(part);
    }
    if let Some(signature) = next_signature {
        parts.push(signature_part(&signature));
    }
    Ok(parts)
}

/// A signature with no part of its own to sit on travels on an empty text part, as
/// Gemini itself sends it at the end of a stream.
fn signature_part(signature: &str) -> gemini::Part {
    gemini::Part {
        text: Some(String::new()),
        thought_signature: Some(signature.to_owned()),
        ..Default::default()
    }
}

fn tools_to_gemini(
    tools: Option<&[anthropic::Tool]>,
) -> Result<Option<Vec<gemini::Tool>>, TranslateError> {
    let Some(tools) = tools else {
        return Ok(None);
    };
    let mut declarations = Vec::with_capacity(tools.len());
    for tool in tools {
        let tool = match tool {
            anthropic::Tool::Custom(tool) => tool,
            // Anthropic's server tools (web search, code execution, computer use) run on
            // Anthropic's side; Gemini has no such tools to stand in for them.
            anthropic::Tool::Server(value) => {
                return Err(TranslateError::UnsupportedValue {
                    field: "tools[].type",
                    value: source_kind(value).to_owned(),
                });
            }
        };
        let reduced = schema::reduce_for_gemini(&tool.input_schema).map_err(|err| {
            TranslateError::InvalidSchema {
                location: format!("input_schema of tool `{}`", tool.name),
                reason: err.to_string(),
            }
        })?;
        // Gemini rejects an object schema without properties; a tool without arguments
        // has no `parameters` at all.
        let has_properties = reduced
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty());
        let is_object = reduced
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(|t| t.eq_ignore_ascii_case("object"));
        declarations.push(gemini::FunctionDeclaration {
            name: tool.name.clone(),
            description: tool.description.clone(),
            parameters: (has_properties || !is_object).then_some(reduced),
            parameters_json_schema: None,
            extra: Map::new(),
        });
    }
    if declarations.is_empty() {
        return Ok(None);
    }
    Ok(Some(vec![gemini::Tool {
        function_declarations: Some(declarations),
        ..Default::default()
    }]))
}

/// `disable_parallel_tool_use` has no Gemini counterpart and is dropped.
fn tool_choice_to_gemini(choice: Option<&anthropic::ToolChoice>) -> Option<gemini::ToolConfig> {
    let (mode, allowed) = match choice? {
        anthropic::ToolChoice::Auto { .. } => (gemini::FunctionCallingMode::Auto, None),
        anthropic::ToolChoice::Any { .. } => (gemini::FunctionCallingMode::Any, None),
        anthropic::ToolChoice::Tool { name, .. } => {
            (gemini::FunctionCallingMode::Any, Some(vec![name.clone()]))
        }
        anthropic::ToolChoice::None => (gemini::FunctionCallingMode::None, None),
    };
    Some(gemini::ToolConfig {
        function_calling_config: Some(gemini::FunctionCallingConfig {
            mode: Some(mode),
            allowed_function_names: allowed,
            extra: Map::new(),
        }),
        extra: Map::new(),
    })
}

/// `enabled` keeps its budget; adaptive thinking (the model decides) is Gemini's dynamic
/// budget, -1; `disabled` sends nothing (some Gemini models cannot stop thinking, and
/// those that can do so with a budget of 0 only when asked). Thoughts are always asked for:
/// an Anthropic client with thinking on expects thinking blocks.
fn thinking_to_gemini(thinking: &anthropic::ThinkingConfig) -> Option<gemini::ThinkingConfig> {
    let budget = match thinking {
        anthropic::ThinkingConfig::Enabled { budget_tokens } => i64::from(*budget_tokens),
        anthropic::ThinkingConfig::Disabled => return None,
        anthropic::ThinkingConfig::Other(value) if source_kind(value) == "adaptive" => -1,
        anthropic::ThinkingConfig::Other(_) => return None,
    };
    Some(gemini::ThinkingConfig {
        thinking_budget: Some(budget),
        include_thoughts: Some(true),
        ..Default::default()
    })
}

// ===== Gemini response -> Anthropic =====

/// Where the blocks made from Gemini parts go: a list for a whole answer, SSE events for a
/// stream. Text and thinking blocks stay open for more of the same kind.
trait BlockSink {
    /// Appends text to an open text block, opening one if needed.
    fn text(&mut self, text: &str);
    /// Appends thought text to an open thinking block, opening one if needed.
    fn thinking(&mut self, text: &str);
    /// Signs the open thinking block (opening an empty one if needed) and closes it.
    fn sign(&mut self, signature: String);
    /// Closes any open block and adds a whole tool_use block.
    fn tool_use(&mut self, id: String, name: String, input: Value);
    /// Closes the open block, if any.
    fn close(&mut self);
}

/// Makes tool ids for one answer or stream.
#[derive(Debug, Default)]
struct CallIds {
    seed: String,
    next: usize,
}

// === impl CallIds ===

impl CallIds {
    fn id(&mut self, call: &gemini::FunctionCall) -> String {
        if let Some(id) = call.id.as_ref().filter(|id| !id.is_empty()) {
            return id.clone();
        }
        let args = call.args.as_ref().map(Value::to_string).unwrap_or_default();
        let id = generated_tool_id(&format!("{}\0{}\0{args}", self.seed, call.name), self.next);
        self.next += 1;
        id
    }
}

/// Turns a candidate's parts into blocks, placing each thought signature as the module
/// docs say. Returns whether there was a function call.
fn parts_to_blocks(parts: &[gemini::Part], ids: &mut CallIds, sink: &mut impl BlockSink) -> bool {
    let mut has_calls = false;
    for part in parts {
        let signature = part.thought_signature.as_deref().filter(|s| !s.is_empty());
        if part.is_thought() {
            if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                sink.thinking(text);
            }
            if let Some(signature) = signature {
                sink.sign(encode_gemini_signature(Slot::Own, signature));
            }
        } else if let Some(call) = &part.function_call {
            if let Some(signature) = signature {
                sink.sign(encode_gemini_signature(Slot::Next, signature));
            }
            let input = match &call.args {
                Some(args @ Value::Object(_)) => args.clone(),
                _ => Value::Object(Map::new()),
            };
            sink.tool_use(ids.id(call), call.name.clone(), input);
            has_calls = true;
        } else {
            if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                sink.text(text);
            }
            // Images, code execution and the like have no Anthropic block: an Anthropic
            // request never asks for them.
            if let Some(signature) = signature {
                sink.close();
                sink.sign(encode_gemini_signature(Slot::Prev, signature));
            }
        }
    }
    has_calls
}

/// A whole answer's blocks.
#[derive(Debug, Default)]
struct BlockList {
    blocks: Vec<ContentBlock>,
    open: Option<ContentBlock>,
}

impl BlockSink for BlockList {
    fn text(&mut self, text: &str) {
        if let Some(ContentBlock::Text(open)) = &mut self.open {
            open.text.push_str(text);
            return;
        }
        self.close();
        self.open = Some(ContentBlock::text(text));
    }

    fn thinking(&mut self, text: &str) {
        if let Some(ContentBlock::Thinking(open)) = &mut self.open {
            open.thinking.push_str(text);
            return;
        }
        self.close();
        self.open = Some(thinking_block(text, None));
    }

    fn sign(&mut self, signature: String) {
        match &mut self.open {
            Some(ContentBlock::Thinking(open)) => open.signature = Some(signature),
            _ => {
                self.close();
                self.open = Some(thinking_block("", Some(signature)));
            }
        }
        self.close();
    }

    fn tool_use(&mut self, id: String, name: String, input: Value) {
        self.close();
        self.blocks
            .push(ContentBlock::ToolUse(anthropic::ToolUseBlock {
                id,
                name,
                input,
                cache_control: None,
                extra: Map::new(),
            }));
    }

    fn close(&mut self) {
        if let Some(block) = self.open.take() {
            self.blocks.push(block);
        }
    }
}

/// A thinking block; without a signature (an unsigned Gemini thought summary) the field is
/// left out rather than sent empty, which strict clients reject.
fn thinking_block(text: &str, signature: Option<String>) -> ContentBlock {
    ContentBlock::Thinking(anthropic::ThinkingBlock {
        thinking: text.to_owned(),
        signature,
        extra: Map::new(),
    })
}

fn stop_reason_to_anthropic(
    reason: Option<&gemini::FinishReason>,
    has_calls: bool,
) -> anthropic::StopReason {
    use gemini::FinishReason as G;
    match reason {
        Some(G::MaxTokens) => anthropic::StopReason::MaxTokens,
        Some(
            G::Safety
            | G::Recitation
            | G::Blocklist
            | G::ProhibitedContent
            | G::Spii
            | G::ImageSafety
            | G::Language,
        ) => anthropic::StopReason::Refusal,
        _ if has_calls => anthropic::StopReason::ToolUse,
        _ => anthropic::StopReason::EndTurn,
    }
}

/// Anthropic's `input_tokens` leaves out cache reads, which it counts apart; its
/// `output_tokens` include thinking, which Gemini counts apart.
fn usage_to_anthropic(usage: Option<&gemini::UsageMetadata>) -> anthropic::Usage {
    let Some(usage) = usage else {
        return anthropic::Usage::default();
    };
    let cached = usage.cached_content_token_count;
    anthropic::Usage {
        input_tokens: usage
            .prompt_token_count
            .unwrap_or_default()
            .saturating_sub(cached.unwrap_or_default()),
        output_tokens: usage.candidates_token_count.unwrap_or_default()
            + usage.thoughts_token_count.unwrap_or_default(),
        cache_creation_input_tokens: None,
        cache_read_input_tokens: cached,
        extra: Map::new(),
    }
}

/// Whether Gemini blocked the prompt (no candidates, `promptFeedback.blockReason` set).
fn prompt_blocked(resp: &gemini::GenerateContentResponse) -> bool {
    resp.candidates.is_empty()
        && resp
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.get("blockReason").is_some())
}

fn message_id(response_id: Option<&str>, fallback: &str) -> String {
    match response_id {
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => format!("msg_{:016x}", fnv1a(fallback.as_bytes(), FNV_OFFSET)),
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("protocol types serialize: string keys only")
}

/// Translates a Gemini answer into an Anthropic message for the client that asked for
/// `model`. Only the first candidate counts (an Anthropic request asks for one).
pub fn gemini_response_to_anthropic(
    resp: &gemini::GenerateContentResponse,
    model: &str,
) -> anthropic::MessagesResponse {
    let candidate = resp.candidates.first();
    let parts = candidate
        .and_then(|c| c.content.as_ref())
        .map(|c| c.parts.as_slice())
        .unwrap_or_default();
    let mut ids = CallIds {
        seed: resp.response_id.clone().unwrap_or_default(),
        next: 0,
    };
    let mut list = BlockList::default();
    let has_calls = parts_to_blocks(parts, &mut ids, &mut list);
    list.close();
    let stop_reason = if prompt_blocked(resp) {
        anthropic::StopReason::Refusal
    } else {
        stop_reason_to_anthropic(candidate.and_then(|c| c.finish_reason.as_ref()), has_calls)
    };
    anthropic::MessagesResponse {
        id: message_id(resp.response_id.as_deref(), &to_json(resp)),
        kind: "message".into(),
        role: anthropic::Role::Assistant,
        model: model.to_owned(),
        content: list.blocks,
        stop_reason: Some(stop_reason),
        stop_sequence: None,
        usage: usage_to_anthropic(resp.usage_metadata.as_ref()),
        extra: Map::new(),
    }
}

/// Parses one upstream stream event, turning an error event (Gemini's `{"error": {...}}`,
/// Anthropic's `{"type": "error", "error": {...}}`) into [`TranslateError::Upstream`].
fn parse_stream_event<T: DeserializeOwned>(
    data: &str,
    what: &'static str,
) -> Result<T, TranslateError> {
    if let Some(parsed) = super::parse_unless_error(data, what) {
        return parsed;
    }
    let value: Value =
        serde_json::from_str(data).map_err(|e| TranslateError::upstream_json(what, e))?;
    if let Some(error) = value.get("error").filter(|e| e.is_object()) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_owned();
        let status = match (error.get("status"), error.get("type"), error.get("code")) {
            (Some(Value::String(status)), _, _) | (None, Some(Value::String(status)), _) => {
                Some(status.clone())
            }
            (_, _, Some(code)) if !code.is_null() => Some(match code {
                Value::String(code) => code.clone(),
                other => other.to_string(),
            }),
            _ => None,
        };
        return Err(TranslateError::Upstream { status, message });
    }
    serde_json::from_value(value).map_err(|e| TranslateError::upstream_json(what, e))
}

/// What kind of block a [`GeminiToAnthropicStream`] has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenKind {
    Text,
    Thinking,
}

/// Block bookkeeping of a [`GeminiToAnthropicStream`].
#[derive(Debug, Default)]
struct StreamBlocks {
    next_index: u32,
    open: Option<(u32, OpenKind)>,
}

/// A [`BlockSink`] that writes Anthropic stream events.
struct EventSink<'a> {
    blocks: &'a mut StreamBlocks,
    out: &'a mut Vec<SseEvent>,
}

// === impl EventSink ===

impl EventSink<'_> {
    fn emit(&mut self, event: &anthropic::StreamEvent) {
        self.out.push(SseEvent::named(event.name(), to_json(event)));
    }

    fn start(&mut self, block: ContentBlock) -> u32 {
        let index = self.blocks.next_index;
        self.blocks.next_index += 1;
        self.emit(&anthropic::StreamEvent::ContentBlockStart {
            index,
            content_block: block,
        });
        index
    }

    /// The index of the open block of `kind`, opening one (and closing another) if needed.
    fn ensure_open(&mut self, kind: OpenKind) -> u32 {
        if let Some((index, open)) = self.blocks.open
            && open == kind
        {
            return index;
        }
        self.close();
        let block = match kind {
            OpenKind::Text => ContentBlock::text(""),
            OpenKind::Thinking => thinking_block("", None),
        };
        let index = self.start(block);
        self.blocks.open = Some((index, kind));
        index
    }

    fn delta(&mut self, index: u32, delta: anthropic::ContentDelta) {
        self.emit(&anthropic::StreamEvent::ContentBlockDelta { index, delta });
    }
}

impl BlockSink for EventSink<'_> {
    fn text(&mut self, text: &str) {
        let index = self.ensure_open(OpenKind::Text);
        self.delta(
            index,
            anthropic::ContentDelta::TextDelta {
                text: text.to_owned(),
            },
        );
    }

    fn thinking(&mut self, text: &str) {
        let index = self.ensure_open(OpenKind::Thinking);
        self.delta(
            index,
            anthropic::ContentDelta::ThinkingDelta {
                thinking: text.to_owned(),
            },
        );
    }

    fn sign(&mut self, signature: String) {
        let index = self.ensure_open(OpenKind::Thinking);
        self.delta(index, anthropic::ContentDelta::SignatureDelta { signature });
        self.close();
    }

    fn tool_use(&mut self, id: String, name: String, input: Value) {
        self.close();
        // Gemini sends whole calls: the block starts with an empty input, as Anthropic's
        // always do, and the arguments follow as one `input_json_delta`.
        let index = self.start(ContentBlock::ToolUse(anthropic::ToolUseBlock {
            id,
            name,
            input: Value::Object(Map::new()),
            cache_control: None,
            extra: Map::new(),
        }));
        self.delta(
            index,
            anthropic::ContentDelta::InputJsonDelta {
                partial_json: input.to_string(),
            },
        );
        self.emit(&anthropic::StreamEvent::ContentBlockStop { index });
    }

    fn close(&mut self) {
        if let Some((index, _)) = self.blocks.open.take() {
            self.emit(&anthropic::StreamEvent::ContentBlockStop { index });
        }
    }
}

/// Gemini `streamGenerateContent?alt=sse` events -> Anthropic Messages stream events.
///
/// The sequence is the one Anthropic documents: `message_start` (with the prompt's token
/// count when Gemini's first event carries it, else 0), then for each block
/// `content_block_start`, its deltas (`text_delta`, `thinking_delta`, `signature_delta`,
/// `input_json_delta`) and `content_block_stop`, with indexes counting up from 0; then, at
/// the end of the upstream stream, `message_delta` with the stop reason and the final
/// usage, and `message_stop`. Text and thought parts extend the open block of their kind;
/// each `functionCall` (Gemini sends whole calls) is a whole `tool_use` block. An upstream
/// error event is a [`TranslateError::Upstream`]; a stream that ends before Gemini sent a
/// `finishReason` was cut, and is an error too.
#[derive(Debug)]
pub struct GeminiToAnthropicStream {
    model: String,
    started: bool,
    done: bool,
    ids: CallIds,
    blocks: StreamBlocks,
    has_calls: bool,
    finish_reason: Option<gemini::FinishReason>,
    blocked: bool,
    usage: Option<gemini::UsageMetadata>,
}

// === impl GeminiToAnthropicStream ===

impl GeminiToAnthropicStream {
    /// A translator answering as `model`.
    pub fn new(model: impl Into<String>) -> Self {
        GeminiToAnthropicStream {
            model: model.into(),
            started: false,
            done: false,
            ids: CallIds::default(),
            blocks: StreamBlocks::default(),
            has_calls: false,
            finish_reason: None,
            blocked: false,
            usage: None,
        }
    }

    fn start(&mut self, id: String, out: &mut Vec<SseEvent>) {
        self.started = true;
        let mut usage = usage_to_anthropic(self.usage.as_ref());
        usage.output_tokens = 0;
        let event = anthropic::StreamEvent::MessageStart {
            message: anthropic::MessagesResponse {
                id,
                kind: "message".into(),
                role: anthropic::Role::Assistant,
                model: self.model.clone(),
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage,
                extra: Map::new(),
            },
        };
        out.push(SseEvent::named(event.name(), to_json(&event)));
    }
}

impl StreamTranslator for GeminiToAnthropicStream {
    fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), TranslateError> {
        if event.data.trim().is_empty() || self.done {
            return Ok(());
        }
        let resp: gemini::GenerateContentResponse =
            parse_stream_event(&event.data, "gemini stream event")?;
        if resp.usage_metadata.is_some() {
            self.usage.clone_from(&resp.usage_metadata);
        }
        if !self.started {
            self.ids.seed = resp.response_id.clone().unwrap_or_default();
            self.start(message_id(resp.response_id.as_deref(), &event.data), out);
        }
        self.blocked |= prompt_blocked(&resp);
        // Only the first candidate counts (an Anthropic request asks for one).
        let Some(candidate) = resp.candidates.first() else {
            return Ok(());
        };
        if let Some(content) = &candidate.content {
            let mut sink = EventSink {
                blocks: &mut self.blocks,
                out,
            };
            self.has_calls |= parts_to_blocks(&content.parts, &mut self.ids, &mut sink);
        }
        if candidate.finish_reason.is_some() {
            self.finish_reason.clone_from(&candidate.finish_reason);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        if self.done {
            return Ok(());
        }
        // Gemini's last event carries the finish reason (or the prompt's block reason):
        // without it the stream was cut, and closing the message would pass a truncated
        // answer off as a whole one.
        if self.finish_reason.is_none() && !self.blocked {
            return Err(TranslateError::InvalidUpstreamJson {
                what: "gemini stream",
                reason: "the stream ended before a finishReason".into(),
            });
        }
        self.done = true;
        EventSink {
            blocks: &mut self.blocks,
            out,
        }
        .close();
        let stop_reason = if self.blocked {
            anthropic::StopReason::Refusal
        } else {
            stop_reason_to_anthropic(self.finish_reason.as_ref(), self.has_calls)
        };
        let usage = usage_to_anthropic(self.usage.as_ref());
        let known = self.usage.is_some();
        let events = [
            anthropic::StreamEvent::MessageDelta {
                delta: anthropic::MessageDelta {
                    stop_reason: Some(stop_reason),
                    stop_sequence: None,
                    extra: Map::new(),
                },
                usage: anthropic::DeltaUsage {
                    input_tokens: known.then_some(usage.input_tokens),
                    output_tokens: usage.output_tokens,
                    cache_creation_input_tokens: None,
                    cache_read_input_tokens: usage.cache_read_input_tokens,
                    extra: Map::new(),
                },
            },
            anthropic::StreamEvent::MessageStop,
        ];
        for event in &events {
            out.push(SseEvent::named(event.name(), to_json(event)));
        }
        Ok(())
    }
}

// ===== Gemini request -> Anthropic =====

/// Translates a Gemini generateContent request for `model` into an Anthropic Messages
/// request.
///
/// `stream` is left unset: the caller knows whether the client called
/// `streamGenerateContent`. `max_tokens` is `maxOutputTokens`, or [`DEFAULT_MAX_TOKENS`].
/// With thinking on, Anthropic refuses `temperature`, `top_k`, a `top_p` under 0.95 and a
/// forced tool choice: the sampling settings are then left out, and a forced tool choice
/// wins over thinking (it usually asks for structured output).
pub fn gemini_request_to_anthropic(
    model: &str,
    req: &gemini::GenerateContentRequest,
    opts: &TranslateOptions,
) -> Result<anthropic::MessagesRequest, TranslateError> {
    if let Some(cached) = &req.cached_content {
        return Err(TranslateError::UnsupportedValue {
            field: "cachedContent",
            value: cached.clone(),
        });
    }
    let config = req.generation_config.clone().unwrap_or_default();
    if let Some(count) = config.candidate_count.filter(|c| *c > 1) {
        return Err(TranslateError::UnsupportedValue {
            field: "generationConfig.candidateCount",
            value: count.to_string(),
        });
    }
    if let Some(modality) = config
        .response_modalities
        .iter()
        .flatten()
        .find(|m| !m.eq_ignore_ascii_case("TEXT"))
    {
        return Err(TranslateError::UnsupportedValue {
            field: "generationConfig.responseModalities",
            value: modality.clone(),
        });
    }
    // `responseMimeType` / `responseSchema`: Anthropic has no structured output switch, so
    // nothing is added (see the module docs). `seed`, the penalties and the safety
    // settings have no Anthropic counterpart either.
    let max_tokens = config.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let tools = match &req.tools {
        Some(tools) => tools_to_anthropic(tools)?,
        None => None,
    };
    let tool_choice = tools.as_ref().and_then(|_| {
        req.tool_config
            .as_ref()
            .and_then(|c| c.function_calling_config.as_ref())
            .and_then(tool_config_to_anthropic)
    });
    let forced = matches!(
        tool_choice,
        Some(anthropic::ToolChoice::Any { .. } | anthropic::ToolChoice::Tool { .. })
    );
    let thinking = config
        .thinking_config
        .as_ref()
        .and_then(|t| thinking_to_anthropic(t, max_tokens))
        .filter(|_| !forced);
    let thinking_on = thinking.is_some();
    Ok(anthropic::MessagesRequest {
        model: model.to_owned(),
        max_tokens,
        messages: contents_to_anthropic(&req.contents, opts)?,
        system: system_to_anthropic(req.system_instruction.as_ref())?,
        tools,
        tool_choice,
        stop_sequences: config.stop_sequences.clone().filter(|s| !s.is_empty()),
        // Anthropic's temperature goes up to 1, Gemini's to 2.
        temperature: config
            .temperature
            .map(|t| t.clamp(0.0, 1.0))
            .filter(|_| !thinking_on),
        top_p: config.top_p.filter(|p| !thinking_on || *p >= 0.95),
        top_k: config.top_k.filter(|_| !thinking_on),
        stream: None,
        thinking,
        metadata: None,
        extra: Map::new(),
    })
}

fn system_to_anthropic(
    system: Option<&gemini::Content>,
) -> Result<Option<anthropic::System>, TranslateError> {
    let Some(system) = system else {
        return Ok(None);
    };
    let mut texts = Vec::new();
    for part in &system.parts {
        match &part.text {
            Some(text) if !text.is_empty() => texts.push(text.clone()),
            Some(_) => {}
            None => return Err(gemini_unsupported("systemInstruction", part)),
        }
    }
    Ok(match texts.len() {
        0 => None,
        1 => texts.pop().map(anthropic::System::Text),
        _ => Some(anthropic::System::Blocks(
            texts.into_iter().map(ContentBlock::text).collect(),
        )),
    })
}

fn gemini_unsupported(role: &str, part: &gemini::Part) -> TranslateError {
    let kind = if part.inline_data.is_some() {
        "inlineData"
    } else if part.file_data.is_some() {
        "fileData"
    } else if part.function_call.is_some() {
        "functionCall"
    } else if part.function_response.is_some() {
        "functionResponse"
    } else if part.executable_code.is_some() {
        "executableCode"
    } else if part.code_execution_result.is_some() {
        "codeExecutionResult"
    } else {
        part.extra.keys().next().map_or("unknown", String::as_str)
    };
    unsupported(role, kind)
}

/// Tool ids of calls not yet answered, by function name, oldest first.
type PendingCalls = HashMap<String, VecDeque<String>>;

fn contents_to_anthropic(
    contents: &[gemini::Content],
    opts: &TranslateOptions,
) -> Result<Vec<anthropic::Message>, TranslateError> {
    let mut messages: Vec<anthropic::Message> = Vec::with_capacity(contents.len());
    let mut pending = PendingCalls::new();
    for (position, content) in contents.iter().enumerate() {
        let (role, blocks) = if content.role.as_deref() == Some(ROLE_MODEL) {
            let blocks = model_parts_to_anthropic(position, &content.parts, &mut pending)?;
            (anthropic::Role::Assistant, blocks)
        } else {
            // `user`, an absent role (single-turn requests) and the legacy `function` role.
            let blocks = user_parts_to_anthropic(&content.parts, &mut pending, opts)?;
            (anthropic::Role::User, blocks)
        };
        push_message(&mut messages, role, blocks);
    }
    for message in &mut messages {
        let anthropic::MessageContent::Blocks(blocks) = &mut message.content else {
            continue;
        };
        // Anthropic wants a user message's tool results before anything else in it.
        if message.role == anthropic::Role::User {
            blocks.sort_by_key(|b| !matches!(b, ContentBlock::ToolResult(_)));
        }
        if let [ContentBlock::Text(text)] = blocks.as_slice()
            && text.extra.is_empty()
        {
            message.content = anthropic::MessageContent::Text(text.text.clone());
        }
    }
    Ok(messages)
}

/// Appends blocks as a message, merging them into the previous message when it has the
/// same role: Anthropic wants user and assistant turns to alternate.
fn push_message(
    messages: &mut Vec<anthropic::Message>,
    role: anthropic::Role,
    blocks: Vec<ContentBlock>,
) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut()
        && last.role == role
        && let anthropic::MessageContent::Blocks(existing) = &mut last.content
    {
        existing.extend(blocks);
        return;
    }
    messages.push(anthropic::Message {
        role,
        content: anthropic::MessageContent::Blocks(blocks),
        extra: Map::new(),
    });
}

/// A model turn. A run of thought parts becomes one thinking block when it carries one of
/// the signatures this module gave out for Claude's blocks (see the module docs), and is
/// dropped otherwise; calls without an id get a made-up one, stable for the position.
fn model_parts_to_anthropic(
    position: usize,
    parts: &[gemini::Part],
    pending: &mut PendingCalls,
) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut blocks = Vec::new();
    let mut run: Option<String> = None;
    for (index, part) in parts.iter().enumerate() {
        if part.is_thought() {
            let text = run.get_or_insert_with(String::new);
            text.push_str(part.text.as_deref().unwrap_or_default());
            if let Some(signature) = &part.thought_signature {
                let text = run.take().unwrap_or_default();
                blocks.extend(claude_thinking(text, signature));
            }
            continue;
        }
        // An unsigned run is a summary Anthropic cannot take back.
        run = None;
        if let Some(call) = &part.function_call {
            let id = call
                .id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| generated_tool_id(&position.to_string(), index));
            pending
                .entry(call.name.clone())
                .or_default()
                .push_back(id.clone());
            let input = match &call.args {
                Some(args @ Value::Object(_)) => args.clone(),
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(_) => {
                    return Err(TranslateError::InvalidToolArguments {
                        name: call.name.clone(),
                        reason: "functionCall args are not a JSON object".into(),
                    });
                }
            };
            blocks.push(ContentBlock::ToolUse(anthropic::ToolUseBlock {
                id,
                name: call.name.clone(),
                input,
                cache_control: None,
                extra: Map::new(),
            }));
        } else if let Some(text) = &part.text {
            // A Gemini signature on a text part means nothing to Anthropic.
            if !text.is_empty() {
                blocks.push(ContentBlock::text(text.clone()));
            }
        } else if part.thought_signature.is_none() {
            return Err(gemini_unsupported(ROLE_MODEL, part));
        }
    }
    Ok(blocks)
}

fn claude_thinking(text: String, signature: &str) -> Option<ContentBlock> {
    match decode_claude_signature(signature)? {
        ClaudeSignature::Thinking(signature) => Some(thinking_block(&text, Some(signature))),
        ClaudeSignature::Redacted(data) => Some(ContentBlock::RedactedThinking(
            anthropic::RedactedThinkingBlock {
                data,
                extra: Map::new(),
            },
        )),
    }
}

fn user_parts_to_anthropic(
    parts: &[gemini::Part],
    pending: &mut PendingCalls,
    opts: &TranslateOptions,
) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut blocks = Vec::new();
    for part in parts {
        if let Some(response) = &part.function_response {
            blocks.push(function_response_to_anthropic(response, pending)?);
        } else if let Some(text) = &part.text {
            if !text.is_empty() && !part.is_thought() {
                blocks.push(ContentBlock::text(text.clone()));
            }
        } else if let Some(blob) = &part.inline_data {
            blocks.push(blob_to_anthropic(blob)?);
        } else if let Some(file) = &part.file_data {
            blocks.push(file_to_anthropic(file, part, opts)?);
        } else if part.thought_signature.is_none() {
            return Err(gemini_unsupported(ROLE_USER, part));
        }
    }
    Ok(blocks)
}

/// A `functionResponse` answers the call with its id; without one (or with an id no call
/// had), the oldest unanswered call of its name.
fn function_response_to_anthropic(
    response: &gemini::FunctionResponse,
    pending: &mut PendingCalls,
) -> Result<ContentBlock, TranslateError> {
    if response
        .extra
        .get("parts")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty())
    {
        return Err(unsupported(ROLE_USER, "functionResponse.parts"));
    }
    let queue = pending.entry(response.name.clone()).or_default();
    let known = response
        .id
        .as_ref()
        .and_then(|id| queue.iter().position(|pending_id| pending_id == id));
    let id = match (known, &response.id) {
        (Some(position), _) => queue.remove(position),
        (None, _) => queue.pop_front(),
    };
    let id = id.ok_or_else(|| match &response.id {
        Some(id) => TranslateError::UnknownToolCallId { id: id.clone() },
        None => TranslateError::InvalidRequest(format!(
            "functionResponse `{}` answers no earlier functionCall of that name",
            response.name
        )),
    })?;
    let (text, is_error) = response_to_tool_result(&response.response);
    Ok(ContentBlock::ToolResult(anthropic::ToolResultBlock {
        tool_use_id: id,
        content: Some(anthropic::ToolResultContent::Text(text)),
        is_error: is_error.then_some(true),
        cache_control: None,
        extra: Map::new(),
    }))
}

/// The inverse of [`tool_result_to_gemini`]: `{"output": x}` gives `x`, `{"error": x}`
/// gives `x` as an error, `{"result": x}` (what other clients send) gives `x`; any other
/// object is passed as its JSON text.
fn response_to_tool_result(response: &Value) -> (String, bool) {
    let as_text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if let Value::Object(object) = response
        && object.len() == 1
        && let Some((key, value)) = object.iter().next()
    {
        match key.as_str() {
            "output" | "result" => return (as_text(value), false),
            "error" => return (as_text(value), true),
            _ => {}
        }
    }
    (as_text(response), false)
}

fn blob_to_anthropic(blob: &gemini::Blob) -> Result<ContentBlock, TranslateError> {
    let mime = blob.mime_type.as_str();
    if mime.starts_with("image/") {
        return Ok(ContentBlock::Image(anthropic::ImageBlock {
            source: anthropic::ImageSource::Base64 {
                media_type: mime.to_owned(),
                data: blob.data.clone(),
            },
            cache_control: None,
            extra: Map::new(),
        }));
    }
    if mime == "application/pdf" {
        return Ok(document_block(serde_json::json!({
            "type": "base64",
            "media_type": mime,
            "data": blob.data,
        })));
    }
    Err(unsupported(ROLE_USER, &format!("inlineData ({mime})")))
}

fn document_block(source: Value) -> ContentBlock {
    ContentBlock::Document(anthropic::DocumentBlock {
        source,
        cache_control: None,
        extra: Map::new(),
    })
}

/// A web URL becomes an Anthropic URL source when URLs may pass; a Files API URI cannot
/// be read by Anthropic.
fn file_to_anthropic(
    file: &gemini::FileData,
    part: &gemini::Part,
    opts: &TranslateOptions,
) -> Result<ContentBlock, TranslateError> {
    let is_web = file.file_uri.starts_with("https://") || file.file_uri.starts_with("http://");
    let mime = file.mime_type.as_deref();
    let is_pdf = mime == Some("application/pdf");
    let is_image = mime.is_none_or(|m| m.starts_with("image/"));
    if !is_web
        || !(is_pdf || is_image)
        || file.file_uri.contains("generativelanguage.googleapis.com")
    {
        return Err(gemini_unsupported(ROLE_USER, part));
    }
    if !opts.allow_image_urls {
        return Err(TranslateError::ImageUrlNotAllowed);
    }
    if is_pdf {
        return Ok(document_block(
            serde_json::json!({"type": "url", "url": file.file_uri}),
        ));
    }
    Ok(ContentBlock::Image(anthropic::ImageBlock {
        source: anthropic::ImageSource::Url {
            url: file.file_uri.clone(),
        },
        cache_control: None,
        extra: Map::new(),
    }))
}

fn tools_to_anthropic(
    tools: &[gemini::Tool],
) -> Result<Option<Vec<anthropic::Tool>>, TranslateError> {
    let out: Vec<anthropic::Tool> = super::gemini_functions_as_json_schema(tools)?
        .into_iter()
        .map(|(declaration, input_schema)| {
            anthropic::Tool::Custom(anthropic::CustomTool {
                name: declaration.name.clone(),
                description: declaration.description.clone(),
                input_schema,
                kind: None,
                cache_control: None,
                extra: Map::new(),
            })
        })
        .collect();
    Ok((!out.is_empty()).then_some(out))
}

/// `ANY` with exactly one allowed name is that tool; with several it is `any` (Anthropic
/// cannot narrow the choice to a subset). `VALIDATED` lets the model choose, as `auto`.
fn tool_config_to_anthropic(
    config: &gemini::FunctionCallingConfig,
) -> Option<anthropic::ToolChoice> {
    Some(match config.mode.as_ref()? {
        gemini::FunctionCallingMode::None => anthropic::ToolChoice::None,
        gemini::FunctionCallingMode::Any => match config.allowed_function_names.as_deref() {
            Some([name]) => anthropic::ToolChoice::Tool {
                name: name.clone(),
                disable_parallel_tool_use: None,
            },
            _ => anthropic::ToolChoice::Any {
                disable_parallel_tool_use: None,
            },
        },
        _ => anthropic::ToolChoice::Auto {
            disable_parallel_tool_use: None,
        },
    })
}

/// A positive budget is kept; `-1` (the model decides) and `thinkingLevel` map to the
/// budget buckets; 0 and `minimal` turn thinking off. Anthropic wants at least 1024
/// tokens and less than `max_tokens`: the budget is clamped, and thinking is left off when
/// `max_tokens` leaves no room for it.
fn thinking_to_anthropic(
    config: &gemini::ThinkingConfig,
    max_tokens: u32,
) -> Option<anthropic::ThinkingConfig> {
    let budget = match (config.thinking_level.as_deref(), config.thinking_budget) {
        (Some(level), _) => match level.to_ascii_lowercase().as_str() {
            "minimal" => return None,
            "low" => BUDGET_LOW,
            "high" => BUDGET_HIGH,
            _ => BUDGET_MEDIUM,
        },
        (None, Some(0)) => return None,
        (None, Some(budget)) if budget < 0 => BUDGET_MEDIUM,
        (None, Some(budget)) => u32::try_from(budget).unwrap_or(u32::MAX),
        (None, None) if config.include_thoughts == Some(true) => BUDGET_MEDIUM,
        (None, None) => return None,
    };
    if max_tokens <= MIN_THINKING_BUDGET {
        return None;
    }
    Some(anthropic::ThinkingConfig::Enabled {
        budget_tokens: budget.clamp(MIN_THINKING_BUDGET, max_tokens - 1),
    })
}

// ===== Anthropic response -> Gemini =====

fn model_content(parts: Vec<gemini::Part>) -> gemini::Content {
    gemini::Content {
        role: Some(ROLE_MODEL.to_owned()),
        parts,
        extra: Map::new(),
    }
}

fn thought_part(text: Option<&str>, signature: Option<ClaudeSignature>) -> gemini::Part {
    gemini::Part {
        text: text.map(str::to_owned),
        thought: Some(true),
        thought_signature: signature.as_ref().map(encode_claude_signature),
        ..Default::default()
    }
}

fn call_part(id: &str, name: &str, input: &Value) -> gemini::Part {
    gemini::Part {
        function_call: Some(gemini::FunctionCall {
            id: (!id.is_empty()).then(|| id.to_owned()),
            name: name.to_owned(),
            args: Some(input.clone()),
            extra: Map::new(),
        }),
        ..Default::default()
    }
}

fn finish_reason_to_gemini(reason: &anthropic::StopReason) -> gemini::FinishReason {
    match reason {
        anthropic::StopReason::EndTurn
        | anthropic::StopReason::StopSequence
        | anthropic::StopReason::ToolUse
        | anthropic::StopReason::PauseTurn => gemini::FinishReason::Stop,
        anthropic::StopReason::MaxTokens | anthropic::StopReason::ModelContextWindowExceeded => {
            gemini::FinishReason::MaxTokens
        }
        anthropic::StopReason::Refusal => gemini::FinishReason::Safety,
        anthropic::StopReason::Other(_) => gemini::FinishReason::Other,
    }
}

/// Gemini's prompt count includes cached tokens, Anthropic's `input_tokens` does not.
/// Anthropic does not count thinking apart, so `thoughtsTokenCount` stays unset.
fn usage_to_gemini(
    input: u64,
    output: u64,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
) -> gemini::UsageMetadata {
    let prompt = input + cache_read.unwrap_or_default() + cache_creation.unwrap_or_default();
    gemini::UsageMetadata {
        prompt_token_count: Some(prompt),
        candidates_token_count: Some(output),
        total_token_count: Some(prompt + output),
        thoughts_token_count: None,
        cached_content_token_count: cache_read.filter(|c| *c > 0),
        extra: Map::new(),
    }
}

/// Translates an Anthropic message into a Gemini generateContent answer. Blocks Gemini has
/// no part for (server tool calls and their results) are left out.
pub fn anthropic_response_to_gemini(
    resp: &anthropic::MessagesResponse,
) -> gemini::GenerateContentResponse {
    let mut parts = Vec::with_capacity(resp.content.len());
    for block in &resp.content {
        match block {
            ContentBlock::Text(text) => parts.push(gemini::Part::text(text.text.clone())),
            ContentBlock::Thinking(thinking) => parts.push(thought_part(
                Some(&thinking.thinking),
                thinking
                    .signature
                    .clone()
                    .filter(|s| !s.is_empty())
                    .map(ClaudeSignature::Thinking),
            )),
            ContentBlock::RedactedThinking(redacted) => parts.push(thought_part(
                None,
                Some(ClaudeSignature::Redacted(redacted.data.clone())),
            )),
            ContentBlock::ToolUse(call) => parts.push(call_part(&call.id, &call.name, &call.input)),
            _ => {}
        }
    }
    let candidate = gemini::Candidate {
        content: Some(model_content(parts)),
        finish_reason: Some(
            resp.stop_reason
                .as_ref()
                .map_or(gemini::FinishReason::Stop, finish_reason_to_gemini),
        ),
        index: Some(0),
        ..Default::default()
    };
    let usage = &resp.usage;
    gemini::GenerateContentResponse {
        candidates: vec![candidate],
        usage_metadata: Some(usage_to_gemini(
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens,
        )),
        model_version: Some(resp.model.clone()),
        response_id: Some(resp.id.clone()),
        ..Default::default()
    }
}

/// A tool_use block being assembled from its `input_json_delta`s.
#[derive(Debug, Default)]
struct PendingToolUse {
    id: String,
    name: String,
    json: String,
}

/// Anthropic Messages stream events -> Gemini `streamGenerateContent?alt=sse` events.
///
/// Text and thinking deltas are sent on as they come, as text and thought parts; a
/// `signature_delta` is a thought part of its own carrying the signature (a Gemini client
/// gives the parts back in order, and [`gemini_request_to_anthropic`] joins the run into
/// one thinking block again). A tool_use block is sent as one `functionCall` part when it
/// stops. The last event, at `message_stop`, carries the `finishReason` and the usage. An
/// `error` event is a [`TranslateError::Upstream`]; a stream cut before `message_stop` is an
/// error too.
#[derive(Debug, Default)]
pub struct AnthropicToGeminiStream {
    model_version: Option<String>,
    response_id: Option<String>,
    tool_uses: HashMap<u32, PendingToolUse>,
    stop_reason: Option<anthropic::StopReason>,
    input_tokens: u64,
    output_tokens: u64,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
    done: bool,
}

// === impl AnthropicToGeminiStream ===

impl AnthropicToGeminiStream {
    /// A translator for one stream.
    pub fn new() -> Self {
        AnthropicToGeminiStream::default()
    }

    fn event(
        &self,
        parts: Vec<gemini::Part>,
        finish: Option<gemini::FinishReason>,
        usage: Option<gemini::UsageMetadata>,
    ) -> SseEvent {
        let candidate = gemini::Candidate {
            content: (!parts.is_empty()).then(|| model_content(parts)),
            finish_reason: finish,
            index: Some(0),
            ..Default::default()
        };
        let resp = gemini::GenerateContentResponse {
            candidates: vec![candidate],
            usage_metadata: usage,
            model_version: self.model_version.clone(),
            response_id: self.response_id.clone(),
            ..Default::default()
        };
        SseEvent::data(to_json(&resp))
    }

    fn flush(&mut self, out: &mut Vec<SseEvent>) {
        if self.done {
            return;
        }
        self.done = true;
        let finish = self
            .stop_reason
            .as_ref()
            .map_or(gemini::FinishReason::Stop, finish_reason_to_gemini);
        let usage = usage_to_gemini(
            self.input_tokens,
            self.output_tokens,
            self.cache_read,
            self.cache_creation,
        );
        out.push(self.event(Vec::new(), Some(finish), Some(usage)));
    }
}

impl StreamTranslator for AnthropicToGeminiStream {
    fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), TranslateError> {
        if event.data.trim().is_empty() || self.done {
            return Ok(());
        }
        let parsed: anthropic::StreamEvent =
            parse_stream_event(&event.data, "anthropic stream event")?;
        let mut parts = Vec::new();
        match parsed {
            anthropic::StreamEvent::MessageStart { message } => {
                self.model_version = Some(message.model);
                self.response_id = Some(message.id);
                self.input_tokens = message.usage.input_tokens;
                self.output_tokens = message.usage.output_tokens;
                self.cache_read = message.usage.cache_read_input_tokens;
                self.cache_creation = message.usage.cache_creation_input_tokens;
            }
            anthropic::StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ContentBlock::Text(text) if !text.text.is_empty() => {
                    parts.push(gemini::Part::text(text.text));
                }
                ContentBlock::Thinking(thinking) => {
                    if !thinking.thinking.is_empty() {
                        parts.push(thought_part(Some(&thinking.thinking), None));
                    }
                    if let Some(signature) = thinking.signature.filter(|s| !s.is_empty()) {
                        parts.push(thought_part(
                            None,
                            Some(ClaudeSignature::Thinking(signature)),
                        ));
                    }
                }
                ContentBlock::RedactedThinking(redacted) => {
                    parts.push(thought_part(
                        None,
                        Some(ClaudeSignature::Redacted(redacted.data)),
                    ));
                }
                ContentBlock::ToolUse(call) => {
                    // The input normally streams as deltas after an empty `{}`.
                    let json = match &call.input {
                        Value::Object(map) if !map.is_empty() => call.input.to_string(),
                        _ => String::new(),
                    };
                    self.tool_uses.insert(
                        index,
                        PendingToolUse {
                            id: call.id,
                            name: call.name,
                            json,
                        },
                    );
                }
                _ => {}
            },
            anthropic::StreamEvent::ContentBlockDelta { index, delta } => match delta {
                anthropic::ContentDelta::TextDelta { text } if !text.is_empty() => {
                    parts.push(gemini::Part::text(text));
                }
                anthropic::ContentDelta::ThinkingDelta { thinking } if !thinking.is_empty() => {
                    parts.push(thought_part(Some(&thinking), None));
                }
                anthropic::ContentDelta::SignatureDelta { signature } if !signature.is_empty() => {
                    parts.push(thought_part(
                        None,
                        Some(ClaudeSignature::Thinking(signature)),
                    ));
                }
                anthropic::ContentDelta::InputJsonDelta { partial_json } => {
                    if let Some(call) = self.tool_uses.get_mut(&index) {
                        call.json.push_str(&partial_json);
                    }
                }
                _ => {}
            },
            anthropic::StreamEvent::ContentBlockStop { index } => {
                if let Some(call) = self.tool_uses.remove(&index) {
                    let input = if call.json.trim().is_empty() {
                        Value::Object(Map::new())
                    } else {
                        serde_json::from_str(&call.json)
                            .map_err(|e| TranslateError::upstream_json("tool_use input", e))?
                    };
                    parts.push(call_part(&call.id, &call.name, &input));
                }
            }
            anthropic::StreamEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                self.output_tokens = usage.output_tokens;
                if let Some(input) = usage.input_tokens {
                    self.input_tokens = input;
                }
                if usage.cache_read_input_tokens.is_some() {
                    self.cache_read = usage.cache_read_input_tokens;
                }
                if usage.cache_creation_input_tokens.is_some() {
                    self.cache_creation = usage.cache_creation_input_tokens;
                }
            }
            anthropic::StreamEvent::MessageStop => self.flush(out),
            // `error` events never get here: `parse_stream_event` turns them into errors.
            anthropic::StreamEvent::Ping
            | anthropic::StreamEvent::Error { .. }
            | anthropic::StreamEvent::Other(_) => {}
        }
        if !parts.is_empty() {
            out.push(self.event(parts, None, None));
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        // The closing event went out at `message_stop`; a stream without one was cut.
        if !self.done {
            return Err(TranslateError::InvalidUpstreamJson {
                what: "anthropic stream",
                reason: "the stream ended before message_stop".into(),
            });
        }
        Ok(())
    }
}

// ===== Count tokens =====

/// Translates an Anthropic `count_tokens` request into a Gemini `countTokens` request with
/// a whole `generateContentRequest` (so that the system prompt and tools are counted),
/// returning the model name with it. The nested request names its model itself, as
/// `models/{req.model}`: a caller that routes to another model name sets it on `req` first.
pub fn anthropic_count_tokens_to_gemini(
    req: &anthropic::CountTokensRequest,
    opts: &TranslateOptions,
) -> Result<(String, gemini::CountTokensRequest), TranslateError> {
    let messages = anthropic::MessagesRequest {
        model: req.model.clone(),
        max_tokens: DEFAULT_MAX_TOKENS,
        messages: req.messages.clone(),
        system: req.system.clone(),
        tools: req.tools.clone(),
        tool_choice: req.tool_choice.clone(),
        stop_sequences: None,
        temperature: None,
        top_p: None,
        top_k: None,
        stream: None,
        thinking: req.thinking.clone(),
        metadata: None,
        extra: Map::new(),
    };
    let (model, mut generate) = anthropic_request_to_gemini(&messages, opts)?;
    // Sampling settings do not change a count; the nested request must name its model.
    generate.generation_config = None;
    let qualified = if model.starts_with("models/") {
        model.clone()
    } else {
        format!("models/{model}")
    };
    generate
        .extra
        .insert("model".into(), Value::String(qualified));
    let count = gemini::CountTokensRequest {
        contents: None,
        generate_content_request: Some(Box::new(generate)),
        extra: Map::new(),
    };
    Ok((model, count))
}

/// Gemini's `totalTokens` as Anthropic's `input_tokens`.
pub fn gemini_count_tokens_response_to_anthropic(
    resp: &gemini::CountTokensResponse,
) -> anthropic::CountTokensResponse {
    anthropic::CountTokensResponse {
        input_tokens: resp.total_tokens,
        extra: Map::new(),
    }
}

/// Translates a Gemini `countTokens` request (plain `contents`, or a whole
/// `generateContentRequest`) for `model` into an Anthropic `count_tokens` request.
pub fn gemini_count_tokens_to_anthropic(
    model: &str,
    req: &gemini::CountTokensRequest,
    opts: &TranslateOptions,
) -> Result<anthropic::CountTokensRequest, TranslateError> {
    let generate = match (&req.generate_content_request, &req.contents) {
        (Some(generate), _) => generate.as_ref().clone(),
        (None, contents) => gemini::GenerateContentRequest {
            contents: contents.clone().unwrap_or_default(),
            ..Default::default()
        },
    };
    let messages = gemini_request_to_anthropic(model, &generate, opts)?;
    Ok(anthropic::CountTokensRequest {
        model: messages.model,
        messages: messages.messages,
        system: messages.system,
        tools: messages.tools,
        tool_choice: messages.tool_choice,
        thinking: messages.thinking,
        extra: Map::new(),
    })
}

/// Anthropic's `input_tokens` as Gemini's `totalTokens`.
pub fn anthropic_count_tokens_response_to_gemini(
    resp: &anthropic::CountTokensResponse,
) -> gemini::CountTokensResponse {
    gemini::CountTokensResponse {
        total_tokens: resp.input_tokens,
        cached_content_token_count: None,
        extra: Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_signatures_round_trip_through_their_prefix() {
        for slot in [Slot::Own, Slot::Next, Slot::Prev] {
            let encoded = encode_gemini_signature(slot, "CiQBVKhc7vB+vaaq6rA==");
            assert_eq!(
                decode_gemini_signature(&encoded),
                Some((slot, "CiQBVKhc7vB+vaaq6rA=="))
            );
        }
        // Claude's own signatures and empty ones carry nothing for Gemini.
        assert_eq!(decode_gemini_signature("EqQBCgIYAhIM1gbcDa9G"), None);
        assert_eq!(decode_gemini_signature("gemini:"), None);
    }

    #[test]
    fn claude_signatures_stay_base64_and_survive_the_url_safe_alphabet() {
        let thinking = ClaudeSignature::Thinking("Wa+U/jz==".into());
        let encoded = encode_claude_signature(&thinking);
        assert_eq!(encoded, "CLAUDETHWa+U/jz==");
        assert!(
            encoded
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
        );
        assert_eq!(decode_claude_signature(&encoded), Some(thinking));
        assert_eq!(
            decode_claude_signature("CLAUDETHWa-U_jz=="),
            Some(ClaudeSignature::Thinking("Wa+U/jz==".into()))
        );
        assert_eq!(
            decode_claude_signature("CLAUDERTEmwKAhgB"),
            Some(ClaudeSignature::Redacted("EmwKAhgB".into()))
        );
        // A Gemini signature has no marker.
        assert_eq!(decode_claude_signature("CiQBVKhc7vB+vaaq6rA=="), None);
        assert_eq!(CLAUDE_THINKING_MARK.len() % 4, 0);
        assert_eq!(CLAUDE_REDACTED_MARK.len() % 4, 0);
    }

    #[test]
    fn generated_ids_are_stable_and_distinct() {
        let a = generated_tool_id("resp-1\0f\0{}", 0);
        assert_eq!(a, generated_tool_id("resp-1\0f\0{}", 0));
        assert_ne!(a, generated_tool_id("resp-1\0f\0{}", 1));
        assert_ne!(a, generated_tool_id("resp-2\0f\0{}", 0));
        assert!(is_generated_tool_id(&a));
        // Anthropic's pattern for tool ids.
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
    }

    #[test]
    fn thinking_budgets_respect_anthropic_limits() {
        let config = |budget: Option<i64>, level: Option<&str>| gemini::ThinkingConfig {
            thinking_budget: budget,
            thinking_level: level.map(str::to_owned),
            include_thoughts: Some(true),
            ..Default::default()
        };
        let enabled = |budget_tokens| Some(anthropic::ThinkingConfig::Enabled { budget_tokens });
        assert_eq!(
            thinking_to_anthropic(&config(Some(4096), None), 8192),
            enabled(4096)
        );
        assert_eq!(
            thinking_to_anthropic(&config(Some(100), None), 8192),
            enabled(1024)
        );
        assert_eq!(
            thinking_to_anthropic(&config(Some(9000), None), 8192),
            enabled(8191)
        );
        assert_eq!(
            thinking_to_anthropic(&config(Some(-1), None), 16000),
            enabled(8192)
        );
        assert_eq!(thinking_to_anthropic(&config(Some(0), None), 8192), None);
        assert_eq!(thinking_to_anthropic(&config(Some(4096), None), 1024), None);
        assert_eq!(
            thinking_to_anthropic(&config(None, Some("HIGH")), 32000),
            enabled(24576)
        );
        assert_eq!(
            thinking_to_anthropic(&config(None, Some("low")), 32000),
            enabled(1024)
        );
        assert_eq!(
            thinking_to_anthropic(&config(None, Some("minimal")), 32000),
            None
        );
    }
}
