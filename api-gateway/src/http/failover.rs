//! `POST /api/v1/failover/test` and `POST /api/v1/failover/live`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use failover_core::admission::FailoverRequest as StartRequest;
use failover_core::pipeline::{JobType, SkipFlags};

use super::AppState;
use super::answers::{AcceptedView, accepted_response, answer};
use super::correlation::CorrelationId;
use super::error::ApiError;
use super::extract::ApiJson;
use super::idempotency::{self, Kind};
use crate::service::admission::Started;

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
) -> Result<StartRequest, ApiError> {
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
            Ok(d) => test_duration = Some((text.trim().to_owned(), d)),
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
            ApiError::problems("Invalid request", problems).with_correlation(correlation_id)
        );
    }
    Ok(StartRequest {
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

async fn start(
    state: AppState,
    job_type: JobType,
    correlation: CorrelationId,
    headers: HeaderMap,
    raw: serde_json::Value,
) -> Result<Response, ApiError> {
    let endpoint = format!("/api/v1/failover/{job_type}");
    let key = idempotency::key(&headers, &endpoint, &raw)
        .map_err(|e| e.with_correlation(correlation.0))?;
    if let Some(replayed) = idempotency::replay(&state, key.as_ref(), Kind::Start)
        .await
        .map_err(|e| e.with_correlation(correlation.0))?
    {
        return Ok(replayed);
    }
    let body: FailoverRequest = serde_json::from_value(raw).map_err(|e| {
        ApiError::invalid(format!("Invalid request body: {e}")).with_correlation(correlation.0)
    })?;
    let command = parse(job_type, body, correlation.0)?;
    let vm_id = command.vm_id;
    let started = state
        .service
        .start(command.clone(), key.as_ref())
        .await
        .map_err(|e| {
            ApiError::from(e)
                .with_vm(vm_id)
                .with_correlation(correlation.0)
        })?;
    let accepted = match started {
        Started::New(accepted) => accepted,
        Started::Replayed(remembered) => {
            return idempotency::answer(
                &state,
                key.as_ref().expect("a replay has a key"),
                Kind::Start,
                remembered,
            )
            .await
            .map_err(|e| e.with_correlation(correlation.0));
        }
    };
    tracing::Span::current()
        .record("job_id", accepted.job_id.as_str())
        .record("vm_id", tracing::field::display(accepted.vm_id));
    let estimated = state.settings.gateway.estimated_test_duration;
    Ok(accepted_response(
        &accepted.job_id,
        answer(&AcceptedView::of(&command, &accepted), estimated),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

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
        assert_eq!(
            cmd.test_duration.as_ref().map(|(t, _)| t.as_str()),
            Some("1h")
        );
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
