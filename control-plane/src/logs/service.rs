//! `LogService`: searches, tails and statistics over the stored records.

use std::pin::Pin;

use fulcrum_proto::pb;
use fulcrum_proto::pb::log_service_server::LogService;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::keys::{GroupKind, Scope, encode_cursor};
use super::search::{Filter, Query};
use super::stats::WindowPlan;
use super::{LogStore, StatsResult};
use crate::error::Error;
use crate::sessions::Sessions;
use crate::store::now_unix_ms;

/// Messages a tail may have in flight to a slow caller before it waits (and, waiting,
/// starts to miss records rather than slow anything else down).
const TAIL_BUFFER: usize = 64;

/// Serves `LogService` from the log store.
#[derive(Clone)]
pub struct Logs {
    logs: LogStore,
    /// Each tail's task holds a clone; also carries the shutdown signal.
    sessions: Sessions,
}

impl Logs {
    pub fn new(logs: LogStore, sessions: Sessions) -> Self {
        Self { logs, sessions }
    }

    /// Runs a blocking read off the async runtime.
    async fn read<R: Send + 'static>(
        &self,
        read: impl FnOnce(&LogStore) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Status> {
        let logs = self.logs.clone();
        tokio::task::spawn_blocking(move || read(&logs))
            .await
            .map_err(|e| Error::Internal(format!("log read task failed: {e}")))?
            .map_err(Status::from)
    }
}

/// Forwards stored records that match `filter` until the caller goes away or shutdown.
async fn tail(
    filter: Filter,
    mut stored: broadcast::Receiver<std::sync::Arc<super::TailBatch>>,
    tx: mpsc::Sender<Result<pb::TailLogsResponse, Status>>,
    sessions: Sessions,
) {
    let mut shutdown = sessions.shutdown.clone();
    // Position of the next record this tail expects; a batch further on means it missed some.
    let mut expected: Option<u64> = None;
    loop {
        let batch = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            () = tx.closed() => return,
            batch = stored.recv() => match batch {
                Ok(batch) => batch,
                // The next batch's position tells how many were skipped.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let missed_records = expected.map_or(0, |at| batch.first.saturating_sub(at));
        expected = Some(batch.first + batch.records.len() as u64);
        let records: Vec<pb::RequestRecord> = batch
            .records
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        if records.is_empty() && missed_records == 0 {
            continue;
        }
        let message = pb::TailLogsResponse {
            records,
            missed_records,
        };
        if tx.send(Ok(message)).await.is_err() {
            return;
        }
    }
}

type TailStream = Pin<Box<dyn Stream<Item = Result<pb::TailLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LogService for Logs {
    async fn search_logs(
        &self,
        request: Request<pb::SearchLogsRequest>,
    ) -> Result<Response<pb::SearchLogsResponse>, Status> {
        let query = Query::from_pb(request.into_inner())?;
        let page = self.read(move |logs| logs.search(&query)).await?;
        Ok(Response::new(pb::SearchLogsResponse {
            records: page.records,
            next_cursor: page
                .next_cursor
                .map(|c| encode_cursor(&c))
                .unwrap_or_default(),
        }))
    }

    type TailLogsStream = TailStream;

    async fn tail_logs(
        &self,
        request: Request<pb::TailLogsRequest>,
    ) -> Result<Response<Self::TailLogsStream>, Status> {
        let filter = Filter::from_pb(request.into_inner().filter)?;
        let stored = self.logs.subscribe();
        let (tx, rx) = mpsc::channel(TAIL_BUFFER);
        // Owned by the stream: it ends with the caller's stream or at shutdown.
        tokio::spawn(tail(filter, stored, tx, self.sessions.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let req = request.into_inner();
        let window = match pb::StatsWindow::try_from(req.window) {
            Ok(pb::StatsWindow::Unspecified) => pb::StatsWindow::LastHour,
            Ok(window) => window,
            Err(_) => {
                return Err(Error::Invalid(format!("unknown stats window {}", req.window)).into());
            }
        };
        let (group_by, only) = grouping(&req)?;
        let kind = match group_by {
            pb::StatsGroupBy::Key => GroupKind::Key,
            pb::StatsGroupBy::Model => GroupKind::Model,
            pb::StatsGroupBy::Provider | pb::StatsGroupBy::Unspecified => GroupKind::Provider,
        };
        let scope = if req.attempts {
            Scope::Attempts
        } else {
            Scope::Requests
        };
        let now = super::keys::time_component(now_unix_ms());
        let plan = WindowPlan::new(window, now);
        let result = self
            .read(move |logs| logs.stats(&plan, scope, kind, only.as_deref()))
            .await?;
        Ok(Response::new(stats_response(
            window, group_by, &plan, now, result,
        )))
    }
}

/// The grouping a stats request asks for, and the one group it keeps, if any.
fn grouping(req: &pb::GetStatsRequest) -> Result<(pb::StatsGroupBy, Option<String>), Error> {
    let filters: Vec<(pb::StatsGroupBy, String)> = [
        (pb::StatsGroupBy::Provider, req.provider.trim().to_string()),
        (
            pb::StatsGroupBy::Key,
            req.key_id.trim().to_ascii_lowercase(),
        ),
        (pb::StatsGroupBy::Model, req.model.trim().to_string()),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .collect();
    if filters.len() > 1 {
        return Err(Error::Invalid(
            "stats take one filter at most: they are kept per key, per model and per provider, \
             not per combination"
                .into(),
        ));
    }
    let group_by = match pb::StatsGroupBy::try_from(req.group_by) {
        Ok(pb::StatsGroupBy::Unspecified) => filters
            .first()
            .map_or(pb::StatsGroupBy::Provider, |(g, _)| *g),
        Ok(group_by) => group_by,
        Err(_) => {
            return Err(Error::Invalid(format!(
                "unknown stats grouping {}",
                req.group_by
            )));
        }
    };
    let only = match filters.into_iter().next() {
        Some((dimension, _)) if dimension != group_by => {
            return Err(Error::Invalid(format!(
                "stats grouped by {} cannot be filtered by {}: they are kept per key, per \
                 model and per provider, not per combination",
                dimension_name(group_by),
                dimension_name(dimension)
            )));
        }
        Some((_, value)) => Some(value),
        None => None,
    };
    Ok((group_by, only))
}

fn dimension_name(group_by: pb::StatsGroupBy) -> &'static str {
    match group_by {
        pb::StatsGroupBy::Key => "key",
        pb::StatsGroupBy::Model => "model",
        pb::StatsGroupBy::Provider | pb::StatsGroupBy::Unspecified => "provider",
    }
}

fn stats_response(
    window: pb::StatsWindow,
    group_by: pb::StatsGroupBy,
    plan: &WindowPlan,
    now: u64,
    result: StatsResult,
) -> pb::GetStatsResponse {
    let mut rows: Vec<(String, super::stats::Counts)> = result.rows.into_iter().collect();
    rows.sort_by(|(a, ca), (b, cb)| cb.requests.cmp(&ca.requests).then_with(|| a.cmp(b)));
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::GetStatsResponse {
        window: window as i32,
        group_by: group_by as i32,
        from_unix_ms: ms(plan.from_unix_ms()),
        to_unix_ms: ms(now),
        bucket_ms: plan.point_ms,
        total: Some(result.total.to_pb()),
        rows: rows
            .into_iter()
            .map(|(group, counts)| pb::StatsRow {
                group,
                counts: Some(counts.to_pb()),
            })
            .collect(),
        series: result
            .series
            .iter()
            .enumerate()
            .map(|(i, counts)| pb::StatsPoint {
                start_unix_ms: ms((plan.first_point + i as u64) * plan.point_ms),
                counts: Some(counts.to_pb()),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_filters_pick_their_own_dimension() {
        let req = |group_by: pb::StatsGroupBy, key: &str, model: &str| pb::GetStatsRequest {
            group_by: group_by as i32,
            key_id: key.into(),
            model: model.into(),
            ..Default::default()
        };
        assert_eq!(
            grouping(&req(pb::StatsGroupBy::Unspecified, "", "")).unwrap(),
            (pb::StatsGroupBy::Provider, None)
        );
        assert_eq!(
            grouping(&req(pb::StatsGroupBy::Unspecified, "ABC", "")).unwrap(),
            (pb::StatsGroupBy::Key, Some("abc".into()))
        );
        assert_eq!(
            grouping(&req(pb::StatsGroupBy::Model, "", "m")).unwrap(),
            (pb::StatsGroupBy::Model, Some("m".into()))
        );
        let err = grouping(&req(pb::StatsGroupBy::Provider, "abc", "")).unwrap_err();
        assert!(
            err.to_string()
                .contains("grouped by provider cannot be filtered by key")
        );
        assert!(grouping(&req(pb::StatsGroupBy::Key, "abc", "m")).is_err());
    }
}
