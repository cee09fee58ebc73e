//! A job as the rules see it: every fact a decision needs, loaded once by
//! the gateway, and written back whole when a decision changes it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error_codes::ErrorCode;
use crate::inventory::VmRegistration;
use crate::orchestration::{JobError, JobState, StepState};
use crate::pipeline::{JobType, StepName};
use crate::{JobStatus, StepStatus};

/// Where the destination VM lands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub zone_id: String,
    pub template_id: String,
    pub appliance_vm_id: String,
}

/// Everything a worker needs, fixed when the job is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskContext {
    pub vm_id: Uuid,
    pub vm: VmRegistration,
    /// Source network -> CloudStack network id ("" when unmapped).
    pub network_mappings: BTreeMap<String, String>,
    pub placement: Placement,
    pub snapshot_name: Option<String>,
}

/// Why a step attempt failed, as recorded on the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub code: ErrorCode,
    pub message: String,
}

/// One step of a job, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub name: StepName,
    pub position: i32,
    pub status: StepStatus,
    /// 0 before the first dispatch; the fencing token afterwards.
    pub attempt: u32,
    /// The worker holding (or that last held) the lease.
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub progress: u32,
    /// Shown on the step: why it was skipped, when it retries, what it did.
    pub message: Option<String>,
    pub error: Option<StepError>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl StepRecord {
    /// A step of a new job, or one added to undo what a job did.
    pub fn new(name: StepName, position: i32) -> Self {
        StepRecord {
            name,
            position,
            status: StepStatus::Pending,
            attempt: 0,
            worker_id: None,
            lease_expires_at: None,
            progress: 0,
            message: None,
            error: None,
            started_at: None,
            completed_at: None,
        }
    }
}

/// A job with its steps, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub job_id: String,
    pub correlation_id: Uuid,
    pub vm_id: Uuid,
    pub vm_name: String,
    pub job_type: JobType,
    pub status: JobStatus,
    pub current_step: Option<StepName>,
    pub context: TaskContext,
    /// Outputs of completed steps, passed on to later steps.
    pub outputs: BTreeMap<String, String>,
    pub destination_vm_id: Option<String>,
    pub failure: Option<JobError>,
    pub rollback_on_failure: bool,
    pub cancel_requested: bool,
    /// The job counts against its VM (see [`crate::holds`]).
    pub holds_vm: bool,
    /// A cleanup job's test failover.
    pub parent_job_id: Option<String>,
    /// A test failover's cleanup job.
    pub cleanup_job_id: Option<String>,
    pub auto_cleanup: bool,
    pub test_duration: Option<Duration>,
    pub snapshot_name: Option<String>,
    /// The job this one waited behind when it was accepted.
    pub waiting_for: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub auto_cleanup_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepRecord>,
}

pub mod outputs {
    //! The outputs steps pass on, by name.

    /// The VM the job created in CloudStack.
    pub const DESTINATION_VM_ID: &str = "destination_vm_id";
}

impl JobRecord {
    pub fn step(&self, name: StepName) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub fn step_mut(&mut self, name: StepName) -> Option<&mut StepRecord> {
        self.steps.iter_mut().find(|s| s.name == name)
    }

    /// The state machine's view of the job.
    pub fn state(&self) -> JobState {
        JobState {
            job_type: self.job_type,
            status: self.status,
            steps: self
                .steps
                .iter()
                .map(|s| StepState {
                    name: s.name,
                    status: s.status,
                    attempt: s.attempt,
                })
                .collect(),
            rollback_on_failure: self.rollback_on_failure,
            cancel_requested: self.cancel_requested,
            failure: self.failure.clone(),
        }
    }

    /// Whether the job is finished.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

/// The ids a new job may take: `<prefix>-<vm_id>-<unix seconds>` from `now`
/// on. Two jobs of one VM in the same second take consecutive seconds, so
/// ids stay unique and keep the documented format; the gateway checks which
/// are taken (under the VM's lock) and [`first_free`] picks.
pub fn id_candidates(job_type: JobType, vm_id: Uuid, now: DateTime<Utc>) -> Vec<String> {
    (0..ID_CANDIDATES)
        .map(|n| job_type.job_id(&vm_id.to_string(), now.timestamp() + n))
        .collect()
}

/// How many seconds ahead a new job's id may be placed.
pub const ID_CANDIDATES: i64 = 32;

/// The first of `candidates` not in `taken`, with its unix seconds.
pub fn first_free(candidates: &[String], taken: &[String]) -> Option<(String, i64)> {
    candidates
        .iter()
        .find(|c| !taken.contains(c))
        .and_then(|id| {
            let seconds = id.rsplit('-').next()?.parse().ok()?;
            Some((id.clone(), seconds))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_second_jobs_take_the_next_free_second() {
        let vm = Uuid::parse_str("420570c7-f61f-a930-77c5-1e876786cb3c").unwrap();
        let now = DateTime::from_timestamp(1756882765, 0).unwrap();
        let candidates = id_candidates(JobType::Test, vm, now);
        assert_eq!(
            candidates[0],
            "enhanced-test-failover-420570c7-f61f-a930-77c5-1e876786cb3c-1756882765"
        );
        assert_eq!(
            first_free(&candidates, &[]),
            Some((candidates[0].clone(), 1756882765))
        );
        assert_eq!(
            first_free(&candidates, &candidates[..2]),
            Some((candidates[2].clone(), 1756882767))
        );
        assert_eq!(first_free(&candidates, &candidates), None);
    }
}
