//! The live status streams. A watcher sends the job's state, then one
//! TRANSITION event per row the audit trail records for it (every step and
//! job status change, in order), and PROGRESS events as heartbeats move a
//! step's progress. It wakes on the replica's job-change notifications and,
//! as a safety net, every few seconds. The outgoing channel is bounded: a
//! slow client slows its own watcher, nothing else.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use failover_proto::v1 as pb;
use failover_proto::v1::job_event::Kind;

use super::status::{job_message, timestamp};
use crate::events::JobEvents;
use crate::jobs::model::JobDetail;
use crate::jobs::service::FailoverService;
use crate::jobs::store::{self, JobFilter, TrackingRow};

pub type EventSender = mpsc::Sender<Result<pb::JobEvent, Status>>;

/// How many events wait for a slow client.
pub const BUFFER: usize = 64;
const SAFETY_NET: Duration = Duration::from_secs(2);

fn snapshot(detail: &JobDetail, sequence: i64) -> pb::JobEvent {
    let job = job_message(&detail.job, &detail.steps);
    pb::JobEvent {
        kind: Kind::Snapshot as i32,
        sequence: u64::try_from(sequence).unwrap_or_default(),
        job_id: job.job_id.clone(),
        status: job.status.clone(),
        at: timestamp(Some(detail.job.updated_at)),
        job: Some(job),
        ..Default::default()
    }
}

fn transition(detail: &JobDetail, row: &TrackingRow) -> pb::JobEvent {
    let job = job_message(&detail.job, &detail.steps);
    let step_name = row
        .operation
        .strip_prefix("step.")
        .unwrap_or_default()
        .to_owned();
    let details = row.details.clone().unwrap_or_default();
    let progress = job
        .steps
        .iter()
        .find(|s| s.step_name == step_name)
        .map(|s| s.progress_percent)
        .unwrap_or_default();
    pb::JobEvent {
        kind: Kind::Transition as i32,
        sequence: u64::try_from(row.id).unwrap_or_default(),
        job_id: job.job_id.clone(),
        step_name,
        status: row.status.clone(),
        attempt: details["attempt"].as_u64().unwrap_or_default() as u32,
        progress_percent: if row.status == "completed" {
            100
        } else {
            progress
        },
        message: details["message"].as_str().unwrap_or_default().to_owned(),
        error_code: details["error_code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        error_message: row.error_message.clone().unwrap_or_default(),
        at: timestamp(Some(row.created_at)),
        job: Some(job),
    }
}

/// Where one job's watcher stands.
#[derive(Debug, Default)]
struct Cursor {
    sequence: i64,
    progress: HashMap<String, (u32, String)>,
}

impl Cursor {
    /// The events that bring a client from this cursor to `detail`.
    async fn advance(
        &mut self,
        service: &FailoverService,
        detail: &JobDetail,
    ) -> Result<Vec<pb::JobEvent>, Status> {
        let rows = store::tracking_since(service.pool(), &detail.job.job_id, self.sequence)
            .await
            .map_err(|e| super::status(e.into()))?;
        let mut events: Vec<pb::JobEvent> = rows.iter().map(|r| transition(detail, r)).collect();
        if let Some(last) = rows.last() {
            self.sequence = last.id;
        }
        for step in &detail.steps {
            let now = (
                u32::try_from(step.progress).unwrap_or_default(),
                step.message.clone().unwrap_or_default(),
            );
            let before = self.progress.insert(step.step_name.clone(), now.clone());
            if step.status == "running" && before.is_some_and(|b| b != now) {
                let job = job_message(&detail.job, &detail.steps);
                events.push(pb::JobEvent {
                    kind: Kind::Progress as i32,
                    sequence: u64::try_from(self.sequence).unwrap_or_default(),
                    job_id: job.job_id.clone(),
                    step_name: step.step_name.clone(),
                    status: step.status.clone(),
                    attempt: u32::try_from(step.attempt).unwrap_or_default(),
                    progress_percent: now.0,
                    message: now.1,
                    at: timestamp(Some(chrono::Utc::now())),
                    job: Some(job),
                    ..Default::default()
                });
            }
        }
        Ok(events)
    }

    fn remember_progress(&mut self, detail: &JobDetail) {
        for step in &detail.steps {
            self.progress.insert(
                step.step_name.clone(),
                (
                    u32::try_from(step.progress).unwrap_or_default(),
                    step.message.clone().unwrap_or_default(),
                ),
            );
        }
    }
}

fn terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// Streams one job until it ends, the client goes away, or the gateway stops.
pub async fn watch_job(
    service: FailoverService,
    events: JobEvents,
    job_id: String,
    out: EventSender,
    shutdown: CancellationToken,
) {
    let mut changes = events.subscribe();
    let result: Result<(), Status> = async {
        let sequence = store::last_tracking_id(service.pool(), &job_id)
            .await
            .map_err(|e| super::status(e.into()))?;
        let detail = service.get_job(&job_id).await.map_err(super::status)?;
        let mut cursor = Cursor {
            sequence,
            ..Default::default()
        };
        cursor.remember_progress(&detail);
        if out.send(Ok(snapshot(&detail, sequence))).await.is_err() {
            return Ok(());
        }
        let mut done = terminal(&detail.job.status);
        while !done {
            tokio::select! {
                () = shutdown.cancelled() => return Err(Status::unavailable("the gateway is stopping")),
                () = out.closed() => return Ok(()),
                change = changes.recv() => match change {
                    Ok(id) if id != job_id && !id.is_empty() => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                () = tokio::time::sleep(SAFETY_NET) => {}
            }
            let detail = service.get_job(&job_id).await.map_err(super::status)?;
            for event in cursor.advance(&service, &detail).await? {
                if out.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
            done = terminal(&detail.job.status);
        }
        Ok(())
    }
    .await;
    if let Err(status) = result {
        let _ = out.send(Err(status)).await;
    }
}

/// Streams the changes of every job matching `filter`.
pub async fn watch_jobs(
    service: FailoverService,
    events: JobEvents,
    filter: JobFilter,
    out: EventSender,
    shutdown: CancellationToken,
) {
    let mut changes = events.subscribe();
    let mut cursors: HashMap<String, Cursor> = HashMap::new();
    let result: Result<(), Status> = async {
        let (jobs, _) = service.list_jobs(&filter).await.map_err(super::status)?;
        for row in jobs {
            let sequence = store::last_tracking_id(service.pool(), &row.job_id)
                .await
                .map_err(|e| super::status(e.into()))?;
            let detail = service.get_job(&row.job_id).await.map_err(super::status)?;
            let mut cursor = Cursor {
                sequence,
                ..Default::default()
            };
            cursor.remember_progress(&detail);
            if out.send(Ok(snapshot(&detail, sequence))).await.is_err() {
                return Ok(());
            }
            if !terminal(&detail.job.status) {
                cursors.insert(row.job_id.clone(), cursor);
            }
        }
        loop {
            let changed: Vec<String> = tokio::select! {
                () = shutdown.cancelled() => return Err(Status::unavailable("the gateway is stopping")),
                () = out.closed() => return Ok(()),
                change = changes.recv() => match change {
                    Ok(id) if !id.is_empty() => vec![id],
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => cursors.keys().cloned().collect(),
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                () = tokio::time::sleep(SAFETY_NET) => cursors.keys().cloned().collect(),
            };
            for job_id in changed {
                let Ok(detail) = service.get_job(&job_id).await else {
                    continue;
                };
                if !matches_filter(&detail, &filter) {
                    continue;
                }
                let cursor = cursors.entry(job_id.clone()).or_default();
                for event in cursor.advance(&service, &detail).await? {
                    if out.send(Ok(event)).await.is_err() {
                        return Ok(());
                    }
                }
                if terminal(&detail.job.status) {
                    cursors.remove(&job_id);
                }
            }
        }
    }
    .await;
    if let Err(status) = result {
        let _ = out.send(Err(status)).await;
    }
}

fn matches_filter(detail: &JobDetail, filter: &JobFilter) -> bool {
    let job = &detail.job;
    filter.status.as_ref().is_none_or(|s| &job.status == s)
        && filter.job_type.as_ref().is_none_or(|t| &job.job_type == t)
        && filter.vm_id.is_none_or(|v| job.vm_id == v)
        && filter
            .correlation_id
            .is_none_or(|c| job.correlation_id == c)
}
