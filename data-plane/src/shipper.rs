//! Ships key events to the control plane on the `TelemetryService` stream, in
//! acknowledged batches.
//!
//! Requests never wait for this: they put events into a bounded queue and go on. A full
//! queue drops the event, counts it and warns. Unacknowledged batches are kept (up to a
//! bound) and sent again on the next stream; the control plane ignores repeats.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fulcrum_proto::pb;
use fulcrum_proto::pb::telemetry_service_client::TelemetryServiceClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tracing::{debug, warn};

/// Events waiting to be batched.
const QUEUE: usize = 16_384;
/// Most events in one batch.
const BATCH: usize = 1_000;
/// Most unacknowledged batches kept while the control plane is away.
const UNACKED_BATCHES: usize = 256;
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where requests put key events; cheap to clone.
#[derive(Clone, Debug)]
pub struct KeyEvents {
    tx: mpsc::Sender<pb::KeyEvent>,
    dropped: Arc<AtomicU64>,
}

impl KeyEvents {
    /// Queues an event without waiting; a full queue drops it (counted, and warned about).
    pub fn report(&self, event: pb::KeyEvent) {
        if self.tx.try_send(event).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Every 1,000th, so that a flood does not become a flood of warnings too.
            if dropped % 1_000 == 1 {
                warn!(dropped, "key event queue full; dropping key events");
            }
        }
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The sending side: one task per data plane.
pub struct Shipper {
    endpoint: Endpoint,
    authorization: MetadataValue<Ascii>,
    node: pb::Node,
    instance_id: String,
    rx: mpsc::Receiver<pb::KeyEvent>,
    dropped: Arc<AtomicU64>,
    unacked: VecDeque<pb::ReportRequest>,
    next_sequence: u64,
}

/// Makes the queue and the task that drains it.
pub fn channel(
    endpoint: Endpoint,
    authorization: MetadataValue<Ascii>,
    node: pb::Node,
    instance_id: String,
) -> (KeyEvents, Shipper) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let events = KeyEvents {
        tx,
        dropped: Arc::clone(&dropped),
    };
    let shipper = Shipper {
        endpoint,
        authorization,
        node,
        instance_id,
        rx,
        dropped,
        unacked: VecDeque::new(),
        next_sequence: 1,
    };
    (events, shipper)
}

impl Shipper {
    /// Ships until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            // Open a stream only when there is something to send.
            if self.unacked.is_empty() {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    event = self.rx.recv() => match event {
                        Some(event) => self.batch(event),
                        None => return,
                    },
                }
            }
            let started = Instant::now();
            let result = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                result = self.stream() => result,
            };
            if let Err(e) = result {
                warn!(error = %e, unacked = self.unacked.len(), "telemetry stream failed; will send again");
            }
            // A stream that lived a while earned a fresh backoff.
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Turns `first` and whatever else is queued into one batch.
    fn batch(&mut self, first: pb::KeyEvent) {
        let mut key_events = vec![first];
        while key_events.len() < BATCH {
            match self.rx.try_recv() {
                Ok(event) => key_events.push(event),
                Err(_) => break,
            }
        }
        if self.unacked.len() == UNACKED_BATCHES
            && let Some(oldest) = self.unacked.pop_front()
        {
            let lost = oldest.key_events.len() as u64;
            let dropped = self.dropped.fetch_add(lost, Ordering::Relaxed) + lost;
            warn!(
                lost,
                dropped, "control plane away too long; dropping the oldest key events"
            );
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.unacked.push_back(pb::ReportRequest {
            node: None,
            instance_id: String::new(),
            sequence,
            key_events,
            ..Default::default()
        });
    }

    /// One stream: resend what is unacknowledged, then send new batches as they come.
    async fn stream(&mut self) -> Result<(), String> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let authorization = self.authorization.clone();
        let mut client = TelemetryServiceClient::with_interceptor(
            channel,
            move |mut request: tonic::Request<()>| {
                request
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
                Ok(request)
            },
        );
        let (tx, rx) = mpsc::channel::<pb::ReportRequest>(UNACKED_BATCHES + 1);
        let mut first = true;
        for batch in &self.unacked {
            let mut batch = batch.clone();
            if first {
                batch.node = Some(self.node.clone());
                batch.instance_id = self.instance_id.clone();
                first = false;
            }
            // The channel holds every unacked batch, so this never waits.
            tx.send(batch)
                .await
                .map_err(|_| "stream closed".to_string())?;
        }
        let mut acks = client
            .report(ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("open: {}", s.message()))?
            .into_inner();
        let mut sent = self.unacked.back().map_or(0, |b| b.sequence);
        loop {
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => {
                        while self.unacked.front().is_some_and(|b| b.sequence <= ack.acked_sequence) {
                            self.unacked.pop_front();
                        }
                        debug!(sequence = ack.acked_sequence, "key events acknowledged");
                    }
                    Ok(None) => return Err("control plane closed the stream".into()),
                    Err(status) => return Err(status.message().to_string()),
                },
                event = self.rx.recv() => {
                    let Some(event) = event else { return Ok(()) };
                    self.batch(event);
                    let fresh: Vec<pb::ReportRequest> =
                        self.unacked.iter().filter(|b| b.sequence > sent).cloned().collect();
                    for mut batch in fresh {
                        if first {
                            batch.node = Some(self.node.clone());
                            batch.instance_id = self.instance_id.clone();
                            first = false;
                        }
                        sent = batch.sequence;
                        if tx.try_send(batch).is_err() {
                            return Err("telemetry stream is not keeping up".into());
                        }
                    }
                }
            }
        }
    }
}
