//! OpenAI Chat Completions <-> Gemini generateContent, both directions.
//!
//! OpenAI clients in front of a Gemini provider:
//! [`openai_request_to_gemini`], [`gemini_response_to_openai`], [`GeminiToOpenAiStream`].
//! Gemini clients in front of an OpenAI provider:
//! [`gemini_request_to_openai`], [`openai_response_to_gemini`], [`OpenAiToGeminiStream`].
//!
//! Thought signatures travel the way Google's own OpenAI-compatible endpoint carries them:
//! a signature on a `functionCall` part becomes `extra_content.google.thought_signature` on
//! that tool call; a signature on a text part becomes the same `extra_content` on the
//! message (or stream delta). Both are read back when the history returns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::gemini::{self, ROLE_MODEL, ROLE_USER};
use crate::openai::{self, Role};
use crate::sse::SseEvent;
use crate::translate::{gemini_schema_to_json_schema, parse_data_url, push_gemini_turn};
use crate::{StreamTranslator, TranslateError, TranslateOptions, schema};

/// Thinking budgets for OpenAI's `reasoning_effort` (the mapping Google's OpenAI endpoint
/// documents: low 1K, medium 8K, high 24K tokens; none turns thinking off).
const BUDGET_LOW: i64 = 1024;
const BUDGET_MEDIUM: i64 = 8192;
const BUDGET_HIGH: i64 = 24576;

/// The key of the message-level `extra_content` (kept in the message's `extra` map).
const EXTRA_CONTENT: &str = "extra_content";

// ===== OpenAI request -> Gemini =====

/// Translates an OpenAI chat request into a Gemini generateContent request, returning the
/// requested model name with it (the caller routes on it and builds the URL; `stream`
/// decides between `generateContent` and `streamGenerateContent?alt=sse`).
pub fn openai_request_to_gemini(
    req: &openai::ChatRequest,
    opts: &TranslateOptions,
) -> Result<(String, gemini::GenerateContentRequest), TranslateError> {
    let mut system_parts = Vec::new();
    let mut contents: Vec<gemini::Content> = Vec::new();
    // Tool call id -> function name, from the assistant messages seen so far; a tool
    // message answers the most recent call with its id.
    let mut call_names: HashMap<String, String> = HashMap::new();

    for message in &req.messages {
        match message.role {
            Role::System | Role::Developer => {
                system_parts.extend(text_only_parts(message)?);
            }
            Role::User => push_gemini_turn(&mut contents, ROLE_USER, user_parts(message, opts)?),
            Role::Assistant => push_gemini_turn(
                &mut contents,
                ROLE_MODEL,
                assistant_parts(message, &mut call_names)?,
            ),
            Role::Tool => {
                let id = message.tool_call_id.as_deref().ok_or_else(|| {
                    TranslateError::InvalidRequest("tool message without tool_call_id".into())
                })?;
                let name = match (call_names.get(id), &message.name) {
                    (Some(name), _) | (None, Some(name)) => name.clone(),
                    (None, None) => {
                        return Err(TranslateError::UnknownToolCallId { id: id.to_owned() });
                    }
                };
                let part = function_response_part(Some(id.to_owned()), name, message)?;
                push_gemini_turn(&mut contents, ROLE_USER, vec![part]);
            }
            Role::Function => {
                let name = message.name.clone().ok_or_else(|| {
                    TranslateError::InvalidRequest("function message without name".into())
                })?;
                let part = function_response_part(None, name, message)?;
                push_gemini_turn(&mut contents, ROLE_USER, vec![part]);
            }
        }
    }

    let mut out = gemini::GenerateContentRequest {
        contents,
        ..Default::default()
    };
    if !system_parts.is_empty() {
        out.system_instruction = Some(gemini::Content {
            role: None,
            parts: system_parts,
            extra: Map::new(),
        });
    }
    out.tools = tools_to_gemini(req.tools.as_deref())?;
    out.tool_config = tool_choice_to_gemini(req.tool_choice.as_ref())?;
    out.generation_config = generation_config_to_gemini(req)?;
    Ok((req.model.clone(), out))
}

/// System and developer messages: text only.
fn text_only_parts(message: &openai::ChatMessage) -> Result<Vec<gemini::Part>, TranslateError> {
    let mut parts = Vec::new();
    match &message.content {
        None => {}
        Some(openai::MessageContent::Text(text)) => push_text(&mut parts, text),
        Some(openai::MessageContent::Parts(items)) => {
            for item in items {
                match item {
                    openai::ContentPart::Text { text } => push_text(&mut parts, text),
                    other => return Err(unsupported(message.role, other.kind())),
                }
            }
        }
    }
    Ok(parts)
}

fn push_text(parts: &mut Vec<gemini::Part>, text: &str) {
    // Gemini rejects empty text parts.
    if !text.is_empty() {
        parts.push(gemini::Part::text(text));
    }
}

fn unsupported(role: Role, kind: &str) -> TranslateError {
    TranslateError::UnsupportedContent {
        role: role.as_str().to_owned(),
        kind: kind.to_owned(),
    }
}

fn user_parts(
    message: &openai::ChatMessage,
    opts: &TranslateOptions,
) -> Result<Vec<gemini::Part>, TranslateError> {
    let mut parts = Vec::new();
    let items = match &message.content {
        None => return Ok(parts),
        Some(openai::MessageContent::Text(text)) => {
            push_text(&mut parts, text);
            return Ok(parts);
        }
        Some(openai::MessageContent::Parts(items)) => items,
    };
    for item in items {
        match item {
            openai::ContentPart::Text { text } => push_text(&mut parts, text),
            openai::ContentPart::ImageUrl { image_url } => {
                parts.push(image_part(&image_url.url, opts)?);
            }
            openai::ContentPart::InputAudio { input_audio } => {
                parts.push(inline_part(
                    format!("audio/{}", input_audio.format),
                    input_audio.data.clone(),
                ));
            }
            openai::ContentPart::Other(value)
                if value.get("type").and_then(Value::as_str) == Some("file") =>
            {
                // `{"type": "file", "file": {"file_data": "data:application/pdf;base64,..."}}`;
                // a `file_id` refers to OpenAI's file store, which Gemini cannot read.
                let data_url = value
                    .pointer("/file/file_data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| unsupported(message.role, "file (by file_id)"))?;
                let (mime_type, data) = parse_data_url(data_url)?;
                parts.push(inline_part(mime_type.to_owned(), data.to_owned()));
            }
            other => return Err(unsupported(message.role, other.kind())),
        }
    }
    Ok(parts)
}

fn inline_part(mime_type: String, data: String) -> gemini::Part {
    gemini::Part {
        inline_data: Some(gemini::Blob {
            mime_type,
            data,
            extra: Map::new(),
        }),
        ..Default::default()
    }
}

fn image_part(url: &str, opts: &TranslateOptions) -> Result<gemini::Part, TranslateError> {
    if url.starts_with("data:") {
        let (mime_type, data) = parse_data_url(url)?;
        return Ok(inline_part(mime_type.to_owned(), data.to_owned()));
    }
    if !opts.allow_image_urls {
        return Err(TranslateError::ImageUrlNotAllowed);
    }
    Ok(gemini::Part {
        file_data: Some(gemini::FileData {
            mime_type: Some(guess_image_mime(url).to_owned()),
            file_uri: url.to_owned(),
            extra: Map::new(),
        }),
        ..Default::default()
    })
}

/// Gemini wants a MIME type with a file URI; the URL's extension is all there is to go on.
fn guess_image_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => "image/jpeg",
    }
}

/// The `extra_content.google.thought_signature` a message or delta carries in its `extra`.
fn message_signature(extra: &Map<String, Value>) -> Option<String> {
    let content: openai::ExtraContent =
        serde_json::from_value(extra.get(EXTRA_CONTENT)?.clone()).ok()?;
    content.google_thought_signature().map(str::to_owned)
}

fn assistant_parts(
    message: &openai::ChatMessage,
    call_names: &mut HashMap<String, String>,
) -> Result<Vec<gemini::Part>, TranslateError> {
    let mut parts = Vec::new();
    let signature = message_signature(&message.extra);

    // Reasoning text is only worth sending back with the signature that vouches for it.
    if signature.is_some()
        && let Some(reasoning) = message.reasoning_content.as_deref()
        && !reasoning.is_empty()
    {
        parts.push(gemini::Part {
            text: Some(reasoning.to_owned()),
            thought: Some(true),
            ..Default::default()
        });
    }
    match &message.content {
        None => {}
        Some(openai::MessageContent::Text(text)) => push_text(&mut parts, text),
        Some(openai::MessageContent::Parts(items)) => {
            for item in items {
                match item {
                    openai::ContentPart::Text { text } => push_text(&mut parts, text),
                    openai::ContentPart::Refusal { refusal } => push_text(&mut parts, refusal),
                    other => return Err(unsupported(message.role, other.kind())),
                }
            }
        }
    }
    if let Some(signature) = signature
        && let Some(last) = parts.last_mut()
    {
        // Gemini puts a text signature on the last part it sends; give it back there.
        last.thought_signature = Some(signature);
    }

    for call in message.tool_calls.iter().flatten() {
        let args = parse_arguments(&call.function)?;
        call_names.insert(call.id.clone(), call.function.name.clone());
        parts.push(gemini::Part {
            function_call: Some(gemini::FunctionCall {
                id: Some(call.id.clone()),
                name: call.function.name.clone(),
                args: Some(args),
                extra: Map::new(),
            }),
            thought_signature: call
                .extra_content
                .as_ref()
                .and_then(|e| e.google_thought_signature())
                .map(str::to_owned),
            ..Default::default()
        });
    }
    Ok(parts)
}

/// Parses a tool call's `arguments` string into the JSON object Gemini wants.
fn parse_arguments(function: &openai::FunctionCall) -> Result<Value, TranslateError> {
    if function.arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(&function.arguments) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(TranslateError::InvalidToolArguments {
            name: function.name.clone(),
            reason: "not a JSON object".into(),
        }),
        Err(err) => Err(TranslateError::InvalidToolArguments {
            name: function.name.clone(),
            reason: err.to_string(),
        }),
    }
}

fn function_response_part(
    id: Option<String>,
    name: String,
    message: &openai::ChatMessage,
) -> Result<gemini::Part, TranslateError> {
    let text = match &message.content {
        None => String::new(),
        Some(openai::MessageContent::Text(text)) => text.clone(),
        Some(openai::MessageContent::Parts(items)) => {
            let mut text = String::new();
            for item in items {
                match item {
                    openai::ContentPart::Text { text: t } => text.push_str(t),
                    other => return Err(unsupported(message.role, other.kind())),
                }
            }
            text
        }
    };
    Ok(gemini::Part {
        function_response: Some(gemini::FunctionResponse {
            id,
            name,
            response: tool_content_to_response(&text),
            extra: Map::new(),
        }),
        ..Default::default()
    })
}

/// A tool result as Gemini's `response` object: a JSON object is passed as is, anything
/// else is wrapped as `{"result": <text>}`.
fn tool_content_to_response(text: &str) -> Value {
    if let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(text) {
        return value;
    }
    let mut wrapped = Map::new();
    wrapped.insert("result".into(), Value::String(text.to_owned()));
    Value::Object(wrapped)
}

fn tools_to_gemini(
    tools: Option<&[openai::Tool]>,
) -> Result<Option<Vec<gemini::Tool>>, TranslateError> {
    let Some(tools) = tools else {
        return Ok(None);
    };
    let mut declarations = Vec::with_capacity(tools.len());
    for tool in tools {
        let openai::Tool::Function { function } = tool else {
            let kind = match tool {
                openai::Tool::Other(value) => value.get("type").and_then(Value::as_str),
                openai::Tool::Function { .. } => None,
            };
            return Err(TranslateError::UnsupportedValue {
                field: "tools[].type",
                value: kind.unwrap_or("unknown").to_owned(),
            });
        };
        let parameters = match &function.parameters {
            None => None,
            Some(parameters) => {
                let reduced = schema::reduce_for_gemini(parameters).map_err(|err| {
                    TranslateError::InvalidSchema {
                        location: format!("parameters of tool `{}`", function.name),
                        reason: err.to_string(),
                    }
                })?;
                // Gemini rejects an object schema without properties; a tool without
                // arguments has no `parameters` at all.
                let has_properties = reduced
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|p| !p.is_empty());
                let is_object = reduced
                    .get("type")
                    .and_then(Value::as_str)
                    .is_none_or(|t| t.eq_ignore_ascii_case("object"));
                (has_properties || !is_object).then_some(reduced)
            }
        };
        declarations.push(gemini::FunctionDeclaration {
            name: function.name.clone(),
            description: function.description.clone(),
            parameters,
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

fn tool_choice_to_gemini(
    choice: Option<&openai::ToolChoice>,
) -> Result<Option<gemini::ToolConfig>, TranslateError> {
    let (mode, allowed) = match choice {
        None => return Ok(None),
        Some(openai::ToolChoice::Mode(openai::ToolChoiceMode::None)) => {
            (gemini::FunctionCallingMode::None, None)
        }
        Some(openai::ToolChoice::Mode(openai::ToolChoiceMode::Auto)) => {
            (gemini::FunctionCallingMode::Auto, None)
        }
        Some(openai::ToolChoice::Mode(openai::ToolChoiceMode::Required)) => {
            (gemini::FunctionCallingMode::Any, None)
        }
        Some(openai::ToolChoice::Function(named)) => (
            gemini::FunctionCallingMode::Any,
            Some(vec![named.function.name.clone()]),
        ),
        Some(openai::ToolChoice::Other(value)) => {
            return Err(TranslateError::UnsupportedValue {
                field: "tool_choice",
                value: value.to_string(),
            });
        }
    };
    Ok(Some(gemini::ToolConfig {
        function_calling_config: Some(gemini::FunctionCallingConfig {
            mode: Some(mode),
            allowed_function_names: allowed,
            extra: Map::new(),
        }),
        extra: Map::new(),
    }))
}

fn generation_config_to_gemini(
    req: &openai::ChatRequest,
) -> Result<Option<gemini::GenerationConfig>, TranslateError> {
    let mut config = gemini::GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        max_output_tokens: req.max_completion_tokens.or(req.max_tokens),
        stop_sequences: req.stop.as_ref().map(openai::Stop::to_vec),
        candidate_count: req.n,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        ..Default::default()
    };
    match &req.response_format {
        None | Some(openai::ResponseFormat::Text) => {}
        Some(openai::ResponseFormat::JsonObject) => {
            config.response_mime_type = Some("application/json".into());
        }
        Some(openai::ResponseFormat::JsonSchema { json_schema }) => {
            config.response_mime_type = Some("application/json".into());
            if let Some(schema) = &json_schema.schema {
                let reduced = schema::reduce_for_gemini(schema).map_err(|err| {
                    TranslateError::InvalidSchema {
                        location: "response_format.json_schema".into(),
                        reason: err.to_string(),
                    }
                })?;
                config.response_schema = Some(reduced);
            }
        }
        Some(openai::ResponseFormat::Other(value)) => {
            return Err(TranslateError::UnsupportedValue {
                field: "response_format",
                value: value.to_string(),
            });
        }
    }
    if let Some(effort) = &req.reasoning_effort {
        let budget = match effort.as_str() {
            "none" | "minimal" => 0,
            "low" => BUDGET_LOW,
            "medium" => BUDGET_MEDIUM,
            "high" => BUDGET_HIGH,
            other => {
                return Err(TranslateError::UnsupportedValue {
                    field: "reasoning_effort",
                    value: other.to_owned(),
                });
            }
        };
        config.thinking_config = Some(gemini::ThinkingConfig {
            thinking_budget: Some(budget),
            include_thoughts: (budget > 0).then_some(true),
            ..Default::default()
        });
    }
    if config == gemini::GenerationConfig::default() {
        return Ok(None);
    }
    Ok(Some(config))
}

// ===== Gemini response -> OpenAI =====

/// What one candidate's parts (or one stream event's) say, in OpenAI's terms.
#[derive(Debug, Default)]
struct PartsSummary {
    text: Option<String>,
    reasoning: Option<String>,
    tool_calls: Vec<openai::ToolCall>,
    /// A signature on a text or thought part (the last one wins).
    signature: Option<String>,
}

/// Reads parts in order. Tool calls without an id get `call_<n>` from `next_call`, which
/// counts on across a response or stream so ids never repeat within it.
fn summarize_parts(parts: &[gemini::Part], next_call: &mut u64) -> PartsSummary {
    let mut summary = PartsSummary::default();
    for part in parts {
        if let Some(call) = &part.function_call {
            let id = call.id.clone().unwrap_or_else(|| {
                let id = format!("call_{next_call}");
                *next_call += 1;
                id
            });
            let arguments = call
                .args
                .as_ref()
                .map_or_else(|| "{}".to_owned(), Value::to_string);
            summary.tool_calls.push(openai::ToolCall {
                id,
                kind: openai::FunctionType::Function,
                function: openai::FunctionCall {
                    name: call.name.clone(),
                    arguments,
                },
                extra_content: part
                    .thought_signature
                    .as_ref()
                    .map(openai::ExtraContent::thought_signature),
                extra: Map::new(),
            });
            continue;
        }
        if let Some(signature) = &part.thought_signature {
            summary.signature = Some(signature.clone());
        }
        if let Some(text) = &part.text {
            let target = if part.is_thought() {
                &mut summary.reasoning
            } else {
                &mut summary.text
            };
            target.get_or_insert_with(String::new).push_str(text);
        } else if let Some(code) = &part.executable_code {
            // Code execution output has no OpenAI field; show it as the model's text.
            let language = code
                .get("language")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let source = code.get("code").and_then(Value::as_str).unwrap_or_default();
            let text = summary.text.get_or_insert_with(String::new);
            text.push_str(&format!("\n```{language}\n{source}\n```\n"));
        } else if let Some(result) = &part.code_execution_result {
            let output = result
                .get("output")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let text = summary.text.get_or_insert_with(String::new);
            text.push_str(&format!("\n```\n{output}\n```\n"));
        }
    }
    summary
}

fn finish_reason_to_openai(
    reason: Option<&gemini::FinishReason>,
    has_calls: bool,
) -> openai::FinishReason {
    use gemini::FinishReason as G;
    match reason {
        Some(G::MaxTokens) => openai::FinishReason::Length,
        Some(
            G::Safety
            | G::Recitation
            | G::Blocklist
            | G::ProhibitedContent
            | G::Spii
            | G::ImageSafety,
        ) => openai::FinishReason::ContentFilter,
        _ if has_calls => openai::FinishReason::ToolCalls,
        _ => openai::FinishReason::Stop,
    }
}

/// Gemini counts thoughts apart from the answer; OpenAI counts reasoning tokens inside
/// `completion_tokens` and details them.
fn usage_to_openai(usage: &gemini::UsageMetadata) -> openai::Usage {
    let prompt = usage.prompt_token_count.unwrap_or_default();
    let thoughts = usage.thoughts_token_count.unwrap_or_default();
    let completion = usage.candidates_token_count.unwrap_or_default() + thoughts;
    openai::Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: usage.total_token_count.unwrap_or(prompt + completion),
        prompt_tokens_details: usage.cached_content_token_count.map(|cached| {
            openai::PromptTokensDetails {
                cached_tokens: Some(cached),
                extra: Map::new(),
            }
        }),
        completion_tokens_details: usage.thoughts_token_count.map(|reasoning| {
            openai::CompletionTokensDetails {
                reasoning_tokens: Some(reasoning),
                extra: Map::new(),
            }
        }),
        extra: Map::new(),
    }
}

fn signature_extra(signature: Option<String>) -> Map<String, Value> {
    let mut extra = Map::new();
    if let Some(signature) = signature {
        extra.insert(
            EXTRA_CONTENT.into(),
            to_value(&openai::ExtraContent::thought_signature(signature)),
        );
    }
    extra
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("protocol types serialize: string keys only")
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

/// Whether Gemini blocked the prompt (no candidates, `promptFeedback.blockReason` set).
fn prompt_blocked(resp: &gemini::GenerateContentResponse) -> bool {
    resp.candidates.is_empty()
        && resp
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.get("blockReason").is_some())
}

/// Translates a Gemini answer into an OpenAI chat completion for the client that asked
/// for `model`.
pub fn gemini_response_to_openai(
    resp: &gemini::GenerateContentResponse,
    model: &str,
) -> openai::ChatResponse {
    let mut next_call = 0;
    let mut choices = Vec::with_capacity(resp.candidates.len().max(1));
    for (position, candidate) in resp.candidates.iter().enumerate() {
        let parts = candidate
            .content
            .as_ref()
            .map(|c| c.parts.as_slice())
            .unwrap_or_default();
        let summary = summarize_parts(parts, &mut next_call);
        let has_calls = !summary.tool_calls.is_empty();
        choices.push(openai::Choice {
            index: candidate.index.unwrap_or(position as u32),
            message: openai::ResponseMessage {
                role: Role::Assistant,
                // An empty text part next to calls (Gemini sends one to carry a
                // signature) is no content; without calls, "" is kept for clients that
                // expect a string.
                content: summary.text.filter(|t| !(has_calls && t.is_empty())),
                reasoning_content: summary.reasoning,
                tool_calls: has_calls.then_some(summary.tool_calls),
                refusal: None,
                extra: signature_extra(summary.signature),
            },
            finish_reason: Some(finish_reason_to_openai(
                candidate.finish_reason.as_ref(),
                has_calls,
            )),
            logprobs: None,
            extra: Map::new(),
        });
    }
    if prompt_blocked(resp) {
        choices.push(openai::Choice {
            index: 0,
            message: openai::ResponseMessage {
                role: Role::Assistant,
                content: None,
                reasoning_content: None,
                tool_calls: None,
                refusal: None,
                extra: Map::new(),
            },
            finish_reason: Some(openai::FinishReason::ContentFilter),
            logprobs: None,
            extra: Map::new(),
        });
    }
    openai::ChatResponse {
        id: completion_id(resp.response_id.as_deref()),
        object: "chat.completion".into(),
        created: unix_now(),
        model: model.to_owned(),
        choices,
        usage: resp.usage_metadata.as_ref().map(usage_to_openai),
        system_fingerprint: None,
        service_tier: None,
        extra: Map::new(),
    }
}

fn completion_id(response_id: Option<&str>) -> String {
    match response_id {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{}", unix_now()),
    }
}

/// Parses one upstream stream event, turning an `{"error": ...}` event into
/// [`TranslateError::Upstream`].
fn parse_stream_event<T: serde::de::DeserializeOwned>(
    data: &str,
    what: &'static str,
) -> Result<T, TranslateError> {
    if let Some(parsed) = super::parse_unless_error(data, what) {
        return parsed;
    }
    let value: Value =
        serde_json::from_str(data).map_err(|e| TranslateError::upstream_json(what, e))?;
    if let Some(error) = value.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_owned();
        let status = match (error.get("status"), error.get("code"), error.get("type")) {
            (Some(Value::String(status)), _, _) => Some(status.clone()),
            (_, Some(Value::String(code)), _) | (_, _, Some(Value::String(code))) => {
                Some(code.clone())
            }
            (_, Some(code @ Value::Number(_)), _) => Some(code.to_string()),
            _ => None,
        };
        return Err(TranslateError::Upstream { status, message });
    }
    serde_json::from_value(value).map_err(|e| TranslateError::upstream_json(what, e))
}

/// Per-choice state of a [`GeminiToOpenAiStream`].
#[derive(Debug, Default)]
struct ChoiceState {
    started: bool,
    next_tool_index: u32,
    has_calls: bool,
}

/// Gemini `streamGenerateContent?alt=sse` events -> OpenAI `chat.completion.chunk`s.
///
/// The first chunk of each choice carries `role: assistant`; text and thought parts become
/// `content` and `reasoning_content` deltas; each `functionCall` (Gemini sends whole calls)
/// becomes one tool call delta with its own index, name and full arguments; a
/// `finishReason` becomes a closing chunk. Gemini repeats a growing `usageMetadata` on its
/// events; the last one is sent as OpenAI's usage chunk (empty `choices`) before `[DONE]`
/// when the client asked for `stream_options.include_usage`.
#[derive(Debug)]
pub struct GeminiToOpenAiStream {
    model: String,
    include_usage: bool,
    id: Option<String>,
    created: u64,
    next_call: u64,
    choices: BTreeMap<u32, ChoiceState>,
    usage: Option<openai::Usage>,
}

// === impl GeminiToOpenAiStream ===

impl GeminiToOpenAiStream {
    /// A translator answering as `model`; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(model: impl Into<String>, include_usage: bool) -> Self {
        GeminiToOpenAiStream {
            model: model.into(),
            include_usage,
            id: None,
            created: unix_now(),
            next_call: 0,
            choices: BTreeMap::new(),
            usage: None,
        }
    }

    fn chunk(&self, choices: Vec<openai::ChunkChoice>, usage: Option<openai::Usage>) -> SseEvent {
        let chunk = openai::ChatChunk {
            id: self.id.clone().unwrap_or_else(|| completion_id(None)),
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

    fn choice(
        index: u32,
        delta: openai::Delta,
        finish: Option<openai::FinishReason>,
    ) -> openai::ChunkChoice {
        openai::ChunkChoice {
            index,
            delta,
            finish_reason: finish,
            logprobs: None,
            extra: Map::new(),
        }
    }
}

impl StreamTranslator for GeminiToOpenAiStream {
    fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), TranslateError> {
        if event.data.trim().is_empty() {
            return Ok(());
        }
        let resp: gemini::GenerateContentResponse =
            parse_stream_event(&event.data, "gemini stream event")?;
        if self.id.is_none() {
            self.id = Some(completion_id(resp.response_id.as_deref()));
        }
        if let Some(usage) = &resp.usage_metadata {
            self.usage = Some(usage_to_openai(usage));
        }

        for (position, candidate) in resp.candidates.iter().enumerate() {
            let index = candidate.index.unwrap_or(position as u32);
            let parts = candidate
                .content
                .as_ref()
                .map(|c| c.parts.as_slice())
                .unwrap_or_default();
            let summary = summarize_parts(parts, &mut self.next_call);
            let state = self.choices.entry(index).or_default();

            let mut delta = openai::Delta {
                role: (!state.started).then_some(Role::Assistant),
                content: summary.text.filter(|t| !t.is_empty()),
                reasoning_content: summary.reasoning.filter(|t| !t.is_empty()),
                extra: signature_extra(summary.signature),
                ..Default::default()
            };
            if !summary.tool_calls.is_empty() {
                state.has_calls = true;
                let deltas = summary
                    .tool_calls
                    .into_iter()
                    .map(|call| {
                        let tool_index = state.next_tool_index;
                        state.next_tool_index += 1;
                        openai::ToolCallDelta {
                            index: tool_index,
                            id: Some(call.id),
                            kind: Some(openai::FunctionType::Function),
                            function: Some(openai::FunctionCallDelta {
                                name: Some(call.function.name),
                                arguments: Some(call.function.arguments),
                            }),
                            extra_content: call.extra_content,
                            extra: Map::new(),
                        }
                    })
                    .collect();
                delta.tool_calls = Some(deltas);
            }
            let has_news = delta.content.is_some()
                || delta.reasoning_content.is_some()
                || delta.tool_calls.is_some()
                || !delta.extra.is_empty();
            let has_calls = state.has_calls;
            if has_news || !state.started {
                state.started = true;
                out.push(self.chunk(vec![Self::choice(index, delta, None)], None));
            }
            if let Some(reason) = &candidate.finish_reason {
                let finish = finish_reason_to_openai(Some(reason), has_calls);
                out.push(self.chunk(
                    vec![Self::choice(index, openai::Delta::default(), Some(finish))],
                    None,
                ));
            }
        }

        if prompt_blocked(&resp) {
            let delta = openai::Delta {
                role: Some(Role::Assistant),
                ..Default::default()
            };
            self.choices.entry(0).or_default().started = true;
            out.push(self.chunk(
                vec![Self::choice(
                    0,
                    delta,
                    Some(openai::FinishReason::ContentFilter),
                )],
                None,
            ));
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        if self.include_usage
            && let Some(usage) = self.usage.take()
        {
            out.push(self.chunk(Vec::new(), Some(usage)));
        }
        out.push(SseEvent::data("[DONE]"));
        Ok(())
    }
}

// ===== Gemini request -> OpenAI =====

/// Translates a Gemini generateContent request for `model` into an OpenAI chat request.
///
/// `stream` is left unset: the caller knows whether the client called
/// `streamGenerateContent`, and should then also set `stream_options.include_usage` so
/// that the usage reaches [`OpenAiToGeminiStream`].
pub fn gemini_request_to_openai(
    model: &str,
    req: &gemini::GenerateContentRequest,
    opts: &TranslateOptions,
) -> Result<openai::ChatRequest, TranslateError> {
    let mut messages = Vec::new();
    if let Some(system) = &req.system_instruction {
        let mut texts = Vec::new();
        for part in &system.parts {
            match &part.text {
                Some(text) => texts.push(text.as_str()),
                None => return Err(gemini_unsupported("systemInstruction", part)),
            }
        }
        if !texts.is_empty() {
            messages.push(openai::ChatMessage::text(Role::System, texts.join("\n")));
        }
    }

    // Calls without an id get `call_<n>`; a later functionResponse without an id answers
    // the oldest unanswered call of its name.
    let mut next_call = 0u64;
    let mut pending: HashMap<String, VecDeque<String>> = HashMap::new();
    for content in &req.contents {
        if content.role.as_deref() == Some(ROLE_MODEL) {
            if let Some(message) = model_turn_to_openai(content, &mut next_call, &mut pending)? {
                messages.push(message);
            }
        } else {
            user_turn_to_openai(content, opts, &mut pending, &mut messages)?;
        }
    }

    let mut out = openai::ChatRequest {
        model: model.to_owned(),
        messages,
        ..Default::default()
    };
    if let Some(tools) = &req.tools {
        out.tools = tools_to_openai(tools)?;
    }
    out.tool_choice = req
        .tool_config
        .as_ref()
        .and_then(|c| c.function_calling_config.as_ref())
        .and_then(tool_config_to_openai);
    if let Some(config) = &req.generation_config {
        apply_generation_config(config, &mut out);
    }
    Ok(out)
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
    TranslateError::UnsupportedContent {
        role: role.to_owned(),
        kind: kind.to_owned(),
    }
}

fn model_turn_to_openai(
    content: &gemini::Content,
    next_call: &mut u64,
    pending: &mut HashMap<String, VecDeque<String>>,
) -> Result<Option<openai::ChatMessage>, TranslateError> {
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for part in &content.parts {
        if let Some(call) = &part.function_call {
            let id = call.id.clone().unwrap_or_else(|| {
                let id = format!("call_{next_call}");
                *next_call += 1;
                id
            });
            pending
                .entry(call.name.clone())
                .or_default()
                .push_back(id.clone());
            calls.push(openai::ToolCall {
                id,
                kind: openai::FunctionType::Function,
                function: openai::FunctionCall {
                    name: call.name.clone(),
                    arguments: call
                        .args
                        .as_ref()
                        .map_or_else(|| "{}".to_owned(), Value::to_string),
                },
                extra_content: part
                    .thought_signature
                    .as_ref()
                    .map(openai::ExtraContent::thought_signature),
                extra: Map::new(),
            });
        } else if let Some(t) = &part.text {
            // Thought summaries are the model's notes to itself; OpenAI has no input slot.
            if !part.is_thought() {
                text.get_or_insert_with(String::new).push_str(t);
            }
        } else if part.thought_signature.is_none() {
            return Err(gemini_unsupported(ROLE_MODEL, part));
        }
    }
    if text.is_none() && calls.is_empty() {
        return Ok(None);
    }
    let mut message = openai::ChatMessage::text(Role::Assistant, String::new());
    message.content = text.map(openai::MessageContent::Text);
    message.tool_calls = (!calls.is_empty()).then_some(calls);
    Ok(Some(message))
}

fn user_turn_to_openai(
    content: &gemini::Content,
    opts: &TranslateOptions,
    pending: &mut HashMap<String, VecDeque<String>>,
    messages: &mut Vec<openai::ChatMessage>,
) -> Result<(), TranslateError> {
    let mut items = Vec::new();
    // Tool results first: OpenAI wants them right after the assistant's tool calls.
    for part in &content.parts {
        if let Some(response) = &part.function_response {
            let queue = pending.entry(response.name.clone()).or_default();
            let id = match &response.id {
                Some(id) => {
                    queue.retain(|pending_id| pending_id != id);
                    id.clone()
                }
                None => queue.pop_front().ok_or_else(|| {
                    TranslateError::InvalidRequest(format!(
                        "functionResponse `{}` answers no earlier functionCall of that name",
                        response.name
                    ))
                })?,
            };
            let mut message =
                openai::ChatMessage::text(Role::Tool, response_to_tool_content(&response.response));
            message.tool_call_id = Some(id);
            messages.push(message);
        } else if let Some(text) = &part.text {
            items.push(openai::ContentPart::Text { text: text.clone() });
        } else if let Some(blob) = &part.inline_data {
            items.push(blob_to_openai(blob)?);
        } else if let Some(file) = &part.file_data {
            let is_image = file
                .mime_type
                .as_deref()
                .is_none_or(|m| m.starts_with("image/"));
            let is_web =
                file.file_uri.starts_with("https://") || file.file_uri.starts_with("http://");
            if !(is_image && is_web) {
                return Err(gemini_unsupported(ROLE_USER, part));
            }
            if !opts.allow_image_urls {
                return Err(TranslateError::ImageUrlNotAllowed);
            }
            items.push(openai::ContentPart::ImageUrl {
                image_url: openai::ImageUrl {
                    url: file.file_uri.clone(),
                    detail: None,
                    extra: Map::new(),
                },
            });
        } else {
            return Err(gemini_unsupported(ROLE_USER, part));
        }
    }
    if items.is_empty() {
        return Ok(());
    }
    let content = match items.as_slice() {
        [openai::ContentPart::Text { text }] => openai::MessageContent::Text(text.clone()),
        _ => openai::MessageContent::Parts(items),
    };
    let mut message = openai::ChatMessage::text(Role::User, String::new());
    message.content = Some(content);
    messages.push(message);
    Ok(())
}

/// The inverse of [`tool_content_to_response`]: `{"result": x}` gives `x` back.
fn response_to_tool_content(response: &Value) -> String {
    if let Value::Object(object) = response
        && object.len() == 1
        && let Some(result) = object.get("result")
    {
        return match result {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
    }
    response.to_string()
}

fn blob_to_openai(blob: &gemini::Blob) -> Result<openai::ContentPart, TranslateError> {
    let mime = blob.mime_type.as_str();
    if mime.starts_with("image/") {
        return Ok(openai::ContentPart::ImageUrl {
            image_url: openai::ImageUrl {
                url: format!("data:{mime};base64,{}", blob.data),
                detail: None,
                extra: Map::new(),
            },
        });
    }
    let audio_format = match mime {
        "audio/wav" | "audio/x-wav" | "audio/wave" => Some("wav"),
        "audio/mp3" | "audio/mpeg" => Some("mp3"),
        _ => None,
    };
    if let Some(format) = audio_format {
        return Ok(openai::ContentPart::InputAudio {
            input_audio: openai::InputAudio {
                data: blob.data.clone(),
                format: format.to_owned(),
                extra: Map::new(),
            },
        });
    }
    if mime == "application/pdf" {
        let mut file = Map::new();
        file.insert(
            "file_data".into(),
            Value::String(format!("data:{mime};base64,{}", blob.data)),
        );
        let mut part = Map::new();
        part.insert("type".into(), Value::String("file".into()));
        part.insert("file".into(), Value::Object(file));
        return Ok(openai::ContentPart::Other(Value::Object(part)));
    }
    Err(TranslateError::UnsupportedContent {
        role: ROLE_USER.to_owned(),
        kind: format!("inlineData ({mime})"),
    })
}

fn tools_to_openai(tools: &[gemini::Tool]) -> Result<Option<Vec<openai::Tool>>, TranslateError> {
    let out: Vec<openai::Tool> = super::gemini_functions_as_json_schema(tools)?
        .into_iter()
        .map(|(declaration, parameters)| openai::Tool::Function {
            function: openai::FunctionDefinition {
                name: declaration.name.clone(),
                description: declaration.description.clone(),
                parameters: Some(parameters),
                strict: None,
                extra: Map::new(),
            },
        })
        .collect();
    Ok((!out.is_empty()).then_some(out))
}

fn tool_config_to_openai(config: &gemini::FunctionCallingConfig) -> Option<openai::ToolChoice> {
    use openai::{ToolChoice, ToolChoiceMode};
    let mode = match config.mode.as_ref()? {
        gemini::FunctionCallingMode::None => ToolChoiceMode::None,
        gemini::FunctionCallingMode::Any => {
            // One allowed name is a named choice; several cannot be said in Chat
            // Completions short of `allowed_tools`, so they become `required`.
            if let Some([name]) = config.allowed_function_names.as_deref() {
                return Some(ToolChoice::Function(openai::NamedToolChoice {
                    kind: openai::FunctionType::Function,
                    function: openai::FunctionName { name: name.clone() },
                }));
            }
            ToolChoiceMode::Required
        }
        _ => ToolChoiceMode::Auto,
    };
    Some(ToolChoice::Mode(mode))
}

fn apply_generation_config(config: &gemini::GenerationConfig, out: &mut openai::ChatRequest) {
    out.temperature = config.temperature;
    out.top_p = config.top_p;
    // OpenAI's reasoning models refuse `max_tokens`; `max_completion_tokens` is the
    // current name.
    out.max_completion_tokens = config.max_output_tokens;
    out.stop = config.stop_sequences.clone().map(openai::Stop::Many);
    out.n = config.candidate_count;
    out.seed = config.seed;
    out.presence_penalty = config.presence_penalty;
    out.frequency_penalty = config.frequency_penalty;
    if config.response_mime_type.as_deref() == Some("application/json") {
        let schema = config.response_json_schema.clone().or_else(|| {
            config
                .response_schema
                .as_ref()
                .map(gemini_schema_to_json_schema)
        });
        out.response_format = Some(match schema {
            Some(schema) => openai::ResponseFormat::JsonSchema {
                json_schema: openai::JsonSchemaFormat {
                    name: "response".into(),
                    description: None,
                    schema: Some(schema),
                    strict: None,
                    extra: Map::new(),
                },
            },
            None => openai::ResponseFormat::JsonObject,
        });
    }
    if let Some(thinking) = &config.thinking_config {
        // A budget of 0 (thinking off) or -1 (model decides) sends nothing: non-reasoning
        // OpenAI models refuse `reasoning_effort` altogether.
        out.reasoning_effort = match (thinking.thinking_level.as_deref(), thinking.thinking_budget)
        {
            (Some(level), _) => Some(level.to_ascii_lowercase()),
            (None, Some(budget)) if budget > BUDGET_MEDIUM => Some("high".into()),
            (None, Some(budget)) if budget > BUDGET_LOW => Some("medium".into()),
            (None, Some(budget)) if budget > 0 => Some("low".into()),
            _ => None,
        };
    }
}

// ===== OpenAI response -> Gemini =====

/// Translates an OpenAI chat completion into a Gemini generateContent answer. Fails only
/// when the model produced tool call arguments that are not a JSON object.
pub fn openai_response_to_gemini(
    resp: &openai::ChatResponse,
) -> Result<gemini::GenerateContentResponse, TranslateError> {
    let mut candidates = Vec::with_capacity(resp.choices.len());
    for choice in &resp.choices {
        let message = &choice.message;
        let mut parts = Vec::new();
        if let Some(reasoning) = message
            .reasoning_content
            .as_deref()
            .filter(|r| !r.is_empty())
        {
            parts.push(gemini::Part {
                text: Some(reasoning.to_owned()),
                thought: Some(true),
                ..Default::default()
            });
        }
        let text = message
            .content
            .as_deref()
            .or(message.refusal.as_deref())
            .filter(|t| !t.is_empty());
        if let Some(text) = text {
            parts.push(gemini::Part {
                text: Some(text.to_owned()),
                thought_signature: message_signature(&message.extra),
                ..Default::default()
            });
        }
        for call in message.tool_calls.iter().flatten() {
            parts.push(tool_call_to_part(
                &call.id,
                &call.function.name,
                &call.function.arguments,
                call.extra_content.as_ref(),
            )?);
        }
        let finish = if message.content.is_none() && message.refusal.is_some() {
            Some(gemini::FinishReason::Safety)
        } else {
            choice.finish_reason.as_ref().map(finish_reason_to_gemini)
        };
        candidates.push(gemini::Candidate {
            content: Some(model_content(parts)),
            finish_reason: finish,
            index: Some(choice.index),
            ..Default::default()
        });
    }
    Ok(gemini::GenerateContentResponse {
        candidates,
        usage_metadata: resp.usage.as_ref().map(usage_to_gemini),
        model_version: Some(resp.model.clone()),
        response_id: Some(resp.id.clone()),
        ..Default::default()
    })
}

fn model_content(parts: Vec<gemini::Part>) -> gemini::Content {
    gemini::Content {
        role: Some(ROLE_MODEL.to_owned()),
        parts,
        extra: Map::new(),
    }
}

fn tool_call_to_part(
    id: &str,
    name: &str,
    arguments: &str,
    extra_content: Option<&openai::ExtraContent>,
) -> Result<gemini::Part, TranslateError> {
    let function = openai::FunctionCall {
        name: name.to_owned(),
        arguments: arguments.to_owned(),
    };
    let args = parse_arguments(&function).map_err(|err| TranslateError::InvalidUpstreamJson {
        what: "tool call arguments",
        reason: err.to_string(),
    })?;
    Ok(gemini::Part {
        function_call: Some(gemini::FunctionCall {
            id: (!id.is_empty()).then(|| id.to_owned()),
            name: name.to_owned(),
            args: Some(args),
            extra: Map::new(),
        }),
        thought_signature: extra_content
            .and_then(|e| e.google_thought_signature())
            .map(str::to_owned),
        ..Default::default()
    })
}

fn finish_reason_to_gemini(reason: &openai::FinishReason) -> gemini::FinishReason {
    match reason {
        openai::FinishReason::Length => gemini::FinishReason::MaxTokens,
        openai::FinishReason::ContentFilter => gemini::FinishReason::Safety,
        openai::FinishReason::Stop
        | openai::FinishReason::ToolCalls
        | openai::FinishReason::FunctionCall => gemini::FinishReason::Stop,
        openai::FinishReason::Other(_) => gemini::FinishReason::Other,
    }
}

fn usage_to_gemini(usage: &openai::Usage) -> gemini::UsageMetadata {
    let reasoning = usage
        .completion_tokens_details
        .as_ref()
        .and_then(|d| d.reasoning_tokens)
        .filter(|r| *r > 0);
    gemini::UsageMetadata {
        prompt_token_count: Some(usage.prompt_tokens),
        candidates_token_count: Some(
            usage
                .completion_tokens
                .saturating_sub(reasoning.unwrap_or_default()),
        ),
        total_token_count: Some(usage.total_tokens),
        thoughts_token_count: reasoning,
        cached_content_token_count: usage
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .filter(|c| *c > 0),
        extra: Map::new(),
    }
}

/// A tool call being assembled from its fragments.
#[derive(Debug, Default)]
struct PendingCall {
    id: String,
    name: String,
    arguments: String,
    extra_content: Option<openai::ExtraContent>,
}

/// OpenAI `chat.completion.chunk`s -> Gemini `streamGenerateContent?alt=sse` events.
///
/// Text and reasoning deltas are sent on as they come. Tool call fragments are gathered
/// per choice and index and sent as whole `functionCall` parts when their choice ends
/// (at its `finish_reason`), in the event that carries the `finishReason`; that final
/// event waits for OpenAI's usage chunk so that it also carries `usageMetadata`, and is
/// sent at the latest at `[DONE]` or the end of the stream.
#[derive(Debug, Default)]
pub struct OpenAiToGeminiStream {
    model_version: Option<String>,
    response_id: Option<String>,
    calls: BTreeMap<(u32, u32), PendingCall>,
    finals: BTreeMap<u32, gemini::Candidate>,
    usage: Option<gemini::UsageMetadata>,
    done: bool,
}

// === impl OpenAiToGeminiStream ===

impl OpenAiToGeminiStream {
    /// A translator for one stream.
    pub fn new() -> Self {
        OpenAiToGeminiStream::default()
    }

    fn event(
        &self,
        candidates: Vec<gemini::Candidate>,
        usage: Option<gemini::UsageMetadata>,
    ) -> SseEvent {
        let resp = gemini::GenerateContentResponse {
            candidates,
            usage_metadata: usage,
            model_version: self.model_version.clone(),
            response_id: self.response_id.clone(),
            ..Default::default()
        };
        SseEvent::data(to_json(&resp))
    }

    /// Turns the gathered calls of `choice` into `functionCall` parts, in index order.
    fn take_calls(&mut self, choice: u32) -> Result<Vec<gemini::Part>, TranslateError> {
        let indexes: Vec<(u32, u32)> = self
            .calls
            .range((choice, 0)..=(choice, u32::MAX))
            .map(|(key, _)| *key)
            .collect();
        let mut parts = Vec::with_capacity(indexes.len());
        for key in indexes {
            if let Some(call) = self.calls.remove(&key) {
                parts.push(tool_call_to_part(
                    &call.id,
                    &call.name,
                    &call.arguments,
                    call.extra_content.as_ref(),
                )?);
            }
        }
        Ok(parts)
    }

    /// Sends the final event: closing candidates (and calls of choices that never
    /// finished) with the usage.
    fn flush(&mut self, out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        let unfinished: Vec<u32> = self.calls.keys().map(|(choice, _)| *choice).collect();
        for choice in unfinished {
            let parts = self.take_calls(choice)?;
            if !parts.is_empty() {
                let candidate = self
                    .finals
                    .entry(choice)
                    .or_insert_with(|| gemini::Candidate {
                        index: Some(choice),
                        finish_reason: Some(gemini::FinishReason::Stop),
                        ..Default::default()
                    });
                candidate
                    .content
                    .get_or_insert_with(|| model_content(Vec::new()))
                    .parts
                    .extend(parts);
            }
        }
        let finals: Vec<gemini::Candidate> =
            std::mem::take(&mut self.finals).into_values().collect();
        let usage = self.usage.take();
        if finals.is_empty() && usage.is_none() {
            return Ok(());
        }
        out.push(self.event(finals, usage));
        Ok(())
    }
}

impl StreamTranslator for OpenAiToGeminiStream {
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
            self.done = true;
            return self.flush(out);
        }
        let chunk: openai::ChatChunk = parse_stream_event(data, "openai stream chunk")?;
        self.model_version
            .get_or_insert_with(|| chunk.model.clone());
        self.response_id.get_or_insert_with(|| chunk.id.clone());

        for choice in &chunk.choices {
            let delta = &choice.delta;
            let mut parts = Vec::new();
            if let Some(reasoning) = delta.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
                parts.push(gemini::Part {
                    text: Some(reasoning.to_owned()),
                    thought: Some(true),
                    ..Default::default()
                });
            }
            let text = delta
                .content
                .as_deref()
                .or(delta.refusal.as_deref())
                .filter(|t| !t.is_empty());
            let signature = message_signature(&delta.extra);
            match (text, signature) {
                (Some(text), signature) => parts.push(gemini::Part {
                    text: Some(text.to_owned()),
                    thought_signature: signature,
                    ..Default::default()
                }),
                // A signature alone travels on an empty text part, as Gemini sends it.
                (None, Some(signature)) => parts.push(gemini::Part {
                    text: Some(String::new()),
                    thought_signature: Some(signature),
                    ..Default::default()
                }),
                (None, None) => {}
            }
            for fragment in delta.tool_calls.iter().flatten() {
                let call = self
                    .calls
                    .entry((choice.index, fragment.index))
                    .or_default();
                if let Some(id) = &fragment.id {
                    call.id.clone_from(id);
                }
                if let Some(function) = &fragment.function {
                    if let Some(name) = &function.name {
                        call.name.push_str(name);
                    }
                    if let Some(arguments) = &function.arguments {
                        call.arguments.push_str(arguments);
                    }
                }
                if fragment.extra_content.is_some() {
                    call.extra_content.clone_from(&fragment.extra_content);
                }
            }
            if !parts.is_empty() {
                let candidate = gemini::Candidate {
                    content: Some(model_content(parts)),
                    index: Some(choice.index),
                    ..Default::default()
                };
                out.push(self.event(vec![candidate], None));
            }
            if let Some(reason) = &choice.finish_reason {
                let calls = self.take_calls(choice.index)?;
                let candidate = gemini::Candidate {
                    content: (!calls.is_empty()).then(|| model_content(calls)),
                    finish_reason: Some(finish_reason_to_gemini(reason)),
                    index: Some(choice.index),
                    ..Default::default()
                };
                self.finals.insert(choice.index, candidate);
            }
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage_to_gemini(usage));
            if !self.finals.is_empty() {
                self.flush(out)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        self.done = true;
        self.flush(out)
    }
}

#[cfg(test)]
mod tests;
