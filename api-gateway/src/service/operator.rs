//! An operator's cancel and retry of a job.

use uuid::Uuid;

use failover_core::JobStatus;
use failover_core::operator::Command;

use super::batch::{self, Answer};
use super::{FailoverService, ServiceError, Verdict};
use crate::db::StoreError;
use crate::db::idempotency::{IdempotencyKey, Remembered};

/// The answer to an operator's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorOutcome {
    Applied(JobStatus),
    /// Nothing to do, and nothing wrong (a second cancel).
    AlreadyDone(String),
    /// An earlier request with the same idempotency key did it.
    Replayed(Remembered),
}

impl FailoverService {
    /// Applies `command` to `job_id`, on behalf of request `correlation_id`.
    pub async fn operate(
        &self,
        job_id: &str,
        command: Command,
        correlation_id: Uuid,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<OperatorOutcome, ServiceError> {
        let verdict = self
            .batcher
            .submit(
                job_id,
                batch::Command::Operate {
                    command,
                    correlation_id,
                    idempotency: idempotency.cloned(),
                },
            )
            .await?;
        match verdict {
            Verdict::Accepted(Answer::Operator(outcome)) => Ok(outcome),
            Verdict::Accepted(Answer::Done) => Err(StoreError::Vanished.into()),
            Verdict::Replayed(remembered) => Ok(OperatorOutcome::Replayed(remembered)),
            Verdict::UnknownJob => Err(ServiceError::JobNotFound(job_id.to_owned())),
            Verdict::Refused(refusal) => Err(ServiceError::conflict(refusal.to_string(), job_id)),
        }
    }
}
