//! What a decision asks for, as one value: rows to write, audit entries,
//! steps to dispatch, VMs whose state changes, jobs whose watchers are told,
//! and the metric events to count once the write committed. The gateway
//! applies a whole [`Effects`] in one transaction, or none of it.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::job::{JobRecord, StepRecord};
use crate::pipeline::{JobType, SkipFlags, StepName};
use crate::{ErrorCode, JobStatus};

/// A job to insert, with what is fixed at its creation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Its state; its steps go in [`Effects::steps`].
    pub record: JobRecord,
    /// The VM as it was accepted (JSON text, as the API reference shows it).
    pub source_vm_spec: String,
    /// Source network -> CloudStack network (JSON text, as the reference shows it).
    pub network_mappings: String,
    pub skips: SkipFlags,
    /// As the request gave it ("30m").
    pub test_duration: Option<String>,
    pub custom_config: Option<Value>,
    pub notification_config: Option<Value>,
}

/// A step to insert or to write whole, and the log its worker sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepWrite {
    pub job_id: String,
    pub step: StepRecord,
    /// Replaces the stored log when set.
    pub log: Option<String>,
}

/// What an audit row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditOperation {
    /// A job's own status (`failover.test`, `failover.live`, `failover.cleanup`).
    Job(JobType),
    /// A step's status (`step.<name>`).
    Step(StepName),
    /// An operator cancelled the job (`operator.cancel-requested`).
    CancelRequested,
    /// An operator retried the job (`operator.retry-requested`).
    RetryRequested,
    /// A cleanup of this test failover was requested (`cleanup.requested`).
    CleanupRequested,
}

impl AuditOperation {
    /// The `operation` column, as the API reference's monitoring queries read it.
    pub fn name(self) -> String {
        match self {
            AuditOperation::Job(t) => format!("failover.{t}"),
            AuditOperation::Step(s) => format!("step.{s}"),
            AuditOperation::CancelRequested => "operator.cancel-requested".into(),
            AuditOperation::RetryRequested => "operator.retry-requested".into(),
            AuditOperation::CleanupRequested => "cleanup.requested".into(),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        if let Some(job_type) = text.strip_prefix("failover.") {
            return JobType::parse(job_type).map(AuditOperation::Job);
        }
        if let Some(step) = text.strip_prefix("step.") {
            return StepName::parse(step).map(AuditOperation::Step);
        }
        match text {
            "operator.cancel-requested" => Some(AuditOperation::CancelRequested),
            "operator.retry-requested" => Some(AuditOperation::RetryRequested),
            "cleanup.requested" => Some(AuditOperation::CleanupRequested),
            _ => None,
        }
    }

    /// The step an operation concerns.
    pub fn step(self) -> Option<StepName> {
        match self {
            AuditOperation::Step(s) => Some(s),
            _ => None,
        }
    }
}

/// One row of the audit trail (`job_tracking`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub correlation_id: Uuid,
    pub job_id: String,
    pub operation: AuditOperation,
    /// The new status of the job or step.
    pub status: String,
    pub error_message: Option<String>,
    pub details: Option<Value>,
}

/// A step task to publish after `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchOrder {
    pub job_id: String,
    pub step: StepName,
    pub attempt: u32,
    pub delay: Duration,
}

/// Why a step was dispatched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Redispatch {
    /// Its attempt failed with a cause worth another one.
    Failed,
    /// The worker stopped heartbeating.
    LeaseExpired,
    /// An operator retried the job.
    Retried,
}

impl Redispatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Redispatch::Failed => "failed",
            Redispatch::LeaseExpired => "lease-expired",
            Redispatch::Retried => "retry-requested",
        }
    }
}

/// What the metrics count, once the write committed.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricEvent {
    JobStarted {
        job_type: JobType,
    },
    JobFinished {
        job_type: JobType,
        status: JobStatus,
        seconds: f64,
        /// Why it failed, when it did.
        error: Option<ErrorCode>,
    },
    LeaseExpired {
        step: StepName,
    },
    StepRedispatched {
        step: StepName,
        cause: Redispatch,
    },
}

/// Everything a decision writes. Empty parts write nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub new_jobs: Vec<NewJob>,
    /// Existing jobs as the decision leaves them, written whole (their
    /// state columns) unless listed in `unchanged_jobs`.
    pub jobs: Vec<JobRecord>,
    /// Jobs of `jobs` whose own row stays as it was (only their steps
    /// change): nothing is written to the job row.
    pub unchanged_jobs: Vec<String>,
    /// Steps inserted or written whole.
    pub steps: Vec<StepWrite>,
    pub audit: Vec<AuditEntry>,
    pub dispatch: Vec<DispatchOrder>,
    /// VMs that were failed over live.
    pub vms_failed_over: Vec<Uuid>,
    /// Test failovers whose cleanup finished: they no longer hold their VM.
    pub released_jobs: Vec<String>,
    /// Jobs whose watchers are told of a change.
    pub changed: Vec<String>,
    pub metrics: Vec<MetricEvent>,
    /// VMs a job of this decision no longer holds: the next job waiting for
    /// each may start (see [`crate::holds::next_to_start`]).
    pub released_vms: Vec<Uuid>,
}

impl Effects {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.new_jobs.is_empty()
            && self.jobs.is_empty()
            && self.steps.is_empty()
            && self.audit.is_empty()
            && self.dispatch.is_empty()
            && self.vms_failed_over.is_empty()
            && self.released_jobs.is_empty()
            && self.changed.is_empty()
    }

    /// Adds `other` after these effects.
    pub fn extend(&mut self, other: Effects) {
        self.new_jobs.extend(other.new_jobs);
        for job in other.jobs {
            if !other.unchanged_jobs.contains(&job.job_id) {
                self.unchanged_jobs.retain(|id| *id != job.job_id);
            } else if self.job(&job.job_id).is_none() {
                self.unchanged_jobs.push(job.job_id.clone());
            }
            match self.jobs.iter_mut().find(|j| j.job_id == job.job_id) {
                Some(existing) => *existing = job,
                None => self.jobs.push(job),
            }
        }
        for step in other.steps {
            match self
                .steps
                .iter_mut()
                .find(|s| s.job_id == step.job_id && s.step.name == step.step.name)
            {
                Some(existing) => {
                    let log = step.log.clone().or(existing.log.take());
                    *existing = StepWrite { log, ..step };
                }
                None => self.steps.push(step),
            }
        }
        self.audit.extend(other.audit);
        self.dispatch.extend(other.dispatch);
        self.vms_failed_over.extend(other.vms_failed_over);
        self.released_jobs.extend(other.released_jobs);
        for id in other.changed {
            if !self.changed.contains(&id) {
                self.changed.push(id);
            }
        }
        self.metrics.extend(other.metrics);
        for vm in other.released_vms {
            if !self.released_vms.contains(&vm) {
                self.released_vms.push(vm);
            }
        }
    }

    /// The job these effects write, by id.
    pub fn job(&self, job_id: &str) -> Option<&JobRecord> {
        self.jobs.iter().find(|j| j.job_id == job_id).or_else(|| {
            self.new_jobs
                .iter()
                .map(|n| &n.record)
                .find(|j| j.job_id == job_id)
        })
    }
}
