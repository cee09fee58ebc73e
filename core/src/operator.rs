//! What an operator may do to a job: cancel it (the running step is stopped,
//! then what the job did is undone) and retry a failed one from its failed
//! step. A second cancel is harmless; a request that does not apply to the
//! job in its state is a conflict.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::JobStatus;
use crate::effects::{AuditEntry, AuditOperation, Effects};
use crate::job::JobRecord;
use crate::lifecycle::{self, EventFacts};
use crate::orchestration::{self, Event};
use crate::rules::{Refusal, Rules};

/// An operator's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Cancel,
    Retry,
}

/// What an operator's command does.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The job moved on; this is its status now.
    Applied { status: JobStatus, effects: Effects },
    /// Nothing to do, and nothing wrong (a second cancel).
    AlreadyDone(String),
}

/// Applies `command`, which the request `request_correlation_id` carried.
pub fn apply(
    job: &JobRecord,
    command: Command,
    request_correlation_id: Uuid,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Outcome, Refusal> {
    let (event, operation) = match command {
        Command::Cancel => (Event::CancelRequested, AuditOperation::CancelRequested),
        Command::Retry => (Event::RetryRequested, AuditOperation::RetryRequested),
    };
    match lifecycle::apply(job, &event, EventFacts::default(), rules, now) {
        Ok(mut effects) => {
            let status = effects.jobs[0].status;
            effects.audit.push(AuditEntry {
                correlation_id: job.correlation_id,
                job_id: job.job_id.clone(),
                operation,
                status: status.as_str().to_owned(),
                error_message: None,
                details: Some(json!({"request_correlation_id": request_correlation_id})),
            });
            Ok(Outcome::Applied { status, effects })
        }
        Err(Refusal::Rule(orchestration::Refusal::AlreadyCancelling))
            if command == Command::Cancel =>
        {
            Ok(Outcome::AlreadyDone(
                "the job is already being cancelled".into(),
            ))
        }
        Err(Refusal::Rule(orchestration::Refusal::JobFinished(JobStatus::Cancelled)))
            if command == Command::Cancel =>
        {
            Ok(Outcome::AlreadyDone("the job is already cancelled".into()))
        }
        Err(refusal) => Err(refusal),
    }
}
