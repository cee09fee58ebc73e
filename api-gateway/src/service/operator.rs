//! An operator's cancel and retry of a job.

use uuid::Uuid;

use failover_core::JobStatus;
use failover_core::operator::{self, Command, Outcome};

use failover_core::effects::Effects;

use super::{EventLabel, FailoverService, ServiceError, Verdict};
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
        let label = EventLabel {
            name: match command {
                Command::Cancel => "cancel-requested",
                Command::Retry => "retry-requested",
            },
            step: None,
            attempt: 0,
        };
        let key = idempotency.map(|key| (key, correlation_id));
        let verdict = self
            .on_job(job_id, label, key, |locked| {
                match operator::apply(
                    &locked.record,
                    command,
                    correlation_id,
                    &self.rules,
                    locked.now,
                )? {
                    Outcome::Applied { status, effects } => {
                        Ok((effects, OperatorOutcome::Applied(status)))
                    }
                    Outcome::AlreadyDone(message) => {
                        Ok((Effects::default(), OperatorOutcome::AlreadyDone(message)))
                    }
                }
            })
            .await?;
        match verdict {
            Verdict::Accepted(outcome) => Ok(outcome),
            Verdict::Replayed(remembered) => Ok(OperatorOutcome::Replayed(remembered)),
            Verdict::UnknownJob => Err(ServiceError::JobNotFound(job_id.to_owned())),
            Verdict::Refused(refusal) => Err(ServiceError::conflict(refusal.to_string(), job_id)),
        }
    }
}
