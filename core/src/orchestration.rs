//! The orchestration rules, as a pure function of a job's state and an
//! event: no I/O, no clock, no async. The gateway loads a job, asks
//! [`apply`] what follows from an event, and persists the resulting
//! [`Transition`] (with the dispatches it asks for) in one transaction.
//!
//! A job runs its pipeline forward. When a step fails for good, or the
//! operator cancels, the job compensates: steps are added that undo, in
//! reverse order, what the forward steps did (stop and destroy the VM they
//! created, put the volumes back on the appliance VM, roll the disks back to
//! the snapshot where they may have been written, delete the snapshot). A job
//! that asked to keep its state instead (`rollback_on_failure: false`) ends
//! failed as it is, and can be retried from the failed step.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error_codes::ErrorCode;
use crate::pipeline::{JobType, SkipFlags, StepName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted; no step has started yet (or waiting for the VM's earlier
    /// operation to finish).
    Pending,
    /// The validation step is running.
    Validating,
    /// A step after validation is queued or running.
    Executing,
    /// Undoing what a failed job did.
    Compensating,
    /// The operator cancelled; the running step is being stopped and what
    /// the job did is being undone.
    Cancelling,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Pending,
        JobStatus::Validating,
        JobStatus::Executing,
        JobStatus::Compensating,
        JobStatus::Cancelling,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Validating => "validating",
            JobStatus::Executing => "executing",
            JobStatus::Compensating => "compensating",
            JobStatus::Cancelling => "cancelling",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
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
    /// Never ran: the job was cancelled or failed before it.
    Cancelled,
}

impl StepStatus {
    pub const ALL: [StepStatus; 7] = [
        StepStatus::Pending,
        StepStatus::Queued,
        StepStatus::Running,
        StepStatus::Completed,
        StepStatus::Failed,
        StepStatus::Skipped,
        StepStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Queued => "queued",
            StepStatus::Running => "running",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_done(self) -> bool {
        matches!(
            self,
            StepStatus::Completed
                | StepStatus::Skipped
                | StepStatus::Failed
                | StepStatus::Cancelled
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepState {
    pub name: StepName,
    pub status: StepStatus,
    /// 0 before the first dispatch; the fencing token afterwards.
    pub attempt: u32,
}

impl StepState {
    /// Whether a worker may have acted on this step.
    fn attempted(&self) -> bool {
        match self.status {
            StepStatus::Running | StepStatus::Completed | StepStatus::Failed => true,
            StepStatus::Queued => self.attempt > 1,
            StepStatus::Pending | StepStatus::Skipped | StepStatus::Cancelled => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub job_type: JobType,
    pub status: JobStatus,
    /// The pipeline's steps, then any compensation steps, in order.
    pub steps: Vec<StepState>,
    /// Undo what the job did when it fails (the default), or keep it for a retry.
    pub rollback_on_failure: bool,
    pub cancel_requested: bool,
    /// Why the job failed, kept while it compensates.
    pub failure: Option<JobError>,
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
    /// The job may run: its VM is free.
    Start,
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
    /// The operator cancels the job.
    CancelRequested,
    /// The operator retries a failed job from its failed step.
    RetryRequested,
}

impl Event {
    /// The step a step event concerns.
    pub fn step(&self) -> Option<StepName> {
        match self {
            Event::Claimed { step, .. }
            | Event::Succeeded { step, .. }
            | Event::Skipped { step, .. }
            | Event::Failed { step, .. }
            | Event::LeaseExpired { step, .. } => Some(*step),
            Event::Start | Event::CancelRequested | Event::RetryRequested => None,
        }
    }

    pub fn attempt(&self) -> u32 {
        match self {
            Event::Claimed { attempt, .. }
            | Event::Succeeded { attempt, .. }
            | Event::Skipped { attempt, .. }
            | Event::Failed { attempt, .. }
            | Event::LeaseExpired { attempt, .. } => *attempt,
            Event::Start | Event::CancelRequested | Event::RetryRequested => 0,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Claimed { .. } => "claimed",
            Event::Succeeded { .. } => "succeeded",
            Event::Skipped { .. } => "skipped",
            Event::Failed { .. } => "failed",
            Event::LeaseExpired { .. } => "lease-expired",
            Event::CancelRequested => "cancel-requested",
            Event::RetryRequested => "retry-requested",
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
    /// Compensation steps appended to the job (pending before their updates).
    pub added_steps: Vec<StepName>,
    pub step_updates: Vec<StepUpdate>,
    pub dispatch: Vec<Dispatch>,
    /// Set when the job fails (also while it compensates).
    pub job_error: Option<JobError>,
    /// A retry clears the recorded failure.
    pub clear_error: bool,
    pub cancel_requested: bool,
}

/// An event that must not change anything: a duplicate delivery, a zombie
/// worker's late report, a report for a finished job, an operator request
/// that does not apply.
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
    #[error("the job has already started")]
    AlreadyStarted,
    #[error("a cancel is already in progress")]
    AlreadyCancelling,
    #[error("only a failed job can be retried; the job is {}", .0.as_str())]
    NotRetryable(JobStatus),
    #[error("the job undid what it did when it failed; start a new failover instead")]
    Compensated,
}

impl JobState {
    /// A new job: steps skipped by request are marked so; nothing runs until
    /// [`Event::Start`].
    pub fn new(
        job_type: JobType,
        skips: SkipFlags,
        rollback_on_failure: bool,
    ) -> (JobState, Transition) {
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
            rollback_on_failure: rollback_on_failure && job_type != JobType::Cleanup,
            cancel_requested: false,
            failure: None,
        };
        let mut transition = job.transition();
        for step in job_type.pipeline() {
            if let Some(reason) = skips.reason(*step) {
                transition.step_updates.push(StepUpdate {
                    step: *step,
                    status: StepStatus::Skipped,
                    attempt: 0,
                    message: Some(reason.to_owned()),
                    error: None,
                });
            }
        }
        transition.current_step = None;
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

    /// Whether the job has compensation steps.
    pub fn compensated(&self) -> bool {
        self.steps.iter().any(|s| s.name.is_compensation())
    }

    /// Whether the job still holds its VM when it is finished: a completed
    /// test failover (until its cleanup), and a job that ended with state
    /// left behind (kept for a retry, or an undo that did not finish).
    pub fn holds_vm(&self) -> bool {
        match self.status {
            JobStatus::Completed => self.job_type == JobType::Test,
            JobStatus::Failed | JobStatus::Cancelled => {
                if self.job_type == JobType::Cleanup {
                    return false;
                }
                if self.compensated() {
                    self.steps
                        .iter()
                        .any(|s| s.name.is_compensation() && s.status == StepStatus::Failed)
                } else {
                    // Kept state: anything beyond validation may have acted.
                    self.steps
                        .iter()
                        .any(|s| s.name != StepName::Validation && s.attempted())
                }
            }
            _ => true,
        }
    }

    /// Applies a transition that [`apply`] returned, so a caller holding the
    /// state can feed it the next event.
    pub fn absorb(&mut self, transition: &Transition) {
        self.status = transition.job_status;
        self.cancel_requested = transition.cancel_requested;
        for step in &transition.added_steps {
            if self.step(*step).is_none() {
                self.steps.push(StepState {
                    name: *step,
                    status: StepStatus::Pending,
                    attempt: 0,
                });
            }
        }
        if transition.clear_error {
            self.failure = None;
        }
        if let Some(error) = &transition.job_error {
            self.failure = Some(error.clone());
        }
        for update in &transition.step_updates {
            if let Some(step) = self.steps.iter_mut().find(|s| s.name == update.step) {
                step.status = update.status;
                step.attempt = update.attempt;
            }
        }
    }

    /// A transition that changes nothing yet.
    fn transition(&self) -> Transition {
        Transition {
            job_status: self.status,
            current_step: self.current_step(),
            added_steps: Vec::new(),
            step_updates: Vec::new(),
            dispatch: Vec::new(),
            job_error: None,
            clear_error: false,
            cancel_requested: self.cancel_requested,
        }
    }

    /// What undoing this job takes, in order, from what its steps may have done.
    pub fn compensation_plan(&self) -> Vec<StepName> {
        let (creation, volumes, startup) = match self.job_type {
            JobType::Test => (
                StepName::TestVmCreation,
                StepName::VolumeAttachment,
                StepName::TestVmStartup,
            ),
            JobType::Live => (
                StepName::VmCreation,
                StepName::VolumeSwitch,
                StepName::VmStartup,
            ),
            JobType::Cleanup => return Vec::new(),
        };
        let attempted = |name| self.step(name).is_some_and(StepState::attempted);
        let vm = attempted(creation);
        let moved = attempted(volumes);
        let snapshot = self.step(StepName::Snapshot);
        let snapshot_taken = snapshot.is_some_and(|s| s.status == StepStatus::Completed);
        let written = attempted(StepName::VirtioInjection) || attempted(startup);
        let mut plan = Vec::new();
        if vm {
            plan.push(StepName::CompensationVmShutdown);
        }
        if moved {
            plan.push(StepName::CompensationVolumeDetachment);
        }
        if written && snapshot_taken {
            plan.push(StepName::CompensationSnapshotRollback);
        }
        if moved {
            plan.push(StepName::CompensationVolumeReattachment);
        }
        if vm {
            plan.push(StepName::CompensationVmDestruction);
        }
        if snapshot.is_some_and(StepState::attempted) {
            plan.push(StepName::CompensationSnapshotDeletion);
        }
        plan
    }

    fn view(&self, transition: &Transition) -> JobState {
        let mut view = self.clone();
        view.absorb(transition);
        view
    }

    /// Queues the next step of the current phase, or ends the job.
    fn advance(&self, transition: &mut Transition) {
        let view = self.view(transition);
        let compensating = view.compensated();
        let next = view
            .steps
            .iter()
            .find(|s| s.status == StepStatus::Pending && s.name.is_compensation() == compensating);
        match next {
            Some(next) => {
                let attempt = next.attempt + 1;
                transition.step_updates.push(StepUpdate {
                    step: next.name,
                    status: StepStatus::Queued,
                    attempt,
                    message: None,
                    error: None,
                });
                transition.dispatch.push(Dispatch {
                    step: next.name,
                    attempt,
                    delay: Duration::ZERO,
                });
                transition.current_step = Some(next.name);
                transition.job_status = if view.cancel_requested {
                    JobStatus::Cancelling
                } else if compensating {
                    JobStatus::Compensating
                } else if next.name == StepName::Validation {
                    JobStatus::Validating
                } else {
                    JobStatus::Executing
                };
            }
            None => {
                transition.current_step = None;
                transition.job_status = if view.cancel_requested {
                    JobStatus::Cancelled
                } else if compensating || view.failure.is_some() {
                    JobStatus::Failed
                } else {
                    JobStatus::Completed
                };
            }
        }
    }

    /// Stops the forward pipeline: steps not reached are cancelled, and the
    /// compensation steps (if the job rolls back) are added and started.
    fn begin_undo(&self, transition: &mut Transition) {
        let view = self.view(transition);
        for step in view.steps.iter().filter(|s| {
            matches!(s.status, StepStatus::Pending | StepStatus::Queued)
                && !s.name.is_compensation()
        }) {
            transition.step_updates.push(StepUpdate {
                step: step.name,
                status: StepStatus::Cancelled,
                attempt: step.attempt,
                message: Some(if view.cancel_requested {
                    "cancelled".to_owned()
                } else {
                    "not run: an earlier step failed".to_owned()
                }),
                error: None,
            });
        }
        if view.rollback_on_failure || view.cancel_requested {
            let plan = view.view(transition).compensation_plan();
            transition.added_steps.extend(plan);
        }
        self.advance(transition);
    }
}

/// What follows from `event` for `job`.
pub fn apply(job: &JobState, event: &Event, policy: &RetryPolicy) -> Result<Transition, Refusal> {
    match event {
        Event::Start => return start(job),
        Event::CancelRequested => return cancel(job),
        Event::RetryRequested => return retry(job),
        _ => {}
    }
    if job.status.is_terminal() {
        return Err(Refusal::JobFinished(job.status));
    }
    let name = event.step().expect("a step event");
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

    let mut transition = job.transition();
    let attempt = step.attempt;
    let update = |status, message: Option<String>, error: Option<StepFailure>| StepUpdate {
        step: name,
        status,
        attempt,
        message,
        error,
    };
    // A cancelled job stops its forward pipeline at the step that was running.
    let stopping = job.cancel_requested && !name.is_compensation();
    match event {
        Event::Claimed { .. } => {
            transition.job_status = if job.cancel_requested {
                JobStatus::Cancelling
            } else if name.is_compensation() {
                JobStatus::Compensating
            } else if name == StepName::Validation {
                JobStatus::Validating
            } else {
                JobStatus::Executing
            };
            transition.current_step = Some(name);
            transition
                .step_updates
                .push(update(StepStatus::Running, None, None));
        }
        Event::Succeeded { .. } => {
            transition
                .step_updates
                .push(update(StepStatus::Completed, None, None));
            if stopping {
                job.begin_undo(&mut transition);
            } else {
                job.advance(&mut transition);
            }
        }
        Event::Skipped { reason, .. } => {
            transition
                .step_updates
                .push(update(StepStatus::Skipped, Some(reason.clone()), None));
            if stopping {
                job.begin_undo(&mut transition);
            } else {
                job.advance(&mut transition);
            }
        }
        Event::Failed { failure, .. } => {
            let delay = policy.backoff(attempt);
            fail_or_retry(
                job,
                &mut transition,
                name,
                attempt,
                failure.clone(),
                policy,
                delay,
            );
        }
        Event::LeaseExpired { .. } => {
            let failure = StepFailure {
                code: name.error_code(),
                message: format!(
                    "the worker stopped reporting: lease of attempt {attempt} expired"
                ),
                retryable: true,
            };
            // The step did not fail: its worker went away. Another one takes
            // it at once; the lease already was the wait.
            fail_or_retry(
                job,
                &mut transition,
                name,
                attempt,
                failure,
                policy,
                Duration::ZERO,
            );
        }
        Event::Start | Event::CancelRequested | Event::RetryRequested => unreachable!(),
    }
    Ok(transition)
}

fn start(job: &JobState) -> Result<Transition, Refusal> {
    if job.status != JobStatus::Pending || job.current_step().is_some() {
        return Err(if job.status.is_terminal() {
            Refusal::JobFinished(job.status)
        } else {
            Refusal::AlreadyStarted
        });
    }
    let mut transition = job.transition();
    job.advance(&mut transition);
    if !transition.job_status.is_terminal() {
        // Pending until a worker claims the first step.
        transition.job_status = JobStatus::Pending;
    }
    Ok(transition)
}

fn cancel(job: &JobState) -> Result<Transition, Refusal> {
    if job.status.is_terminal() {
        return Err(Refusal::JobFinished(job.status));
    }
    if job.cancel_requested {
        return Err(Refusal::AlreadyCancelling);
    }
    let mut transition = job.transition();
    transition.cancel_requested = true;
    if job.status == JobStatus::Compensating {
        // Already undoing; the job ends cancelled once that finishes.
        transition.job_status = JobStatus::Cancelling;
        return Ok(transition);
    }
    match job.steps.iter().find(|s| s.status == StepStatus::Running) {
        // The worker learns of the cancel by heartbeat, stops, and reports;
        // the undo starts from that report (or from the lease's expiry).
        Some(running) => {
            transition.job_status = JobStatus::Cancelling;
            transition.current_step = Some(running.name);
        }
        None => job.begin_undo(&mut transition),
    }
    Ok(transition)
}

fn retry(job: &JobState) -> Result<Transition, Refusal> {
    if job.status != JobStatus::Failed {
        return Err(Refusal::NotRetryable(job.status));
    }
    let mut transition = job.transition();
    transition.clear_error = !job.compensated();
    if job.compensated() {
        // Retry the undo steps that failed.
        let failed: Vec<_> = job
            .steps
            .iter()
            .filter(|s| s.name.is_compensation() && s.status == StepStatus::Failed)
            .collect();
        if failed.is_empty() {
            return Err(Refusal::Compensated);
        }
        for step in failed {
            transition.step_updates.push(StepUpdate {
                step: step.name,
                status: StepStatus::Pending,
                attempt: step.attempt,
                message: Some("retried by request".into()),
                error: None,
            });
        }
    } else {
        let Some(failed) = job.steps.iter().find(|s| s.status == StepStatus::Failed) else {
            return Err(Refusal::NotRetryable(job.status));
        };
        transition.step_updates.push(StepUpdate {
            step: failed.name,
            status: StepStatus::Pending,
            attempt: failed.attempt,
            message: Some("retried by request".into()),
            error: None,
        });
        // Steps that were not run because of the failure run again.
        for step in job
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Cancelled)
        {
            transition.step_updates.push(StepUpdate {
                step: step.name,
                status: StepStatus::Pending,
                attempt: step.attempt,
                message: None,
                error: None,
            });
        }
    }
    job.advance(&mut transition);
    Ok(transition)
}

fn fail_or_retry(
    job: &JobState,
    transition: &mut Transition,
    step: StepName,
    attempt: u32,
    failure: StepFailure,
    policy: &RetryPolicy,
    delay: Duration,
) {
    let stopping = job.cancel_requested && !step.is_compensation();
    if failure.retryable && attempt < policy.max_attempts && !stopping {
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
    transition.step_updates.push(StepUpdate {
        step,
        status: StepStatus::Failed,
        attempt,
        message: None,
        error: Some(failure.clone()),
    });
    if step.is_compensation() {
        // Undo what else can be undone; the job records what is left.
        job.advance(transition);
        return;
    }
    if !stopping {
        transition.job_error = Some(JobError {
            step,
            code: failure.code,
            message: failure.message,
        });
    }
    job.begin_undo(transition);
}

#[cfg(test)]
#[path = "orchestration_tests.rs"]
mod tests;
