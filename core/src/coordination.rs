//! The worker protocol: a claim takes a step's lease (the attempt is the
//! fencing token), heartbeats renew it and carry progress, a report records
//! the outcome and dispatches what follows, and a lease that runs out
//! dispatches the step again under a new attempt. Only the worker holding a
//! step's lease may renew or report it; a late report of an old attempt is
//! refused and changes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::StepStatus;
use crate::effects::{Effects, StepWrite};
use crate::job::{JobRecord, StepRecord};
use crate::lifecycle::{self, EventFacts, chrono_duration};
use crate::orchestration::{Event, StepFailure};
use crate::pipeline::StepName;
use crate::rules::{Refusal, Rules};

/// What a worker reports of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Succeeded {
        outputs: BTreeMap<String, String>,
        message: Option<String>,
    },
    Failed(StepFailure),
    /// The step does not apply (a Linux guest's VirtIO injection).
    Skipped {
        reason: String,
    },
}

/// `worker_id` claims attempt `attempt` of `step`.
pub fn claim(
    job: &JobRecord,
    step: StepName,
    attempt: u32,
    worker_id: &str,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Effects, Refusal> {
    let facts = EventFacts {
        worker_id: Some(worker_id.to_owned()),
        ..Default::default()
    };
    lifecycle::apply(job, &Event::Claimed { step, attempt }, facts, rules, now)
}

/// A worker's report of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub step: StepName,
    pub attempt: u32,
    pub worker_id: String,
    pub outcome: StepOutcome,
    /// The step's log, kept on the step.
    pub log: Option<String>,
}

/// A worker reports the outcome of an attempt it holds the lease of.
pub fn report(
    job: &JobRecord,
    report: Report,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Effects, Refusal> {
    let Report {
        step,
        attempt,
        worker_id,
        outcome,
        log,
    } = report;
    if let Some(record) = job.step(step)
        && record.status == StepStatus::Running
        && record.attempt == attempt
        && record.worker_id.as_deref() != Some(worker_id.as_str())
    {
        return Err(Refusal::LeasedToAnother { step, attempt });
    }
    let mut facts = EventFacts {
        log,
        ..Default::default()
    };
    let event = match outcome {
        StepOutcome::Succeeded { outputs, message } => {
            facts.outputs = outputs;
            facts.message = message;
            Event::Succeeded { step, attempt }
        }
        StepOutcome::Failed(failure) => Event::Failed {
            step,
            attempt,
            failure,
        },
        StepOutcome::Skipped { reason } => Event::Skipped {
            step,
            attempt,
            reason,
        },
    };
    lifecycle::apply(job, &event, facts, rules, now)
}

/// The lease of attempt `attempt` of `step` ran out as far as the timer
/// saw; refused when a heartbeat renewed it meanwhile.
pub fn expire_lease(
    job: &JobRecord,
    step: StepName,
    attempt: u32,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Effects, Refusal> {
    if let Some(record) = job.step(step)
        && record.status == StepStatus::Running
        && record.attempt == attempt
        && record.lease_expires_at.is_none_or(|until| until > now)
    {
        return Err(Refusal::LeaseRenewed);
    }
    lifecycle::apply(
        job,
        &Event::LeaseExpired { step, attempt },
        EventFacts::default(),
        rules,
        now,
    )
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// Whether the worker still holds the lease.
    pub held: bool,
    /// The operator cancelled the job: the worker stops the step.
    pub cancel_requested: bool,
    /// The step with its lease renewed and its progress, to write.
    pub effects: Effects,
}

/// `worker_id` renews its lease of attempt `attempt` of `step` and reports
/// `progress` (0 to 100, never backwards) and what the step is doing.
#[allow(clippy::too_many_arguments)]
pub fn heartbeat(
    job_id: &str,
    step: &StepRecord,
    job_cancel_requested: bool,
    attempt: u32,
    worker_id: &str,
    progress: u32,
    message: Option<String>,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Heartbeat {
    let held = step.status == StepStatus::Running
        && step.attempt == attempt
        && step.worker_id.as_deref() == Some(worker_id);
    if !held {
        return Heartbeat {
            held: false,
            cancel_requested: false,
            effects: Effects::default(),
        };
    }
    let mut renewed = step.clone();
    renewed.lease_expires_at = Some(now + chrono_duration(rules.lease));
    renewed.progress = renewed.progress.max(progress.min(100));
    if let Some(message) = message {
        renewed.message = Some(message);
    }
    Heartbeat {
        held: true,
        cancel_requested: job_cancel_requested,
        effects: Effects {
            steps: vec![StepWrite {
                job_id: job_id.to_owned(),
                step: renewed,
                log: None,
            }],
            changed: vec![job_id.to_owned()],
            ..Default::default()
        },
    }
}
