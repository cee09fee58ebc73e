//! The live status streams. A watcher sends the job's state, then one
//! TRANSITION event per row the audit trail records for it (every step and
//! job status change, in order), and PROGRESS events as heartbeats move a
//! step's progress. It wakes on the replica's job-change notifications and,
//! as a safety net, every few seconds. The outgoing channel is bounded: a
//! slow client slows its own watcher, nothing else.
//!
//! A stream is opened before it is answered: the watcher subscribes to the
//! changes and reads the state it starts from first, so a change made after
//! the call returned is always seen as a change, never folded into the first
//! snapshot.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use failover_core::StepStatus;
use failover_proto::v1 as pb;

use super::convert::{progress, snapshot, transition};
use crate::db::jobs::{JobDetail, JobFilter};
use crate::events::JobEvents;
use crate::service::FailoverService;

pub type EventSender = mpsc::Sender<Result<pb::JobEvent, Status>>;

/// How many events wait for a slow client.
pub const BUFFER: usize = 64;
const SAFETY_NET: Duration = Duration::from_secs(2);
/// How far back a watcher of many jobs looks for jobs whose notifications it
/// may have missed (a listener that reconnected, a replica's clock behind).
const DISCOVERY_WINDOW: Duration = Duration::from_secs(600);
/// How many ended jobs a watcher of many jobs remembers, so that a late
/// change of one (its cleanup being linked) continues where it stopped.
const ENDED_REMEMBERED: usize = 10_000;

/// Where one job's watcher stands.
#[derive(Debug, Default)]
struct Cursor {
    sequence: i64,
    progress: HashMap<String, (u32, String)>,
}

impl Cursor {
    /// A cursor at `sequence` that knows the progress `detail` shows.
    fn at(sequence: i64, detail: &JobDetail) -> Self {
        let mut cursor = Cursor {
            sequence,
            ..Default::default()
        };
        for step in &detail.steps {
            cursor.progress.insert(
                step.step_name.as_str().to_owned(),
                (
                    u32::try_from(step.progress).unwrap_or_default(),
                    step.message.clone().unwrap_or_default(),
                ),
            );
        }
        cursor
    }

    /// The events that bring a client from this cursor to `detail`.
    async fn advance(
        &mut self,
        service: &FailoverService,
        detail: &JobDetail,
    ) -> Result<Vec<pb::JobEvent>, Status> {
        let rows = service
            .changes_since(&detail.job.job_id, self.sequence)
            .await
            .map_err(super::to_status)?;
        let mut events: Vec<pb::JobEvent> = rows.iter().map(|r| transition(detail, r)).collect();
        if let Some(last) = rows.last() {
            self.sequence = last.id;
        }
        for step in &detail.steps {
            let now = (
                u32::try_from(step.progress).unwrap_or_default(),
                step.message.clone().unwrap_or_default(),
            );
            let before = self
                .progress
                .insert(step.step_name.as_str().to_owned(), now.clone());
            if step.status == StepStatus::Running && before.is_some_and(|b| b != now) {
                events.push(progress(detail, step, self.sequence));
            }
        }
        Ok(events)
    }
}

fn terminal(detail: &JobDetail) -> bool {
    detail.job.status.is_terminal()
}

/// Reads `job_id` and the position of its last recorded change.
async fn read_with_sequence(
    service: &FailoverService,
    job_id: &str,
) -> Result<(JobDetail, i64), Status> {
    // The sequence first: a change recorded in between is then sent again
    // as a transition, never lost.
    let sequence = service
        .last_change(job_id)
        .await
        .map_err(super::to_status)?;
    let detail = service.job_detail(job_id).await.map_err(super::to_status)?;
    Ok((detail, sequence))
}

/// A stream of one job, subscribed and at its first snapshot.
#[derive(Debug)]
pub struct JobWatch {
    service: FailoverService,
    changes: broadcast::Receiver<String>,
    job_id: String,
    first: pb::JobEvent,
    cursor: Cursor,
    done: bool,
}

impl JobWatch {
    /// Subscribes to the changes, then reads the job it starts from.
    pub async fn open(
        service: FailoverService,
        events: &JobEvents,
        job_id: String,
    ) -> Result<Self, Status> {
        let changes = events.subscribe();
        let (detail, sequence) = read_with_sequence(&service, &job_id).await?;
        Ok(JobWatch {
            first: snapshot(&detail, sequence),
            cursor: Cursor::at(sequence, &detail),
            done: terminal(&detail),
            service,
            changes,
            job_id,
        })
    }

    /// Streams until the job ends, the client goes away, or the gateway stops.
    pub async fn run(mut self, out: EventSender, shutdown: CancellationToken) {
        let result = self.follow(&out, &shutdown).await;
        if let Err(status) = result {
            let _ = out.send(Err(status)).await;
        }
    }

    async fn follow(
        &mut self,
        out: &EventSender,
        shutdown: &CancellationToken,
    ) -> Result<(), Status> {
        if out.send(Ok(self.first.clone())).await.is_err() {
            return Ok(());
        }
        while !self.done {
            tokio::select! {
                () = shutdown.cancelled() => return Err(Status::unavailable("the gateway is stopping")),
                () = out.closed() => return Ok(()),
                change = self.changes.recv() => match change {
                    Ok(id) if id != self.job_id && !id.is_empty() => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                () = tokio::time::sleep(SAFETY_NET) => {}
            }
            let detail = self
                .service
                .job_detail(&self.job_id)
                .await
                .map_err(super::to_status)?;
            for event in self.cursor.advance(&self.service, &detail).await? {
                if out.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
            self.done = terminal(&detail);
        }
        Ok(())
    }
}

/// A stream of every job matching a filter, subscribed and with the
/// snapshots of the jobs that matched when it opened.
#[derive(Debug)]
pub struct JobsWatch {
    service: FailoverService,
    changes: broadcast::Receiver<String>,
    filter: JobFilter,
    opened_at: DateTime<Utc>,
    first: Vec<pb::JobEvent>,
    /// Unfinished jobs being followed.
    cursors: HashMap<String, Cursor>,
    /// Jobs followed to their end, with the last change sent, oldest first.
    ended: HashMap<String, i64>,
    ended_order: VecDeque<String>,
}

impl JobsWatch {
    /// Subscribes to the changes, then lists the matching jobs.
    pub async fn open(
        service: FailoverService,
        events: &JobEvents,
        filter: JobFilter,
    ) -> Result<Self, Status> {
        let changes = events.subscribe();
        let opened_at = Utc::now();
        let (jobs, _) = service.list_jobs(&filter).await.map_err(super::to_status)?;
        let mut watch = JobsWatch {
            service,
            changes,
            filter,
            opened_at,
            first: Vec::with_capacity(jobs.len()),
            cursors: HashMap::new(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
        };
        for row in jobs {
            let (detail, sequence) = read_with_sequence(&watch.service, &row.job_id).await?;
            watch.first.push(snapshot(&detail, sequence));
            let cursor = Cursor::at(sequence, &detail);
            watch.keep(&row.job_id, cursor, terminal(&detail));
        }
        Ok(watch)
    }

    /// Streams until the client goes away or the gateway stops.
    pub async fn run(mut self, out: EventSender, shutdown: CancellationToken) {
        let result = self.follow(&out, &shutdown).await;
        if let Err(status) = result {
            let _ = out.send(Err(status)).await;
        }
    }

    fn keep(&mut self, job_id: &str, cursor: Cursor, ended: bool) {
        if !ended {
            self.cursors.insert(job_id.to_owned(), cursor);
            return;
        }
        self.cursors.remove(job_id);
        if self
            .ended
            .insert(job_id.to_owned(), cursor.sequence)
            .is_none()
        {
            self.ended_order.push_back(job_id.to_owned());
        }
        while self.ended_order.len() > ENDED_REMEMBERED {
            if let Some(oldest) = self.ended_order.pop_front() {
                self.ended.remove(&oldest);
            }
        }
    }

    async fn follow(
        &mut self,
        out: &EventSender,
        shutdown: &CancellationToken,
    ) -> Result<(), Status> {
        for event in std::mem::take(&mut self.first) {
            if out.send(Ok(event)).await.is_err() {
                return Ok(());
            }
        }
        loop {
            let changed: Vec<String> = tokio::select! {
                () = shutdown.cancelled() => return Err(Status::unavailable("the gateway is stopping")),
                () = out.closed() => return Ok(()),
                change = self.changes.recv() => match change {
                    Ok(id) if !id.is_empty() => vec![id],
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.everything().await,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                () = tokio::time::sleep(SAFETY_NET) => self.everything().await,
            };
            for job_id in changed {
                if !self.send_changes(&job_id, out).await? {
                    return Ok(());
                }
            }
        }
    }

    /// Every job that may have changed unseen: the ones followed, and the
    /// matching ones created lately that the notifications may have missed.
    async fn everything(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.cursors.keys().cloned().collect();
        let window = chrono::Duration::from_std(DISCOVERY_WINDOW).unwrap_or_default();
        let recent = JobFilter {
            created_since: Some((self.opened_at - window).max(Utc::now() - window)),
            offset: 0,
            ..self.filter.clone()
        };
        if let Ok((rows, _)) = self.service.list_jobs(&recent).await {
            ids.extend(
                rows.into_iter()
                    .map(|r| r.job_id)
                    .filter(|id| !self.cursors.contains_key(id) && !self.ended.contains_key(id)),
            );
        }
        ids
    }

    /// Sends what changed of `job_id`; false when the client went away.
    async fn send_changes(&mut self, job_id: &str, out: &EventSender) -> Result<bool, Status> {
        let Ok(detail) = self.service.job_detail(job_id).await else {
            return Ok(true);
        };
        if !self.filter.matches(&detail.job) {
            return Ok(true);
        }
        let (mut cursor, mut events) = match (self.cursors.remove(job_id), self.ended.get(job_id)) {
            (Some(cursor), _) => (cursor, Vec::new()),
            (None, Some(&sequence)) => (Cursor::at(sequence, &detail), Vec::new()),
            // A job that existed when the stream opened but did not match
            // then: its state now, then its changes.
            (None, None) if detail.job.created_at < self.opened_at => {
                let (detail, sequence) = read_with_sequence(&self.service, job_id).await?;
                (
                    Cursor::at(sequence, &detail),
                    vec![snapshot(&detail, sequence)],
                )
            }
            // A job created since: every change of it, from its first.
            (None, None) => (Cursor::default(), Vec::new()),
        };
        events.extend(cursor.advance(&self.service, &detail).await?);
        self.keep(job_id, cursor, terminal(&detail));
        for event in events {
            if out.send(Ok(event)).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
