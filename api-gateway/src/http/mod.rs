//! The REST API (port 8082): thin handlers over the failover service.

mod answers;
mod correlation;
mod error;
mod extract;
mod failover;
mod idempotency;
mod jobs;
mod operations;
pub mod rate_limit;
mod vms;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, middleware};
use serde_json::json;

use failover_core::ErrorCode;
use failover_platform::Settings;

pub use correlation::{CorrelationId, REQUEST_ID_HEADER};
pub use error::ApiError;

use crate::health::Readiness;
use crate::metrics::GatewayMetrics;
use crate::service::FailoverService;

#[derive(Debug, Clone)]
pub struct AppState {
    pub service: FailoverService,
    pub settings: Arc<Settings>,
    pub limits: Arc<rate_limit::RateLimits>,
    pub metrics: GatewayMetrics,
    pub readiness: Readiness,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.gateway.body_limit_bytes;
    Router::new()
        .route("/api/v1/failover/test", post(failover::start_test))
        .route("/api/v1/failover/live", post(failover::start_live))
        .route("/api/v1/failover/jobs", get(jobs::list))
        .route("/api/v1/failover/jobs/{job_id}", get(jobs::get))
        .route(
            "/api/v1/failover/jobs/{job_id}/cleanup",
            post(operations::cleanup),
        )
        .route(
            "/api/v1/failover/test/{job_id}",
            axum::routing::delete(operations::cleanup),
        )
        .route(
            "/api/v1/failover/jobs/{job_id}/cancel",
            post(operations::cancel),
        )
        .route(
            "/api/v1/failover/jobs/{job_id}/retry",
            post(operations::retry),
        )
        .route("/api/v1/vms", get(vms::list))
        .route(
            "/api/v1/vms/{vm_id}",
            get(vms::get).put(vms::put).delete(vms::delete),
        )
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.limits.clone(),
            rate_limit::enforce,
        ))
        .layer(middleware::from_fn(correlation::assign))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "No such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "Method not allowed on this endpoint",
    )
}

async fn live() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when Postgres answers and the outbox relay is connected to
/// RabbitMQ; otherwise 503 naming what is missing.
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    let report = state.readiness.check().await;
    let status = if report.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let part = |problem: &Option<String>| problem.clone().unwrap_or_else(|| "ok".to_owned());
    (
        status,
        Json(json!({
            "status": if report.ready() { "ready" } else { "unavailable" },
            "database": part(&report.database),
            "broker": part(&report.broker),
            "events": part(&report.events),
        })),
    )
}

/// Prometheus metrics.
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            failover_platform::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(),
    )
}
