//! Operator actions on a job: cleanup of a test failover (also
//! `DELETE /api/v1/failover/test/{job_id}`), cancel, and retry from the
//! failed step.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use failover_core::operator::Command;

use super::AppState;
use super::answers::{accepted_response, cleanup_answer, operator_answer};
use super::correlation::CorrelationId;
use super::error::ApiError;
use super::idempotency::{self, Kind};
use crate::service::admission::Started;
use crate::service::operator::OperatorOutcome;

/// Cleanup of a test failover: a job of its own, linked both ways.
pub async fn cleanup(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let fail = |e: ApiError| e.with_job(job_id.clone()).with_correlation(correlation.0);
    let endpoint = format!("/api/v1/failover/jobs/{job_id}/cleanup");
    let key = idempotency::key(&headers, &endpoint, &json!({})).map_err(fail)?;
    if let Some(replayed) = idempotency::replay(&state, key.as_ref(), Kind::Cleanup)
        .await
        .map_err(fail)?
    {
        return Ok(replayed);
    }
    let started = state
        .service
        .start_cleanup(&job_id, correlation.0, key.as_ref())
        .await
        .map_err(|e| fail(e.into()))?;
    let cleanup_job_id = match started {
        Started::New(accepted) => accepted.job_id,
        Started::Replayed(remembered) => {
            let key = key.as_ref().expect("a replay has a key");
            return idempotency::answer(&state, key, Kind::Cleanup, remembered)
                .await
                .map_err(fail);
        }
    };
    let job = state
        .service
        .job_detail(&cleanup_job_id)
        .await
        .map_err(|e| fail(e.into()))?;
    Ok(accepted_response(&cleanup_job_id, cleanup_answer(&job.job)))
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    operator(state, correlation, job_id, headers, Command::Cancel).await
}

pub async fn retry(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    operator(state, correlation, job_id, headers, Command::Retry).await
}

async fn operator(
    state: AppState,
    correlation: CorrelationId,
    job_id: String,
    headers: HeaderMap,
    command: Command,
) -> Result<Response, ApiError> {
    let action = match command {
        Command::Cancel => "cancel",
        Command::Retry => "retry",
    };
    let fail = |e: ApiError| e.with_job(job_id.clone()).with_correlation(correlation.0);
    let endpoint = format!("/api/v1/failover/jobs/{job_id}/{action}");
    let key = idempotency::key(&headers, &endpoint, &json!({})).map_err(fail)?;
    let kind = Kind::Operator(action);
    if let Some(replayed) = idempotency::replay(&state, key.as_ref(), kind)
        .await
        .map_err(fail)?
    {
        return Ok(replayed);
    }
    let outcome = state
        .service
        .operate(&job_id, command, correlation.0, key.as_ref())
        .await
        .map_err(|e| fail(e.into()))?;
    let (status, body) = match outcome {
        OperatorOutcome::Applied(job_status) => (
            StatusCode::ACCEPTED,
            operator_answer(action, &job_id, job_status.as_str(), Some(correlation.0)),
        ),
        OperatorOutcome::AlreadyDone(message) => (
            StatusCode::OK,
            json!({"success": true, "message": message, "job_id": job_id}),
        ),
        OperatorOutcome::Replayed(remembered) => {
            let key = key.as_ref().expect("a replay has a key");
            return idempotency::answer(&state, key, kind, remembered)
                .await
                .map_err(fail);
        }
    };
    Ok((status, Json(body)).into_response())
}
