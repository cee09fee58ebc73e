//! What the answers to accepted requests say: a started failover, a
//! cleanup, an operator's cancel or retry. The same text answers a request
//! and, from the job, its repeat with the same idempotency key.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use failover_core::JobStatus;
use failover_core::admission::FailoverRequest;
use failover_core::pipeline::{JobType, SkipFlags};

use crate::db::jobs::JobRow;
use crate::service::admission::Accepted;

/// What the answer to an accepted failover shows.
#[derive(Debug, Clone)]
pub struct AcceptedView {
    pub job_id: String,
    pub job_type: JobType,
    pub correlation_id: Uuid,
    pub vm_id: Uuid,
    pub vm_name: String,
    pub skips: SkipFlags,
    pub rollback_on_failure: bool,
    pub auto_cleanup: bool,
    pub test_duration: Option<String>,
    pub waiting_for: Option<String>,
}

impl AcceptedView {
    pub fn of(command: &FailoverRequest, accepted: &Accepted) -> Self {
        AcceptedView {
            job_id: accepted.job_id.clone(),
            job_type: command.job_type,
            correlation_id: command.correlation_id,
            vm_id: accepted.vm_id,
            vm_name: command.vm_name.clone(),
            skips: command.skips,
            rollback_on_failure: command.rollback_on_failure,
            auto_cleanup: command.auto_cleanup,
            test_duration: command.test_duration.as_ref().map(|(t, _)| t.clone()),
            waiting_for: accepted.waiting_for.clone(),
        }
    }

    /// The answer the job's request got, as the job recorded it.
    pub fn of_job(job: &JobRow) -> Self {
        AcceptedView {
            job_id: job.job_id.clone(),
            job_type: job.job_type,
            correlation_id: job.correlation_id,
            vm_id: job.vm_id,
            vm_name: job.vm_name.clone(),
            skips: SkipFlags {
                skip_validation: job.skip_validation,
                skip_snapshot: job.skip_snapshot,
                skip_virtio_injection: job.skip_virtio_injection,
            },
            rollback_on_failure: job.rollback_on_failure,
            auto_cleanup: job.auto_cleanup,
            test_duration: job.test_duration.clone(),
            waiting_for: job.waiting_for.clone(),
        }
    }
}

/// The documented answer to an accepted failover: an accepted job is
/// always `pending`.
pub fn answer(view: &AcceptedView, estimated_test_duration: Duration) -> serde_json::Value {
    let mut data = json!({
        "correlation_id": view.correlation_id,
        "job_type": view.job_type.as_str(),
        "snapshot_protection": !view.skips.skip_snapshot,
        "status": JobStatus::Pending.as_str(),
        "virtio_injection": !view.skips.skip_virtio_injection,
        "vm_id": view.vm_id,
        "vm_name": view.vm_name,
        "rollback_on_failure": view.rollback_on_failure,
    });
    if let Some(other) = &view.waiting_for {
        data["waiting_for"] = json!(other);
    }
    let mut body = json!({
        "success": true,
        "job_id": view.job_id,
    });
    match view.job_type {
        JobType::Test => {
            let estimated = view
                .test_duration
                .clone()
                .unwrap_or_else(|| humantime::format_duration(estimated_test_duration).to_string());
            body["message"] = json!(match (
                view.skips.skip_snapshot,
                view.skips.skip_virtio_injection
            ) {
                (false, false) =>
                    "Test failover initiated successfully with snapshot protection and VirtIO injection",
                (false, true) => "Test failover initiated successfully with snapshot protection",
                (true, false) => "Test failover initiated successfully with VirtIO injection",
                (true, true) => "Test failover initiated successfully",
            });
            body["estimated_duration"] = json!(estimated);
            data["auto_cleanup"] = json!(view.auto_cleanup);
            data["test_duration"] = json!(view.test_duration);
        }
        _ => {
            body["message"] = json!("Live failover initiated successfully");
        }
    }
    body["data"] = data;
    body
}

/// 202 with a `Location` of the job.
pub fn accepted_response(job_id: &str, body: serde_json::Value) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/failover/jobs/{job_id}")) {
        headers.insert(header::LOCATION, location);
    }
    (StatusCode::ACCEPTED, headers, Json(body)).into_response()
}

/// The answer to an accepted cleanup, from the cleanup job.
pub fn cleanup_answer(job: &JobRow) -> Value {
    json!({
        "success": true,
        "message": "Cleanup initiated: the test VM is stopped and destroyed, the disks rolled back to the pre-test snapshot and returned to the appliance",
        "job_id": job.job_id,
        "data": {
            "correlation_id": job.correlation_id,
            "job_type": "cleanup",
            "status": "pending",
            "test_job_id": job.parent_job_id,
            "vm_id": job.vm_id,
            "vm_name": job.vm_name,
        }
    })
}

/// The answer to an applied cancel or retry.
pub fn operator_answer(
    action: &str,
    job_id: &str,
    status: &str,
    correlation_id: Option<Uuid>,
) -> Value {
    json!({
        "success": true,
        "message": match action {
            "cancel" => "Cancellation requested: the running step is stopped, then what the job did is undone",
            _ => "Retry started from the failed step",
        },
        "job_id": job_id,
        "data": {"status": status, "correlation_id": correlation_id},
    })
}
