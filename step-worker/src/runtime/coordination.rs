//! The worker's side of step coordination: claim, heartbeat and report over
//! gRPC to the gateway, with retries where a lost call is harmless.

use std::collections::HashMap;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tracing::warn;

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

/// Wraps a message in a request that carries the correlation id.
fn request<T>(step: &StepAttempt, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = step.correlation_id.parse() {
        request.metadata_mut().insert(CORRELATION_METADATA, value);
    }
    request
}

/// Identifies one attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepAttempt {
    pub correlation_id: String,
    pub job_id: String,
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
        let response = self
            .client
            .clone()
            .claim_step(request(
                step,
                pb::ClaimStepRequest {
                    job_id: step.job_id.clone(),
                    step_name: step.step_name.clone(),
                    attempt: step.attempt,
                    worker_id: self.worker_id.clone(),
                },
            ))
            .await?
            .into_inner();
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
        let response = self
            .client
            .clone()
            .heartbeat(request(
                step,
                pb::HeartbeatRequest {
                    job_id: step.job_id.clone(),
                    step_name: step.step_name.clone(),
                    attempt: step.attempt,
                    worker_id: self.worker_id.clone(),
                    progress_percent,
                    message: message.to_owned(),
                },
            ))
            .await?
            .into_inner();
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
            match self
                .client
                .clone()
                .report_step(request(step, report.clone()))
                .await
            {
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
