//! Claim / heartbeat / report, served to the step workers.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use failover_core::ErrorCode;
use failover_core::coordination::StepOutcome;
use failover_core::orchestration::StepFailure;
use failover_core::pipeline::StepName;
use failover_platform::telemetry::propagation;
use failover_proto::v1 as pb;
use failover_proto::v1::step_coordination_server::StepCoordination;

use super::{invalid, to_status};
use crate::service::{FailoverService, Verdict};

#[derive(Debug, Clone)]
pub struct StepCoordinationService {
    service: FailoverService,
}

impl StepCoordinationService {
    pub fn new(service: FailoverService) -> Self {
        StepCoordinationService { service }
    }
}

/// The metadata key workers put the job's correlation id in.
pub const CORRELATION_METADATA: &str = "x-correlation-id";
/// The metadata key workers put the job's VM in.
pub const VM_METADATA: &str = "x-vm-id";

/// A server span for one call, in the trace the worker's `traceparent`
/// metadata names, carrying the correlation id and VM the worker sent.
fn call_span<T>(
    request: &Request<T>,
    call: &'static str,
    job_id: &str,
    step: &str,
    attempt: u32,
) -> tracing::Span {
    let metadata = |key: &str| {
        request
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let correlation_id = metadata(CORRELATION_METADATA).unwrap_or_default();
    let span = tracing::info_span!(
        "step_coordination",
        otel.name = %format!("failover.v1.StepCoordination/{call}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "failover.v1.StepCoordination",
        rpc.method = call,
        call,
        correlation_id,
        job_id,
        vm_id = metadata(VM_METADATA),
        step,
        attempt,
        worker_id = tracing::field::Empty,
    );
    propagation::continue_trace(&span, metadata);
    span
}

fn step_name(name: &str) -> Result<StepName, Status> {
    StepName::parse(name).ok_or_else(|| invalid(format!("unknown step {name:?}")))
}

fn worker(id: &str) -> Result<&str, Status> {
    if id.trim().is_empty() {
        Err(invalid("worker_id must be set"))
    } else {
        Ok(id)
    }
}

#[tonic::async_trait]
impl StepCoordination for StepCoordinationService {
    async fn claim_step(
        &self,
        request: Request<pb::ClaimStepRequest>,
    ) -> Result<Response<pb::ClaimStepResponse>, Status> {
        let span = call_span(
            &request,
            "ClaimStep",
            &request.get_ref().job_id,
            &request.get_ref().step_name,
            request.get_ref().attempt,
        );
        let req = request.into_inner();
        span.record("worker_id", req.worker_id.as_str());
        let step = step_name(&req.step_name)?;
        let verdict = self
            .service
            .claim(&req.job_id, step, req.attempt, worker(&req.worker_id)?)
            .instrument(span.clone())
            .await
            .map_err(to_status)?;
        let lease_ms = u64::try_from(self.service.lease_duration().as_millis()).unwrap_or(u64::MAX);
        span.in_scope(|| tracing::debug!(worker_id = %req.worker_id, ?verdict, "claim"));
        Ok(Response::new(match verdict {
            Verdict::Accepted(()) => pb::ClaimStepResponse {
                granted: true,
                reason: String::new(),
                lease_ms,
                unknown_job: false,
            },
            Verdict::Refused(refusal) => pb::ClaimStepResponse {
                granted: false,
                reason: refusal.to_string(),
                lease_ms: 0,
                unknown_job: false,
            },
            Verdict::UnknownJob | Verdict::Replayed(_) => pb::ClaimStepResponse {
                granted: false,
                reason: format!("job {} does not exist", req.job_id),
                lease_ms: 0,
                unknown_job: true,
            },
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let span = call_span(
            &request,
            "Heartbeat",
            &request.get_ref().job_id,
            &request.get_ref().step_name,
            request.get_ref().attempt,
        );
        let req = request.into_inner();
        span.record("worker_id", req.worker_id.as_str());
        let step = step_name(&req.step_name)?;
        let message = (!req.message.is_empty()).then_some(req.message.as_str());
        let answer = self
            .service
            .heartbeat(
                &req.job_id,
                step,
                req.attempt,
                worker(&req.worker_id)?,
                req.progress_percent.min(100),
                message,
            )
            .instrument(span)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::HeartbeatResponse {
            lease_held: answer.held,
            cancel_requested: answer.cancel_requested,
            lease_ms: u64::try_from(self.service.lease_duration().as_millis()).unwrap_or(u64::MAX),
        }))
    }

    async fn report_step(
        &self,
        request: Request<pb::ReportStepRequest>,
    ) -> Result<Response<pb::ReportStepResponse>, Status> {
        let span = call_span(
            &request,
            "ReportStep",
            &request.get_ref().job_id,
            &request.get_ref().step_name,
            request.get_ref().attempt,
        );
        let req = request.into_inner();
        span.record("worker_id", req.worker_id.as_str());
        let step = step_name(&req.step_name)?;
        let outcome = match req.outcome {
            Some(pb::report_step_request::Outcome::Succeeded(ok)) => StepOutcome::Succeeded {
                outputs: ok.outputs.into_iter().collect::<BTreeMap<_, _>>(),
                message: (!ok.message.is_empty()).then_some(ok.message),
            },
            Some(pb::report_step_request::Outcome::Failed(failed)) => {
                let code = ErrorCode::parse(&failed.error_code).unwrap_or(step.error_code());
                StepOutcome::Failed(StepFailure {
                    code,
                    message: failed.error_message,
                    retryable: failed.retryable,
                })
            }
            Some(pb::report_step_request::Outcome::Skipped(skipped)) => StepOutcome::Skipped {
                reason: skipped.reason,
            },
            None => return Err(invalid("outcome must be set")),
        };
        let log = (!req.log.is_empty()).then_some(req.log.as_str());
        let verdict = self
            .service
            .report(
                &req.job_id,
                step,
                req.attempt,
                worker(&req.worker_id)?,
                outcome,
                log,
            )
            .instrument(span.clone())
            .await
            .map_err(to_status)?;
        span.in_scope(|| tracing::debug!(worker_id = %req.worker_id, ?verdict, "report"));
        Ok(Response::new(match verdict {
            Verdict::Accepted(()) => pb::ReportStepResponse {
                accepted: true,
                reason: String::new(),
            },
            Verdict::Refused(refusal) => pb::ReportStepResponse {
                accepted: false,
                reason: refusal.to_string(),
            },
            Verdict::UnknownJob | Verdict::Replayed(_) => pb::ReportStepResponse {
                accepted: false,
                reason: format!("job {} does not exist", req.job_id),
            },
        }))
    }
}
