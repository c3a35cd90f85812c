//! A raw HTTP/1.1 client for tests: what a client sees on the wire, including bodies cut
//! short, without an HTTP client dependency.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// A response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    /// The body with chunked framing removed.
    pub body: Vec<u8>,
    /// Whether the body ended properly (final chunk, or all of `content-length`); false
    /// when the connection ended or failed mid-body.
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `data:` payloads of an SSE body, in order (events may end with `\n\n` or, as
    /// Gemini's do, `\r\n\r\n`).
    pub fn sse_data(&self) -> Vec<String> {
        self.sse_events().into_iter().map(|e| e.data).collect()
    }

    /// The events of an SSE body, in order: each one's `event:` name and its `data:`
    /// lines joined with `\n`. Events without data (comments, bare names) are skipped.
    pub fn sse_events(&self) -> Vec<SseEvent> {
        let text = self.text().replace("\r\n", "\n");
        text.split("\n\n")
            .filter_map(|block| {
                let mut event = None;
                let mut data: Option<String> = None;
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = Some(name.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match &mut data {
                            Some(joined) => {
                                joined.push('\n');
                                joined.push_str(value);
                            }
                            None => data = Some(value.to_owned()),
                        }
                    }
                }
                data.map(|data| SseEvent {
                    event,
                    data: data.trim().to_owned(),
                })
            })
            .collect()
    }
}

/// One server-sent event of a [`RawResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name (Anthropic names every event; OpenAI and Gemini name none).
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The data as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`, `content-length` added when there is
/// a body) and reads the response to the end of the connection. A connection reset or
/// EOF mid-body gives `complete: false` instead of an error. Panics on connect failure or
/// a response without a header block.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !body.is_empty() || method.eq_ignore_ascii_case("POST") {
        let _ = write!(head, "content-length: {}\r\n", body.len());
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .await
        .unwrap_or_else(|e| panic!("write request to {addr}: {e}"));

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut clean_eof = true;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {
                clean_eof = false;
                break;
            }
        }
    }
    parse_response(&raw, clean_eof)
}

fn parse_response(raw: &[u8], clean_eof: bool) -> RawResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no response header block in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = find("content-length").and_then(|v| v.parse::<usize>().ok());
    let (body, complete) = if chunked {
        dechunk(rest)
    } else if let Some(length) = length {
        (
            rest[..rest.len().min(length)].to_vec(),
            rest.len() >= length,
        )
    } else {
        (rest.to_vec(), clean_eof)
    };
    RawResponse {
        status,
        headers,
        body,
        complete,
    }
}

/// Undoes chunked framing; `complete` only when the final zero-size chunk was seen.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (body, false);
        };
        rest = &rest[line_end + 2..];
        if size == 0 {
            return (body, true);
        }
        if rest.len() < size {
            body.extend_from_slice(rest);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_detects_truncation() {
        assert_eq!(dechunk(b"3\r\nabc\r\n0\r\n\r\n"), (b"abc".to_vec(), true));
        assert_eq!(dechunk(b"3\r\nabc\r\n"), (b"abc".to_vec(), false));
        assert_eq!(dechunk(b"5\r\nab"), (b"ab".to_vec(), false));
    }

    #[test]
    fn sse_events_take_names_and_either_line_ending() {
        let response = RawResponse {
            status: 200,
            headers: Vec::new(),
            body: b"event: ping\ndata: {\"type\": \"ping\"}\n\ndata: {}\r\n\r\n: comment\n\ndata: [DONE]\n\n"
                .to_vec(),
            complete: true,
        };
        let events = response.sse_events();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].event.as_deref(), Some("ping"));
        assert_eq!(events[0].json()["type"], "ping");
        assert_eq!(events[1].event, None);
        assert_eq!(
            response.sse_data(),
            ["{\"type\": \"ping\"}", "{}", "[DONE]"]
        );
    }
}
