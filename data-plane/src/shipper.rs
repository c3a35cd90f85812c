//! Ships key events and request records to the control plane on one `TelemetryService`
//! stream, in acknowledged batches.
//!
//! Requests never wait for this: they put what they have into one of two bounded queues
//! and go on; a full queue drops it, counted and warned about. Key events steer key
//! health, so they go out at once. Records are taken from their queue every [`TICK`] into
//! the shipper's buffer and travel in batches, at the latest [`LINGER`] after they came.
//!
//! The buffer holds at most `request_log_buffer` records, counting those sent and not yet
//! acknowledged. When it is full (the control plane away or slow), the oldest record not
//! yet sent is dropped, counted in `dropped_records` and warned about. A record already
//! sent stays until it is acknowledged or its stream fails: the control plane may hold it
//! already, so dropping it could not be counted honestly. At most half the buffer is in
//! flight, which leaves the other half for what comes meanwhile.
//!
//! A batch not acknowledged when its stream ended is sent again, unchanged, with the same
//! instance id and sequence, on the next stream; the control plane stores a sequence once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fulcrum_proto::pb;
use http::uri::PathAndQuery;
use tokio::sync::{mpsc, watch};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::GrpcMethod;
use tonic::metadata::{Ascii, MetadataValue};
use tracing::{debug, warn};

use crate::records::Record;
use crate::runtime::RuntimeConfigHandle;

/// The one RPC of `TelemetryService`.
const REPORT_PATH: &str = "/fulcrum.v1.TelemetryService/Report";
/// Key events waiting to be batched.
const KEY_EVENT_QUEUE: usize = 16_384;
/// Records between two ticks: room for a few hundred thousand records a second.
const RECORD_QUEUE: usize = 32_768;
/// Most key events in one batch.
const BATCH_KEY_EVENTS: usize = 1_000;
/// Most records in one batch.
const BATCH_RECORDS: usize = 1_000;
/// Most bytes (estimated) of records in one batch, whatever their bodies.
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most unacknowledged batches; bounds the stream's send queue too.
const UNACKED_BATCHES: usize = 256;
/// How often records are taken from their queue. Taking them encodes them, on the thread
/// that serves requests: every 100 ms that was 2,500 records at 25,000 records/s, a
/// 2–3 ms stall that doubled the p99 latency with request logging on. Every 10 ms the
/// stall is a tenth of that, and the queue holds a tenth as many records.
pub const TICK: Duration = Duration::from_millis(10);
/// Longest a record waits for its batch to fill.
pub const LINGER: Duration = Duration::from_millis(500);
/// Longest the shipper tries to send what it holds once the data plane stops.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// Fewest seconds between two warnings about dropped records.
const WARN_EVERY_MS: i64 = 10_000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The buffer before the first config names one (the setting's default).
const DEFAULT_BUFFER: usize = 100_000;

/// Counters of the shipping side, shared with metrics and tests.
#[derive(Debug)]
pub struct Stats {
    /// The record queue, to read its length; weak, so that it never keeps the queue open.
    queue: mpsc::WeakSender<Queued>,
    records_dropped: AtomicU64,
    records_acked: AtomicU64,
    /// In the shipper's buffer: waiting for a batch, or sent and not yet acknowledged.
    records_held: AtomicU64,
    key_events_dropped: AtomicU64,
    last_warning_ms: AtomicI64,
}

impl Stats {
    fn new(queue: mpsc::WeakSender<Queued>) -> Self {
        Self {
            queue,
            records_dropped: AtomicU64::new(0),
            records_acked: AtomicU64::new(0),
            records_held: AtomicU64::new(0),
            key_events_dropped: AtomicU64::new(0),
            last_warning_ms: AtomicI64::new(0),
        }
    }

    /// Records dropped since start because the buffer or the queue was full.
    pub fn records_dropped(&self) -> u64 {
        self.records_dropped.load(Ordering::Relaxed)
    }

    /// Records the control plane has acknowledged.
    pub fn records_acked(&self) -> u64 {
        self.records_acked.load(Ordering::Relaxed)
    }

    /// Records queued, waiting, or in flight: everything not yet acknowledged or dropped.
    /// (The queue's part is counted in pushes, of one or two records each.)
    pub fn depth(&self) -> u64 {
        let queued = self
            .queue
            .upgrade()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity());
        queued as u64 + self.records_held.load(Ordering::Relaxed)
    }

    /// Key events dropped since start.
    pub fn key_events_dropped(&self) -> u64 {
        self.key_events_dropped.load(Ordering::Relaxed)
    }

    /// Counts `n` dropped records; warns at most every ten seconds.
    fn drop_records(&self, n: u64) {
        if n == 0 {
            return;
        }
        let dropped = self.records_dropped.fetch_add(n, Ordering::Relaxed) + n;
        let now = crate::failover::now_ms();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now - last >= WARN_EVERY_MS
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                dropped,
                "request log buffer full; dropping the oldest records (see request_log_buffer)"
            );
        }
    }
}

/// Where requests put key events; cheap to clone.
#[derive(Clone, Debug)]
pub struct KeyEvents {
    tx: mpsc::Sender<pb::KeyEvent>,
    stats: Arc<Stats>,
}

impl KeyEvents {
    /// Queues an event without waiting; a full queue drops it (counted, and warned about).
    pub fn report(&self, event: pb::KeyEvent) {
        if self.tx.try_send(event).is_err() {
            let dropped = self
                .stats
                .key_events_dropped
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            // Every 1,000th, so that a flood does not become a flood of warnings too.
            if dropped % 1_000 == 1 {
                warn!(dropped, "key event queue full; dropping key events");
            }
        }
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.stats.key_events_dropped()
    }
}

/// One push into the record queue: an answer usually comes with the attempt that gave
/// it, and one push for both halves the queue's work.
#[derive(Debug)]
pub enum Queued {
    One(Record),
    Two(Record, Record),
}

impl Queued {
    fn len(&self) -> u64 {
        match self {
            Queued::One(_) => 1,
            Queued::Two(..) => 2,
        }
    }
}

impl IntoIterator for Queued {
    type Item = Record;
    type IntoIter = std::iter::Chain<std::iter::Once<Record>, std::option::IntoIter<Record>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Queued::One(a) => std::iter::once(a).chain(None),
            Queued::Two(a, b) => std::iter::once(a).chain(Some(b)),
        }
    }
}

/// Where requests put their records; cheap to clone.
#[derive(Clone, Debug)]
pub struct RecordQueue {
    tx: mpsc::Sender<Queued>,
    stats: Arc<Stats>,
}

impl RecordQueue {
    /// Queues records without waiting; a full queue drops them, counted like the buffer's.
    pub fn push(&self, queued: Queued) {
        // Closed only once the shipper is gone: at the very end of shutdown.
        if let Err(e) = self.tx.try_send(queued) {
            let lost = match e {
                mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q) => {
                    q.len()
                }
            };
            self.stats.drop_records(lost);
        }
    }
}

/// The receiving ends of the queues, for the shipper.
#[derive(Debug)]
pub struct Receivers {
    key_events: mpsc::Receiver<pb::KeyEvent>,
    pub(crate) records: mpsc::Receiver<Queued>,
}

/// Makes both queues and the counters they share.
pub fn queues() -> (KeyEvents, RecordQueue, Receivers, Arc<Stats>) {
    let (key_tx, key_rx) = mpsc::channel(KEY_EVENT_QUEUE);
    let (record_tx, record_rx) = mpsc::channel(RECORD_QUEUE);
    let stats = Arc::new(Stats::new(record_tx.downgrade()));
    (
        KeyEvents {
            tx: key_tx,
            stats: Arc::clone(&stats),
        },
        RecordQueue {
            tx: record_tx,
            stats: Arc::clone(&stats),
        },
        Receivers {
            key_events: key_rx,
            records: record_rx,
        },
        stats,
    )
}

/// One report, kept until acknowledged. Its records are kept encoded: the bytes a
/// resend needs, and a fraction of the memory the records themselves take.
#[derive(Debug)]
struct Batch {
    sequence: u64,
    key_events: Vec<pb::KeyEvent>,
    /// `ReportRequest.records` fields, encoded.
    records: Bytes,
    record_count: usize,
}

/// Records not yet batched, encoded as `ReportRequest.records` fields one after the
/// other: a batch is a split of the front, without a copy.
#[derive(Debug, Default)]
struct Pending {
    bytes: BytesMut,
    /// Each record's length in `bytes`, oldest first.
    lengths: VecDeque<usize>,
    /// When the oldest arrived.
    since: Option<Instant>,
}

impl Pending {
    fn len(&self) -> usize {
        self.lengths.len()
    }

    fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    fn push(&mut self, record: &Record, node: &str, now: Instant) {
        if self.is_empty() {
            self.since = Some(now);
        }
        let before = self.bytes.len();
        record.encode_field(RECORDS_FIELD, node, &mut self.bytes);
        self.lengths.push_back(self.bytes.len() - before);
    }

    fn drop_oldest(&mut self) -> bool {
        let Some(length) = self.lengths.pop_front() else {
            return false;
        };
        self.bytes.advance(length);
        if self.is_empty() {
            self.since = None;
        }
        true
    }

    /// The oldest records, at most `most` of them and about `BATCH_BYTES`.
    fn take(&mut self, most: usize) -> (Bytes, usize) {
        let mut count = 0;
        let mut bytes = 0;
        while count < most && bytes < BATCH_BYTES {
            let Some(length) = self.lengths.pop_front() else {
                break;
            };
            bytes += length;
            count += 1;
        }
        if self.is_empty() {
            self.since = None;
        }
        (self.bytes.split_to(bytes).freeze(), count)
    }
}

/// `ReportRequest.records`.
const RECORDS_FIELD: u32 = 5;
/// `ReportRequest.dropped_records`.
const DROPPED_RECORDS_FIELD: u32 = 6;

/// What the shipper holds: records not yet batched, and batches not yet acknowledged.
/// Pure bookkeeping, no I/O.
#[derive(Debug)]
struct Outbox {
    /// The node id every record names.
    node: String,
    pending: Pending,
    unacked: VecDeque<Batch>,
    unacked_records: usize,
    next_sequence: u64,
    /// Highest sequence ever put on a stream: batches after it may still grow.
    sent_ever: u64,
    /// Most records held, pending and unacknowledged together.
    capacity: usize,
}

/// What a change to the outbox dropped.
#[derive(Debug, Default, PartialEq, Eq)]
struct Dropped {
    records: u64,
    key_events: u64,
}

impl Outbox {
    fn new(capacity: usize, node: &str) -> Self {
        Self {
            node: node.to_string(),
            pending: Pending::default(),
            unacked: VecDeque::new(),
            unacked_records: 0,
            next_sequence: 1,
            sent_ever: 0,
            capacity: capacity.max(1),
        }
    }

    fn held(&self) -> usize {
        self.pending.len() + self.unacked_records
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.unacked.is_empty()
    }

    /// Records per batch: small buffers send small batches, so that one is never most of it.
    fn batch_records(&self) -> usize {
        (self.capacity / 4).clamp(1, BATCH_RECORDS)
    }

    /// Most records in flight at once: half the buffer.
    fn window(&self) -> usize {
        (self.capacity / 2).max(self.batch_records())
    }

    /// Applies a new buffer size; what no longer fits goes, oldest first.
    fn set_capacity(&mut self, capacity: usize) -> u64 {
        self.capacity = capacity.max(1);
        let mut dropped = 0;
        while self.held() > self.capacity && self.pending.drop_oldest() {
            dropped += 1;
        }
        dropped
    }

    /// Adds a record; returns how many were dropped to make room (or it, when every
    /// record held is in flight).
    fn push_record(&mut self, record: &Record, now: Instant) -> u64 {
        let mut dropped = 0;
        if self.held() >= self.capacity {
            if !self.pending.drop_oldest() {
                return 1;
            }
            dropped = 1;
        }
        self.pending.push(record, &self.node, now);
        dropped
    }

    /// Adds key events to the last batch not yet sent, or to a new one.
    fn push_key_events(&mut self, events: Vec<pb::KeyEvent>) -> Dropped {
        if let Some(last) = self.unacked.back_mut()
            && last.sequence > self.sent_ever
            && last.key_events.len() + events.len() <= BATCH_KEY_EVENTS
        {
            last.key_events.extend(events);
            return Dropped::default();
        }
        let dropped = self.make_room();
        self.push_batch(events, Bytes::new(), 0);
        dropped
    }

    /// Drops the oldest batch when the unacknowledged ones reach their bound.
    fn make_room(&mut self) -> Dropped {
        if self.unacked.len() < UNACKED_BATCHES {
            return Dropped::default();
        }
        let Some(oldest) = self.unacked.pop_front() else {
            return Dropped::default();
        };
        self.unacked_records -= oldest.record_count;
        Dropped {
            records: oldest.record_count as u64,
            key_events: oldest.key_events.len() as u64,
        }
    }

    fn push_batch(&mut self, key_events: Vec<pb::KeyEvent>, records: Bytes, record_count: usize) {
        self.unacked_records += record_count;
        self.unacked.push_back(Batch {
            sequence: self.next_sequence,
            key_events,
            records,
            record_count,
        });
        self.next_sequence += 1;
    }

    /// Turns pending records into batches: full ones, and the rest once the oldest has
    /// waited `LINGER` (or at once with `flush`), as far as the window allows.
    fn make_batches(&mut self, now: Instant, flush: bool) {
        loop {
            let ripe = self.pending.len() >= self.batch_records()
                || flush
                || self
                    .pending
                    .since
                    .is_some_and(|since| now.duration_since(since) >= LINGER);
            let room = self.window().saturating_sub(self.unacked_records);
            if self.pending.is_empty()
                || !ripe
                || room == 0
                || self.unacked.len() >= UNACKED_BATCHES
            {
                return;
            }
            let (records, count) = self.pending.take(self.batch_records().min(room));
            self.push_batch(Vec::new(), records, count);
        }
    }

    /// Forgets the batches up to `sequence`; returns the records acknowledged.
    fn ack(&mut self, sequence: u64) -> u64 {
        let mut acked = 0;
        while self.unacked.front().is_some_and(|b| b.sequence <= sequence) {
            if let Some(batch) = self.unacked.pop_front() {
                acked += batch.record_count as u64;
                self.unacked_records -= batch.record_count;
            }
        }
        acked
    }
}

/// A `ReportRequest` as it goes on the wire: the small fields encoded for this send, the
/// batch's records as they were encoded once. Encode-only.
#[derive(Debug, Default)]
pub struct EncodedReport {
    head: Bytes,
    records: Bytes,
    dropped_records: u64,
}

impl prost::Message for EncodedReport {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.head);
        buf.put_slice(&self.records);
        if self.dropped_records > 0 {
            prost::encoding::uint64::encode(DROPPED_RECORDS_FIELD, &self.dropped_records, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded here: the control plane reads these.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let dropped = if self.dropped_records > 0 {
            prost::encoding::uint64::encoded_len(DROPPED_RECORDS_FIELD, &self.dropped_records)
        } else {
            0
        };
        self.head.len() + self.records.len() + dropped
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The sending side: one task per data plane.
pub struct Shipper {
    endpoint: Arc<crate::discovery::ControlPlaneEndpoint>,
    authorization: MetadataValue<Ascii>,
    node: pb::Node,
    instance_id: String,
    key_events: mpsc::Receiver<pb::KeyEvent>,
    key_events_open: bool,
    records: mpsc::Receiver<Queued>,
    runtime: RuntimeConfigHandle,
    stats: Arc<Stats>,
    outbox: Outbox,
}

impl Shipper {
    pub fn new(
        endpoint: Arc<crate::discovery::ControlPlaneEndpoint>,
        authorization: MetadataValue<Ascii>,
        node: pb::Node,
        instance_id: String,
        receivers: Receivers,
        runtime: RuntimeConfigHandle,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            endpoint,
            authorization,
            instance_id,
            key_events: receivers.key_events,
            key_events_open: true,
            records: receivers.records,
            runtime,
            stats,
            outbox: Outbox::new(DEFAULT_BUFFER, &node.id),
            node,
        }
    }

    /// Ships until `stop` turns true, then tries for a moment to send what is left.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff = BACKOFF_MIN;
        loop {
            // Open a stream only when there is something to send.
            while self.outbox.is_empty() {
                let stopping = tokio::select! {
                    _ = stop.wait_for(|s| *s) => true,
                    event = self.key_events.recv(), if self.key_events_open => {
                        self.take_key_events(event);
                        false
                    }
                    _ = tick.tick() => {
                        self.take_records();
                        false
                    }
                };
                if stopping {
                    return self.final_flush(&mut tick).await;
                }
            }
            let started = Instant::now();
            let result = tokio::select! {
                _ = stop.wait_for(|s| *s) => None,
                result = self.stream(&mut tick, false) => Some(result),
            };
            let Some(result) = result else {
                return self.final_flush(&mut tick).await;
            };
            if let Err(e) = result {
                warn!(error = %e, unacked = self.outbox.unacked.len(), "telemetry stream failed; will send again");
            }
            // A stream that lived a while earned a fresh backoff.
            if started.elapsed() > Duration::from_secs(10) {
                backoff = BACKOFF_MIN;
            }
            // Meanwhile records still come in, and the buffer's bound still holds.
            let wake = tokio::time::sleep(backoff);
            tokio::pin!(wake);
            loop {
                let stopping = tokio::select! {
                    _ = stop.wait_for(|s| *s) => true,
                    () = &mut wake => break,
                    event = self.key_events.recv(), if self.key_events_open => {
                        self.take_key_events(event);
                        false
                    }
                    _ = tick.tick() => {
                        self.take_records();
                        false
                    }
                };
                if stopping {
                    return self.final_flush(&mut tick).await;
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Sends what is left, within `FINAL_FLUSH`; what cannot be sent is lost with the
    /// process.
    async fn final_flush(&mut self, tick: &mut Interval) {
        self.take_records();
        while let Ok(event) = self.key_events.try_recv() {
            self.take_key_events(Some(event));
        }
        if self.outbox.is_empty() {
            return;
        }
        match tokio::time::timeout(FINAL_FLUSH, self.stream(tick, true)).await {
            Ok(Ok(())) => debug!("telemetry flushed"),
            Ok(Err(e)) => {
                warn!(error = %e, records = self.outbox.held(), "cannot flush telemetry at shutdown")
            }
            Err(_) => {
                warn!(
                    records = self.outbox.held(),
                    "telemetry not flushed in time at shutdown"
                )
            }
        }
    }

    /// Moves `first` and whatever else is queued into the outbox.
    fn take_key_events(&mut self, first: Option<pb::KeyEvent>) {
        let Some(first) = first else {
            self.key_events_open = false;
            return;
        };
        let mut events = vec![first];
        while events.len() < BATCH_KEY_EVENTS {
            match self.key_events.try_recv() {
                Ok(event) => events.push(event),
                Err(_) => break,
            }
        }
        let dropped = self.outbox.push_key_events(events);
        self.count_dropped(&dropped);
    }

    /// Moves every queued record into the outbox, dropping the oldest past its bound.
    fn take_records(&mut self) {
        let capacity = self
            .runtime
            .load()
            .map_or(DEFAULT_BUFFER, |c| c.settings.request_log_buffer);
        let mut dropped = 0;
        if capacity != self.outbox.capacity {
            dropped += self.outbox.set_capacity(capacity);
        }
        let now = Instant::now();
        while let Ok(queued) = self.records.try_recv() {
            for record in queued {
                dropped += self.outbox.push_record(&record, now);
            }
        }
        self.stats.drop_records(dropped);
        self.update_held();
    }

    fn count_dropped(&self, dropped: &Dropped) {
        self.stats.drop_records(dropped.records);
        if dropped.key_events > 0 {
            let total = self
                .stats
                .key_events_dropped
                .fetch_add(dropped.key_events, Ordering::Relaxed)
                + dropped.key_events;
            warn!(
                lost = dropped.key_events,
                dropped = total,
                "control plane away too long; dropping the oldest key events"
            );
        }
        self.update_held();
    }

    fn update_held(&self) {
        self.stats
            .records_held
            .store(self.outbox.held() as u64, Ordering::Relaxed);
    }

    /// A batch as it travels; the first of a stream names this data plane.
    fn report(&self, batch: &Batch, first: bool) -> EncodedReport {
        use prost::Message;
        let mut head = BytesMut::new();
        if first {
            prost::encoding::message::encode(1, &self.node, &mut head);
            prost::encoding::string::encode(2, &self.instance_id, &mut head);
        }
        prost::encoding::uint64::encode(3, &batch.sequence, &mut head);
        for event in &batch.key_events {
            prost::encoding::message::encode(4, event, &mut head);
        }
        debug_assert!(self.node.encoded_len() > 0);
        EncodedReport {
            head: head.freeze(),
            records: batch.records.clone(),
            dropped_records: self.stats.records_dropped(),
        }
    }

    /// Puts every batch after `sent` on the stream.
    fn send_new(
        &mut self,
        tx: &mpsc::Sender<EncodedReport>,
        sent: &mut u64,
        first: &mut bool,
    ) -> Result<(), String> {
        let after = *sent;
        for batch in self.outbox.unacked.iter().filter(|b| b.sequence > after) {
            // The channel holds every unacknowledged batch, so this never waits.
            tx.try_send(self.report(batch, *first))
                .map_err(|_| "telemetry stream is not keeping up".to_string())?;
            *first = false;
            *sent = batch.sequence;
        }
        self.outbox.sent_ever = self.outbox.sent_ever.max(*sent);
        Ok(())
    }

    /// One stream: resend what is unacknowledged, then send new batches as they come.
    /// With `until_empty`, every pending record goes at once and the stream ends when
    /// everything is acknowledged.
    async fn stream(&mut self, tick: &mut Interval, until_empty: bool) -> Result<(), String> {
        let channel = self
            .endpoint
            .current()
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut client = tonic::client::Grpc::new(channel);
        let (tx, rx) = mpsc::channel::<EncodedReport>(UNACKED_BATCHES + 1);
        let mut first = true;
        let mut sent = 0;
        self.take_records();
        self.outbox.make_batches(Instant::now(), until_empty);
        self.send_new(&tx, &mut sent, &mut first)?;
        client.ready().await.map_err(|e| format!("connect: {e}"))?;
        // `TelemetryService.Report`, with the records already encoded: the generated
        // client would want them as messages, strings and all.
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
            .extensions_mut()
            .insert(GrpcMethod::new("fulcrum.v1.TelemetryService", "Report"));
        let codec = tonic_prost::ProstCodec::<EncodedReport, pb::ReportResponse>::default();
        let mut acks = client
            .streaming(request, PathAndQuery::from_static(REPORT_PATH), codec)
            .await
            .map_err(|s| format!("open: {}", s.message()))?
            .into_inner();
        loop {
            if until_empty && self.outbox.is_empty() {
                return Ok(());
            }
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => {
                        let acked = self.outbox.ack(ack.acked_sequence);
                        self.stats.records_acked.fetch_add(acked, Ordering::Relaxed);
                        self.update_held();
                        debug!(sequence = ack.acked_sequence, records = acked, "report acknowledged");
                    }
                    Ok(None) => return Err("control plane closed the stream".into()),
                    Err(status) => return Err(status.message().to_string()),
                },
                event = self.key_events.recv(), if self.key_events_open => {
                    self.take_key_events(event);
                    self.send_new(&tx, &mut sent, &mut first)?;
                }
                _ = tick.tick() => {
                    self.take_records();
                    self.outbox.make_batches(Instant::now(), until_empty);
                    self.update_held();
                    self.send_new(&tx, &mut sent, &mut first)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use fulcrum_proto::pb::telemetry_service_server::{TelemetryService, TelemetryServiceServer};
    use tokio::net::TcpListener;
    use tokio_stream::Stream;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::metrics::Metrics;
    use crate::protocol::Protocol;
    use crate::records::{ErrorClass, Recorder, RequestFields};

    /// `n` records, each an attempt-0 error record of its own request (ids counting up).
    fn records(n: usize) -> Vec<Record> {
        let (_, queue, mut receivers, _) = queues();
        let recorder = Recorder::new(queue, Arc::new(Metrics::default()), 7);
        let settings = fulcrum_proto::model::Settings::default();
        for _ in 0..n {
            let arrival = recorder.arrival();
            let _ = recorder.early_answer(
                arrival,
                Protocol::OpenAi,
                RequestFields::default(),
                &settings,
                ErrorClass::Auth,
                axum::response::Response::default(),
            );
        }
        let mut out = Vec::new();
        while let Ok(queued) = receivers.records.try_recv() {
            out.extend(queued);
        }
        assert_eq!(out.len(), n);
        out
    }

    async fn eventually(check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not true within 5 s");
    }

    fn ids(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.request.id.to_string()).collect()
    }

    /// The request ids in encoded `ReportRequest.records` fields.
    fn encoded_ids(bytes: &[u8]) -> Vec<String> {
        <pb::ReportRequest as prost::Message>::decode(bytes)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.request_id)
            .collect()
    }

    fn pending_ids(outbox: &Outbox) -> Vec<String> {
        encoded_ids(&outbox.pending.bytes)
    }

    fn in_flight_ids(outbox: &Outbox) -> Vec<String> {
        outbox
            .unacked
            .iter()
            .flat_map(|b| encoded_ids(&b.records))
            .collect()
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_pending_records_and_counts_them() {
        let all = records(30);
        let mut outbox = Outbox::new(10, "dp-test");
        let now = Instant::now();
        let mut dropped = 0;
        for record in &all[..25] {
            dropped += outbox.push_record(record, now);
        }
        assert_eq!(dropped, 15);
        assert_eq!(outbox.held(), 10);
        assert_eq!(pending_ids(&outbox), ids(&all[15..25]));

        // Half the buffer may be in flight; those stay until acknowledged.
        outbox.make_batches(now, true);
        assert_eq!(outbox.unacked_records, 5);
        assert_eq!(outbox.pending.len(), 5);
        for record in &all[25..] {
            dropped += outbox.push_record(record, now);
        }
        assert_eq!(dropped, 20);
        assert_eq!(outbox.held(), 10);
        assert_eq!(
            in_flight_ids(&outbox),
            ids(&all[15..20]),
            "sent records are kept"
        );
        assert_eq!(pending_ids(&outbox), ids(&all[25..30]));

        // Every record is either acknowledged, dropped, or still held.
        let last = outbox.unacked.back().unwrap().sequence;
        let acked = outbox.ack(last);
        assert_eq!(acked + dropped + outbox.held() as u64, 30);

        // A smaller buffer drops what no longer fits, oldest first.
        assert_eq!(outbox.set_capacity(2), 3);
        assert_eq!(pending_ids(&outbox), ids(&all[28..30]));
    }

    #[test]
    fn records_wait_for_a_full_batch_or_their_linger() {
        let mut outbox = Outbox::new(100_000, "dp-test");
        let start = Instant::now();
        for record in &records(3) {
            outbox.push_record(record, start);
        }
        outbox.make_batches(start + LINGER / 2, false);
        assert!(outbox.unacked.is_empty(), "too early for a partial batch");
        outbox.make_batches(start + LINGER, false);
        assert_eq!(outbox.unacked.len(), 1);
        assert_eq!(outbox.unacked[0].record_count, 3);

        let more = records(2_500);
        for record in &more {
            outbox.push_record(record, start + LINGER);
        }
        outbox.make_batches(start + LINGER, false);
        let sizes: Vec<usize> = outbox.unacked.iter().map(|b| b.record_count).collect();
        assert_eq!(sizes, vec![3, 1_000, 1_000], "full batches go at once");
        let sequences: Vec<u64> = outbox.unacked.iter().map(|b| b.sequence).collect();
        assert_eq!(sequences, vec![1, 2, 3]);
        assert_eq!(
            encoded_ids(&outbox.unacked[2].records),
            ids(&more[1_000..2_000])
        );
        assert_eq!(pending_ids(&outbox), ids(&more[2_000..]));
    }

    #[test]
    fn key_events_join_the_last_unsent_batch() {
        let event = || pb::KeyEvent {
            key_id: "0123456789abcdef".into(),
            ..Default::default()
        };
        let mut outbox = Outbox::new(10, "dp-test");
        outbox.push_key_events(vec![event()]);
        outbox.push_key_events(vec![event(), event()]);
        assert_eq!(outbox.unacked.len(), 1);
        assert_eq!(outbox.unacked[0].key_events.len(), 3);
        // Once sent, a batch never changes: it may be stored already.
        outbox.sent_ever = 1;
        outbox.push_key_events(vec![event()]);
        assert_eq!(outbox.unacked.len(), 2);
        assert_eq!(outbox.unacked[0].key_events.len(), 3);
    }

    #[test]
    fn an_encoded_report_decodes_as_the_report_it_stands_for() {
        use prost::Message;
        let all = records(3);
        let mut outbox = Outbox::new(100, "dp-test");
        for record in &all {
            outbox.push_record(record, Instant::now());
        }
        outbox.make_batches(Instant::now(), true);
        outbox.unacked[0].key_events.push(pb::KeyEvent {
            key_id: "0123456789abcdef".into(),
            kind: pb::KeyEventKind::RateLimited as i32,
            ..Default::default()
        });
        let (_, _, receivers, stats) = queues();
        stats.drop_records(4);
        let shipper = Shipper::new(
            Arc::new(crate::discovery::ControlPlaneEndpoint::new(
                tonic::transport::Endpoint::from_static("http://127.0.0.1:1"),
            )),
            "Bearer join".parse().unwrap(),
            pb::Node {
                id: "dp-test".into(),
                version: "1".into(),
                listen_addr: "127.0.0.1:8000".into(),
            },
            "instance-1".into(),
            receivers,
            RuntimeConfigHandle::new(),
            stats,
        );
        let encoded = shipper.report(&outbox.unacked[0], true);
        let bytes = encoded.encode_to_vec();
        assert_eq!(bytes.len(), encoded.encoded_len());
        let decoded = pb::ReportRequest::decode(&bytes[..]).unwrap();
        assert_eq!(
            decoded,
            pb::ReportRequest {
                node: Some(shipper.node.clone()),
                instance_id: "instance-1".into(),
                sequence: 1,
                key_events: outbox.unacked[0].key_events.clone(),
                records: all.iter().map(|r| r.to_pb("dp-test")).collect(),
                dropped_records: 4,
            }
        );
        let later = pb::ReportRequest::decode(
            &shipper.report(&outbox.unacked[0], false).encode_to_vec()[..],
        )
        .unwrap();
        assert_eq!(later.node, None);
        assert_eq!(later.instance_id, "");
        assert_eq!(later.records, decoded.records);
    }

    /// A control plane that hands every batch to the test, acknowledging only when told.
    struct Collector {
        batches: mpsc::UnboundedSender<(
            pb::ReportRequest,
            mpsc::Sender<Result<pb::ReportResponse, Status>>,
        )>,
    }

    #[tonic::async_trait]
    impl TelemetryService for Collector {
        type ReportStream = Pin<Box<dyn Stream<Item = Result<pb::ReportResponse, Status>> + Send>>;

        async fn report(
            &self,
            request: Request<Streaming<pb::ReportRequest>>,
        ) -> Result<Response<Self::ReportStream>, Status> {
            let mut inbound = request.into_inner();
            let (tx, rx) = mpsc::channel(16);
            let batches = self.batches.clone();
            tokio::spawn(async move {
                while let Ok(Some(batch)) = inbound.message().await {
                    if batches.send((batch, tx.clone())).is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }

    #[tokio::test]
    async fn unacknowledged_batches_go_again_with_the_same_identity() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (batches_tx, mut batches) = mpsc::unbounded_channel();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TelemetryServiceServer::new(Collector {
                    batches: batches_tx,
                }))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );

        let (_events, queue, receivers, stats) = queues();
        let node = pb::Node {
            id: "dp-test".into(),
            ..Default::default()
        };
        let shipper = Shipper::new(
            Arc::new(crate::discovery::ControlPlaneEndpoint::new(
                tonic::transport::Endpoint::from_shared(url).unwrap(),
            )),
            "Bearer join".parse().unwrap(),
            node,
            "instance-1".into(),
            receivers,
            RuntimeConfigHandle::new(),
            Arc::clone(&stats),
        );
        let (stop, stopped) = watch::channel(false);
        let shipping = tokio::spawn(shipper.run(stopped));
        for record in records(3) {
            queue.push(Queued::One(record));
        }

        // The first stream: the batch arrives, and the stream dies unacknowledged.
        let (first, reply) = batches.recv().await.unwrap();
        assert_eq!(first.instance_id, "instance-1");
        assert_eq!(first.node.as_ref().unwrap().id, "dp-test");
        assert_eq!(first.sequence, 1);
        assert_eq!(first.records.len(), 3);
        assert!(first.records.iter().all(|r| r.node == "dp-test"));
        reply
            .send(Err(Status::unavailable("control plane restarting")))
            .await
            .unwrap();
        drop(reply);

        // The next stream sends the same batch again, then it is acknowledged.
        let (again, reply) = batches.recv().await.unwrap();
        assert_eq!(again.instance_id, "instance-1");
        assert_eq!(again.sequence, 1);
        assert_eq!(again.records, first.records);
        assert_eq!(stats.records_acked(), 0);
        reply
            .send(Ok(pb::ReportResponse { acked_sequence: 1 }))
            .await
            .unwrap();
        eventually(|| stats.records_acked() == 3).await;
        assert_eq!(stats.depth(), 0);

        // New records take the next sequence, on the same stream.
        for record in records(2) {
            queue.push(Queued::One(record));
        }
        let (next, reply) = batches.recv().await.unwrap();
        assert_eq!(next.sequence, 2);
        assert!(
            next.node.is_none(),
            "only a stream's first batch names the node"
        );
        assert_eq!(next.records.len(), 2);
        reply
            .send(Ok(pb::ReportResponse { acked_sequence: 2 }))
            .await
            .unwrap();
        eventually(|| stats.records_acked() == 5).await;

        stop.send_replace(true);
        shipping.await.unwrap();
        server.abort();
    }
}
