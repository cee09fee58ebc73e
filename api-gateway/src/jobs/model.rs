//! What a job is made of, as stored and as shown.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use failover_core::ErrorCode;
use failover_core::orchestration::{JobError, JobState, StepState};
use failover_core::pipeline::{JobType, StepName};
use failover_core::{JobStatus, StepStatus};
use failover_proto::v1 as pb;

use crate::db::StoreError;
use crate::inventory::VmRegistration;

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

/// A job row as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub job_id: String,
    pub correlation_id: Uuid,
    pub vm_id: Uuid,
    pub vm_name: String,
    pub job_type: String,
    pub status: String,
    pub current_step: Option<String>,
    pub source_vm_spec: String,
    pub network_mappings: String,
    pub skip_validation: bool,
    pub skip_snapshot: bool,
    pub skip_virtio_injection: bool,
    pub auto_cleanup: bool,
    pub test_duration: Option<String>,
    pub custom_config: Option<serde_json::Value>,
    pub notification_config: Option<serde_json::Value>,
    pub linstor_snapshot_name: Option<String>,
    pub destination_vm_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub error_step: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub rollback_on_failure: bool,
    pub cancel_requested: bool,
    pub holds_vm: bool,
    pub parent_job_id: Option<String>,
    pub cleanup_job_id: Option<String>,
    pub auto_cleanup_at: Option<DateTime<Utc>>,
    pub waiting_for: Option<String>,
    pub outputs: serde_json::Value,
}

pub const JOB_COLUMNS: &str = "job_id, correlation_id, vm_id, vm_name, job_type, status, current_step, \
    source_vm_spec, network_mappings, skip_validation, skip_snapshot, skip_virtio_injection, \
    auto_cleanup, test_duration, custom_config, notification_config, linstor_snapshot_name, \
    destination_vm_id, error_code, error_message, error_step, created_at, started_at, \
    completed_at, updated_at, rollback_on_failure, cancel_requested, holds_vm, parent_job_id, \
    cleanup_job_id, auto_cleanup_at, waiting_for, outputs";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub step_name: String,
    pub position: i32,
    pub status: String,
    pub attempt: i32,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub progress: i32,
    pub message: Option<String>,
    pub log: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

pub const STEP_COLUMNS: &str = "step_name, position, status, attempt, worker_id, lease_expires_at, \
    progress, message, log, error_code, error_message, started_at, completed_at";

/// A job with its steps, in pipeline order.
#[derive(Debug, Clone)]
pub struct JobDetail {
    pub job: JobRow,
    pub steps: Vec<StepRow>,
}

/// The part of a job the state machine and the dispatcher need, read under lock.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedJob {
    pub job_id: String,
    pub correlation_id: Uuid,
    pub vm_id: Uuid,
    pub job_type: String,
    pub status: String,
    pub task_context: serde_json::Value,
    pub outputs: serde_json::Value,
    pub started_at: Option<DateTime<Utc>>,
    pub rollback_on_failure: bool,
    pub cancel_requested: bool,
    pub holds_vm: bool,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub error_step: Option<String>,
    pub parent_job_id: Option<String>,
    pub auto_cleanup: bool,
    pub test_duration: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The job's trace (W3C `traceparent`), when traces are exported.
    pub traceparent: Option<String>,
}

pub const LOCKED_JOB_COLUMNS: &str = "job_id, correlation_id, vm_id, job_type, status, task_context, \
    outputs, started_at, rollback_on_failure, cancel_requested, holds_vm, error_code, \
    error_message, error_step, parent_job_id, auto_cleanup, test_duration, created_at, traceparent";

impl LockedJob {
    pub fn context(&self) -> Result<TaskContext, StoreError> {
        serde_json::from_value(self.task_context.clone()).map_err(StoreError::corrupt)
    }

    pub fn outputs(&self) -> Result<BTreeMap<String, String>, StoreError> {
        serde_json::from_value(self.outputs.clone()).map_err(StoreError::corrupt)
    }

    pub fn job_type(&self) -> Result<JobType, StoreError> {
        JobType::parse(&self.job_type)
            .ok_or_else(|| StoreError::corrupt(format!("unknown job type {:?}", self.job_type)))
    }

    /// The state machine's view of the job and its steps.
    pub fn state(&self, steps: &[StepRow]) -> Result<JobState, StoreError> {
        let status = JobStatus::parse(&self.status)
            .ok_or_else(|| StoreError::corrupt(format!("unknown job status {:?}", self.status)))?;
        let steps = steps
            .iter()
            .map(|s| {
                Ok(StepState {
                    name: StepName::parse(&s.step_name).ok_or_else(|| {
                        StoreError::corrupt(format!("unknown step {:?}", s.step_name))
                    })?,
                    status: StepStatus::parse(&s.status).ok_or_else(|| {
                        StoreError::corrupt(format!("unknown step status {:?}", s.status))
                    })?,
                    attempt: u32::try_from(s.attempt).unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let failure = match (&self.error_code, &self.error_step) {
            (Some(code), Some(step)) => Some(JobError {
                step: StepName::parse(step)
                    .ok_or_else(|| StoreError::corrupt(format!("unknown step {step:?}")))?,
                code: ErrorCode::parse(code).unwrap_or(ErrorCode::InternalError),
                message: self.error_message.clone().unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(JobState {
            job_type: self.job_type()?,
            status,
            steps,
            rollback_on_failure: self.rollback_on_failure,
            cancel_requested: self.cancel_requested,
            failure,
        })
    }

    /// The protobuf task of `step`'s `attempt`.
    pub fn task(
        &self,
        step: StepName,
        attempt: u32,
        outputs: &BTreeMap<String, String>,
    ) -> Result<pb::StepTask, StoreError> {
        let ctx = self.context()?;
        Ok(pb::StepTask {
            job_id: self.job_id.clone(),
            correlation_id: self.correlation_id.to_string(),
            step_name: step.as_str().to_owned(),
            attempt,
            job_type: self.job_type.clone(),
            vm: Some(pb::VmSpec {
                vm_id: ctx.vm_id.to_string(),
                vm_name: ctx.vm.vm_name.clone(),
                os_family: ctx.vm.os_family.as_str().to_owned(),
                cpu_count: ctx.vm.cpu_count,
                memory_mb: ctx.vm.memory_mb,
                disks: ctx
                    .vm
                    .disks
                    .iter()
                    .enumerate()
                    .map(|(order, d)| pb::DiskSpec {
                        disk_id: d.disk_id.clone(),
                        cloudstack_volume_id: d.cloudstack_volume_id.clone(),
                        linstor_resource: d.linstor_resource.clone(),
                        device_path: d.device_path.clone(),
                        boot: d.boot,
                        order: u32::try_from(order).unwrap_or(u32::MAX),
                    })
                    .collect(),
                nics: ctx
                    .vm
                    .nics
                    .iter()
                    .map(|n| pb::NicSpec {
                        source_network: n.source_network.clone(),
                        test_network_id: n.test_network_id.clone().unwrap_or_default(),
                        live_network_id: n.live_network_id.clone().unwrap_or_default(),
                    })
                    .collect(),
            }),
            network_mappings: ctx.network_mappings.into_iter().collect(),
            outputs: outputs.clone().into_iter().collect(),
            snapshot_name: ctx.snapshot_name.unwrap_or_default(),
            placement: Some(pb::Placement {
                zone_id: ctx.placement.zone_id,
                template_id: ctx.placement.template_id,
                appliance_vm_id: ctx.placement.appliance_vm_id,
            }),
        })
    }
}
