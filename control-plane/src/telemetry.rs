//! `TelemetryService`: acknowledged report batches from the data planes. Key events go to
//! [`KeyHealth`], request records to the [`LogStore`]; each batch is acknowledged once its
//! effects are durable.
//!
//! Repeats: a batch is applied only if its sequence is above the highest one applied for
//! its instance. That number is kept in memory and, for every batch with records, in the
//! `log_applied` tree in the records' own transaction, so a batch sent again after a
//! control-plane restart is recognised from the store and its records are never stored
//! twice. (A batch of key events only is recognised from memory: applying key events
//! twice after a restart is harmless.)

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use fulcrum_proto::pb;
use fulcrum_proto::pb::telemetry_service_server::TelemetryService;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::health::KeyHealth;
use futures::FutureExt;

use crate::logs::{Batch, Ingested, LogStore};
use crate::sessions::Sessions;

/// Most batches of one stream stored together under one flush.
const GROUP_MAX: usize = 32;

/// Serves report streams.
#[derive(Clone)]
pub struct Telemetry {
    health: KeyHealth,
    logs: LogStore,
    /// Highest sequence applied per data-plane instance, so that a batch sent again after a
    /// reconnect is acknowledged without being applied twice (seeded from the store when
    /// an instance opens a stream).
    applied: Arc<Mutex<HashMap<String, u64>>>,
    /// Each stream's task holds a clone; also carries the shutdown signal.
    sessions: Sessions,
}

impl Telemetry {
    pub fn new(health: KeyHealth, logs: LogStore, sessions: Sessions) -> Self {
        Self {
            health,
            logs,
            applied: Arc::default(),
            sessions,
        }
    }

    fn last_applied(&self, instance: &str) -> u64 {
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied.get(instance).copied().unwrap_or(0)
    }

    fn mark_applied(&self, instance: &str, sequence: u64) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let entry = applied.entry(instance.to_string()).or_default();
        *entry = (*entry).max(sequence);
    }

    async fn session(
        self,
        mut inbound: Streaming<pb::ReportRequest>,
        tx: mpsc::Sender<Result<pb::ReportResponse, Status>>,
    ) {
        let mut shutdown = self.sessions.shutdown.clone();
        let mut identity: Option<(String, String)> = None;
        let mut ended = false;
        while !ended {
            let first = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                message = inbound.message() => match message {
                    Ok(Some(batch)) => batch,
                    Ok(None) | Err(_) => return,
                },
            };
            // Batches that arrived with it share its flush (a data plane keeps many in
            // flight). `message()` keeps its state in the stream, so a poll that finds
            // nothing ready loses nothing.
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match inbound.message().now_or_never() {
                    Some(Ok(Some(batch))) => group.push(batch),
                    Some(Ok(None) | Err(_)) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            let mut acks = Vec::with_capacity(group.len());
            let mut to_store = Vec::new();
            for batch in group {
                let (node, instance) = match &identity {
                    Some(identity) => identity.clone(),
                    None => match self.identify(&batch) {
                        Ok(found) => {
                            identity = Some(found.clone());
                            found
                        }
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    },
                };
                self.logs.note_dropped(&instance, batch.dropped_records);
                acks.push(batch.sequence);
                if batch.sequence <= self.last_applied(&instance) {
                    continue;
                }
                // Key events first: if the records then fail, the batch is sent again and
                // its key events applied twice, which is harmless; the other order could
                // lose them.
                if let Err(e) = self.health.apply(&node, batch.key_events).await {
                    tracing::error!(node = %node, error = %e, "cannot apply key events");
                    let _ = tx.send(Err(unavailable())).await;
                    return;
                }
                self.health.note_records(&batch.records);
                to_store.push(Batch {
                    instance_id: instance,
                    sequence: batch.sequence,
                    records: batch.records,
                });
            }
            let records: usize = to_store.iter().map(|b| b.records.len()).sum();
            let stored: Vec<(String, u64)> = to_store
                .iter()
                .map(|b| (b.instance_id.clone(), b.sequence))
                .collect();
            match self.logs.ingest_many(to_store).await {
                Ok(outcomes) => {
                    let repeats = outcomes
                        .iter()
                        .filter(|o| matches!(o, Ingested::Repeat))
                        .count();
                    if repeats > 0 {
                        tracing::debug!(repeats, "batches stored before; not stored again");
                    }
                }
                Err(e) => {
                    let node = identity.as_ref().map_or("?", |(node, _)| node.as_str());
                    tracing::error!(node = %node, records, error = %e, "cannot store request records");
                    let _ = tx.send(Err(unavailable())).await;
                    return;
                }
            }
            for (instance, sequence) in stored {
                self.mark_applied(&instance, sequence);
            }
            for acked_sequence in acks {
                if tx
                    .send(Ok(pb::ReportResponse { acked_sequence }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }

    /// The node and instance a stream's first batch names, with the instance's applied
    /// sequence loaded from the store.
    fn identify(&self, batch: &pb::ReportRequest) -> Result<(String, String), Status> {
        let node = batch
            .node
            .as_ref()
            .map(|n| n.id.trim().to_string())
            .unwrap_or_default();
        if node.is_empty() || batch.instance_id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "the first report must carry node.id and instance_id",
            ));
        }
        let instance = batch.instance_id.clone();
        match self.logs.applied(&instance) {
            Ok(stored) => self.mark_applied(&instance, stored),
            Err(e) => {
                tracing::error!(node = %node, error = %e, "cannot read the applied batch sequence");
                return Err(unavailable());
            }
        }
        Ok((node, instance))
    }
}

fn unavailable() -> Status {
    Status::unavailable("the control plane could not store the report; send it again")
}

type ReportStream = Pin<Box<dyn Stream<Item = Result<pb::ReportResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TelemetryService for Telemetry {
    type ReportStream = ReportStream;

    async fn report(
        &self,
        request: Request<Streaming<pb::ReportRequest>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        // Owned by the stream: it ends with the data plane's stream or at shutdown.
        tokio::spawn(self.clone().session(request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
