//! The undo steps: the cleanup of a test failover (`test-vm-shutdown` ...
//! `snapshot-deletion`) and the compensation of a failed or cancelled one
//! (`compensation-vm-shutdown` ... `compensation-snapshot-deletion`) run the
//! same executors, in this order:
//!
//! 1. [`stop_vm`]: the destination VM stops (forced after a deadline);
//! 2. [`detach`]: the replicated volumes leave it;
//! 3. [`rollback`]: every disk goes back to the job's LINSTOR snapshot;
//! 4. [`reattach`]: the volumes go back to the appliance VM, at their
//!    original device ids;
//! 5. [`destroy_vm`]: the destination VM is expunged, and the template's
//!    root volume with it;
//! 6. [`delete_snapshots`]: the job's LINSTOR snapshots go.
//!
//! Each one looks at the current state first and does only what is left,
//! so a step that runs again (a retry, a redelivery, a cleanup after a
//! partial failover) is harmless and says that there was nothing to do.
//! Failures carry the step's code (`CLEANUP_FAILED`).

pub(super) mod delete_snapshots;
pub(super) mod destroy_vm;
pub(super) mod detach;
pub(super) mod reattach;
pub(super) mod rollback;
pub(super) mod stop_vm;

use std::time::{Duration, Instant};

use failover_core::ErrorCode;
use failover_proto::v1 as pb;

use super::{StepContext, StepResult};
use crate::cloudstack::{CloudStackClient, CloudStackError, VirtualMachine, Volume, VolumeFilter};

/// The replicated disks of the task, in their `order` (ties keep the order
/// of the task).
fn disks_in_order(ctx: &StepContext) -> Vec<pb::DiskSpec> {
    let mut disks = ctx.vm().disks;
    disks.sort_by_key(|d| d.order);
    disks
}

/// A VM's state for messages.
fn state_of(vm: &VirtualMachine) -> &str {
    vm.state().map(|s| s.as_str()).unwrap_or("unknown")
}

/// A failure that another attempt may get past.
fn retryable(code: ErrorCode, message: impl Into<String>) -> StepResult {
    StepResult::Failed {
        code,
        message: message.into(),
        retryable: true,
    }
}

/// The volumes attached to VM `vm_id`; none when the VM does not exist.
async fn volumes_of(cs: &CloudStackClient, vm_id: &str) -> Result<Vec<Volume>, CloudStackError> {
    let filter = VolumeFilter {
        virtual_machine_id: Some(vm_id.to_owned()),
        ..VolumeFilter::default()
    };
    match cs.list_volumes(&filter).await {
        Ok(volumes) => Ok(volumes),
        Err(e) if e.is_entity_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// A volume that is the root disk of its VM.
fn is_root(volume: &Volume) -> bool {
    volume.device_id == Some(0) || volume.volume_type.as_str() == "ROOT"
}

/// The VM once it has left a transitional state (`Starting`, `Stopping`,
/// `Migrating`), or as last seen when `within` has passed; `None` when it
/// does not exist (any more).
async fn settled_vm(
    cs: &CloudStackClient,
    id: &str,
    within: Duration,
) -> Result<Option<VirtualMachine>, CloudStackError> {
    let started = Instant::now();
    let mut interval = Duration::from_millis(100);
    loop {
        let vm = cs.get_vm(id).await?;
        let transitional = vm
            .as_ref()
            .and_then(VirtualMachine::state)
            .is_some_and(|s| s.is_transitional());
        let left = within.saturating_sub(started.elapsed());
        if !transitional || left.is_zero() {
            return Ok(vm);
        }
        tokio::time::sleep(interval.min(left)).await;
        interval = (interval * 2).min(Duration::from_secs(5));
    }
}
