//! Token counts from an upstream's own usage report, read as the answer passes.
//!
//! Only the usage object is read, never the whole answer: a `memmem` search finds the key
//! (`"usage"`, Gemini's `"usageMetadata"`) and a small reader takes the counts it wants
//! from the object after it. Answers without the key cost one vectorised scan per chunk. The same scanner
//! reads whole JSON answers and event streams (OpenAI's final usage chunk, Gemini's
//! `usageMetadata` on every event, Anthropic's `message_start` and `message_delta`): each
//! object found updates the counts it names, so the last report wins.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::protocol::Protocol;

/// Most bytes kept of a usage object cut by a chunk boundary, while waiting for its end.
const MAX_PARTIAL: usize = 16 * 1024;
/// The longest key searched for, `"usageMetadata"`.
const MAX_NEEDLE: usize = 15;

/// Tokens an upstream reported for one answer; 0 where it reported none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The key before OpenAI's and Anthropic's usage objects; built once, as building a
/// searcher costs more than most searches.
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
/// The key before Gemini's.
static USAGE_METADATA: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"usageMetadata\""));

/// The counts read, per protocol: input, output, and output again (Gemini bills thinking
/// tokens as output). OpenAI: chat completions and embeddings. Anthropic: `message_start`
/// carries both, `message_delta` the output so far.
fn count_names(protocol: Protocol) -> &'static [&'static [u8]] {
    match protocol {
        Protocol::OpenAi => &[b"prompt_tokens", b"completion_tokens"],
        Protocol::Gemini => &[
            b"promptTokenCount",
            b"candidatesTokenCount",
            b"thoughtsTokenCount",
        ],
        Protocol::Anthropic => &[b"input_tokens", b"output_tokens"],
    }
}

/// Where an object's parse stopped.
enum Parsed {
    /// Read (or not a usage object at all): go on after it.
    Done,
    /// The buffer ended inside it: wait for the next chunk.
    Incomplete,
}

/// Reads usage reports out of one answer, chunk by chunk.
#[derive(Debug)]
pub struct UsageScanner {
    names: &'static [&'static [u8]],
    finder: &'static Finder<'static>,
    usage: Usage,
    /// The end of the previous chunk (its first `tail_len` bytes): a key cut in two is
    /// found across the seam. A fixed array: a chunk costs no allocation.
    tail: [u8; MAX_NEEDLE],
    tail_len: usize,
    /// A usage object cut by the end of the previous chunk, from its key on.
    partial: Vec<u8>,
}

// === impl UsageScanner ===

impl UsageScanner {
    /// A scanner for an answer written in `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        let finder: &'static Finder<'static> = match protocol {
            Protocol::OpenAi | Protocol::Anthropic => &USAGE,
            Protocol::Gemini => &USAGE_METADATA,
        };
        debug_assert!(finder.needle().len() <= MAX_NEEDLE);
        Self {
            names: count_names(protocol),
            finder,
            usage: Usage::default(),
            tail: [0; MAX_NEEDLE],
            tail_len: 0,
            partial: Vec::new(),
        }
    }

    /// The usage of a whole answer.
    pub fn whole(protocol: Protocol, body: &[u8]) -> Usage {
        let mut scanner = Self::new(protocol);
        scanner.scan(body);
        scanner.usage()
    }

    /// What the chunks so far reported.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Reads the next chunk of the answer.
    pub fn scan(&mut self, chunk: &[u8]) {
        if !self.partial.is_empty() {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(chunk);
            self.scan_buffer(&joined);
            return;
        }
        let keep = self.finder.needle().len() - 1;
        let tail_len = self.tail_len;
        if tail_len == 0 {
            self.scan_buffer(chunk);
            return;
        }
        // A key that starts in the previous chunk's tail and ends in this one.
        let head = chunk.len().min(keep);
        let mut buffer = [0u8; 2 * MAX_NEEDLE];
        buffer[..tail_len].copy_from_slice(&self.tail[..tail_len]);
        buffer[tail_len..tail_len + head].copy_from_slice(&chunk[..head]);
        let seam = &buffer[..tail_len + head];
        if let Some(at) = self.finder.find(seam).filter(|at| *at < tail_len) {
            let mut joined = Vec::with_capacity(tail_len - at + chunk.len());
            joined.extend_from_slice(&seam[at..tail_len]);
            joined.extend_from_slice(chunk);
            self.tail_len = 0;
            self.scan_buffer(&joined);
            return;
        }
        self.scan_buffer(chunk);
        if chunk.len() < keep && self.partial.is_empty() {
            // A chunk shorter than the key: the seam (which ends with all of it) keeps
            // its last bytes.
            self.set_tail(seam);
        }
    }

    /// Keeps the last bytes of `buffer` that could start a key.
    fn set_tail(&mut self, buffer: &[u8]) {
        let keep = self.finder.needle().len() - 1;
        let end = &buffer[buffer.len().saturating_sub(keep)..];
        self.tail[..end.len()].copy_from_slice(end);
        self.tail_len = end.len();
    }

    /// Reads every usage object in `buffer`; keeps what a later chunk must complete.
    fn scan_buffer(&mut self, buffer: &[u8]) {
        let needle_len = self.finder.needle().len();
        let mut from = 0;
        while let Some(found) = self.finder.find(&buffer[from..]) {
            let at = from + found;
            let value = at + needle_len;
            match self.read_object(&buffer[value..]) {
                (Parsed::Done, used) => from = value + used,
                (Parsed::Incomplete, _) => {
                    self.tail_len = 0;
                    if buffer.len() - at <= MAX_PARTIAL {
                        self.partial.extend_from_slice(&buffer[at..]);
                    }
                    return;
                }
            }
        }
        self.set_tail(buffer);
    }

    /// Reads `: {...}` at the start of `rest`; says how many bytes it used.
    fn read_object(&mut self, rest: &[u8]) -> (Parsed, usize) {
        let mut i = skip_space(rest, 0);
        match rest.get(i) {
            None => return (Parsed::Incomplete, 0),
            Some(b':') => i = skip_space(rest, i + 1),
            // The word in another role (a string value, say): not a usage object.
            Some(_) => return (Parsed::Done, 0),
        }
        match rest.get(i) {
            None => (Parsed::Incomplete, 0),
            Some(b'{') => match read_counts(&rest[i..], self.names) {
                Ok((counts, used)) => {
                    let output = match (counts[1], counts[2]) {
                        (None, None) => None,
                        (answer, thoughts) => Some(answer.unwrap_or(0) + thoughts.unwrap_or(0)),
                    };
                    self.update(counts[0], output);
                    (Parsed::Done, i + used)
                }
                Err(parsed) => (parsed, i),
            },
            // `null`, or anything else that is not an object.
            Some(_) => (Parsed::Done, i),
        }
    }

    fn update(&mut self, input: Option<u64>, output: Option<u64>) {
        if let Some(input) = input {
            self.usage.input_tokens = input;
        }
        if let Some(output) = output {
            self.usage.output_tokens = output;
        }
    }
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// Reads the JSON object at the start of `bytes` (its first byte is `{`): the
/// non-negative integers under the keys in `names`, and the bytes the object took. Other
/// values, nested ones too, are skipped; a key whose value is not such an integer counts
/// as absent. `Incomplete` when `bytes` ends inside it, `Done` when it is not JSON.
fn read_counts(bytes: &[u8], names: &[&[u8]]) -> Result<([Option<u64>; 3], usize), Parsed> {
    let mut counts = [None; 3];
    let mut i = 1;
    loop {
        i = skip_space(bytes, i);
        match bytes.get(i) {
            None => return Err(Parsed::Incomplete),
            Some(b'}') => return Ok((counts, i + 1)),
            Some(b',') => {
                i += 1;
                continue;
            }
            Some(b'"') => {}
            Some(_) => return Err(Parsed::Done),
        }
        let key_end = skip_string(bytes, i)?;
        let key = &bytes[i + 1..key_end - 1];
        i = skip_space(bytes, key_end);
        match bytes.get(i) {
            None => return Err(Parsed::Incomplete),
            Some(b':') => i = skip_space(bytes, i + 1),
            Some(_) => return Err(Parsed::Done),
        }
        let value_end = skip_value(bytes, i)?;
        if let Some(slot) = names.iter().position(|name| *name == key) {
            counts[slot] = std::str::from_utf8(&bytes[i..value_end])
                .ok()
                .and_then(|digits| digits.parse::<u64>().ok());
        }
        i = value_end;
    }
}

/// The end of the string that starts at `bytes[i]` (a quote), after its closing quote.
fn skip_string(bytes: &[u8], i: usize) -> Result<usize, Parsed> {
    let mut j = i + 1;
    loop {
        match bytes.get(j) {
            None => return Err(Parsed::Incomplete),
            Some(b'\\') => j += 2,
            Some(b'"') => return Ok(j + 1),
            Some(_) => j += 1,
        }
    }
}

/// The end of the JSON value that starts at `bytes[i]`.
fn skip_value(bytes: &[u8], i: usize) -> Result<usize, Parsed> {
    match bytes.get(i) {
        None => Err(Parsed::Incomplete),
        Some(b'"') => skip_string(bytes, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match bytes.get(j) {
                    None => return Err(Parsed::Incomplete),
                    Some(b'"') => j = skip_string(bytes, j)?,
                    Some(b'{' | b'[') => {
                        depth += 1;
                        j += 1;
                    }
                    Some(b'}' | b']') => {
                        depth -= 1;
                        j += 1;
                        if depth == 0 {
                            return Ok(j);
                        }
                    }
                    Some(_) => j += 1,
                }
            }
        }
        // Numbers and literals: up to the next delimiter.
        Some(_) => {
            let mut j = i;
            while let Some(b) = bytes.get(j) {
                if matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace() {
                    return Ok(j);
                }
                j += 1;
            }
            Err(Parsed::Incomplete)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
        }
    }

    /// Every way to cut `stream` in two, and in single bytes, reads as it does whole.
    fn assert_chunking_does_not_matter(protocol: Protocol, stream: &[u8], want: Usage) {
        assert_eq!(UsageScanner::whole(protocol, stream), want, "whole");
        for cut in 0..=stream.len() {
            let mut scanner = UsageScanner::new(protocol);
            scanner.scan(&stream[..cut]);
            scanner.scan(&stream[cut..]);
            assert_eq!(scanner.usage(), want, "cut at {cut}");
        }
        let mut scanner = UsageScanner::new(protocol);
        for byte in stream {
            scanner.scan(std::slice::from_ref(byte));
        }
        assert_eq!(scanner.usage(), want, "byte by byte");
    }

    #[test]
    fn openai_whole_answer() {
        let body = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"the word \"usage\": {\"prompt_tokens\": 99}"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":0}}}"#;
        assert_eq!(UsageScanner::whole(Protocol::OpenAi, body), usage(12, 34));
        let embeddings =
            br#"{"object":"list","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(
            UsageScanner::whole(Protocol::OpenAi, embeddings),
            usage(8, 0)
        );
        assert_eq!(
            UsageScanner::whole(Protocol::OpenAi, br#"{"choices":[]}"#),
            Usage::default()
        );
    }

    #[test]
    fn openai_stream_takes_the_final_usage_chunk() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n",
            "data: [DONE]\n\n",
        );
        assert_chunking_does_not_matter(Protocol::OpenAi, stream.as_bytes(), usage(5, 7));
    }

    #[test]
    fn gemini_whole_answer_counts_thoughts_as_output() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":3,"thoughtsTokenCount":20,"totalTokenCount":32},"modelVersion":"gemini-2.5-flash"}"#;
        assert_eq!(UsageScanner::whole(Protocol::Gemini, body), usage(9, 23));
        let no_thoughts = br#"{"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2}}"#;
        assert_eq!(
            UsageScanner::whole(Protocol::Gemini, no_thoughts),
            usage(4, 2)
        );
    }

    #[test]
    fn gemini_stream_takes_the_last_usage_metadata() {
        let stream = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"usageMetadata\":{\"promptTokenCount\":6,\"candidatesTokenCount\":1}}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":6,\"candidatesTokenCount\":2,\"thoughtsTokenCount\":4}}\r\n\r\n",
        );
        assert_chunking_does_not_matter(Protocol::Gemini, stream.as_bytes(), usage(6, 6));
    }

    #[test]
    fn anthropic_whole_answer() {
        let body = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":15,"cache_read_input_tokens":0,"output_tokens":4}}"#;
        assert_eq!(UsageScanner::whole(Protocol::Anthropic, body), usage(15, 4));
    }

    #[test]
    fn anthropic_stream_reads_message_start_and_delta() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":21,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hello\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":17}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        assert_chunking_does_not_matter(Protocol::Anthropic, stream.as_bytes(), usage(21, 17));
    }

    #[test]
    fn malformed_and_unrelated_usage_keys_change_nothing() {
        let mut scanner = UsageScanner::new(Protocol::OpenAi);
        scanner.scan(br#"{"usage":"none","x":{"usage":[1,2]},"usage":{"prompt_tokens":"many"}}"#);
        assert_eq!(scanner.usage(), Usage::default());
        scanner.scan(br#"{"usage":{"prompt_tokens":3,"completion_tokens":1}}"#);
        assert_eq!(scanner.usage(), usage(3, 1));
    }

    #[test]
    fn an_endless_usage_object_is_dropped_not_kept() {
        let mut scanner = UsageScanner::new(Protocol::OpenAi);
        scanner.scan(b"{\"usage\":{\"prompt_tokens\":1,\"pad\":\"");
        let pad = vec![b'x'; MAX_PARTIAL];
        scanner.scan(&pad);
        assert!(scanner.partial.is_empty());
        scanner.scan(br#"{"usage":{"prompt_tokens":2,"completion_tokens":2}}"#);
        assert_eq!(scanner.usage(), usage(2, 2));
    }
}
