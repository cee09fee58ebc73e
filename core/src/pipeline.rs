//! Job types, step names and the pipelines of the API reference.

use serde::{Deserialize, Serialize};

use crate::error_codes::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    Test,
    Live,
    /// Undoes a test failover (or a failed one that kept its state).
    Cleanup,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Test => "test",
            JobType::Live => "live",
            JobType::Cleanup => "cleanup",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "test" => Some(JobType::Test),
            "live" => Some(JobType::Live),
            "cleanup" => Some(JobType::Cleanup),
            _ => None,
        }
    }

    /// The job id prefix: `enhanced-test-failover` / `enhanced-live-failover`.
    pub fn job_id_prefix(self) -> &'static str {
        match self {
            JobType::Test => "enhanced-test-failover",
            JobType::Live => "enhanced-live-failover",
            JobType::Cleanup => "enhanced-cleanup",
        }
    }

    /// `enhanced-<type>-failover-<vm_id>-<unix seconds>`.
    pub fn job_id(self, vm_id: &str, unix_seconds: i64) -> String {
        format!("{}-{vm_id}-{unix_seconds}", self.job_id_prefix())
    }

    /// The steps, in order.
    pub fn pipeline(self) -> &'static [StepName] {
        match self {
            JobType::Test => &[
                StepName::Validation,
                StepName::Snapshot,
                StepName::VirtioInjection,
                StepName::TestVmCreation,
                StepName::VolumeAttachment,
                StepName::TestVmStartup,
            ],
            JobType::Live => &[
                StepName::Validation,
                StepName::Snapshot,
                StepName::VirtioInjection,
                StepName::VmCreation,
                StepName::VolumeSwitch,
                StepName::VmStartup,
            ],
            JobType::Cleanup => &[
                StepName::TestVmShutdown,
                StepName::VolumeDetachment,
                StepName::SnapshotRollback,
                StepName::VolumeReattachment,
                StepName::TestVmDestruction,
                StepName::SnapshotDeletion,
            ],
        }
    }
}

/// Every step a job can run. The names are the public ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepName {
    Validation,
    Snapshot,
    VirtioInjection,
    TestVmCreation,
    VolumeAttachment,
    TestVmStartup,
    VmCreation,
    VolumeSwitch,
    VmStartup,
    // Cleanup of a test failover.
    TestVmShutdown,
    VolumeDetachment,
    SnapshotRollback,
    VolumeReattachment,
    TestVmDestruction,
    SnapshotDeletion,
    // Compensation of a failed or cancelled failover, in its own job.
    CompensationVmShutdown,
    CompensationVolumeDetachment,
    CompensationSnapshotRollback,
    CompensationVolumeReattachment,
    CompensationVmDestruction,
    CompensationSnapshotDeletion,
}

/// What a step does, independent of the job type: a worker executes kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Validate,
    Snapshot,
    InjectVirtio,
    CreateVm,
    MoveVolumes,
    StartVm,
    /// Stop the destination VM (gracefully, forced after a deadline).
    StopVm,
    /// Detach the replicated volumes from the destination VM.
    DetachVolumes,
    /// Roll every disk back to the job's LINSTOR snapshot.
    RollbackSnapshots,
    /// Attach the replicated volumes to the appliance VM, in their original order.
    ReattachVolumes,
    /// Destroy the destination VM with expunge.
    DestroyVm,
    /// Delete the job's LINSTOR snapshots.
    DeleteSnapshots,
}

impl StepName {
    pub const ALL: [StepName; 21] = [
        StepName::Validation,
        StepName::Snapshot,
        StepName::VirtioInjection,
        StepName::TestVmCreation,
        StepName::VolumeAttachment,
        StepName::TestVmStartup,
        StepName::VmCreation,
        StepName::VolumeSwitch,
        StepName::VmStartup,
        StepName::TestVmShutdown,
        StepName::VolumeDetachment,
        StepName::SnapshotRollback,
        StepName::VolumeReattachment,
        StepName::TestVmDestruction,
        StepName::SnapshotDeletion,
        StepName::CompensationVmShutdown,
        StepName::CompensationVolumeDetachment,
        StepName::CompensationSnapshotRollback,
        StepName::CompensationVolumeReattachment,
        StepName::CompensationVmDestruction,
        StepName::CompensationSnapshotDeletion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Validation => "validation",
            StepName::Snapshot => "snapshot",
            StepName::VirtioInjection => "virtio-injection",
            StepName::TestVmCreation => "test-vm-creation",
            StepName::VolumeAttachment => "volume-attachment",
            StepName::TestVmStartup => "test-vm-startup",
            StepName::VmCreation => "vm-creation",
            StepName::VolumeSwitch => "volume-switch",
            StepName::VmStartup => "vm-startup",
            StepName::TestVmShutdown => "test-vm-shutdown",
            StepName::VolumeDetachment => "volume-detachment",
            StepName::SnapshotRollback => "snapshot-rollback",
            StepName::VolumeReattachment => "volume-reattachment",
            StepName::TestVmDestruction => "test-vm-destruction",
            StepName::SnapshotDeletion => "snapshot-deletion",
            StepName::CompensationVmShutdown => "compensation-vm-shutdown",
            StepName::CompensationVolumeDetachment => "compensation-volume-detachment",
            StepName::CompensationSnapshotRollback => "compensation-snapshot-rollback",
            StepName::CompensationVolumeReattachment => "compensation-volume-reattachment",
            StepName::CompensationVmDestruction => "compensation-vm-destruction",
            StepName::CompensationSnapshotDeletion => "compensation-snapshot-deletion",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn kind(self) -> StepKind {
        match self {
            StepName::Validation => StepKind::Validate,
            StepName::Snapshot => StepKind::Snapshot,
            StepName::VirtioInjection => StepKind::InjectVirtio,
            StepName::TestVmCreation | StepName::VmCreation => StepKind::CreateVm,
            StepName::VolumeAttachment | StepName::VolumeSwitch => StepKind::MoveVolumes,
            StepName::TestVmStartup | StepName::VmStartup => StepKind::StartVm,
            StepName::TestVmShutdown | StepName::CompensationVmShutdown => StepKind::StopVm,
            StepName::VolumeDetachment | StepName::CompensationVolumeDetachment => {
                StepKind::DetachVolumes
            }
            StepName::SnapshotRollback | StepName::CompensationSnapshotRollback => {
                StepKind::RollbackSnapshots
            }
            StepName::VolumeReattachment | StepName::CompensationVolumeReattachment => {
                StepKind::ReattachVolumes
            }
            StepName::TestVmDestruction | StepName::CompensationVmDestruction => {
                StepKind::DestroyVm
            }
            StepName::SnapshotDeletion | StepName::CompensationSnapshotDeletion => {
                StepKind::DeleteSnapshots
            }
        }
    }

    /// A step that undoes what a failed or cancelled failover did.
    pub fn is_compensation(self) -> bool {
        matches!(
            self,
            StepName::CompensationVmShutdown
                | StepName::CompensationVolumeDetachment
                | StepName::CompensationSnapshotRollback
                | StepName::CompensationVolumeReattachment
                | StepName::CompensationVmDestruction
                | StepName::CompensationSnapshotDeletion
        )
    }

    /// The code a job fails with when this step fails without a more
    /// specific one (a lease that expired on the last attempt, say).
    pub fn error_code(self) -> ErrorCode {
        match self.kind() {
            StepKind::Validate => ErrorCode::ValidationFailed,
            StepKind::Snapshot => ErrorCode::SnapshotFailed,
            StepKind::InjectVirtio => ErrorCode::VirtioFailed,
            StepKind::CreateVm => ErrorCode::VmCreateFailed,
            StepKind::MoveVolumes => ErrorCode::VolumeAttachFailed,
            StepKind::StartVm => ErrorCode::VmStartFailed,
            StepKind::StopVm
            | StepKind::DetachVolumes
            | StepKind::RollbackSnapshots
            | StepKind::ReattachVolumes
            | StepKind::DestroyVm
            | StepKind::DeleteSnapshots => ErrorCode::CleanupFailed,
        }
    }

    /// Name of the RabbitMQ queue suffix for this step.
    pub fn queue_suffix(self) -> &'static str {
        self.as_str()
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for JobType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request flags that skip a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipFlags {
    pub skip_validation: bool,
    pub skip_snapshot: bool,
    pub skip_virtio_injection: bool,
}

impl SkipFlags {
    /// The reason a step is skipped by request, if it is.
    pub fn reason(self, step: StepName) -> Option<&'static str> {
        match step {
            StepName::Validation if self.skip_validation => {
                Some("skipped by request (skip_validation)")
            }
            StepName::Snapshot if self.skip_snapshot => Some("skipped by request (skip_snapshot)"),
            StepName::SnapshotRollback | StepName::SnapshotDeletion if self.skip_snapshot => {
                Some("the test failover took no snapshot")
            }
            StepName::VirtioInjection if self.skip_virtio_injection => {
                Some("skipped by request (skip_virtio_injection)")
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_are_the_reference_ones() {
        let names = |t: JobType| t.pipeline().iter().map(|s| s.as_str()).collect::<Vec<_>>();
        assert_eq!(
            names(JobType::Test),
            [
                "validation",
                "snapshot",
                "virtio-injection",
                "test-vm-creation",
                "volume-attachment",
                "test-vm-startup"
            ]
        );
        assert_eq!(
            names(JobType::Live),
            [
                "validation",
                "snapshot",
                "virtio-injection",
                "vm-creation",
                "volume-switch",
                "vm-startup"
            ]
        );
    }

    #[test]
    fn job_ids_have_the_reference_format() {
        assert_eq!(
            JobType::Test.job_id("420570c7-f61f-a930-77c5-1e876786cb3c", 1756882765),
            "enhanced-test-failover-420570c7-f61f-a930-77c5-1e876786cb3c-1756882765"
        );
        assert_eq!(
            JobType::Live.job_id("420570c7-f61f-a930-77c5-1e876786cb3c", 1756882900),
            "enhanced-live-failover-420570c7-f61f-a930-77c5-1e876786cb3c-1756882900"
        );
    }

    #[test]
    fn step_names_round_trip() {
        for step in StepName::ALL {
            assert_eq!(StepName::parse(step.as_str()), Some(step));
            assert_eq!(
                serde_json::to_value(step).unwrap(),
                serde_json::Value::String(step.as_str().into())
            );
        }
        assert_eq!(StepName::parse("VALIDATION"), None);
    }
}
