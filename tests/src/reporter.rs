//! A raw `TelemetryService` client playing a data plane's shipper: batches go out as the
//! test builds them, and acks come back one per batch.

use std::time::Duration;

use fulcrum_proto::pb;
use fulcrum_proto::pb::telemetry_service_client::TelemetryServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::control::BearerToken;

/// One report stream of one data-plane instance.
pub struct Reporter {
    /// Batches to send; the first one sent on this stream carries the node and instance.
    pub tx: mpsc::Sender<pb::ReportRequest>,
    /// Acks, one per batch, in order.
    pub rx: Streaming<pb::ReportResponse>,
    node: String,
    instance_id: String,
    first: bool,
}

impl Reporter {
    /// Opens a stream to the control plane at `endpoint` as `node` / `instance_id`.
    pub async fn open(
        endpoint: &str,
        join_token: &str,
        node: &str,
        instance_id: &str,
    ) -> Result<Self, tonic::Status> {
        let channel = Channel::from_shared(endpoint.to_string())
            .expect("valid endpoint")
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let bearer = BearerToken(format!("Bearer {join_token}").parse().expect("ascii token"));
        let mut client = TelemetryServiceClient::with_interceptor(channel, bearer)
            .max_encoding_message_size(fulcrum_control::MAX_GRPC_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(64);
        let rx = client.report(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self {
            tx,
            rx,
            node: node.to_string(),
            instance_id: instance_id.to_string(),
            first: true,
        })
    }

    /// The batch `sequence` with `records`, carrying the identity if it is the first.
    pub fn batch(
        &mut self,
        sequence: u64,
        records: Vec<pb::RequestRecord>,
        dropped_records: u64,
    ) -> pb::ReportRequest {
        let first = std::mem::replace(&mut self.first, false);
        pb::ReportRequest {
            node: first.then(|| pb::Node {
                id: self.node.clone(),
                version: "test".into(),
                listen_addr: String::new(),
            }),
            instance_id: if first {
                self.instance_id.clone()
            } else {
                String::new()
            },
            sequence,
            key_events: Vec::new(),
            records,
            dropped_records,
        }
    }

    /// Sends a batch without waiting for its ack.
    pub async fn push(&mut self, batch: pb::ReportRequest) {
        self.tx.send(batch).await.expect("report stream open");
    }

    /// The next ack (at most 30 s away).
    pub async fn ack(&mut self) -> Result<u64, tonic::Status> {
        match tokio::time::timeout(Duration::from_secs(30), self.rx.message()).await {
            Ok(Ok(Some(ack))) => Ok(ack.acked_sequence),
            Ok(Ok(None)) => Err(tonic::Status::aborted("report stream ended")),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(tonic::Status::deadline_exceeded("no ack within 30 s")),
        }
    }

    /// Sends batch `sequence` with `records` and waits for its ack.
    pub async fn send(
        &mut self,
        sequence: u64,
        records: Vec<pb::RequestRecord>,
    ) -> Result<u64, tonic::Status> {
        let batch = self.batch(sequence, records, 0);
        self.push(batch).await;
        self.ack().await
    }
}
