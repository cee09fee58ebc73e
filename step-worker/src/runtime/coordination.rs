//! The worker's side of step coordination: claim, heartbeat and report over
//! gRPC to the gateway, with retries where a lost call is harmless. Each
//! call is a client span whose trace context goes along in the request's
//! `traceparent` metadata, with the job's correlation id and VM.

use std::collections::HashMap;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tracing::{Instrument as _, warn};

use failover_platform::telemetry::propagation;
use failover_proto::v1 as pb;
use failover_proto::v1::step_coordination_client::StepCoordinationClient;

use crate::steps::StepResult;

#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    #[error("gateway unreachable: {0}")]
    Unreachable(#[from] tonic::Status),
    #[error("invalid gateway url: {0}")]
    Url(#[from] tonic::transport::Error),
}

/// The gRPC metadata key that carries the job's correlation id.
pub const CORRELATION_METADATA: &str = "x-correlation-id";
/// The gRPC metadata key that carries the job's VM.
pub const VM_METADATA: &str = "x-vm-id";

/// The client span of one call of `method` for `step`.
fn call_span(step: &StepAttempt, method: &'static str) -> tracing::Span {
    tracing::info_span!(
        "step_coordination.call",
        otel.name = %format!("failover.v1.StepCoordination/{method}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = "failover.v1.StepCoordination",
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        correlation_id = %step.correlation_id,
        job_id = %step.job_id,
        vm_id = %step.vm_id,
        step = %step.step_name,
        attempt = step.attempt,
    )
}

/// Wraps a message in a request that carries the correlation id, the VM and
/// the trace context of `span`.
fn request<T>(step: &StepAttempt, span: &tracing::Span, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    let pairs = [
        (CORRELATION_METADATA, step.correlation_id.clone()),
        (VM_METADATA, step.vm_id.clone()),
    ];
    for (key, value) in pairs.into_iter().chain(propagation::headers(span)) {
        if let Ok(value) = MetadataValue::try_from(value.as_str()) {
            metadata.insert(key, value);
        }
    }
    request
}

/// Records the answer's gRPC status on the call's span.
fn record_status<T>(span: &tracing::Span, result: &Result<T, tonic::Status>) {
    let code = match result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}

/// Identifies one attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepAttempt {
    pub correlation_id: String,
    pub job_id: String,
    pub vm_id: String,
    pub step_name: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Granted {
        lease: Duration,
    },
    /// A duplicate delivery or a stale attempt: drop the message.
    Refused {
        reason: String,
    },
    /// The job does not exist: the message is poison.
    UnknownJob {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    pub lease_held: bool,
    pub cancel_requested: bool,
}

#[derive(Debug, Clone)]
pub struct Coordinator {
    client: StepCoordinationClient<Channel>,
    worker_id: String,
}

impl Coordinator {
    /// A lazily connecting client: the worker starts while the gateway is down.
    pub fn new(gateway_url: &str, worker_id: String) -> Result<Self, CoordinationError> {
        let channel = Endpoint::from_shared(gateway_url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        Ok(Coordinator {
            client: StepCoordinationClient::new(channel),
            worker_id,
        })
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    pub async fn claim(&self, step: &StepAttempt) -> Result<ClaimOutcome, CoordinationError> {
        let span = call_span(step, "ClaimStep");
        let message = pb::ClaimStepRequest {
            job_id: step.job_id.clone(),
            step_name: step.step_name.clone(),
            attempt: step.attempt,
            worker_id: self.worker_id.clone(),
        };
        let result = self
            .client
            .clone()
            .claim_step(request(step, &span, message))
            .instrument(span.clone())
            .await;
        record_status(&span, &result);
        let response = result?.into_inner();
        Ok(if response.granted {
            ClaimOutcome::Granted {
                lease: Duration::from_millis(response.lease_ms),
            }
        } else if response.unknown_job {
            ClaimOutcome::UnknownJob {
                reason: response.reason,
            }
        } else {
            ClaimOutcome::Refused {
                reason: response.reason,
            }
        })
    }

    pub async fn heartbeat(
        &self,
        step: &StepAttempt,
        progress_percent: u32,
        message: &str,
    ) -> Result<HeartbeatOutcome, CoordinationError> {
        let span = call_span(step, "Heartbeat");
        let message = pb::HeartbeatRequest {
            job_id: step.job_id.clone(),
            step_name: step.step_name.clone(),
            attempt: step.attempt,
            worker_id: self.worker_id.clone(),
            progress_percent,
            message: message.to_owned(),
        };
        let result = self
            .client
            .clone()
            .heartbeat(request(step, &span, message))
            .instrument(span.clone())
            .await;
        record_status(&span, &result);
        let response = result?.into_inner();
        Ok(HeartbeatOutcome {
            lease_held: response.lease_held,
            cancel_requested: response.cancel_requested,
        })
    }

    /// Reports the outcome, retrying transport failures until `deadline`
    /// (the lease: past it the step is someone else's). Returns whether the
    /// gateway accepted the report.
    pub async fn report(
        &self,
        step: &StepAttempt,
        result: &StepResult,
        log: String,
        deadline: Duration,
    ) -> bool {
        let outcome = match result {
            StepResult::Succeeded { outputs, message } => {
                pb::report_step_request::Outcome::Succeeded(pb::StepSucceeded {
                    outputs: outputs.clone().into_iter().collect::<HashMap<_, _>>(),
                    message: message.clone(),
                })
            }
            StepResult::Failed {
                code,
                message,
                retryable,
            } => pb::report_step_request::Outcome::Failed(pb::StepFailed {
                error_code: code.as_str().to_owned(),
                error_message: message.clone(),
                retryable: *retryable,
            }),
            StepResult::Skipped { reason } => {
                pb::report_step_request::Outcome::Skipped(pb::StepSkipped {
                    reason: reason.clone(),
                })
            }
        };
        let report = pb::ReportStepRequest {
            job_id: step.job_id.clone(),
            step_name: step.step_name.clone(),
            attempt: step.attempt,
            worker_id: self.worker_id.clone(),
            outcome: Some(outcome),
            log,
        };
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let span = call_span(step, "ReportStep");
            let result = self
                .client
                .clone()
                .report_step(request(step, &span, report.clone()))
                .instrument(span.clone())
                .await;
            record_status(&span, &result);
            match result {
                Ok(response) => {
                    let response = response.into_inner();
                    if !response.accepted {
                        warn!(job_id = %step.job_id, step = %step.step_name, attempt = step.attempt, reason = %response.reason, "report refused");
                    }
                    return response.accepted;
                }
                Err(status) if started.elapsed() + delay < deadline => {
                    warn!(job_id = %step.job_id, step = %step.step_name, error = %status, "report failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(status) => {
                    warn!(job_id = %step.job_id, step = %step.step_name, error = %status, "report abandoned; the lease will expire and the step run again");
                    return false;
                }
            }
        }
    }
}
