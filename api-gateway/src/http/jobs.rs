//! `GET /api/v1/failover/jobs` and `GET /api/v1/failover/jobs/{job_id}`.

use axum::Json;
use axum::extract::{Extension, Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use failover_core::JobStatus;
use failover_core::pipeline::{JobType, StepKind};

use super::AppState;
use super::correlation::CorrelationId;
use super::error::ApiError;
use super::extract::ApiQuery;
use crate::db::jobs::{JobDetail, JobFilter, JobRow, StepRow};
use crate::service::queries::{ListRequest, job_filter};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    #[serde(rename = "type")]
    pub job_type: Option<String>,
    pub vm_id: Option<String>,
    pub correlation_id: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl ListQuery {
    /// The filter, or every problem with the query.
    pub fn filter(self) -> Result<JobFilter, ApiError> {
        job_filter(ListRequest {
            status: self.status,
            job_type: self.job_type,
            vm_id: self.vm_id,
            correlation_id: self.correlation_id,
            limit: self.limit,
            offset: self.offset,
        })
        .map_err(|problems| ApiError::problems("Invalid query", problems))
    }
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    match t {
        Some(t) => json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => Value::Null,
    }
}

/// A job as listed.
pub fn summary(job: &JobRow) -> Value {
    json!({
        "job_id": job.job_id,
        "vm_id": job.vm_id,
        "vm_name": job.vm_name,
        "job_type": job.job_type.as_str(),
        "status": job.status.as_str(),
        "current_step": job.current_step.map(|s| s.0.as_str()),
        "correlation_id": job.correlation_id,
        "linstor_snapshot_name": job.linstor_snapshot_name,
        "destination_vm_id": job.destination_vm_id,
        "error_code": job.error_code.map(|c| c.0.as_str()),
        "test_job_id": job.parent_job_id,
        "cleanup_job_id": job.cleanup_job_id,
        "created_at": time(Some(job.created_at)),
        "completed_at": time(job.completed_at),
    })
}

/// What a job that ended with state behind it left, and why: from its
/// undo steps (cleanup or compensation) that did not complete, or, for a
/// job that kept its state, from what its steps made.
pub fn left_behind(d: &JobDetail) -> Vec<Value> {
    let job = &d.job;
    if !job.holds_vm || !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
        return Vec::new();
    }
    let vm = job
        .outputs
        .0
        .get("destination_vm_id")
        .map_or("(unknown)", String::as_str);
    let snapshot = job.linstor_snapshot_name.as_deref().unwrap_or("(none)");
    let undo: Vec<&StepRow> = d
        .steps
        .iter()
        .filter(|s| s.step_name.is_compensation() || job.job_type == JobType::Cleanup)
        .collect();
    if undo.is_empty() {
        // Kept for a retry: everything the forward steps made is still there.
        let why = "the job kept its state for a retry (rollback_on_failure: false)";
        let mut left = Vec::new();
        if job.outputs.0.contains_key("destination_vm_id") {
            left.push(json!({"resource": format!("VM {vm}"), "why": why}));
        }
        if job.linstor_snapshot_name.is_some() {
            left.push(json!({"resource": format!("LINSTOR snapshot {snapshot} of every disk"), "why": why}));
        }
        return left;
    }
    undo.iter()
        .filter(|s| {
            !matches!(
                s.status,
                failover_core::StepStatus::Completed | failover_core::StepStatus::Skipped
            )
        })
        .filter_map(|s| {
            let resource = match s.step_name.kind() {
                StepKind::StopVm => format!("VM {vm} may still be running"),
                StepKind::DetachVolumes => {
                    format!("the replicated volumes may still be attached to VM {vm}")
                }
                StepKind::RollbackSnapshots => {
                    format!("the disks are not rolled back to snapshot {snapshot}")
                }
                StepKind::ReattachVolumes => {
                    "the replicated volumes are not back on the appliance VM".to_owned()
                }
                StepKind::DestroyVm => format!("VM {vm} still exists"),
                StepKind::DeleteSnapshots => format!("LINSTOR snapshot {snapshot} still exists"),
                _ => return None,
            };
            let why = s
                .error_message
                .clone()
                .unwrap_or_else(|| format!("step {} is {}", s.step_name, s.status));
            Some(json!({"step": s.step_name.as_str(), "resource": resource, "why": why}))
        })
        .collect()
}

fn step(step: &StepRow) -> Value {
    let error = step
        .error_code
        .map(|code| json!({"error_code": code.0.as_str(), "error_message": step.error_message}));
    json!({
        "step_name": step.step_name.as_str(),
        "status": step.status.as_str(),
        "attempt": step.attempt,
        "progress": step.progress,
        "message": step.message,
        "error": error,
        "log": step.log,
        "started_at": time(step.started_at),
        "completed_at": time(step.completed_at),
    })
}

/// A job with every documented field, and its steps in order.
pub fn detail(d: &JobDetail) -> Value {
    let job = &d.job;
    json!({
        "job_id": job.job_id,
        "vm_id": job.vm_id,
        "vm_name": job.vm_name,
        "job_type": job.job_type.as_str(),
        "status": job.status.as_str(),
        "current_step": job.current_step.map(|s| s.0.as_str()),
        "correlation_id": job.correlation_id,
        "source_vm_spec": job.source_vm_spec,
        "destination_vm_id": job.destination_vm_id,
        "linstor_snapshot_name": job.linstor_snapshot_name,
        "network_mappings": job.network_mappings,
        "skip_validation": job.skip_validation,
        "skip_snapshot": job.skip_snapshot,
        "skip_virtio_injection": job.skip_virtio_injection,
        "auto_cleanup": job.auto_cleanup,
        "test_duration": job.test_duration,
        "custom_config": job.custom_config,
        "notification_config": job.notification_config,
        "error_code": job.error_code.map(|c| c.0.as_str()),
        "error_message": job.error_message,
        "error_step": job.error_step.map(|s| s.0.as_str()),
        "created_at": time(Some(job.created_at)),
        "started_at": time(job.started_at),
        "completed_at": time(job.completed_at),
        "updated_at": time(Some(job.updated_at)),
        "rollback_on_failure": job.rollback_on_failure,
        "cancel_requested": job.cancel_requested,
        "holds_vm": job.holds_vm,
        "test_job_id": job.parent_job_id,
        "cleanup_job_id": job.cleanup_job_id,
        "auto_cleanup_at": time(job.auto_cleanup_at),
        // Shown while the job waits; the job remembers it for its answer.
        "waiting_for": job.waiting_for.as_ref().filter(|_| job.status == JobStatus::Pending),
        "left_behind": left_behind(d),
        "steps": d.steps.iter().map(step).collect::<Vec<_>>(),
    })
}

pub async fn list(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = query
        .filter()
        .map_err(|e| e.with_correlation(correlation.0))?;
    let (jobs, total) = state
        .service
        .list_jobs(&filter)
        .await
        .map_err(|e| ApiError::from(e).with_correlation(correlation.0))?;
    Ok(Json(json!({
        "success": true,
        "data": jobs.iter().map(summary).collect::<Vec<_>>(),
        "total": total.count,
        "total_exact": total.exact,
        "limit": filter.limit,
        "offset": filter.offset,
    })))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    Path(job_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = state
        .service
        .job_detail(&job_id)
        .await
        .map_err(|e| ApiError::from(e).with_correlation(correlation.0))?;
    Ok(Json(json!({"success": true, "data": detail(&job)})))
}
