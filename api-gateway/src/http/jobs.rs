//! `GET /api/v1/failover/jobs` and `GET /api/v1/failover/jobs/{job_id}`.

use axum::Json;
use axum::extract::{Extension, Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use failover_core::JobStatus;
use failover_core::pipeline::JobType;

use super::AppState;
use super::correlation::CorrelationId;
use super::error::ApiError;
use super::extract::ApiQuery;
use crate::jobs::model::{JobDetail, JobRow, StepRow};
use crate::jobs::store::JobFilter;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

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
        let mut problems = Vec::new();
        let status = self.status.filter(|s| !s.is_empty());
        if let Some(s) = &status
            && JobStatus::parse(s).is_none()
        {
            let known: Vec<_> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            problems.push(format!("status {s:?} is not one of {}", known.join(", ")));
        }
        let job_type = self.job_type.filter(|s| !s.is_empty());
        if let Some(t) = &job_type
            && JobType::parse(t).is_none()
        {
            problems.push(format!("type {t:?} is not one of test, live, cleanup"));
        }
        let vm_id = parse_uuid("vm_id", self.vm_id, &mut problems);
        let correlation_id = parse_uuid("correlation_id", self.correlation_id, &mut problems);
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            problems.push(format!("limit must be between 1 and {MAX_LIMIT}"));
        }
        let offset = self.offset.unwrap_or(0);
        if offset < 0 {
            problems.push("offset must not be negative".into());
        }
        if !problems.is_empty() {
            return Err(
                ApiError::invalid(format!("Invalid query: {}", problems.join("; ")))
                    .with_problems(problems),
            );
        }
        Ok(JobFilter {
            status,
            job_type,
            vm_id,
            correlation_id,
            created_since: None,
            limit,
            offset,
        })
    }
}

fn parse_uuid(name: &str, value: Option<String>, problems: &mut Vec<String>) -> Option<Uuid> {
    let value = value.filter(|v| !v.is_empty())?;
    match Uuid::parse_str(value.trim()) {
        Ok(id) => Some(id),
        Err(_) => {
            problems.push(format!("{name} {value:?} is not a UUID"));
            None
        }
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
        "job_type": job.job_type,
        "status": job.status,
        "current_step": job.current_step,
        "correlation_id": job.correlation_id,
        "linstor_snapshot_name": job.linstor_snapshot_name,
        "destination_vm_id": job.destination_vm_id,
        "error_code": job.error_code,
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
    use failover_core::pipeline::{StepKind, StepName};
    let job = &d.job;
    if !job.holds_vm || !matches!(job.status.as_str(), "failed" | "cancelled") {
        return Vec::new();
    }
    let outputs = &job.outputs;
    let vm = outputs["destination_vm_id"].as_str().unwrap_or("(unknown)");
    let snapshot = job.linstor_snapshot_name.as_deref().unwrap_or("(none)");
    let undo: Vec<&StepRow> = d
        .steps
        .iter()
        .filter(|s| {
            StepName::parse(&s.step_name)
                .is_some_and(|n| n.is_compensation() || job.job_type == "cleanup")
        })
        .collect();
    if undo.is_empty() {
        // Kept for a retry: everything the forward steps made is still there.
        let mut left = Vec::new();
        if outputs.get("destination_vm_id").is_some() {
            left.push(json!({"resource": format!("VM {vm}"), "why": "the job kept its state for a retry (rollback_on_failure: false)"}));
        }
        if job.linstor_snapshot_name.is_some() {
            left.push(json!({"resource": format!("LINSTOR snapshot {snapshot} of every disk"), "why": "the job kept its state for a retry (rollback_on_failure: false)"}));
        }
        return left;
    }
    undo.iter()
        .filter(|s| !matches!(s.status.as_str(), "completed" | "skipped"))
        .filter_map(|s| {
            let kind = StepName::parse(&s.step_name)?.kind();
            let resource = match kind {
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
            Some(json!({"step": s.step_name, "resource": resource, "why": why}))
        })
        .collect()
}

fn step(step: &StepRow) -> Value {
    let error = step
        .error_code
        .as_ref()
        .map(|code| json!({"error_code": code, "error_message": step.error_message}));
    json!({
        "step_name": step.step_name,
        "status": step.status,
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
        "job_type": job.job_type,
        "status": job.status,
        "current_step": job.current_step,
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
        "error_code": job.error_code,
        "error_message": job.error_message,
        "error_step": job.error_step,
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
        "waiting_for": job.waiting_for,
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
        "total": total,
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
        .get_job(&job_id)
        .await
        .map_err(|e| ApiError::from(e).with_correlation(correlation.0))?;
    Ok(Json(json!({"success": true, "data": detail(&job)})))
}
