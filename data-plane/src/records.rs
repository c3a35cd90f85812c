//! Request records: one per upstream attempt and one (attempt 0) per client request, as
//! `RequestRecord` in `fulcrum/v1/telemetry.proto` describes them.
//!
//! The hot path stays cheap: what a request shares with its attempts (id, client token,
//! protocol, model, route) is one [`RequestLog`] allocation, records hold `Arc`s of what
//! the config already has (the key, which names its provider), and a finished record is
//! one push into a bounded queue (an answer and its attempt go in one push). The shipper
//! encodes them, straight into protobuf bytes, off the request's path. Metrics are
//! counted here too, from the same numbers.
//!
//! An attempt whose answer goes to the client, and the client's answer itself, are
//! recorded when the answer ends: when its last byte is handed over, when the stream is
//! cut, or when the client goes away (the body is dropped). [`Attempt`] and [`Answer`]
//! record themselves on drop, so no way out of the handler forgets them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use fulcrum_proto::model::Key;
use fulcrum_proto::model::Settings;
use fulcrum_proto::pb;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

pub use fulcrum_proto::pb::ErrorClass;

use crate::metrics::Metrics;
use crate::protocol::{Operation, Protocol};
use crate::shipper::{Queued, RecordQueue};
use crate::usage::{Usage, UsageScanner};

/// Most bytes of an error body kept in a record.
pub const MAX_EXCERPT: usize = 2 * 1024;
/// Most bytes of a client's request body kept in an error record.
pub const MAX_REQUEST_BODY: usize = 16 * 1024;

/// `x-request-id`, set on answers whose upstream named none.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: 16 hex characters, a per-process random prefix (24 bits) and a counter
/// (40 bits, a trillion requests before it wraps).
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

const COUNTER_BITS: u32 = 40;

impl RequestIds {
    /// Ids that start with the low 24 bits of `random`.
    pub fn new(random: u64) -> Self {
        Self {
            prefix: (random & 0xff_ffff) << COUNTER_BITS,
            next: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> RequestId {
        let n = self.next.fetch_add(1, Ordering::Relaxed) & ((1 << COUNTER_BITS) - 1);
        RequestId(self.prefix | n)
    }
}

/// One client request's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

impl RequestId {
    /// The 16 lowercase hex characters, without an allocation.
    pub fn hex(self) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            let shift = 60 - 4 * i;
            *byte = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        out
    }

    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_bytes(&self.hex()).expect("hex digits are a valid header value")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&self.hex()).unwrap_or_default())
    }
}

/// Who answered an attempt.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// Nobody: the request failed before any provider was tried.
    None,
    /// A provider's key; the key names its provider.
    Key(Arc<Key>),
    /// A provider that answers without a key (`mock`, local token counts).
    Local(Box<str>),
}

impl Upstream {
    pub fn provider(&self) -> Option<&str> {
        match self {
            Upstream::None => None,
            Upstream::Key(key) => Some(&key.provider),
            Upstream::Local(name) => Some(name),
        }
    }

    fn key_id(&self) -> &str {
        match self {
            Upstream::Key(key) => &key.id,
            Upstream::None | Upstream::Local(_) => "",
        }
    }
}

/// One finished record, on its way to the shipper.
#[derive(Debug, Clone)]
pub struct Record {
    pub request: Arc<RequestInfo>,
    /// 0 for the client's answer, 1, 2, ... for upstream attempts.
    pub attempt: u32,
    pub at_unix_ms: i64,
    pub upstream: Upstream,
    /// The model sent upstream when it differs from the one asked for.
    pub model_served: Option<Box<str>>,
    /// 0 when there was no HTTP answer.
    pub status: u16,
    pub latency: Duration,
    /// `None` when no byte came.
    pub ttfb: Option<Duration>,
    pub usage: Usage,
    pub error_class: ErrorClass,
    pub excerpt: Option<Box<str>>,
}

/// One field's value on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl Wire<'_> {
    /// Bytes the field takes; 0 for a default value, which proto3 leaves out.
    fn len(&self, tag: u32) -> usize {
        use prost::encoding::{encoded_len_varint, key_len};
        match self {
            Wire::Varint(0) => 0,
            Wire::Bytes([]) => 0,
            Wire::Varint(v) => key_len(tag) + encoded_len_varint(*v),
            Wire::Bytes(b) => key_len(tag) + encoded_len_varint(b.len() as u64) + b.len(),
        }
    }

    fn write(&self, tag: u32, scratch: &mut Scratch) {
        match self {
            Wire::Varint(0) => {}
            Wire::Bytes([]) => {}
            Wire::Varint(v) => {
                scratch.varint(u64::from(tag << 3));
                scratch.varint(*v);
            }
            Wire::Bytes(b) => {
                scratch.varint(u64::from(tag << 3 | 2));
                scratch.varint(b.len() as u64);
                scratch.put(b);
            }
        }
    }

    fn encode(&self, tag: u32, buf: &mut impl BufMut) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        match self {
            Wire::Varint(0) => {}
            Wire::Bytes([]) => {}
            Wire::Varint(v) => {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(*v, buf);
            }
            Wire::Bytes(b) => {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(b.len() as u64, buf);
                buf.put_slice(b);
            }
        }
    }
}

/// Most bytes of a record written on the stack first: most records, without a capacity
/// check per byte.
const SCRATCH: usize = 512;

/// A stack buffer for one encoded record.
struct Scratch {
    bytes: [u8; SCRATCH],
    len: usize,
}

impl Scratch {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes[self.len] = (value as u8) | 0x80;
            self.len += 1;
            value >>= 7;
        }
        self.bytes[self.len] = value as u8;
        self.len += 1;
    }

    fn put(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

impl Record {
    /// The client's body goes with the client's answer, when it is an error.
    fn carries_body(&self) -> bool {
        self.attempt == 0 && self.error_class != ErrorClass::Unspecified
    }

    /// Appends the record to `buf` as field `tag` of the message being written: the same
    /// bytes as [`Record::to_pb`] encoded, without building the message and its strings.
    pub fn encode_field(&self, tag: u32, node: &str, buf: &mut impl BufMut) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let request = &self.request;
        let id = request.id.hex();
        let millis = |d: Duration| u64::from(u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
        let model_served = match (&self.model_served, &self.upstream) {
            (Some(model), _) => model,
            (None, Upstream::None) => "",
            (None, _) => &request.model,
        };
        let body = match &request.body {
            Some(body) if self.carries_body() => &body[..],
            _ => &[][..],
        };
        let fields: [Wire<'_>; 21] = [
            Wire::Varint(self.at_unix_ms.cast_unsigned()),
            Wire::Bytes(&id),
            Wire::Bytes(node.as_bytes()),
            Wire::Bytes(
                request
                    .client_token
                    .as_deref()
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            Wire::Varint(client_protocol(request.protocol) as u64),
            Wire::Bytes(request.operation.map_or("", Operation::as_str).as_bytes()),
            Wire::Bytes(request.route.get().map_or(&b""[..], |r| r.as_bytes())),
            Wire::Bytes(request.model.as_bytes()),
            Wire::Bytes(model_served.as_bytes()),
            Wire::Bytes(self.upstream.provider().unwrap_or_default().as_bytes()),
            Wire::Bytes(self.upstream.key_id().as_bytes()),
            Wire::Varint(u64::from(self.status)),
            Wire::Varint(millis(self.latency)),
            Wire::Varint(self.ttfb.map_or(0, millis)),
            Wire::Varint(self.usage.input_tokens),
            Wire::Varint(self.usage.output_tokens),
            Wire::Varint(u64::from(self.attempt)),
            Wire::Varint(self.error_class as u64),
            Wire::Varint(u64::from(request.stream)),
            Wire::Bytes(self.excerpt.as_deref().unwrap_or_default().as_bytes()),
            Wire::Bytes(body),
        ];
        // Field numbers run 1..=21 in the order above.
        let len: usize = (1u32..).zip(&fields).map(|(tag, f)| f.len(tag)).sum();
        let total =
            prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len;
        if total <= SCRATCH {
            let mut scratch = Scratch {
                bytes: [0; SCRATCH],
                len: 0,
            };
            scratch.varint(u64::from(tag << 3 | 2));
            scratch.varint(len as u64);
            for (tag, field) in (1u32..).zip(&fields) {
                field.write(tag, &mut scratch);
            }
            debug_assert_eq!(scratch.len, total);
            buf.put_slice(&scratch.bytes[..scratch.len]);
            return;
        }
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        for (tag, field) in (1u32..).zip(&fields) {
            field.encode(tag, buf);
        }
    }

    /// The record as it travels, for data plane `node`.
    pub fn to_pb(&self, node: &str) -> pb::RequestRecord {
        let request = &self.request;
        let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        pb::RequestRecord {
            at_unix_ms: self.at_unix_ms,
            request_id: request.id.to_string(),
            node: node.to_string(),
            client_token: request
                .client_token
                .as_deref()
                .unwrap_or_default()
                .to_string(),
            client_protocol: client_protocol(request.protocol) as i32,
            operation: request.operation.map_or("", Operation::as_str).to_string(),
            route: request
                .route
                .get()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            model_requested: request.model.to_string(),
            model_served: match (&self.model_served, &self.upstream) {
                (Some(model), _) => model.to_string(),
                (None, Upstream::None) => String::new(),
                (None, _) => request.model.to_string(),
            },
            provider: self.upstream.provider().unwrap_or_default().to_string(),
            key_id: self.upstream.key_id().to_string(),
            status: u32::from(self.status),
            latency_ms: millis(self.latency),
            ttfb_ms: self.ttfb.map_or(0, millis),
            input_tokens: self.usage.input_tokens,
            output_tokens: self.usage.output_tokens,
            attempt: self.attempt,
            error_class: self.error_class as i32,
            stream: request.stream,
            error_excerpt: self.excerpt.as_deref().unwrap_or_default().to_string(),
            request_body: match &request.body {
                Some(body) if self.carries_body() => body.to_vec(),
                _ => Vec::new(),
            },
        }
    }
}

fn client_protocol(protocol: Protocol) -> pb::ClientProtocol {
    match protocol {
        Protocol::OpenAi => pb::ClientProtocol::Openai,
        Protocol::Gemini => pb::ClientProtocol::Gemini,
        Protocol::Anthropic => pb::ClientProtocol::Anthropic,
    }
}

/// Makes request logs; one per data plane, cheap to clone.
#[derive(Clone, Debug)]
pub struct Recorder {
    shared: Arc<RecorderShared>,
}

#[derive(Debug)]
struct RecorderShared {
    ids: RequestIds,
    queue: RecordQueue,
    metrics: Arc<Metrics>,
}

/// The moment a request arrived, before anything about it is known.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    id: RequestId,
    at_unix_ms: i64,
    started: Instant,
}

impl Arrival {
    pub fn id(&self) -> RequestId {
        self.id
    }
}

/// What a request log is made of; what is not known yet stays `None`.
#[derive(Debug, Default)]
pub struct RequestFields {
    pub client_token: Option<Arc<str>>,
    pub operation: Option<Operation>,
    pub model: String,
    pub stream: bool,
    /// The client's body, kept only when `log_request_bodies` is on.
    pub body: Option<Bytes>,
}

impl Recorder {
    pub fn new(queue: RecordQueue, metrics: Arc<Metrics>, random: u64) -> Self {
        Self {
            shared: Arc::new(RecorderShared {
                ids: RequestIds::new(random),
                queue,
                metrics,
            }),
        }
    }

    /// Stamps a request as it arrives: its id and its start.
    pub fn arrival(&self) -> Arrival {
        Arrival {
            id: self.shared.ids.next(),
            at_unix_ms: crate::failover::now_ms(),
            started: Instant::now(),
        }
    }

    /// The log of one request. `settings` say whether successes are kept and whether
    /// the client's body is.
    pub fn request(
        &self,
        arrival: Arrival,
        protocol: Protocol,
        mut fields: RequestFields,
        settings: &Settings,
    ) -> RequestLog {
        if !settings.log_request_bodies {
            fields.body = None;
        }
        RequestLog(Arc::new(RequestInfo {
            id: arrival.id,
            at_unix_ms: arrival.at_unix_ms,
            started: arrival.started,
            client_token: fields.client_token,
            protocol,
            operation: fields.operation,
            model: fields.model.into_boxed_str(),
            stream: fields.stream,
            route: OnceLock::new(),
            body: fields
                .body
                .map(|body| body.slice(..body.len().min(MAX_REQUEST_BODY))),
            keep_successes: settings.request_logging,
            next_attempt: AtomicU32::new(1),
            upstream_micros: AtomicU64::new(0),
            recorder: self.clone(),
        }))
    }

    /// Records a request answered before it reached failover (unknown path, no config,
    /// no token, a body that is not JSON, ...) and returns its answer with its id.
    pub fn early_answer(
        &self,
        arrival: Arrival,
        protocol: Protocol,
        fields: RequestFields,
        settings: &Settings,
        class: ErrorClass,
        response: axum::response::Response,
    ) -> axum::response::Response {
        let log = self.request(arrival, protocol, fields, settings);
        log.answered(response, class, None)
    }

    /// Counts a record in the metrics; says whether it is kept.
    fn count(&self, record: &Record) -> bool {
        let metrics = &self.shared.metrics;
        if record.attempt == 0 {
            metrics.request(
                record.request.protocol,
                record.upstream.provider(),
                record.status,
            );
        } else if let Some(provider) = record.upstream.provider() {
            metrics.attempt(provider, record.latency, record.ttfb);
        }
        // Error records are kept whatever the setting says.
        record.request.keep_successes || record.error_class != ErrorClass::Unspecified
    }

    fn push(&self, record: Record) {
        if self.count(&record) {
            self.shared.queue.push(Queued::One(record));
        }
    }

    /// An attempt and the answer it gave, counted and pushed at once.
    fn push_pair(&self, attempt: Record, answer: Record) {
        match attempt.upstream.provider() {
            Some(provider) => self.shared.metrics.answered(
                answer.request.protocol,
                provider,
                answer.status,
                attempt.latency,
                attempt.ttfb,
            ),
            None => {
                self.count(&attempt);
                self.count(&answer);
            }
        }
        let keep =
            |r: &Record| r.request.keep_successes || r.error_class != ErrorClass::Unspecified;
        match (keep(&attempt), keep(&answer)) {
            (true, true) => self.shared.queue.push(Queued::Two(attempt, answer)),
            (true, false) => self.shared.queue.push(Queued::One(attempt)),
            (false, true) => self.shared.queue.push(Queued::One(answer)),
            (false, false) => {}
        }
    }
}

/// What a request's records share: one allocation per request.
#[derive(Debug)]
pub struct RequestInfo {
    pub id: RequestId,
    pub at_unix_ms: i64,
    started: Instant,
    pub client_token: Option<Arc<str>>,
    pub protocol: Protocol,
    /// `None` for a path that names no operation.
    pub operation: Option<Operation>,
    /// The model the client asked for ("" when the operation has none).
    pub model: Box<str>,
    pub stream: bool,
    /// The matched route's pattern, set by failover once it is known.
    pub route: OnceLock<Box<str>>,
    pub body: Option<Bytes>,
    keep_successes: bool,
    next_attempt: AtomicU32,
    /// Time spent in attempts already recorded, for the proxy's own share of the latency.
    upstream_micros: AtomicU64,
    recorder: Recorder,
}

/// One client request's log, shared by the handler and failover.
#[derive(Debug, Clone)]
pub struct RequestLog(Arc<RequestInfo>);

impl RequestLog {
    pub fn id(&self) -> RequestId {
        self.0.id
    }

    /// Notes the route that matched; the first one wins.
    pub fn set_route(&self, pattern: &str) {
        if self.0.route.get().is_none() {
            let _ = self.0.route.set(pattern.into());
        }
    }

    /// Starts the next upstream attempt.
    pub fn attempt(&self) -> AttemptStart {
        self.attempt_at(Instant::now())
    }

    /// Starts the next upstream attempt, begun at `started`.
    pub fn attempt_at(&self, started: Instant) -> AttemptStart {
        AttemptStart {
            number: self.0.next_attempt.fetch_add(1, Ordering::Relaxed),
            started,
        }
    }

    fn at_ms(&self, at: Instant) -> i64 {
        let offset = at.saturating_duration_since(self.0.started).as_millis();
        self.0
            .at_unix_ms
            .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
    }

    /// Records an attempt that failed; its answer does not reach the client as it is.
    pub fn failed_attempt(
        &self,
        start: AttemptStart,
        upstream: Upstream,
        meter: AttemptMeter,
        class: ErrorClass,
        excerpt: Option<Box<str>>,
    ) {
        let latency = start.started.elapsed();
        self.add_upstream_time(latency);
        self.0.recorder.push(Record {
            request: Arc::clone(&self.0),
            attempt: start.number,
            at_unix_ms: self.at_ms(start.started),
            upstream,
            model_served: meter.model_served,
            status: meter.status,
            latency,
            ttfb: meter.headers_at.map(|at| at.duration_since(start.started)),
            usage: Usage::default(),
            error_class: class,
            excerpt,
        });
    }

    /// An attempt whose answer goes to the client: recorded when the answer ends.
    pub fn committed_attempt(
        &self,
        start: AttemptStart,
        upstream: Upstream,
        meter: AttemptMeter,
    ) -> Attempt {
        Attempt {
            log: self.clone(),
            start,
            upstream,
            meter,
            done: false,
        }
    }

    fn add_upstream_time(&self, spent: Duration) {
        let micros = u64::try_from(spent.as_micros()).unwrap_or(u64::MAX);
        self.0.upstream_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Records the client's answer, made whole here (an error, a listing), and gives it
    /// the request id.
    pub fn answered(
        &self,
        mut response: axum::response::Response,
        class: ErrorClass,
        excerpt: Option<Box<str>>,
    ) -> axum::response::Response {
        set_request_id(response.headers_mut(), self.0.id);
        let latency = self.0.started.elapsed();
        let record = self.answer_record(
            response.status(),
            (Upstream::None, None),
            latency,
            Some(latency),
            Usage::default(),
            class,
            excerpt,
        );
        self.0.recorder.push(record);
        response
    }

    /// The attempt-0 record; counts the proxy's own time on the way.
    #[allow(clippy::too_many_arguments)]
    fn answer_record(
        &self,
        status: StatusCode,
        (upstream, model_served): (Upstream, Option<Box<str>>),
        latency: Duration,
        ttfb: Option<Duration>,
        usage: Usage,
        class: ErrorClass,
        excerpt: Option<Box<str>>,
    ) -> Record {
        let upstream_time = Duration::from_micros(self.0.upstream_micros.load(Ordering::Relaxed));
        self.0
            .recorder
            .shared
            .metrics
            .overhead(latency.saturating_sub(upstream_time));
        Record {
            request: Arc::clone(&self.0),
            attempt: 0,
            at_unix_ms: self.0.at_unix_ms,
            upstream,
            model_served,
            status: status.as_u16(),
            latency,
            ttfb,
            usage,
            error_class: class,
            excerpt,
        }
    }
}

/// Sets `x-request-id` unless the upstream already named one.
pub fn set_request_id(headers: &mut HeaderMap, id: RequestId) {
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), id.header_value());
    }
}

/// An attempt's number and start.
#[derive(Debug, Clone, Copy)]
pub struct AttemptStart {
    pub number: u32,
    started: Instant,
}

/// What an attempt learned on its way, filled in as it goes.
#[derive(Debug, Default)]
pub struct AttemptMeter {
    /// When the upstream's status and headers came.
    pub headers_at: Option<Instant>,
    /// The upstream's status; 0 without one.
    pub status: u16,
    /// The model sent upstream, when it differs from the client's.
    pub model_served: Option<Box<str>>,
}

/// The attempt that produced the client's answer; recorded when the answer ends (on drop
/// at the latest).
#[derive(Debug)]
pub struct Attempt {
    log: RequestLog,
    start: AttemptStart,
    upstream: Upstream,
    meter: AttemptMeter,
    done: bool,
}

impl Attempt {
    pub fn provider(&self) -> Option<&str> {
        self.upstream.provider()
    }

    /// The attempt's record, now that it ended.
    fn finish(&mut self, usage: Usage, class: ErrorClass, now: Instant) -> Record {
        self.done = true;
        let latency = now.saturating_duration_since(self.start.started);
        self.log.add_upstream_time(latency);
        Record {
            request: Arc::clone(&self.log.0),
            attempt: self.start.number,
            at_unix_ms: self.log.at_ms(self.start.started),
            upstream: self.upstream.clone(),
            model_served: self.meter.model_served.clone(),
            status: self.meter.status,
            latency,
            ttfb: self
                .meter
                .headers_at
                .map(|at| at.duration_since(self.start.started)),
            usage,
            error_class: class,
            excerpt: None,
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            let record = self.finish(Usage::default(), ErrorClass::Unspecified, Instant::now());
            self.log.0.recorder.push(record);
        }
    }
}

/// The client's answer from a committed attempt: watches it go out and records it, with
/// the attempt, when it ends or is dropped.
#[derive(Debug)]
pub struct Answer {
    log: RequestLog,
    attempt: Option<Attempt>,
    status: StatusCode,
    /// When the first byte was ready for the client.
    first_byte: Option<Duration>,
    /// The usage, when failover already read it; else the scanner that reads it.
    usage: Option<Usage>,
    scanner: Option<UsageScanner>,
    class: ErrorClass,
}

impl Answer {
    /// Watches an answer of `status` whose body is written in `upstream_protocol`;
    /// `usage` is the upstream's, when it is known already.
    pub fn new(
        log: RequestLog,
        attempt: Option<Attempt>,
        status: StatusCode,
        upstream_protocol: Protocol,
        usage: Option<Usage>,
    ) -> Self {
        Self {
            first_byte: Some(log.0.started.elapsed()),
            log,
            attempt,
            status,
            usage,
            scanner: usage
                .is_none()
                .then(|| UsageScanner::new(upstream_protocol)),
            class: ErrorClass::Unspecified,
        }
    }

    /// Reads the usage in a chunk of the upstream's answer.
    pub fn scan(&mut self, chunk: &[u8]) {
        if let Some(scanner) = self.scanner.as_mut() {
            scanner.scan(chunk);
        }
    }

    /// The answer broke after its first byte.
    pub fn cut(&mut self) {
        self.class = ErrorClass::StreamCut;
    }

    pub fn request_id(&self) -> RequestId {
        self.log.id()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        let usage = self
            .usage
            .or_else(|| self.scanner.as_ref().map(UsageScanner::usage))
            .unwrap_or_default();
        let now = Instant::now();
        // The client's answer names what its attempt used.
        let (attempt, served) = match self.attempt.as_mut() {
            Some(attempt) => {
                let record = attempt.finish(usage, self.class, now);
                let served = (attempt.upstream.clone(), attempt.meter.model_served.take());
                (Some(record), served)
            }
            None => (None, (Upstream::None, None)),
        };
        let latency = now.saturating_duration_since(self.log.0.started);
        let answer = self.log.answer_record(
            self.status,
            served,
            latency,
            self.first_byte,
            usage,
            self.class,
            None,
        );
        let recorder = &self.log.0.recorder;
        match attempt {
            Some(attempt) => recorder.push_pair(attempt, answer),
            None => recorder.push(answer),
        }
    }
}

/// At most [`MAX_EXCERPT`] bytes of an error body as text, with `secret` masked.
pub fn excerpt(body: &[u8], secret: Option<&str>) -> Option<Box<str>> {
    if body.is_empty() {
        return None;
    }
    // A little more than the limit, so that a key cut by the limit is still masked.
    let window = &body[..body.len().min(MAX_EXCERPT + 256)];
    let text = String::from_utf8_lossy(window);
    let mut text = match secret {
        Some(secret) => crate::upstream::mask_in(&text, secret),
        None => text.into_owned(),
    };
    if text.len() > MAX_EXCERPT {
        let mut end = MAX_EXCERPT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Some(text.into_boxed_str())
}

/// An error message as an excerpt.
pub fn message_excerpt(message: &str) -> Option<Box<str>> {
    excerpt(message.as_bytes(), None)
}

/// The error class of an answer made elsewhere (a listing), from its status alone.
pub fn class_of_status(status: StatusCode) -> ErrorClass {
    match status.as_u16() {
        0..=399 => ErrorClass::Unspecified,
        401 | 403 => ErrorClass::Unauthorized,
        429 => ErrorClass::RateLimited,
        400..=499 => ErrorClass::Client,
        _ => ErrorClass::Upstream,
    }
}

#[cfg(test)]
mod tests {
    use fulcrum_proto::model::{KeyState, Secret};

    use super::*;
    use crate::shipper::{Receivers, queues};

    fn recorder() -> (Recorder, Receivers, Arc<Metrics>) {
        let (_, queue, receivers, _) = queues();
        let metrics = Arc::new(Metrics::default());
        (
            Recorder::new(queue, Arc::clone(&metrics), 1),
            receivers,
            metrics,
        )
    }

    /// What reached the queue, as the control plane will read it.
    fn drain(receivers: &mut Receivers) -> Vec<pb::RequestRecord> {
        let mut out = Vec::new();
        while let Ok(queued) = receivers.records.try_recv() {
            for record in queued {
                let mut encoded = Vec::new();
                record.encode_field(5, "dp-1", &mut encoded);
                let decoded = <pb::ReportRequest as prost::Message>::decode(&encoded[..])
                    .unwrap()
                    .records;
                assert_eq!(decoded, vec![record.to_pb("dp-1")], "encoded as to_pb says");
                out.extend(decoded);
            }
        }
        out
    }

    fn key(id: &str, secret: &str) -> Arc<Key> {
        Arc::new(Key {
            id: id.into(),
            provider: "oa".into(),
            secret: Secret::new(secret.into()),
            state: KeyState::Active,
            state_reason: String::new(),
            state_until_unix_ms: 0,
            proxy: None,
            exhausted_models: Box::default(),
        })
    }

    fn fields(body: &'static [u8]) -> RequestFields {
        RequestFields {
            client_token: Some("app".into()),
            operation: Some(Operation::Chat),
            model: "fast".into(),
            stream: true,
            body: Some(Bytes::from_static(body)),
        }
    }

    #[test]
    fn a_streamed_answer_records_its_attempts_and_itself_when_it_ends() {
        let (recorder, mut receivers, metrics) = recorder();
        let mut settings = Settings::default();
        settings.log_request_bodies = true;
        let log = recorder.request(
            recorder.arrival(),
            Protocol::OpenAi,
            fields(b"{\"model\":\"fast\"}"),
            &settings,
        );
        log.set_route("fast");
        let secret = "sk-live-0123456789abcdef";
        let failed = log.attempt();
        log.failed_attempt(
            failed,
            Upstream::Key(key("aaaaaaaaaaaaaaaa", secret)),
            AttemptMeter {
                headers_at: Some(Instant::now()),
                status: 429,
                model_served: Some("gpt-4o-mini".into()),
            },
            ErrorClass::RateLimited,
            excerpt(format!("slow down, {secret}").as_bytes(), Some(secret)),
        );
        let start = log.attempt();
        let attempt = log.committed_attempt(
            start,
            Upstream::Key(key("bbbbbbbbbbbbbbbb", "sk-other-0123456789")),
            AttemptMeter {
                headers_at: Some(Instant::now()),
                status: 200,
                model_served: Some("gpt-4o-mini".into()),
            },
        );
        let mut answer = Answer::new(log, Some(attempt), StatusCode::OK, Protocol::OpenAi, None);
        answer.scan(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,");
        answer.scan(b"\"completion_tokens\":4}}\n\n");
        assert!(
            drain(&mut receivers).len() == 1,
            "only the failed attempt so far"
        );
        answer.cut();
        drop(answer);

        let records = drain(&mut receivers);
        let [attempt, zero] = &records[..] else {
            panic!("{records:?}");
        };
        assert_eq!(attempt.attempt, 2);
        assert_eq!(attempt.key_id, "bbbbbbbbbbbbbbbb");
        assert_eq!(attempt.error_class, ErrorClass::StreamCut as i32);
        assert_eq!((attempt.input_tokens, attempt.output_tokens), (3, 4));
        assert_eq!(zero.attempt, 0);
        assert_eq!(zero.request_id, attempt.request_id);
        assert_eq!(zero.status, 200);
        assert_eq!(zero.provider, "oa");
        assert_eq!(zero.key_id, "bbbbbbbbbbbbbbbb");
        assert_eq!(zero.route, "fast");
        assert_eq!(zero.model_requested, "fast");
        assert_eq!(zero.model_served, "gpt-4o-mini");
        assert_eq!(zero.client_token, "app");
        assert_eq!(zero.operation, "chat");
        assert_eq!(zero.node, "dp-1");
        assert!(zero.stream);
        assert_eq!((zero.input_tokens, zero.output_tokens), (3, 4));
        assert_eq!(zero.error_class, ErrorClass::StreamCut as i32);
        // An error record: the client's body goes with it.
        assert_eq!(zero.request_body, b"{\"model\":\"fast\"}");
        assert!(attempt.request_body.is_empty());

        assert_eq!(metrics.requests(Some("oa"), 2), 1);
    }

    #[test]
    fn failed_attempts_are_recorded_at_once_with_a_masked_excerpt() {
        let (recorder, mut receivers, _) = recorder();
        let log = recorder.request(
            recorder.arrival(),
            Protocol::Gemini,
            fields(b"{}"),
            &Settings::default(),
        );
        let secret = "sk-live-0123456789abcdef";
        log.failed_attempt(
            log.attempt(),
            Upstream::Key(key("aaaaaaaaaaaaaaaa", secret)),
            AttemptMeter {
                headers_at: Some(Instant::now()),
                status: 401,
                model_served: None,
            },
            ErrorClass::Unauthorized,
            excerpt(format!("bad key {secret}").as_bytes(), Some(secret)),
        );
        let response = axum::response::Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(axum::body::Body::empty())
            .unwrap();
        let answered = log.answered(response, ErrorClass::NoCandidate, None);
        assert_eq!(
            answered.headers()[&X_REQUEST_ID].to_str().unwrap(),
            log.id().to_string()
        );
        let records = drain(&mut receivers);
        let [attempt, zero] = &records[..] else {
            panic!("{records:?}");
        };
        assert_eq!(attempt.status, 401);
        assert_eq!(attempt.model_served, "fast");
        assert!(!attempt.error_excerpt.contains(secret));
        assert!(attempt.error_excerpt.contains("bad key sk-liv...cdef"));
        assert_eq!(zero.status, 503);
        assert_eq!(zero.provider, "");
        assert_eq!(zero.error_class, ErrorClass::NoCandidate as i32);
        assert_eq!(zero.client_protocol, pb::ClientProtocol::Gemini as i32);
        // Bodies are kept only when the setting says so.
        assert!(zero.request_body.is_empty());
    }

    #[test]
    fn without_request_logging_only_error_records_are_kept() {
        let (recorder, mut receivers, metrics) = recorder();
        let mut settings = Settings::default();
        settings.request_logging = false;
        let ok = recorder.request(recorder.arrival(), Protocol::OpenAi, fields(b""), &settings);
        let attempt = ok.committed_attempt(
            ok.attempt(),
            Upstream::Local("mock".into()),
            AttemptMeter::default(),
        );
        drop(Answer::new(
            ok,
            Some(attempt),
            StatusCode::OK,
            Protocol::OpenAi,
            None,
        ));
        assert!(drain(&mut receivers).is_empty());
        assert_eq!(metrics.requests(Some("mock"), 2), 1, "counted all the same");

        let denied = recorder.early_answer(
            recorder.arrival(),
            Protocol::OpenAi,
            RequestFields::default(),
            &settings,
            ErrorClass::Auth,
            axum::response::Response::default(),
        );
        assert!(denied.headers().contains_key(&X_REQUEST_ID));
        let records = drain(&mut receivers);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].error_class, ErrorClass::Auth as i32);
        assert_eq!(records[0].client_token, "");
    }

    #[test]
    fn request_ids_are_16_hex_with_a_shared_prefix() {
        let ids = RequestIds::new(0xabcd_ef12_3456_789a);
        let a = ids.next().to_string();
        let b = ids.next().to_string();
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        assert_eq!(a, "56789a0000000000");
        assert_eq!(b, "56789a0000000001");
        assert_eq!(&a[..6], &b[..6]);
        assert_eq!(ids.next().header_value(), "56789a0000000002");

        let other = RequestIds::new(0x1234);
        assert_ne!(other.next().to_string()[..6], a[..6]);
    }

    #[test]
    fn the_counter_wraps_inside_its_bits() {
        let ids = RequestIds::new(0xffffff);
        ids.next.store((1 << COUNTER_BITS) - 1, Ordering::Relaxed);
        assert_eq!(ids.next().to_string(), "ffffffffffffffff");
        assert_eq!(ids.next().to_string(), "ffffff0000000000");
    }

    #[test]
    fn excerpts_are_bounded_and_masked() {
        let secret = "sk-live-0123456789abcdef";
        let mut body = format!("{{\"error\":\"bad key {secret}\",\"pad\":\"");
        body.push_str(&"é".repeat(3000));
        let cut = excerpt(body.as_bytes(), Some(secret)).unwrap();
        assert!(cut.len() <= MAX_EXCERPT);
        assert!(!cut.contains(secret));
        assert!(cut.contains("sk-liv...cdef"));
        assert_eq!(excerpt(b"", None), None);
        assert_eq!(
            excerpt(b"\xff\xfe oops", None).as_deref(),
            Some("\u{fffd}\u{fffd} oops")
        );
    }

    #[test]
    fn statuses_classify() {
        assert_eq!(class_of_status(StatusCode::OK), ErrorClass::Unspecified);
        assert_eq!(class_of_status(StatusCode::NOT_FOUND), ErrorClass::Client);
        assert_eq!(
            class_of_status(StatusCode::TOO_MANY_REQUESTS),
            ErrorClass::RateLimited
        );
        assert_eq!(
            class_of_status(StatusCode::BAD_GATEWAY),
            ErrorClass::Upstream
        );
    }
}

/// What records cost, measured rather than asserted: the request side (a log, an attempt,
/// an answer with its usage read, one push) and the shipper side (encoding a record).
/// Measured on the project's 2-core machine: about 1.1 µs per request and 0.13 µs per
/// record, against about 22 µs of CPU per request for the whole proxy.
#[cfg(test)]
mod speed {
    use super::*;
    use crate::shipper::queues;

    #[test]
    #[ignore = "a measurement: cargo test --release -p fulcrum-proxy speed -- --ignored --nocapture"]
    fn what_records_cost() {
        let (_, queue, mut receivers, _) = queues();
        let recorder = Recorder::new(queue, Arc::new(Metrics::default()), 1);
        let settings = Settings::default();
        let key = Arc::new(Key {
            id: "0123456789abcdef".into(),
            provider: "up".into(),
            secret: fulcrum_proto::model::Secret::new("sk-xxxxxxxxxxxxxxxxxxxx".into()),
            state: fulcrum_proto::model::KeyState::Active,
            state_reason: String::new(),
            state_until_unix_ms: 0,
            proxy: None,
            exhausted_models: Box::default(),
        });
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#;
        let n = 200_000;
        let t = Instant::now();
        for _ in 0..n {
            let log = recorder.request(
                recorder.arrival(),
                Protocol::OpenAi,
                RequestFields {
                    client_token: Some("app".into()),
                    operation: Some(Operation::Chat),
                    model: "gpt-4o-mini".into(),
                    stream: false,
                    body: None,
                },
                &settings,
            );
            let attempt = log.committed_attempt(
                log.attempt(),
                Upstream::Key(Arc::clone(&key)),
                AttemptMeter {
                    headers_at: Some(Instant::now()),
                    status: 200,
                    model_served: None,
                },
            );
            let mut answer =
                Answer::new(log, Some(attempt), StatusCode::OK, Protocol::OpenAi, None);
            answer.scan(body);
            drop(answer);
            if receivers.records.len() > 10_000 {
                while receivers.records.try_recv().is_ok() {}
            }
        }
        eprintln!("request+answer+push: {:?}/req", t.elapsed() / n);
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(crate::usage::UsageScanner::whole(
                Protocol::OpenAi,
                std::hint::black_box(body),
            ));
        }
        eprintln!("usage whole: {:?}", t.elapsed() / n);
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(crate::usage::UsageScanner::new(Protocol::OpenAi));
        }
        eprintln!("scanner new: {:?}", t.elapsed() / n);
        while receivers.records.try_recv().is_ok() {}
        let log = recorder.request(
            recorder.arrival(),
            Protocol::OpenAi,
            RequestFields {
                client_token: Some("app".into()),
                operation: Some(Operation::Chat),
                model: "gpt-4o-mini".into(),
                stream: false,
                body: None,
            },
            &settings,
        );
        let attempt = log.committed_attempt(
            log.attempt(),
            Upstream::Key(Arc::clone(&key)),
            AttemptMeter {
                headers_at: Some(Instant::now()),
                status: 200,
                model_served: None,
            },
        );
        drop(Answer::new(
            log,
            Some(attempt),
            StatusCode::OK,
            Protocol::OpenAi,
            None,
        ));
        let mut records = Vec::new();
        while let Ok(q) = receivers.records.try_recv() {
            records.extend(q);
        }
        let mut buf = bytes::BytesMut::new();
        let t = Instant::now();
        for i in 0..n {
            records[i as usize % 2].encode_field(5, "dp-bench-node", &mut buf);
            if buf.len() > 1 << 20 {
                buf.clear();
            }
        }
        eprintln!("encode_field: {:?}/record", t.elapsed() / n);
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(records[0].request.id.header_value());
        }
        eprintln!("header value: {:?}", t.elapsed() / n);
    }
}
