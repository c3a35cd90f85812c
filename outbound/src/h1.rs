//! HTTP/1.1 to plain-`http://` upstreams reached directly (self-hosted OpenAI-compatible
//! servers, local mocks), on the caller's own task.
//!
//! hyper's pooled client gives every connection a task of its own: a request is handed to
//! it over a channel, its answer comes back over another, and each body chunk over a third.
//! Each hop is a task wakeup and a scheduler pass, and the pool hashes and locks for every
//! checkout. Here the task that serves the client writes the request, reads the answer
//! head and then the body straight from the socket, and puts the connection back in the
//! pool when the body ends. Only idle connections are shared.
//!
//! TLS, proxies and HTTP/2 stay with hyper's client: an `https://` upstream speaks HTTP/2
//! when it can, where one connection carries many requests and needs a task to drive it.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::Full;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// Largest answer head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed per answer at most (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// How much is read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle time before the kernel probes a connection (hyper's connector uses the same).
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Idle connections kept per upstream at most.
const MAX_IDLE_PER_HOST: usize = 1024;

/// What went wrong on an HTTP/1.1 exchange.
#[derive(Debug)]
pub enum Error {
    /// No connection could be opened (refused, unreachable, name not resolved, timed out).
    Connect(io::Error),
    /// The connection failed or closed before the answer was whole.
    Io(io::Error),
    /// The upstream's answer is not HTTP/1.x as this client reads it.
    Malformed(String),
    /// The request cannot be sent as given.
    Request(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "cannot connect: {e}"),
            Error::Io(e) => write!(f, "connection error: {e}"),
            Error::Malformed(what) => write!(f, "malformed answer: {what}"),
            Error::Request(what) => write!(f, "cannot send the request: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) | Error::Io(e) => Some(e),
            Error::Malformed(_) | Error::Request(_) => None,
        }
    }
}

struct Idle {
    stream: TcpStream,
    /// The connection's read buffer, kept with it: once the last answer's bytes are gone
    /// the next answer is read into the same allocation. A new 8 KiB buffer per answer
    /// is too big for the allocator's per-thread cache and cost more than the parse.
    buf: BytesMut,
    since: Instant,
}

/// Idle connections per upstream (`host:port`), the most recently used last: a request
/// takes the warmest one, and the oldest, which the upstream closes first, are pruned from
/// the front. Few upstreams per data plane: a list compared by name costs less than
/// hashing every request's authority.
#[derive(Default)]
struct Idles(Vec<(String, std::collections::VecDeque<Idle>)>);

/// The pool of idle HTTP/1.1 connections to plain-HTTP upstreams.
pub struct Pool {
    connect_timeout: Duration,
    idle: Mutex<Idles>,
}

impl Pool {
    pub fn new(connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            connect_timeout,
            idle: Mutex::default(),
        })
    }

    /// Idle connections held, over all upstreams.
    pub fn idle_len(&self) -> usize {
        self.lock().0.iter().map(|(_, idle)| idle.len()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idles> {
        // A poisoned lock only means a thread panicked while pushing or popping: the
        // lists are still whole.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot of `authority`'s idle list (lists are never removed, so a slot stays
    /// valid), and an idle connection to it that is still open, if any.
    fn take(&self, authority: &str) -> (usize, Option<(TcpStream, BytesMut)>) {
        let mut idles = self.lock();
        let slot = match idles.0.iter().position(|(a, _)| a == authority) {
            Some(slot) => slot,
            None => {
                idles
                    .0
                    .push((authority.to_string(), std::collections::VecDeque::new()));
                idles.0.len() - 1
            }
        };
        let list = &mut idles.0[slot].1;
        while let Some(idle) = list.pop_back() {
            if idle.since.elapsed() < IDLE_TIMEOUT && still_open(&idle.stream) {
                return (slot, Some((idle.stream, idle.buf)));
            }
        }
        (slot, None)
    }

    fn put(&self, slot: usize, stream: TcpStream, buf: BytesMut) {
        let mut idles = self.lock();
        let Some((_, list)) = idles.0.get_mut(slot) else {
            return;
        };
        // Connections the upstream closed, or idle too long, are dropped here rather than
        // left half-closed until the next request finds them.
        while list
            .front()
            .is_some_and(|idle| idle.since.elapsed() >= IDLE_TIMEOUT || !still_open(&idle.stream))
        {
            list.pop_front();
        }
        if list.len() < MAX_IDLE_PER_HOST {
            list.push_back(Idle {
                stream,
                buf,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, authority: &str) -> Result<TcpStream, Error> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority))
            .await
            .map_err(|_| {
                Error::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no connection to {authority} within {:?}",
                        self.connect_timeout
                    ),
                ))
            })?
            .map_err(Error::Connect)?;
        // Answers are written in one go and small requests must not wait for Nagle.
        stream.set_nodelay(true).map_err(Error::Connect)?;
        // As hyper's connector does for the other upstreams: a peer that vanished during a
        // long quiet stream, or while the connection sat idle, is found out by the kernel.
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE))
            .map_err(Error::Connect)?;
        Ok(stream)
    }

    /// Sends `request` (an `http://` URI with its authority) and returns the answer once its
    /// head has arrived; the body is read as the caller polls it.
    pub async fn request(
        self: &Arc<Self>,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Body>, Error> {
        let uri = request.uri();
        // `host:port`, which is the URI's own authority unless it leaves the port out or
        // carries credentials (never sent: they are not how upstream keys travel).
        let authority: std::borrow::Cow<'_, str> = match (uri.authority(), uri.port_u16()) {
            (Some(a), Some(_)) if !a.as_str().contains('@') => a.as_str().into(),
            (Some(a), port) => format!("{}:{}", a.host(), port.unwrap_or(80)).into(),
            (None, _) => return Err(Error::Request(format!("{uri} has no host"))),
        };
        let wire = encode(&request)?;
        let (slot, idle) = self.take(&authority);
        // A connection the upstream closed while idle shows only when it is used: a request
        // whose write fails, or that gets no byte back, on a reused connection goes again,
        // once, on a new one. Nothing reached the upstream's application in either case.
        if let Some((mut stream, buf)) = idle
            && stream.write_all(&wire).await.is_ok()
        {
            match read_head(&mut stream, request.method(), buf).await {
                Ok(head) => return Ok(self.response(head, stream, slot)),
                Err(HeadError::Closed) => {}
                Err(HeadError::Failed(e)) => return Err(e),
            }
        }
        let mut stream = self.connect(&authority).await?;
        stream.write_all(&wire).await.map_err(Error::Io)?;
        match read_head(&mut stream, request.method(), BytesMut::new()).await {
            Ok(head) => Ok(self.response(head, stream, slot)),
            Err(HeadError::Closed) => Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before an answer",
            ))),
            Err(HeadError::Failed(e)) => Err(e),
        }
    }

    fn response(self: &Arc<Self>, head: Head, stream: TcpStream, slot: usize) -> Response<Body> {
        let Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
            rest,
        } = head;
        let done = matches!(framing, Framing::Length(0));
        let mut body = Body {
            conn: Some(Conn {
                stream,
                pool: Arc::clone(self),
                slot,
                keep_alive,
            }),
            buf: rest,
            framing,
        };
        if done {
            body.finish();
        }
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        response
    }
}

/// Whether an idle connection is still open: readable while idle means the upstream
/// closed it (or sent bytes nobody asked for), either way it cannot carry a request.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// The request head and body as they go on the wire.
fn encode(request: &Request<Full<Bytes>>) -> Result<Vec<u8>, Error> {
    let uri = request.uri();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let body = body_of(request.body());
    let mut wire = Vec::with_capacity(256 + body.len());
    wire.extend_from_slice(request.method().as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(path.as_bytes());
    wire.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    let host = uri
        .host()
        .ok_or_else(|| Error::Request(format!("{uri} has no host")))?;
    wire.extend_from_slice(host.as_bytes());
    if let Some(port) = uri.port_u16() {
        let _ = write!(wire, ":{port}");
    }
    wire.extend_from_slice(b"\r\n");
    for (name, value) in request.headers() {
        // Framing and routing are this client's to write.
        if matches!(
            *name,
            header::HOST | header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    if !body.is_empty()
        || request.method() == http::Method::POST
        || request.method() == http::Method::PUT
    {
        // Writing to a Vec cannot fail.
        let _ = write!(wire, "content-length: {}\r\n", body.len());
    }
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(&body);
    Ok(wire)
}

/// The bytes of a `Full` body (it yields them in one frame, at once).
fn body_of(body: &Full<Bytes>) -> Bytes {
    let mut body = body.clone();
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    match Pin::new(&mut body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
    /// Bytes read past the head: the body's start.
    rest: BytesMut,
}

enum HeadError {
    /// Closed before the first byte of an answer.
    Closed,
    Failed(Error),
}

/// Reads and parses an answer head into `buf` (empty: a new connection's, or the one an
/// idle connection kept), skipping interim (1xx) answers.
async fn read_head(
    stream: &mut TcpStream,
    method: &http::Method,
    mut buf: BytesMut,
) -> Result<Head, HeadError> {
    let mut got_any = false;
    loop {
        if !buf.is_empty() {
            match parse_head(&mut buf, method).map_err(HeadError::Failed)? {
                Some(Some(head)) => return Ok(head),
                // An interim answer was taken off the buffer: parse what follows.
                Some(None) => continue,
                None => {}
            }
            if buf.len() > MAX_HEAD {
                return Err(HeadError::Failed(Error::Malformed(format!(
                    "answer head over {MAX_HEAD} bytes"
                ))));
            }
        }
        buf.reserve(READ_CHUNK);
        let read = tokio::io::AsyncReadExt::read_buf(stream, &mut buf).await;
        match read {
            Ok(0) if !got_any => return Err(HeadError::Closed),
            Ok(0) => {
                return Err(HeadError::Failed(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of the answer head",
                ))));
            }
            Ok(_) => got_any = true,
            Err(e) if !got_any && is_reset(&e) => return Err(HeadError::Closed),
            Err(e) => return Err(HeadError::Failed(Error::Io(e))),
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// `None`: the head is not whole yet. `Some(None)`: an interim answer was consumed.
fn parse_head(buf: &mut BytesMut, method: &http::Method) -> Result<Option<Option<Head>>, Error> {
    // Left uninitialised: filling 100 empty slots per answer cost more than the parse.
    let mut slots = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Malformed(e.to_string())),
    };
    let code = parsed.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| Error::Malformed(format!("status {code}")))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        buf.advance(len);
        return Ok(Some(None));
    }
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Names now, values as ranges of the head: the values then point into the head's
    // bytes, kept as they are, with no copy per value.
    let base = buf.as_ptr() as usize;
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::Malformed(format!("header name {:?}", h.name)))?;
        let start = h.value.as_ptr() as usize - base;
        fields.push((name, start, start + h.value.len()));
    }
    let head_bytes = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    let (mut length, mut chunked, mut close, mut keep_alive_10) = (None, false, false, false);
    for (name, start, end) in fields {
        let raw = &head_bytes[start..end];
        let value = HeaderValue::from_maybe_shared(head_bytes.slice(start..end))
            .map_err(|_| Error::Malformed(format!("value of header {name}")))?;
        match name {
            header::CONTENT_LENGTH => {
                let n = std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| Error::Malformed("content-length".into()))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::Malformed("conflicting content-length".into()));
                }
                length = Some(n);
            }
            header::TRANSFER_ENCODING => {
                // Only the last coding frames the body.
                chunked = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.rsplit(',').next())
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            }
            header::CONNECTION => {
                let v = value.to_str().unwrap_or("");
                close |= v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
                keep_alive_10 |= v
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"));
            }
            _ => {}
        }
        headers.append(name, value);
    }
    let no_body = method == http::Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunked::Size)
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let keep_alive = !close
        && !matches!(framing, Framing::UntilClose)
        && (version == Version::HTTP_11 || keep_alive_10);
    Ok(Some(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
        rest: std::mem::take(buf),
    })))
}

enum Framing {
    /// Bytes of body still to come.
    Length(u64),
    Chunked(Chunked),
    /// The body ends when the upstream closes the connection.
    UntilClose,
    Done,
}

enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Bytes of the current chunk still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

struct Conn {
    stream: TcpStream,
    pool: Arc<Pool>,
    slot: usize,
    keep_alive: bool,
}

/// An answer body read from its connection as it is polled; the connection goes back to
/// the pool when the body has ended, and is closed if the body is dropped before.
pub struct Body {
    conn: Option<Conn>,
    buf: BytesMut,
    framing: Framing,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("buffered", &self.buf.len())
            .field("done", &matches!(self.framing, Framing::Done))
            .finish_non_exhaustive()
    }
}

impl Body {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            // Bytes past the end of the answer mean the upstream does not frame its
            // answers as this client does: not worth reusing.
            if conn.keep_alive && self.buf.is_empty() {
                conn.pool
                    .put(conn.slot, conn.stream, std::mem::take(&mut self.buf));
            }
        }
    }

    /// Reads more from the connection into the buffer; `Ok(false)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Error>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        self.buf.reserve(READ_CHUNK);
        loop {
            ready!(conn.stream.poll_read_ready(cx)).map_err(Error::Io)?;
            // A spurious readiness clears itself: `try_read_buf` says `WouldBlock` and the
            // next `poll_read_ready` waits again.
            match conn.stream.try_read_buf(&mut self.buf) {
                Ok(n) => return Poll::Ready(Ok(n > 0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(Error::Io(e))),
            }
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        loop {
            match &mut self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(remaining) => {
                    if *remaining == 0 {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    if !self.buf.is_empty() {
                        let n = self
                            .buf
                            .len()
                            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                        *remaining -= n as u64;
                        let data = self.buf.split_to(n).freeze();
                        if *remaining == 0 {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                    if !ready!(self.poll_fill(cx))? {
                        return Poll::Ready(Some(Err(Error::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed before the end of the answer",
                        )))));
                    }
                }
                Framing::UntilClose => {
                    if !self.buf.is_empty() {
                        return Poll::Ready(Some(Ok(self.buf.split().freeze())));
                    }
                    if !ready!(self.poll_fill(cx))? {
                        self.framing = Framing::Done;
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                }
                Framing::Chunked(state) => {
                    match state {
                        Chunked::Size | Chunked::DataEnd | Chunked::Trailers => {
                            if let Some(end) = find_crlf(&self.buf) {
                                let line = self.buf.split_to(end + 2);
                                let line = &line[..end];
                                match state {
                                    Chunked::Size => {
                                        let size = chunk_size(line)?;
                                        *state = if size == 0 {
                                            Chunked::Trailers
                                        } else {
                                            Chunked::Data(size)
                                        };
                                    }
                                    Chunked::DataEnd => {
                                        if !line.is_empty() {
                                            return Poll::Ready(Some(Err(Error::Malformed(
                                                "no CRLF after a chunk".into(),
                                            ))));
                                        }
                                        *state = Chunked::Size;
                                    }
                                    Chunked::Trailers | Chunked::Data(_) => {
                                        // Trailers carry nothing the client needs.
                                        if line.is_empty() {
                                            self.finish();
                                            return Poll::Ready(None);
                                        }
                                    }
                                }
                                continue;
                            }
                            if self.buf.len() > MAX_HEAD {
                                return Poll::Ready(Some(Err(Error::Malformed(
                                    "chunk line too long".into(),
                                ))));
                            }
                        }
                        Chunked::Data(remaining) => {
                            if !self.buf.is_empty() {
                                let n = self
                                    .buf
                                    .len()
                                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                                *remaining -= n as u64;
                                if *remaining == 0 {
                                    *state = Chunked::DataEnd;
                                }
                                return Poll::Ready(Some(Ok(self.buf.split_to(n).freeze())));
                            }
                        }
                    }
                    if !ready!(self.poll_fill(cx))? {
                        return Poll::Ready(Some(Err(Error::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed before the last chunk",
                        )))));
                    }
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let text = std::str::from_utf8(line).map_err(|_| Error::Malformed("chunk size".into()))?;
    let digits = text.split(';').next().unwrap_or("").trim();
    u64::from_str_radix(digits, 16).map_err(|_| Error::Malformed(format!("chunk size {digits:?}")))
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match ready!(this.poll_data(cx)) {
            Some(Ok(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Some(Err(e)) => {
                // The connection is in an unknown state: never reused.
                this.conn = None;
                this.framing = Framing::Done;
                Poll::Ready(Some(Err(e)))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    /// A loopback upstream that answers each connection's requests with `answers` in turn
    /// (one per request, by reading up to the end of a head with its body), then closes.
    /// Returns its address and a count of the connections it accepted.
    async fn upstream(
        answers: Vec<&'static [u8]>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let answers = Arc::new(answers);
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answers = Arc::clone(&answers);
                tokio::spawn(async move {
                    for answer in answers.iter() {
                        let mut seen = Vec::new();
                        // The whole request: its head, then content-length bytes.
                        loop {
                            let mut chunk = [0u8; 1024];
                            let Ok(n) = socket.read(&mut chunk).await else {
                                return;
                            };
                            if n == 0 {
                                return;
                            }
                            seen.extend_from_slice(&chunk[..n]);
                            if let Some(end) = find(&seen, b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                                let length = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length: "))
                                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                                if seen.len() >= end + 4 + length {
                                    break;
                                }
                            }
                        }
                        socket.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    fn post(addr: &str) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::from_static(b"{\"a\":1}")));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = format!("http://{addr}/v1/x").parse().unwrap();
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        request
    }

    async fn text(response: Response<Body>) -> Result<String, Error> {
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn keep_alive_answers_reuse_one_connection() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";
        let (addr, accepted) = upstream(vec![ok, ok, ok]).await;
        let pool = Pool::new(Duration::from_secs(1));
        for _ in 0..3 {
            let response = pool.request(post(&addr)).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(text(response).await.unwrap(), "hi");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(pool.idle_len(), 1);
    }

    #[tokio::test]
    async fn a_kept_alive_connection_reads_every_answer_into_its_one_buffer() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";
        let (addr, _) = upstream(vec![ok; 6]).await;
        let pool = Pool::new(Duration::from_secs(1));
        let mut at = Vec::new();
        // Each answer's buffer is taken by the allocator's next block of its size once it is
        // freed: a buffer made per answer would then sit somewhere else every time.
        let mut blockers = Vec::new();
        for _ in 0..6 {
            let response = pool.request(post(&addr)).await.unwrap();
            let mut body = response.into_body();
            let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(&data[..], b"hi");
            at.push(data.as_ptr() as usize);
            drop((data, body));
            blockers.push(Vec::<u8>::with_capacity(READ_CHUNK));
        }
        assert!(
            at.iter().all(|&p| p == at[0]),
            "answers were read into different buffers: {at:x?}"
        );
    }

    #[tokio::test]
    async fn new_connections_have_no_nagle_and_tcp_keep_alive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let pool = Pool::new(Duration::from_secs(1));
        let stream = pool.connect(&addr).await.unwrap();
        assert!(stream.nodelay().unwrap());
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), TCP_KEEPALIVE);
    }

    #[tokio::test]
    async fn chunked_answers_with_trailers_are_read_whole() {
        let chunked: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: 1\r\n\r\n";
        let (addr, accepted) = upstream(vec![chunked, chunked]).await;
        let pool = Pool::new(Duration::from_secs(1));
        for _ in 0..2 {
            let response = pool.request(post(&addr)).await.unwrap();
            assert_eq!(text(response).await.unwrap(), "hello world");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
        // One answer per connection: the upstream closes each after its first answer.
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (addr, accepted) = upstream(vec![ok]).await;
        let pool = Pool::new(Duration::from_secs(1));
        for _ in 0..3 {
            let response = pool.request(post(&addr)).await.unwrap();
            assert_eq!(text(response).await.unwrap(), "ok");
            // Let the close reach this side, as it does between requests in real life.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn close_delimited_and_cut_answers() {
        let until_close: &[u8] = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        let (addr, _) = upstream(vec![until_close]).await;
        let pool = Pool::new(Duration::from_secs(1));
        let response = pool.request(post(&addr)).await.unwrap();
        assert_eq!(text(response).await.unwrap(), "all of it");
        assert_eq!(
            pool.idle_len(),
            0,
            "a close-delimited answer's connection is not kept"
        );

        let cut: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort";
        let (addr, _) = upstream(vec![cut]).await;
        let response = pool.request(post(&addr)).await.unwrap();
        let err = text(response).await.unwrap_err();
        assert!(err.to_string().contains("closed before the end"), "{err}");
        assert_eq!(pool.idle_len(), 0);

        let garbage: &[u8] = b"NOT HTTP AT ALL\r\n\r\n";
        let (addr, _) = upstream(vec![garbage]).await;
        let err = pool.request(post(&addr)).await.unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let pool = Pool::new(Duration::from_secs(1));
        let err = pool.request(post(&addr)).await.unwrap_err();
        assert!(matches!(err, Error::Connect(_)), "{err}");
    }

    #[test]
    fn requests_carry_host_and_length_and_no_hop_headers() {
        let mut request = post("up.example:8080");
        request
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let wire = String::from_utf8(encode(&request).unwrap()).unwrap();
        assert_eq!(
            wire,
            "POST /v1/x HTTP/1.1\r\nhost: up.example:8080\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn heads_and_chunk_sizes() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..],
        );
        assert!(matches!(
            parse_head(&mut buf, &http::Method::POST),
            Ok(Some(None))
        ));
        let Ok(Some(Some(head))) = parse_head(&mut buf, &http::Method::POST) else {
            panic!("no head");
        };
        assert_eq!(head.status, StatusCode::OK);
        assert!(matches!(head.framing, Framing::Length(5)));
        assert!(head.keep_alive);
        assert_eq!(head.headers["x-a"], "b");
        assert_eq!(&head.rest[..], b"hello");

        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(matches!(
            parse_head(&mut partial, &http::Method::GET),
            Ok(None)
        ));

        let mut close = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]);
        let Ok(Some(Some(head))) = parse_head(&mut close, &http::Method::GET) else {
            panic!("no head");
        };
        assert!(matches!(head.framing, Framing::UntilClose));
        assert!(!head.keep_alive);

        let mut conflicting = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        );
        assert!(parse_head(&mut conflicting, &http::Method::GET).is_err());

        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"0;ext=1").unwrap(), 0);
        assert!(chunk_size(b"zz").is_err());
    }
}
