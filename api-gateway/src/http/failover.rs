//! `POST /api/v1/failover/test` and `POST /api/v1/failover/live`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use failover_core::pipeline::{JobType, SkipFlags};

use super::AppState;
use super::correlation::CorrelationId;
use super::error::ApiError;
use super::extract::ApiJson;
use super::idempotency;
use crate::jobs::service::{Accepted, StartFailover, Started};

/// The longest test a request may ask for.
const MAX_TEST_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The request body of both endpoints, as the API reference documents it.
/// Unknown fields are refused so that a typo never silently changes a failover.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    pub vm_id: String,
    pub vm_name: String,
    #[serde(default)]
    pub auto_cleanup: bool,
    #[serde(default)]
    pub test_duration: Option<String>,
    #[serde(default)]
    pub skip_validation: bool,
    #[serde(default)]
    pub skip_snapshot: bool,
    #[serde(default)]
    pub skip_virtio_injection: bool,
    #[serde(default)]
    pub network_mappings: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub custom_config: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub notification_config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Undo what the failover did when it fails (default), or keep it so an
    /// operator can fix the cause and retry from the failed step.
    #[serde(default = "yes")]
    pub rollback_on_failure: bool,
}

fn yes() -> bool {
    true
}

/// Turns the body into a validated command, listing every problem.
fn parse(
    job_type: JobType,
    body: FailoverRequest,
    correlation_id: Uuid,
) -> Result<StartFailover, ApiError> {
    let mut problems = Vec::new();
    let vm_id = Uuid::parse_str(body.vm_id.trim()).ok();
    if vm_id.is_none() {
        problems.push(format!("vm_id {:?} is not a VMware VM UUID", body.vm_id));
    }
    if body.vm_name.trim().is_empty() || body.vm_name.len() > 255 {
        problems.push("vm_name must be 1 to 255 characters".to_owned());
    }
    let mut test_duration = None;
    if let Some(text) = &body.test_duration {
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => problems.push("test_duration must be positive".into()),
            Ok(d) if d > MAX_TEST_DURATION => {
                problems.push("test_duration must be at most 30 days".into())
            }
            Ok(_) => test_duration = Some(text.trim().to_owned()),
            Err(e) => problems.push(format!(
                "test_duration {text:?} is not a duration like \"30m\" or \"2h\": {e}"
            )),
        }
    }
    if job_type == JobType::Live && (body.auto_cleanup || body.test_duration.is_some()) {
        problems.push("auto_cleanup and test_duration apply to test failovers only".into());
    }
    let network_mappings = body.network_mappings.unwrap_or_default();
    for (source, target) in &network_mappings {
        if source.trim().is_empty() || target.trim().is_empty() {
            problems.push(format!(
                "network_mappings entry {source:?} -> {target:?} must name both networks"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(
            ApiError::invalid(format!("Invalid request: {}", problems.join("; ")))
                .with_problems(problems)
                .with_correlation(correlation_id),
        );
    }
    Ok(StartFailover {
        job_type,
        vm_id: vm_id.expect("checked above"),
        vm_name: body.vm_name.trim().to_owned(),
        skips: SkipFlags {
            skip_validation: body.skip_validation,
            skip_snapshot: body.skip_snapshot,
            skip_virtio_injection: body.skip_virtio_injection,
        },
        auto_cleanup: body.auto_cleanup,
        test_duration,
        rollback_on_failure: body.rollback_on_failure,
        network_mappings,
        custom_config: body.custom_config.map(serde_json::Value::Object),
        notification_config: body.notification_config.map(serde_json::Value::Object),
        correlation_id,
    })
}

pub async fn start_test(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    start(state, JobType::Test, correlation, headers, body).await
}

pub async fn start_live(
    State(state): State<AppState>,
    Extension(correlation): Extension<CorrelationId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    start(state, JobType::Live, correlation, headers, body).await
}

/// The documented answer to an accepted failover.
fn answer(
    command: &StartFailover,
    accepted: &Accepted,
    estimated_test_duration: std::time::Duration,
) -> serde_json::Value {
    let job_type = command.job_type;
    let mut data = json!({
        "correlation_id": command.correlation_id,
        "job_type": job_type.as_str(),
        "snapshot_protection": !command.skips.skip_snapshot,
        "status": accepted.status.as_str(),
        "virtio_injection": !command.skips.skip_virtio_injection,
        "vm_id": accepted.vm_id,
        "vm_name": command.vm_name,
        "rollback_on_failure": command.rollback_on_failure,
    });
    if let Some(other) = &accepted.waiting_for {
        data["waiting_for"] = json!(other);
    }
    let mut body = json!({
        "success": true,
        "job_id": accepted.job_id,
    });
    match job_type {
        JobType::Test => {
            let estimated = command
                .test_duration
                .clone()
                .unwrap_or_else(|| humantime::format_duration(estimated_test_duration).to_string());
            body["message"] = json!(match (
                command.skips.skip_snapshot,
                command.skips.skip_virtio_injection
            ) {
                (false, false) =>
                    "Test failover initiated successfully with snapshot protection and VirtIO injection",
                (false, true) => "Test failover initiated successfully with snapshot protection",
                (true, false) => "Test failover initiated successfully with VirtIO injection",
                (true, true) => "Test failover initiated successfully",
            });
            body["estimated_duration"] = json!(estimated);
            data["auto_cleanup"] = json!(command.auto_cleanup);
            data["test_duration"] = json!(command.test_duration);
        }
        _ => {
            body["message"] = json!("Live failover initiated successfully");
        }
    }
    body["data"] = data;
    body
}

async fn start(
    state: AppState,
    job_type: JobType,
    correlation: CorrelationId,
    headers: HeaderMap,
    raw: serde_json::Value,
) -> Result<Response, ApiError> {
    let endpoint = format!("/api/v1/failover/{job_type}");
    let (idempotency, replayed) =
        idempotency::check(&state.service, &headers, &endpoint, &raw, correlation.0).await?;
    if let Some(replayed) = replayed {
        return Ok(replayed);
    }
    let body: FailoverRequest = serde_json::from_value(raw).map_err(|e| {
        ApiError::invalid(format!("Invalid request body: {e}")).with_correlation(correlation.0)
    })?;
    let command = parse(job_type, body, correlation.0)?;
    let vm_id = command.vm_id;
    let estimated = state.settings.gateway.estimated_test_duration;
    let render_command = command.clone();
    let render = move |accepted: &Accepted| (202u16, answer(&render_command, accepted, estimated));
    let started = state
        .service
        .start(command.clone(), idempotency.as_ref(), &render)
        .await
        .map_err(|e| {
            ApiError::from(e)
                .with_vm(vm_id)
                .with_correlation(correlation.0)
        })?;
    let accepted = match started {
        Started::New(accepted) => {
            tracing::Span::current()
                .record("job_id", accepted.job_id.as_str())
                .record("vm_id", tracing::field::display(accepted.vm_id));
            accepted
        }
        Started::Replayed(stored) => {
            let key = idempotency.expect("a replay needs a key");
            return idempotency::stored_answer(&key, stored)
                .map_err(|e| e.with_correlation(correlation.0));
        }
    };
    Ok(accepted_response(
        &accepted.job_id,
        answer(&command, &accepted, estimated),
    ))
}

/// 202 with a `Location` of the job.
pub fn accepted_response(job_id: &str, body: serde_json::Value) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/failover/jobs/{job_id}")) {
        headers.insert(header::LOCATION, location);
    }
    (StatusCode::ACCEPTED, headers, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> FailoverRequest {
        serde_json::from_value(json).expect("well-formed")
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(
            JobType::Test,
            body(json!({"vm_id": "pgtest1", "vm_name": "", "test_duration": "soon"})),
            Uuid::nil(),
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{:?}", err.problems);
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_reference_request_parses() {
        let cmd = parse(
            JobType::Test,
            body(json!({
                "vm_id": "420570c7-f61f-a930-77c5-1e876786cb3c",
                "vm_name": "pgtest1",
                "auto_cleanup": true,
                "test_duration": "1h",
                "network_mappings": {"VM Network": "net-1"},
                "custom_config": {"key": "value"}
            })),
            Uuid::nil(),
        )
        .unwrap();
        assert_eq!(cmd.test_duration.as_deref(), Some("1h"));
        assert_eq!(cmd.network_mappings["VM Network"], "net-1");
        assert!(cmd.auto_cleanup);
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused() {
        assert!(
            serde_json::from_value::<FailoverRequest>(
                json!({"vm_id": "x", "vm_name": "y", "skip_snapshots": true})
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<FailoverRequest>(
                json!({"vm_id": "x", "vm_name": "y", "auto_cleanup": "yes"})
            )
            .is_err()
        );
    }

    #[test]
    fn live_failovers_take_no_test_duration() {
        let err = parse(
            JobType::Live,
            body(json!({"vm_id": "420570c7-f61f-a930-77c5-1e876786cb3c", "vm_name": "a", "test_duration": "1h"})),
            Uuid::nil(),
        )
        .unwrap_err();
        assert!(err.message.contains("test failovers only"));
    }
}
