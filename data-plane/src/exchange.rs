//! What travels upstream for one attempt, and what comes back to the client: the body in
//! the provider's protocol (passed through, or translated from the client's), and the
//! answer in the client's protocol. The translations themselves live in
//! `fulcrum-protocol`, one module per protocol pair; this module only picks them.

use bytes::Bytes;
use fulcrum_proto::model::Settings;
use fulcrum_protocol::sse::{self, SseDecoder, SseEvent};
use fulcrum_protocol::translate::{anthropic_gemini, anthropic_openai, openai_gemini};
use fulcrum_protocol::{
    StreamTranslator, TranslateError, TranslateOptions, anthropic, gemini, openai,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::failover::{ClientRequest, ProxyError};
use crate::protocol::gemini::{ModelOptions, split_model_suffixes};
use crate::protocol::{Operation, Protocol};

/// The request one attempt sends.
#[derive(Debug)]
pub struct Outbound<'a> {
    pub body: Bytes,
    /// The model the upstream is asked for (Gemini names it in the URL).
    pub model: &'a str,
    /// Whether the upstream is asked for a stream.
    pub stream: bool,
}

fn options(settings: &Settings) -> TranslateOptions {
    TranslateOptions {
        allow_image_urls: settings.allow_image_urls(),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProxyError> {
    serde_json::from_slice(body)
        .map_err(|e| ProxyError::BadRequest(format!("invalid request body: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, ProxyError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ProxyError::BadRequest(format!("cannot encode the upstream request: {e}")))
}

fn translated(e: TranslateError) -> ProxyError {
    ProxyError::Translate(e)
}

/// Builds the upstream request for a provider speaking `to`, asked for `model`.
pub fn outbound<'a>(
    request: &ClientRequest,
    to: Protocol,
    model: &'a str,
    settings: &Settings,
) -> Result<Outbound<'a>, ProxyError> {
    let from = request.protocol;
    let opts = options(settings);
    let stream = request.stream;
    // Gemini's suffixes (`-search`, `-non-thinking`) are ours, never the upstream's.
    let (model, gemini_options) = if to == Protocol::Gemini {
        split_model_suffixes(model)
    } else {
        (model, ModelOptions::default())
    };
    let rewritten = model != request.model;
    let body = match (request.operation, from, to) {
        (Operation::Chat, Protocol::Gemini, Protocol::Gemini) => {
            let mut req: gemini::GenerateContentRequest = parse(&request.body)?;
            apply_gemini_options(&mut req, model, gemini_options, settings);
            encode(&req)?
        }
        (Operation::Chat, Protocol::OpenAi, Protocol::Gemini) => {
            let req: openai::ChatRequest = parse(&request.body)?;
            let (_, mut out) =
                openai_gemini::openai_request_to_gemini(&req, &opts).map_err(translated)?;
            apply_gemini_options(&mut out, model, gemini_options, settings);
            encode(&out)?
        }
        (Operation::Chat, Protocol::Gemini, Protocol::OpenAi) => {
            let req: gemini::GenerateContentRequest = parse(&request.body)?;
            let mut out =
                openai_gemini::gemini_request_to_openai(model, &req, &opts).map_err(translated)?;
            set_openai_stream(&mut out, stream);
            encode(&out)?
        }
        (Operation::Chat, Protocol::Anthropic, Protocol::OpenAi) => {
            let req: anthropic::MessagesRequest = parse(&request.body)?;
            let mut out =
                anthropic_openai::anthropic_request_to_openai(&req, &opts).map_err(translated)?;
            out.model = model.to_string();
            set_openai_stream(&mut out, stream);
            encode(&out)?
        }
        (Operation::Chat, Protocol::OpenAi, Protocol::Anthropic) => {
            let req: openai::ChatRequest = parse(&request.body)?;
            let mut out =
                anthropic_openai::openai_request_to_anthropic(&req, &opts).map_err(translated)?;
            out.model = model.to_string();
            out.stream = stream.then_some(true);
            encode(&out)?
        }
        (Operation::Chat, Protocol::Anthropic, Protocol::Gemini) => {
            let req: anthropic::MessagesRequest = parse(&request.body)?;
            let (_, mut out) =
                anthropic_gemini::anthropic_request_to_gemini(&req, &opts).map_err(translated)?;
            apply_gemini_options(&mut out, model, gemini_options, settings);
            encode(&out)?
        }
        (Operation::Chat, Protocol::Gemini, Protocol::Anthropic) => {
            let req: gemini::GenerateContentRequest = parse(&request.body)?;
            let mut out = anthropic_gemini::gemini_request_to_anthropic(model, &req, &opts)
                .map_err(translated)?;
            out.model = model.to_string();
            out.stream = stream.then_some(true);
            encode(&out)?
        }
        (Operation::CountTokens, Protocol::Anthropic, Protocol::Gemini) => {
            let req: anthropic::CountTokensRequest = parse(&request.body)?;
            let (_, out) = anthropic_gemini::anthropic_count_tokens_to_gemini(&req, &opts)
                .map_err(translated)?;
            encode(&out)?
        }
        (Operation::CountTokens, Protocol::Gemini, Protocol::Anthropic) => {
            let req: gemini::CountTokensRequest = parse(&request.body)?;
            let mut out = anthropic_gemini::gemini_count_tokens_to_anthropic(model, &req, &opts)
                .map_err(translated)?;
            out.model = model.to_string();
            encode(&out)?
        }
        // Same protocol: the body goes as it came, with the route's model where the
        // protocol names the model in the body.
        (_, from, to) if from == to => {
            if rewritten && request.operation.has_body() && to != Protocol::Gemini {
                crate::protocol::openai::with_model(&request.body, model)
                    .map_err(ProxyError::BadRequest)?
            } else {
                request.body.clone()
            }
        }
        (operation, from, to) => {
            return Err(ProxyError::NoCandidate(format!(
                "{} requests from {} clients cannot be sent to a {} provider",
                operation.as_str(),
                from.as_str(),
                to.as_str()
            )));
        }
    };
    Ok(Outbound {
        body,
        model,
        stream,
    })
}

/// Whether an operation from a client of `from` can be served by a provider of `to`.
pub fn can_serve(operation: Operation, from: Protocol, to: Protocol) -> bool {
    match operation {
        Operation::Chat => true,
        // Without a count endpoint on the OpenAI side, the data plane counts itself.
        Operation::CountTokens => true,
        Operation::ListModels | Operation::GetModel => true,
        Operation::Embed
        | Operation::BatchEmbed
        | Operation::Completions
        | Operation::Images
        | Operation::Speech => from == to,
    }
}

fn set_openai_stream(req: &mut openai::ChatRequest, stream: bool) {
    if stream {
        req.stream = Some(true);
        // The usage arrives in a last chunk only when asked for; the other protocols
        // always report it.
        req.stream_options = Some(openai::StreamOptions {
            include_usage: Some(true),
            ..Default::default()
        });
    } else {
        req.stream = None;
        req.stream_options = None;
    }
}

/// The operator's Gemini settings and the model suffix's wishes, applied to a request
/// about to go to a Gemini provider.
fn apply_gemini_options(
    req: &mut gemini::GenerateContentRequest,
    model: &str,
    suffix: ModelOptions,
    settings: &Settings,
) {
    if suffix.search {
        let tools = req.tools.get_or_insert_with(Vec::new);
        if !tools.iter().any(|t| t.google_search.is_some()) {
            tools.push(gemini::Tool {
                google_search: Some(serde_json::json!({})),
                ..Default::default()
            });
        }
    }
    let budget = if suffix.non_thinking {
        Some(0)
    } else {
        settings.thinking_budget(model)
    };
    if let Some(budget) = budget {
        let config = req.generation_config.get_or_insert_with(Default::default);
        let thinking = config.thinking_config.get_or_insert_with(Default::default);
        // The suffix always wins; an operator's per-model budget only fills a gap.
        if suffix.non_thinking || thinking.thinking_budget.is_none() {
            thinking.thinking_budget = Some(i64::from(budget));
        }
        if budget == 0 {
            thinking.include_thoughts = None;
        }
    }
    if req.safety_settings.is_none() && !settings.gemini_safety_settings().is_empty() {
        req.safety_settings = Some(
            settings
                .gemini_safety_settings()
                .iter()
                .map(|s| gemini::SafetySetting {
                    category: s.category.clone(),
                    threshold: s.threshold.clone(),
                    extra: Default::default(),
                })
                .collect(),
        );
    }
}

/// Turns a whole upstream answer of a provider speaking `from` into the client's shape.
pub fn inbound_whole(
    request: &ClientRequest,
    from: Protocol,
    body: &[u8],
) -> Result<Bytes, ProxyError> {
    let to = request.protocol;
    let model = request.model.as_str();
    let upstream =
        |e: serde_json::Error| ProxyError::Translate(TranslateError::upstream_json("answer", e));
    match (request.operation, from, to) {
        (_, from, to) if from == to => Ok(Bytes::copy_from_slice(body)),
        (Operation::Chat, Protocol::Gemini, Protocol::OpenAi) => {
            let resp: gemini::GenerateContentResponse =
                serde_json::from_slice(body).map_err(upstream)?;
            encode(&openai_gemini::gemini_response_to_openai(&resp, model))
        }
        (Operation::Chat, Protocol::OpenAi, Protocol::Gemini) => {
            let resp: openai::ChatResponse = serde_json::from_slice(body).map_err(upstream)?;
            encode(&openai_gemini::openai_response_to_gemini(&resp).map_err(translated)?)
        }
        (Operation::Chat, Protocol::OpenAi, Protocol::Anthropic) => {
            let resp: openai::ChatResponse = serde_json::from_slice(body).map_err(upstream)?;
            encode(&anthropic_openai::openai_response_to_anthropic(&resp).map_err(translated)?)
        }
        (Operation::Chat, Protocol::Anthropic, Protocol::OpenAi) => {
            let resp: anthropic::MessagesResponse =
                serde_json::from_slice(body).map_err(upstream)?;
            encode(&anthropic_openai::anthropic_response_to_openai(&resp))
        }
        (Operation::Chat, Protocol::Gemini, Protocol::Anthropic) => {
            let resp: gemini::GenerateContentResponse =
                serde_json::from_slice(body).map_err(upstream)?;
            encode(&anthropic_gemini::gemini_response_to_anthropic(
                &resp, model,
            ))
        }
        (Operation::Chat, Protocol::Anthropic, Protocol::Gemini) => {
            let resp: anthropic::MessagesResponse =
                serde_json::from_slice(body).map_err(upstream)?;
            encode(&anthropic_gemini::anthropic_response_to_gemini(&resp))
        }
        (Operation::CountTokens, Protocol::Gemini, Protocol::Anthropic) => {
            let resp: gemini::CountTokensResponse =
                serde_json::from_slice(body).map_err(upstream)?;
            encode(&anthropic_gemini::gemini_count_tokens_response_to_anthropic(&resp))
        }
        (Operation::CountTokens, Protocol::Anthropic, Protocol::Gemini) => {
            let resp: anthropic::CountTokensResponse =
                serde_json::from_slice(body).map_err(upstream)?;
            encode(&anthropic_gemini::anthropic_count_tokens_response_to_gemini(&resp))
        }
        (operation, from, to) => Err(ProxyError::NoCandidate(format!(
            "{} answers from a {} provider cannot be given to {} clients",
            operation.as_str(),
            from.as_str(),
            to.as_str()
        ))),
    }
}

/// The translator for a streamed answer of a provider speaking `from`, or `None` when the
/// stream passes through as it is.
pub fn stream_translator(
    request: &ClientRequest,
    from: Protocol,
) -> Option<Box<dyn StreamTranslator>> {
    let model = request.model.clone();
    let include_usage = request.include_usage;
    Some(match (from, request.protocol) {
        (from, to) if from == to => return None,
        (Protocol::Gemini, Protocol::OpenAi) => Box::new(openai_gemini::GeminiToOpenAiStream::new(
            model,
            include_usage,
        )),
        (Protocol::OpenAi, Protocol::Gemini) => {
            Box::new(openai_gemini::OpenAiToGeminiStream::new())
        }
        (Protocol::OpenAi, Protocol::Anthropic) => {
            Box::new(anthropic_openai::OpenAiToAnthropicStream::new())
        }
        (Protocol::Anthropic, Protocol::OpenAi) => Box::new(
            anthropic_openai::AnthropicToOpenAiStream::new(include_usage),
        ),
        (Protocol::Gemini, Protocol::Anthropic) => {
            Box::new(anthropic_gemini::GeminiToAnthropicStream::new(model))
        }
        (Protocol::Anthropic, Protocol::Gemini) => {
            Box::new(anthropic_gemini::AnthropicToGeminiStream::new())
        }
        _ => return None,
    })
}

/// Re-frames a translated stream: upstream bytes in, the client's SSE bytes out.
pub struct StreamReframer {
    decoder: SseDecoder,
    translator: Box<dyn StreamTranslator>,
    events: Vec<SseEvent>,
    out_events: Vec<SseEvent>,
}

impl StreamReframer {
    pub fn new(translator: Box<dyn StreamTranslator>) -> Self {
        Self {
            decoder: SseDecoder::new(),
            translator,
            events: Vec::new(),
            out_events: Vec::new(),
        }
    }

    /// Translates one upstream chunk; may return no bytes while an event is incomplete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, String> {
        self.decoder
            .feed(chunk, &mut self.events)
            .map_err(|e| format!("the upstream stream is not valid SSE: {e}"))?;
        self.translate_pending()
    }

    /// Closes the stream after the upstream ended normally.
    pub fn finish(&mut self) -> Result<Bytes, String> {
        self.decoder
            .finish(&mut self.events)
            .map_err(|e| format!("the upstream stream is not valid SSE: {e}"))?;
        let mut out = self.translate_pending()?.to_vec();
        self.translator
            .finish(&mut self.out_events)
            .map_err(|e| e.to_string())?;
        for event in self.out_events.drain(..) {
            sse::encode(&event, &mut out);
        }
        Ok(Bytes::from(out))
    }

    fn translate_pending(&mut self) -> Result<Bytes, String> {
        for event in self.events.drain(..) {
            self.translator
                .on_event(&event, &mut self.out_events)
                .map_err(|e| e.to_string())?;
        }
        let mut out = Vec::new();
        for event in self.out_events.drain(..) {
            sse::encode(&event, &mut out);
        }
        Ok(Bytes::from(out))
    }
}

/// Tokens an image is counted as by [`estimate_tokens`] (Gemini bills a small image as
/// 258; Anthropic's ~1,600 for a large one; the middle is a fair guess).
const IMAGE_TOKENS_ESTIMATE: usize = 800;

/// Answers a count-tokens request for a provider without a count endpoint (OpenAI's API
/// has none): an estimate from the request's text, in the client's shape. The answer
/// carries `x-fulcrum-token-count: estimated` so that nobody takes it for the provider's.
pub fn count_locally(request: &ClientRequest) -> Result<Bytes, ProxyError> {
    let value: serde_json::Value = parse(&request.body)?;
    let tokens = estimate_tokens(&value);
    let body = match request.protocol {
        Protocol::Gemini => serde_json::json!({ "totalTokens": tokens }),
        Protocol::Anthropic | Protocol::OpenAi => serde_json::json!({ "input_tokens": tokens }),
    };
    encode(&body)
}

/// A tokenizer-free estimate: about four characters per token for alphabetic scripts,
/// one per character for CJK, plus a fixed cost per image. Field names, the model name and
/// base64 payloads are not text the model reads as such.
pub fn estimate_tokens(value: &serde_json::Value) -> usize {
    fn walk(
        value: &serde_json::Value,
        key: Option<&str>,
        chars: &mut usize,
        wide: &mut usize,
        images: &mut usize,
    ) {
        match value {
            serde_json::Value::String(text) => match key {
                Some(
                    "model" | "type" | "role" | "mimeType" | "mime_type" | "media_type" | "id"
                    | "tool_use_id" | "tool_call_id",
                ) => {}
                Some("data") => *images += 1,
                Some("url") if text.starts_with("data:") => *images += 1,
                _ => {
                    for c in text.chars() {
                        if matches!(u32::from(c), 0x3040..=0x30FF | 0x3400..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
                        {
                            *wide += 1;
                        } else {
                            *chars += 1;
                        }
                    }
                }
            },
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, key, chars, wide, images);
                }
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    walk(v, Some(k), chars, wide, images);
                }
            }
            _ => {}
        }
    }
    let (mut chars, mut wide, mut images) = (0, 0, 0);
    walk(value, None, &mut chars, &mut wide, &mut images);
    chars.div_ceil(4) + wide + images * IMAGE_TOKENS_ESTIMATE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_count_text_not_structure() {
        let v = serde_json::json!({
            "model": "a-very-long-model-name-that-is-not-counted",
            "messages": [{"role": "user", "content": "abcdefgh"}],
        });
        assert_eq!(estimate_tokens(&v), 2);
        let cjk = serde_json::json!({"contents": [{"parts": [{"text": "你好世界"}]}]});
        assert_eq!(estimate_tokens(&cjk), 4);
        let image = serde_json::json!({"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]});
        assert_eq!(estimate_tokens(&image), IMAGE_TOKENS_ESTIMATE);
    }

    #[test]
    fn gemini_suffixes_and_settings_reach_the_request() {
        let settings = Settings::default();
        let mut req = gemini::GenerateContentRequest::default();
        apply_gemini_options(
            &mut req,
            "gemini-2.5-flash",
            ModelOptions {
                search: true,
                non_thinking: true,
            },
            &settings,
        );
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["tools"][0]["googleSearch"], serde_json::json!({}));
        assert_eq!(v["generationConfig"]["thinkingConfig"]["thinkingBudget"], 0);
        // The default safety settings turn every category off, as gemini-balance does.
        assert!(
            v["safetySettings"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{v}"
        );
    }
}
