//! The protocol-neutral half of an answer. Each protocol module reads its request into a
//! [`Conversation`] (what decides the answer) and renders the [`Reply`] it gives back in
//! its own shape, so the three protocols answer the same conversation alike and a test
//! can tell whether a translation arrived intact.
//!
//! The rules, first match wins:
//! 1. the last turn carries tool results: "tool result: " and their texts joined with
//!    " | ", then " (ids: a, b)" when the protocol gave ids;
//! 2. the request declares tools and the conversation holds no tool result yet: one
//!    call of the first declared tool (two when the last user message contains
//!    "parallel"), its arguments every required property of the tool's schema set to
//!    "mock", 1 or true by type;
//! 3. the request carries images: "saw N image(s): MIME,MIME";
//! 4. otherwise "Hello from mock key PREFIX...".
//!
//! A system prompt puts "[system: FIRST 20 CHARS] " in front of a text answer, and
//! enabled reasoning adds [`MOCK_REASONING`] before the answer. Input tokens are the
//! whitespace-separated words the request's texts hold; output tokens are the answer's
//! pieces plus one per tool call plus the reasoning's words.

use serde_json::{Map, Value, json};

use super::key_prefix;

/// The reasoning text of an answer to a request that enables reasoning.
pub const MOCK_REASONING: &str = "mock reasoning";
/// The signature of Anthropic's thinking block (Gemini's `thoughtSignature` is the
/// base64 of these bytes).
pub const MOCK_SIGNATURE: &str = "sig-mock-1";
/// System prompts are echoed up to this many characters.
const SYSTEM_ECHO_CHARS: usize = 20;

/// A tool result as the request carried it.
#[derive(Debug, Clone)]
pub(super) struct ToolResult {
    /// The id of the call it answers, when the protocol has one.
    pub id: Option<String>,
    pub text: String,
}

/// What a request asked for, reduced to what decides the answer.
#[derive(Debug, Default)]
pub(super) struct Conversation {
    system: String,
    /// The first declared tool: name and parameter schema.
    tool: Option<(String, Option<Value>)>,
    saw_tool_result: bool,
    /// Results of the trailing tool-result messages (empty when the last message is
    /// something else).
    last_results: Vec<ToolResult>,
    images: Vec<String>,
    last_user_text: String,
    thinking: bool,
    words: u64,
}

impl Conversation {
    /// Counts `text`'s words as input tokens.
    pub fn read(&mut self, text: &str) {
        self.words += text.split_whitespace().count() as u64;
    }

    /// System or developer instructions (several are joined with newlines).
    pub fn system(&mut self, text: &str) {
        self.read(text);
        if !self.system.is_empty() {
            self.system.push('\n');
        }
        self.system.push_str(text);
    }

    /// A tool the request declares; only the first one is ever called.
    pub fn declare_tool(&mut self, name: &str, schema: Option<&Value>) {
        if self.tool.is_none() && !name.is_empty() {
            self.tool = Some((name.to_owned(), schema.cloned()));
        }
    }

    /// The end of one message of the conversation, with the tool results it carried.
    /// Consecutive messages with results form one turn; any other message ends it.
    pub fn message(&mut self, results: Vec<ToolResult>) {
        if results.is_empty() {
            self.last_results.clear();
            return;
        }
        self.saw_tool_result = true;
        for result in &results {
            self.read(&result.text);
        }
        self.last_results.extend(results);
    }

    /// The text of a user message (the last one decides "parallel").
    pub fn user_text(&mut self, text: String) {
        self.last_user_text = text;
    }

    /// An image of this MIME type (`url` for an image given by URL).
    pub fn image(&mut self, mime: &str) {
        self.images.push(mime.to_owned());
    }

    pub fn enable_thinking(&mut self) {
        self.thinking = true;
    }

    /// The answer to this conversation for `key`.
    pub fn reply(&self, key: &str) -> Reply {
        let input_tokens = self.words.max(1);
        let text = if !self.last_results.is_empty() {
            let texts: Vec<&str> = self.last_results.iter().map(|r| r.text.as_str()).collect();
            let ids: Vec<&str> = self
                .last_results
                .iter()
                .filter_map(|r| r.id.as_deref())
                .collect();
            let mut text = format!("tool result: {}", texts.join(" | "));
            if !ids.is_empty() {
                text.push_str(&format!(" (ids: {})", ids.join(", ")));
            }
            text
        } else if let Some((name, schema)) = self.tool.as_ref().filter(|_| !self.saw_tool_result) {
            let count = if self.last_user_text.contains("parallel") {
                2
            } else {
                1
            };
            let args = mock_args(schema.as_ref());
            return Reply {
                thinking: self.thinking,
                pieces: Vec::new(),
                calls: (0..count)
                    .map(|_| ToolCall {
                        name: name.clone(),
                        args: args.clone(),
                    })
                    .collect(),
                input_tokens,
            };
        } else if !self.images.is_empty() {
            format!(
                "saw {} image(s): {}",
                self.images.len(),
                self.images.join(",")
            )
        } else {
            plain_text(key)
        };
        let text = if self.system.is_empty() {
            text
        } else {
            let head: String = self.system.chars().take(SYSTEM_ECHO_CHARS).collect();
            format!("[system: {head}] {text}")
        };
        Reply {
            thinking: self.thinking,
            pieces: split_pieces(&text),
            calls: Vec::new(),
            input_tokens,
        }
    }
}

/// "Hello from mock key PREFIX..."
pub(super) fn plain_text(key: &str) -> String {
    format!("Hello from mock key {}...", key_prefix(key))
}

/// `text` cut before each space, so that the pieces joined give it back: "Hello",
/// " from", " mock", ...
pub(super) fn split_pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == ' ' && i > start {
            pieces.push(text[start..i].to_owned());
            start = i;
        }
    }
    if start < text.len() {
        pieces.push(text[start..].to_owned());
    }
    pieces
}

/// The answer, protocol-neutral.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    /// Whether [`MOCK_REASONING`] comes before the answer.
    pub thinking: bool,
    /// The answer text in stream pieces (empty when the answer is tool calls).
    pub pieces: Vec<String>,
    pub calls: Vec<ToolCall>,
    pub input_tokens: u64,
}

/// One call of a declared tool. Ids are the protocol's prefix and the 1-based position.
#[derive(Debug, Clone)]
pub(super) struct ToolCall {
    pub name: String,
    pub args: Value,
}

impl ToolCall {
    pub fn args_json(&self) -> String {
        self.args.to_string()
    }

    /// The arguments' JSON in two fragments, as streamed.
    pub fn args_fragments(&self) -> (String, String) {
        let json = self.args_json();
        let mut mid = json.len() / 2;
        while !json.is_char_boundary(mid) {
            mid += 1;
        }
        (json[..mid].to_owned(), json[mid..].to_owned())
    }
}

impl Reply {
    /// The whole answer text.
    pub fn text(&self) -> String {
        self.pieces.concat()
    }

    pub fn reasoning_tokens(&self) -> u64 {
        if self.thinking {
            MOCK_REASONING.split_whitespace().count() as u64
        } else {
            0
        }
    }

    /// Text pieces plus tool calls (reasoning not included).
    pub fn answer_tokens(&self) -> u64 {
        (self.pieces.len() + self.calls.len()) as u64
    }

    /// Everything generated: the answer and the reasoning.
    pub fn output_tokens(&self) -> u64 {
        self.answer_tokens() + self.reasoning_tokens()
    }

    /// This reply with exactly `n` text pieces, cycling through its own (a tool-call
    /// answer, or one without text, is kept as it is).
    pub fn stretched(&self, n: usize) -> Reply {
        if self.pieces.is_empty() || !self.calls.is_empty() || n == self.pieces.len() {
            return self.clone();
        }
        Reply {
            pieces: self.pieces.iter().cycle().take(n).cloned().collect(),
            ..self.clone()
        }
    }
}

/// An object with every required property of `schema` set by its type: "mock" for
/// strings (and anything untyped), 1 for integers and numbers, true for booleans, an
/// empty object or array for those. Type names are compared case-insensitively, since
/// Gemini's schemas spell them `STRING`, `INTEGER`, ...
pub(super) fn mock_args(schema: Option<&Value>) -> Value {
    let mut args = Map::new();
    let Some(schema) = schema else {
        return Value::Object(args);
    };
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for name in required.iter().filter_map(Value::as_str) {
        let kind = schema
            .get("properties")
            .and_then(|p| p.get(name))
            .and_then(|p| p.get("type"))
            .and_then(|t| match t {
                Value::String(s) => Some(s.as_str()),
                // `["string", "null"]`: the first non-null type.
                Value::Array(types) => types
                    .iter()
                    .filter_map(Value::as_str)
                    .find(|t| !t.eq_ignore_ascii_case("null")),
                _ => None,
            })
            .unwrap_or("string")
            .to_ascii_lowercase();
        let value = match kind.as_str() {
            "integer" | "number" => json!(1),
            "boolean" => json!(true),
            "object" => json!({}),
            "array" => json!([]),
            _ => json!("mock"),
        };
        args.insert(name.to_owned(), value);
    }
    Value::Object(args)
}

/// The text of a JSON value that is either a string or an array of parts with a `text`
/// field (OpenAI, Anthropic), joined with spaces.
pub(super) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The MIME type of a `data:` URL (`url` for any other URL).
pub(super) fn data_url_mime(url: &str) -> String {
    url.strip_prefix("data:")
        .and_then(|rest| rest.split([';', ',']).next())
        .filter(|mime| !mime.is_empty())
        .unwrap_or("url")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_back() {
        assert_eq!(
            split_pieces("Hello from mock key sk-tes..."),
            ["Hello", " from", " mock", " key", " sk-tes..."]
        );
        assert_eq!(split_pieces("a  b"), ["a", " ", " b"]);
        assert!(split_pieces("").is_empty());
    }

    #[test]
    fn args_follow_required_properties() {
        let schema = json!({
            "type": "OBJECT",
            "properties": {
                "location": {"type": "STRING"},
                "days": {"type": "integer"},
                "metric": {"type": ["boolean", "null"]},
                "note": {"type": "string"},
                "untyped": {}
            },
            "required": ["location", "days", "metric", "untyped"]
        });
        assert_eq!(
            mock_args(Some(&schema)),
            json!({"location": "mock", "days": 1, "metric": true, "untyped": "mock"})
        );
        assert_eq!(mock_args(None), json!({}));
    }

    #[test]
    fn rules_in_order() {
        let mut conv = Conversation::default();
        conv.system("You are a very helpful assistant.");
        conv.user_text("hi there".into());
        conv.read("hi there");
        conv.message(Vec::new());
        assert_eq!(
            conv.reply("sk-abcdef").text(),
            "[system: You are a very helpf] Hello from mock key sk-abc..."
        );
        assert_eq!(conv.reply("k").input_tokens, 8);

        conv.image("image/png");
        conv.image("image/jpeg");
        assert!(
            conv.reply("k")
                .text()
                .ends_with("] saw 2 image(s): image/png,image/jpeg")
        );

        conv.declare_tool("get_weather", None);
        let reply = conv.reply("k");
        assert_eq!(reply.calls.len(), 1);
        assert!(reply.pieces.is_empty());
        conv.user_text("call them in parallel".into());
        assert_eq!(conv.reply("k").calls.len(), 2);

        conv.message(vec![ToolResult {
            id: Some("a".into()),
            text: "sunny".into(),
        }]);
        conv.message(vec![ToolResult {
            id: Some("b".into()),
            text: "rain".into(),
        }]);
        assert!(
            conv.reply("k")
                .text()
                .ends_with("] tool result: sunny | rain (ids: a, b)")
        );
        // A later message ends the tool turn; the tool is not called again.
        conv.message(Vec::new());
        assert!(conv.reply("k").text().contains("saw 2 image(s)"));
    }

    #[test]
    fn stretch_cycles_pieces() {
        let reply = Conversation::default().reply("k");
        assert_eq!(reply.pieces.len(), 5);
        let long = reply.stretched(7);
        assert_eq!(long.pieces[5], "Hello");
        assert_eq!(reply.stretched(2).text(), "Hello from");
    }

    #[test]
    fn data_urls_give_their_mime() {
        assert_eq!(data_url_mime("data:image/png;base64,AAAA"), "image/png");
        assert_eq!(data_url_mime("https://x/y.png"), "url");
    }
}
