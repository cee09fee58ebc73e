//! Operator actions on a job: cleanup of a test failover (also
//! `DELETE /api/v1/failover/test/{job_id}`), cancel, and retry from the
//! failed step.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::correlation::CorrelationId;
use super::error::ApiError;
use super::failover::accepted_response;
use super::idempotency;
use crate::jobs::service::OperatorOutcome;

/// Cleanup of a test failover: a job of its own, linked both ways.
pub async fn cleanup(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let endpoint = format!("/api/v1/failover/jobs/{job_id}/cleanup");
    let (key, replayed) = idempotency::check(
        &state.service,
        &headers,
        &endpoint,
        &json!({}),
        correlation.0,
    )
    .await?;
    if let Some(replayed) = replayed {
        return Ok(replayed);
    }
    let accepted = state
        .service
        .start_cleanup(&job_id, correlation.0, "request")
        .await
        .map_err(|e| {
            ApiError::from(e)
                .with_job(job_id.clone())
                .with_correlation(correlation.0)
        })?;
    let body = json!({
        "success": true,
        "message": "Cleanup initiated: the test VM is stopped and destroyed, the disks rolled back to the pre-test snapshot and returned to the appliance",
        "job_id": accepted.job_id,
        "data": {
            "correlation_id": correlation.0,
            "job_type": "cleanup",
            "status": accepted.status.as_str(),
            "test_job_id": job_id,
            "vm_id": accepted.vm_id,
            "vm_name": accepted.vm_name,
        }
    });
    if let Some(key) = &key {
        state
            .service
            .remember(key, &accepted.job_id, 202, &body)
            .await;
    }
    Ok(accepted_response(&accepted.job_id, body))
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    operator(state, correlation, job_id, headers, "cancel").await
}

pub async fn retry(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    operator(state, correlation, job_id, headers, "retry").await
}

async fn operator(
    state: AppState,
    correlation: CorrelationId,
    job_id: String,
    headers: HeaderMap,
    action: &str,
) -> Result<Response, ApiError> {
    let endpoint = format!("/api/v1/failover/jobs/{job_id}/{action}");
    let (key, replayed) = idempotency::check(
        &state.service,
        &headers,
        &endpoint,
        &json!({}),
        correlation.0,
    )
    .await?;
    if let Some(replayed) = replayed {
        return Ok(replayed);
    }
    let outcome = match action {
        "cancel" => state.service.cancel(&job_id, correlation.0).await,
        _ => state.service.retry(&job_id, correlation.0).await,
    }
    .map_err(|e| {
        ApiError::from(e)
            .with_job(job_id.clone())
            .with_correlation(correlation.0)
    })?;
    let (status, body) = match outcome {
        OperatorOutcome::Applied(job_status) => (
            StatusCode::ACCEPTED,
            json!({
                "success": true,
                "message": match action {
                    "cancel" => "Cancellation requested: the running step is stopped, then what the job did is undone",
                    _ => "Retry started from the failed step",
                },
                "job_id": job_id,
                "data": {"status": job_status.as_str(), "correlation_id": correlation.0},
            }),
        ),
        OperatorOutcome::AlreadyDone(message) => (
            StatusCode::OK,
            json!({"success": true, "message": message, "job_id": job_id}),
        ),
    };
    if let Some(key) = &key {
        state
            .service
            .remember(key, &job_id, status.as_u16(), &body)
            .await;
    }
    Ok((status, Json(body)).into_response())
}
