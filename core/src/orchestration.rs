//! The orchestration rules, as a pure function of a job's state and an
//! event: no I/O, no clock, no async. The gateway loads a job, asks
//! [`apply`] what follows from an event, and persists the resulting
//! [`Transition`] (with the dispatches it asks for) in one transaction.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error_codes::ErrorCode;
use crate::pipeline::{JobType, SkipFlags, StepName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted; no step has started yet.
    Pending,
    /// The validation step is running.
    Validating,
    /// A step after validation is queued or running.
    Executing,
    Completed,
    Failed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Validating,
        JobStatus::Executing,
        JobStatus::Completed,
        JobStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Validating => "validating",
            JobStatus::Executing => "executing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not reached yet.
    Pending,
    /// Published (or waiting for its retry delay); not claimed yet.
    Queued,
    /// Claimed by a worker that holds its lease.
    Running,
    Completed,
    Failed,
    Skipped,
}

impl StepStatus {
    pub const ALL: [StepStatus; 6] = [
        StepStatus::Pending,
        StepStatus::Queued,
        StepStatus::Running,
        StepStatus::Completed,
        StepStatus::Failed,
        StepStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Queued => "queued",
            StepStatus::Running => "running",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_done(self) -> bool {
        matches!(
            self,
            StepStatus::Completed | StepStatus::Skipped | StepStatus::Failed
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepState {
    pub name: StepName,
    pub status: StepStatus,
    /// 0 before the first dispatch; the fencing token afterwards.
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub job_type: JobType,
    pub status: JobStatus,
    pub steps: Vec<StepState>,
}

/// How failed steps are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of one step in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Delay before the attempt after `failed_attempt`: doubling from the
    /// initial backoff, capped.
    pub fn backoff(&self, failed_attempt: u32) -> Duration {
        let exp = failed_attempt.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub code: ErrorCode,
    pub message: String,
    /// A transient cause (timeout, 5xx, lost connection): worth another attempt.
    pub retryable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Claimed {
        step: StepName,
        attempt: u32,
    },
    Succeeded {
        step: StepName,
        attempt: u32,
    },
    /// The worker found the step does not apply (a Linux guest's VirtIO injection).
    Skipped {
        step: StepName,
        attempt: u32,
        reason: String,
    },
    Failed {
        step: StepName,
        attempt: u32,
        failure: StepFailure,
    },
    LeaseExpired {
        step: StepName,
        attempt: u32,
    },
}

impl Event {
    pub fn step(&self) -> StepName {
        match self {
            Event::Claimed { step, .. }
            | Event::Succeeded { step, .. }
            | Event::Skipped { step, .. }
            | Event::Failed { step, .. }
            | Event::LeaseExpired { step, .. } => *step,
        }
    }

    pub fn attempt(&self) -> u32 {
        match self {
            Event::Claimed { attempt, .. }
            | Event::Succeeded { attempt, .. }
            | Event::Skipped { attempt, .. }
            | Event::Failed { attempt, .. }
            | Event::LeaseExpired { attempt, .. } => *attempt,
        }
    }
}

/// A step to publish, after `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    pub step: StepName,
    pub attempt: u32,
    pub delay: Duration,
}

/// A change of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpdate {
    pub step: StepName,
    pub status: StepStatus,
    pub attempt: u32,
    /// Shown on the step: why it was skipped, when it retries.
    pub message: Option<String>,
    pub error: Option<StepFailure>,
}

/// Why the job failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub step: StepName,
    pub code: ErrorCode,
    pub message: String,
}

/// Everything that follows from an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub job_status: JobStatus,
    /// The step queued or running, if any.
    pub current_step: Option<StepName>,
    pub step_updates: Vec<StepUpdate>,
    pub dispatch: Vec<Dispatch>,
    pub job_error: Option<JobError>,
}

/// An event that must not change anything: a duplicate delivery, a zombie
/// worker's late report, a report for a finished job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("step {0} is not part of this job")]
    UnknownStep(StepName),
    #[error("the job is already {}", .0.as_str())]
    JobFinished(JobStatus),
    #[error("attempt {got} of step {step} is stale (current attempt {current})")]
    StaleAttempt {
        step: StepName,
        current: u32,
        got: u32,
    },
    #[error("step {step} is {}, not {}", .status.as_str(), .expected.as_str())]
    WrongStepStatus {
        step: StepName,
        status: StepStatus,
        expected: StepStatus,
    },
}

impl JobState {
    /// A new job: steps skipped by request are marked so, the first other
    /// step is queued.
    pub fn new(job_type: JobType, skips: SkipFlags) -> (JobState, Transition) {
        let mut job = JobState {
            job_type,
            status: JobStatus::Pending,
            steps: job_type
                .pipeline()
                .iter()
                .map(|&name| StepState {
                    name,
                    status: StepStatus::Pending,
                    attempt: 0,
                })
                .collect(),
        };
        let mut updates = Vec::new();
        for step in job_type.pipeline() {
            if let Some(reason) = skips.reason(*step) {
                updates.push(StepUpdate {
                    step: *step,
                    status: StepStatus::Skipped,
                    attempt: 0,
                    message: Some(reason.to_owned()),
                    error: None,
                });
            }
        }
        let mut transition = Transition {
            job_status: JobStatus::Pending,
            current_step: None,
            step_updates: updates,
            dispatch: Vec::new(),
            job_error: None,
        };
        job.absorb_updates(&transition.step_updates);
        job.queue_next(&mut transition);
        job.absorb(&transition);
        (job, transition)
    }

    pub fn step(&self, name: StepName) -> Option<&StepState> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The step queued or running.
    pub fn current_step(&self) -> Option<StepName> {
        self.steps
            .iter()
            .find(|s| matches!(s.status, StepStatus::Queued | StepStatus::Running))
            .map(|s| s.name)
    }

    /// Applies a transition that [`apply`] returned, so a caller holding the
    /// state can feed it the next event.
    pub fn absorb(&mut self, transition: &Transition) {
        self.status = transition.job_status;
        self.absorb_updates(&transition.step_updates);
    }

    fn absorb_updates(&mut self, updates: &[StepUpdate]) {
        for update in updates {
            if let Some(step) = self.steps.iter_mut().find(|s| s.name == update.step) {
                step.status = update.status;
                step.attempt = update.attempt;
            }
        }
    }

    /// Queues the first pending step, or completes the job when none is left.
    fn queue_next(&self, transition: &mut Transition) {
        let mut view = self.clone();
        view.absorb_updates(&transition.step_updates);
        match view.steps.iter().find(|s| s.status == StepStatus::Pending) {
            Some(next) => {
                transition.step_updates.push(StepUpdate {
                    step: next.name,
                    status: StepStatus::Queued,
                    attempt: 1,
                    message: None,
                    error: None,
                });
                transition.dispatch.push(Dispatch {
                    step: next.name,
                    attempt: 1,
                    delay: Duration::ZERO,
                });
                transition.current_step = Some(next.name);
                if transition.job_status != JobStatus::Pending {
                    transition.job_status = status_for(next.name);
                }
            }
            None => {
                transition.current_step = None;
                transition.job_status = JobStatus::Completed;
            }
        }
    }
}

fn status_for(step: StepName) -> JobStatus {
    if step == StepName::Validation {
        JobStatus::Validating
    } else {
        JobStatus::Executing
    }
}

/// What follows from `event` for `job`.
pub fn apply(job: &JobState, event: &Event, policy: &RetryPolicy) -> Result<Transition, Refusal> {
    if job.status.is_terminal() {
        return Err(Refusal::JobFinished(job.status));
    }
    let name = event.step();
    let step = job.step(name).ok_or(Refusal::UnknownStep(name))?;
    if step.attempt != event.attempt() {
        return Err(Refusal::StaleAttempt {
            step: name,
            current: step.attempt,
            got: event.attempt(),
        });
    }
    let expected = match event {
        Event::Claimed { .. } => StepStatus::Queued,
        _ => StepStatus::Running,
    };
    if step.status != expected {
        return Err(Refusal::WrongStepStatus {
            step: name,
            status: step.status,
            expected,
        });
    }

    let mut transition = Transition {
        job_status: job.status,
        current_step: Some(name),
        step_updates: Vec::new(),
        dispatch: Vec::new(),
        job_error: None,
    };
    let attempt = step.attempt;
    let update = |status, message: Option<String>, error: Option<StepFailure>| StepUpdate {
        step: name,
        status,
        attempt,
        message,
        error,
    };
    match event {
        Event::Claimed { .. } => {
            transition.job_status = status_for(name);
            transition
                .step_updates
                .push(update(StepStatus::Running, None, None));
        }
        Event::Succeeded { .. } => {
            transition
                .step_updates
                .push(update(StepStatus::Completed, None, None));
            job.queue_next(&mut transition);
        }
        Event::Skipped { reason, .. } => {
            transition
                .step_updates
                .push(update(StepStatus::Skipped, Some(reason.clone()), None));
            job.queue_next(&mut transition);
        }
        Event::Failed { failure, .. } => {
            fail_or_retry(&mut transition, name, attempt, failure.clone(), policy);
        }
        Event::LeaseExpired { .. } => {
            let failure = StepFailure {
                code: name.error_code(),
                message: format!(
                    "the worker stopped reporting: lease of attempt {attempt} expired"
                ),
                retryable: true,
            };
            fail_or_retry(&mut transition, name, attempt, failure, policy);
        }
    }
    Ok(transition)
}

fn fail_or_retry(
    transition: &mut Transition,
    step: StepName,
    attempt: u32,
    failure: StepFailure,
    policy: &RetryPolicy,
) {
    if failure.retryable && attempt < policy.max_attempts {
        let delay = policy.backoff(attempt);
        transition.step_updates.push(StepUpdate {
            step,
            status: StepStatus::Queued,
            attempt: attempt + 1,
            message: Some(format!(
                "attempt {attempt} failed ({}: {}); attempt {} of {} in {}s",
                failure.code,
                failure.message,
                attempt + 1,
                policy.max_attempts,
                delay.as_secs_f64()
            )),
            error: Some(failure),
        });
        transition.dispatch.push(Dispatch {
            step,
            attempt: attempt + 1,
            delay,
        });
        transition.current_step = Some(step);
        return;
    }
    transition.job_error = Some(JobError {
        step,
        code: failure.code,
        message: failure.message.clone(),
    });
    transition.step_updates.push(StepUpdate {
        step,
        status: StepStatus::Failed,
        attempt,
        message: None,
        error: Some(failure),
    });
    transition.current_step = None;
    transition.job_status = JobStatus::Failed;
}

#[cfg(test)]
#[path = "orchestration_tests.rs"]
mod tests;
