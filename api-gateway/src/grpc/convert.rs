//! The protobuf messages of the status service, from the rows the service
//! reads, and the list filter from a request.

use chrono::{DateTime, Utc};

use failover_proto::v1 as pb;
use failover_proto::v1::job_event::Kind;

use crate::db::jobs::{JobDetail, JobFilter, JobRow, StepRow};
use crate::db::tracking::TrackingRow;
use crate::service::queries::{ListRequest, job_filter};

pub fn timestamp(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

impl From<&StepRow> for pb::Step {
    fn from(s: &StepRow) -> Self {
        pb::Step {
            step_name: s.step_name.as_str().to_owned(),
            status: s.status.as_str().to_owned(),
            attempt: u32::try_from(s.attempt).unwrap_or_default(),
            progress_percent: u32::try_from(s.progress).unwrap_or_default(),
            message: s.message.clone().unwrap_or_default(),
            error_code: s
                .error_code
                .map(|c| c.0.as_str().to_owned())
                .unwrap_or_default(),
            error_message: s.error_message.clone().unwrap_or_default(),
            started_at: timestamp(s.started_at),
            completed_at: timestamp(s.completed_at),
        }
    }
}

/// A job with its steps (none for a list).
pub fn job(row: &JobRow, steps: &[StepRow]) -> pb::Job {
    pb::Job {
        job_id: row.job_id.clone(),
        correlation_id: row.correlation_id.to_string(),
        vm_id: row.vm_id.to_string(),
        vm_name: row.vm_name.clone(),
        job_type: row.job_type.as_str().to_owned(),
        status: row.status.as_str().to_owned(),
        current_step: row
            .current_step
            .map(|s| s.0.as_str().to_owned())
            .unwrap_or_default(),
        linstor_snapshot_name: row.linstor_snapshot_name.clone().unwrap_or_default(),
        destination_vm_id: row.destination_vm_id.clone().unwrap_or_default(),
        error_code: row
            .error_code
            .map(|c| c.0.as_str().to_owned())
            .unwrap_or_default(),
        error_message: row.error_message.clone().unwrap_or_default(),
        created_at: timestamp(Some(row.created_at)),
        started_at: timestamp(row.started_at),
        completed_at: timestamp(row.completed_at),
        steps: steps.iter().map(pb::Step::from).collect(),
    }
}

impl From<&JobDetail> for pb::Job {
    fn from(d: &JobDetail) -> Self {
        job(&d.job, &d.steps)
    }
}

/// The job as it is, at `sequence` of its recorded changes.
pub fn snapshot(detail: &JobDetail, sequence: i64) -> pb::JobEvent {
    let job = pb::Job::from(detail);
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

/// One recorded change, with the job as it is now.
pub fn transition(detail: &JobDetail, row: &TrackingRow) -> pb::JobEvent {
    let job = pb::Job::from(detail);
    let step_name = row
        .operation
        .step()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
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
        progress_percent: if row.status == failover_core::StepStatus::Completed.as_str() {
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

/// A step's progress, as a heartbeat moved it.
pub fn progress(detail: &JobDetail, step: &StepRow, sequence: i64) -> pb::JobEvent {
    let job = pb::Job::from(detail);
    pb::JobEvent {
        kind: Kind::Progress as i32,
        sequence: u64::try_from(sequence).unwrap_or_default(),
        job_id: job.job_id.clone(),
        step_name: step.step_name.as_str().to_owned(),
        status: step.status.as_str().to_owned(),
        attempt: u32::try_from(step.attempt).unwrap_or_default(),
        progress_percent: u32::try_from(step.progress).unwrap_or_default(),
        message: step.message.clone().unwrap_or_default(),
        at: timestamp(Some(Utc::now())),
        job: Some(job),
        ..Default::default()
    }
}

/// The list filter of a request, or every problem with it.
pub fn list_filter(req: pb::ListJobsRequest) -> Result<JobFilter, Vec<String>> {
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    job_filter(ListRequest {
        status: non_empty(req.status),
        job_type: non_empty(req.job_type),
        vm_id: non_empty(req.vm_id),
        correlation_id: non_empty(req.correlation_id),
        limit: (req.limit > 0).then_some(i64::from(req.limit)),
        offset: Some(i64::from(req.offset)),
    })
}
