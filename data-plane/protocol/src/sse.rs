//! Server-sent events: an incremental decoder fed arbitrary byte chunks, and an encoder.
//!
//! The decoder follows the WHATWG event-stream rules that matter to LLM APIs: lines end in
//! CRLF, LF or a lone CR (also when the pair is split across chunks); `data:` lines of one
//! event are joined with `\n`; lines starting with `:` are comments; a single space after
//! the colon is dropped; `id:` and `retry:` are ignored; an event is dispatched at the
//! blank line that ends it, and an event without any `data:` line is not dispatched.

/// One event: its `event:` name, if any, and its data lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

// === impl SseEvent ===

impl SseEvent {
    /// An unnamed event (the `message` type), as OpenAI and Gemini send.
    pub fn data(data: impl Into<String>) -> Self {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    /// A named event, as Anthropic sends (`event: message_start`).
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        SseEvent {
            event: Some(event.into()),
            data: data.into(),
        }
    }
}

/// The default bound on one buffered event (its partial line plus its data so far).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event grew past the bound without ending: a broken or hostile upstream.
    #[error("server-sent event larger than {limit} bytes")]
    EventTooLarge { limit: usize },
    /// A line that is not UTF-8.
    #[error("server-sent event line is not valid utf-8")]
    InvalidUtf8,
}

/// Decodes a byte stream into [`SseEvent`]s, one chunk at a time.
#[derive(Debug)]
pub struct SseDecoder {
    /// Bytes of the current line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF starting the next chunk belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    max_event_bytes: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new()
    }
}

// === impl SseDecoder ===

impl SseDecoder {
    /// A decoder bounded by [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        SseDecoder::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder that fails once one event buffers more than `max_event_bytes`.
    pub fn with_limit(max_event_bytes: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            after_cr: false,
            event: None,
            data: String::new(),
            has_data: false,
            max_event_bytes,
        }
    }

    /// Feeds the next chunk, pushing every event it completes onto `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', rest) {
            let (head, tail) = rest.split_at(end);
            self.line.extend_from_slice(head);
            self.check_size()?;
            let terminator = tail[0];
            rest = &tail[1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
            self.line = line;
            self.line.clear();
        }
        self.line.extend_from_slice(rest);
        self.check_size()
    }

    /// Ends the stream. A last event whose closing blank line never came is dispatched
    /// anyway (some upstreams end the body right after the final `data:` line).
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
        }
        self.dispatch(out);
        self.after_cr = false;
        Ok(())
    }

    fn check_size(&self) -> Result<(), SseError> {
        if self.line.len() + self.data.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            // `id` and `retry` only matter to a reconnecting browser; unknown fields are
            // ignored as the spec says.
            _ => {}
        }
        self.check_size()
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
        });
    }
}

/// Appends one event to `out` as `event: x\ndata: y\n\n`, one `data:` line per line of data.
pub fn encode(event: &SseEvent, out: &mut Vec<u8>) {
    if let Some(name) = &event.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in split_lines(&event.data) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Splits on CRLF, LF and lone CR, keeping a trailing empty line (so that `"a\n"` round
/// trips as two data lines).
fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        // memchr: a search by `char`s costs several instructions a byte, and every event
        // of a translated stream passes here.
        match memchr::memchr2(b'\n', b'\r', current.as_bytes()) {
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk, &mut out).unwrap();
        }
        decoder.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn decodes_lf_and_crlf() {
        let events = decode_all(&[b"data: a\n\ndata: b\r\n\r\nevent: x\r\ndata: c\n\n"]);
        assert_eq!(
            events,
            vec![
                SseEvent::data("a"),
                SseEvent::data("b"),
                SseEvent::named("x", "c")
            ]
        );
    }

    #[test]
    fn decodes_lone_cr() {
        let events = decode_all(&[b"data: a\r\rdata: b\r\r"]);
        assert_eq!(events, vec![SseEvent::data("a"), SseEvent::data("b")]);
    }

    #[test]
    fn events_split_across_chunks_at_every_byte() {
        let stream = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: comment\r\ndata: x\r\ndata: y\r\n\r\n";
        let expected = vec![
            SseEvent::named("message_start", "{\"a\":1}"),
            SseEvent::data("x\ny"),
        ];
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(decode_all(&[a, b]), expected, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode_all(&bytes), expected);
    }

    #[test]
    fn multi_byte_utf8_split_across_chunks() {
        let stream = "data: héllo ✓\n\n".as_bytes();
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(decode_all(&[a, b]), vec![SseEvent::data("héllo ✓")]);
        }
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let events = decode_all(&[b": keep-alive\n\nid: 7\nretry: 10\nfoo: bar\ndata: z\n\n"]);
        assert_eq!(events, vec![SseEvent::data("z")]);
    }

    #[test]
    fn field_without_colon_and_without_space() {
        let events = decode_all(&[b"data\n\ndata:x\n\n"]);
        assert_eq!(events, vec![SseEvent::data(""), SseEvent::data("x")]);
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        let events = decode_all(&[b"event: ping\n\ndata: a\n\n"]);
        assert_eq!(events, vec![SseEvent::data("a")]);
    }

    #[test]
    fn unterminated_last_event_is_flushed_at_finish() {
        let events = decode_all(&[b"data: [DONE]"]);
        assert_eq!(events, vec![SseEvent::data("[DONE]")]);
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut out = Vec::new();
        let mut decoder = SseDecoder::with_limit(12);
        // One line that never ends.
        assert_eq!(
            decoder.feed(b"data: 1234567890", &mut out),
            Err(SseError::EventTooLarge { limit: 12 })
        );
        // Data accumulated over several lines of one event.
        let mut decoder = SseDecoder::with_limit(12);
        decoder.feed(b"data: 1234\n", &mut out).unwrap();
        assert_eq!(
            decoder.feed(b"data: 5678\n", &mut out),
            Err(SseError::EventTooLarge { limit: 12 })
        );
        // The bound is per event: many small events are fine.
        let mut decoder = SseDecoder::with_limit(12);
        for _ in 0..100 {
            decoder.feed(b"data: 1234\n\n", &mut out).unwrap();
        }
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        assert_eq!(
            decoder.feed(b"data: \xff\n\n", &mut out),
            Err(SseError::InvalidUtf8)
        );
    }

    #[test]
    fn encoder_writes_named_and_multiline_events() {
        let mut out = Vec::new();
        encode(&SseEvent::named("x", "y"), &mut out);
        encode(&SseEvent::data("a\nb"), &mut out);
        assert_eq!(out, b"event: x\ndata: y\n\ndata: a\ndata: b\n\n");
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let events = vec![
            SseEvent::named("content_block_delta", "{\"x\":\"a\\nb\"}"),
            SseEvent::data("line1\nline2\n"),
            SseEvent::data(""),
        ];
        let mut bytes = Vec::new();
        for event in &events {
            encode(event, &mut bytes);
        }
        assert_eq!(decode_all(&[&bytes]), events);
    }
}
