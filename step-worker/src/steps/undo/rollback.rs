//! `snapshot-rollback` / `compensation-snapshot-rollback`: every disk goes
//! back to the job's LINSTOR snapshot, taken before the failover touched
//! it. Rolling back again to the same snapshot gives the same content, so a
//! repeated step is harmless while nothing writes to the disks (they are on
//! no VM between the detachment and the reattachment). A disk that is
//! still attached to the destination VM is not rolled back: that would
//! change the disk under the test VM.
//!
//! The step needs an output showing that the failover's snapshot step
//! completed (`snapshot:<disk_id>`) or that a later step ran
//! (`destination_vm_id`); without one the failover never touched the disks
//! and the step is skipped. Otherwise a missing snapshot fails the step
//! before any disk is rolled back (no retry brings it back).

use super::super::{Executors, IntoStepFailure, StepContext, StepResult, outputs};
use super::{disks_in_order, retryable, volumes_of};
use crate::linstor::ApiErrorKind;

pub(in crate::steps) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let code = ctx.step.error_code();
    let name = ctx.task.snapshot_name.clone();
    if name.is_empty() {
        return StepResult::Skipped {
            reason: "the failover took no snapshot".to_owned(),
        };
    }
    let disks = disks_in_order(ctx);

    if let Some(dest) = ctx.output(outputs::DESTINATION_VM_ID) {
        ctx.progress.set(
            5,
            format!("checking that VM {dest} holds no replicated volume"),
        );
        let attached = match volumes_of(&exec.cloudstack, dest).await {
            Ok(v) => v,
            Err(e) => return e.into_failure(code, &format!("listing the volumes of VM {dest}")),
        };
        if let Some(disk) = disks
            .iter()
            .find(|d| attached.iter().any(|v| v.id == d.cloudstack_volume_id))
        {
            return StepResult::fail(
                code,
                format!(
                    "refusing to roll back {}: its volume {} is still attached to VM {dest}",
                    disk.linstor_resource, disk.cloudstack_volume_id
                ),
            );
        }
    }

    // Without an output of the snapshot step or of a step after it, the
    // failover stopped before or in its snapshot step: it never touched the
    // disks, and a rollback would only throw away what replication wrote
    // to them since.
    let snapshot_step_done = disks
        .iter()
        .any(|d| ctx.output(&outputs::snapshot(&d.disk_id)).is_some());
    if !snapshot_step_done && ctx.output(outputs::DESTINATION_VM_ID).is_none() {
        return StepResult::Skipped {
            reason: format!(
                "the failover did not get past its snapshot step ({name}), so it never touched the disks"
            ),
        };
    }

    // Look first, roll back after: a snapshot that is missing fails the
    // step before any disk has changed.
    for (index, disk) in disks.iter().enumerate() {
        let rd = &disk.linstor_resource;
        ctx.progress.set(
            10 + (index * 20 / disks.len().max(1)) as u32,
            format!("looking up snapshot {name} of {rd}"),
        );
        match exec.linstor.get_snapshot(rd, &name).await {
            Ok(snapshot) if snapshot.is_successful() => {}
            Ok(snapshot) => {
                return StepResult::Failed {
                    code,
                    message: format!(
                        "snapshot {name} of {rd} is not usable (flags {:?})",
                        snapshot.flags
                    ),
                    retryable: !snapshot.has_failed(),
                };
            }
            Err(e) => return missing_or(e, code, rd, &name, "looking up"),
        }
    }

    let mut rolled = Vec::new();
    for (index, disk) in disks.iter().enumerate() {
        let rd = &disk.linstor_resource;
        ctx.progress.set(
            30 + (index * 65 / disks.len()) as u32,
            format!(
                "rolling {rd} back to {name} ({}/{})",
                index + 1,
                disks.len()
            ),
        );
        match exec.linstor.rollback_snapshot(rd, &name).await {
            Ok(_) => {
                ctx.note(format!("rolled {rd} back to snapshot {name}"));
                rolled.push(rd.clone());
            }
            Err(e) if e.api_kind() == Some(ApiErrorKind::InUse) => {
                return retryable(
                    code,
                    format!("{rd} is in use and cannot be rolled back to {name} yet: {e}"),
                );
            }
            Err(e) if e.api_kind() == Some(ApiErrorKind::SnapshotExists) => {
                return StepResult::fail(
                    code,
                    format!(
                        "LINSTOR refuses to roll {rd} back to {name}: newer snapshots exist ({e})"
                    ),
                );
            }
            Err(e) => return missing_or(e, code, rd, &name, "rolling back"),
        }
    }
    StepResult::done(format!(
        "rolled {} disk(s) back to snapshot {name}: {}",
        rolled.len(),
        rolled.join(", ")
    ))
}

/// A missing snapshot or resource definition as a failure naming it (no
/// retry brings it back); anything else as the client error says.
fn missing_or(
    e: crate::linstor::LinstorError,
    code: failover_core::ErrorCode,
    rd: &str,
    name: &str,
    doing: &str,
) -> StepResult {
    match e.api_kind() {
        Some(ApiErrorKind::SnapshotNotFound) => StepResult::fail(
            code,
            format!("snapshot {name} of {rd} does not exist: there is nothing to roll back to"),
        ),
        Some(ApiErrorKind::ResourceDefinitionNotFound) => StepResult::fail(
            code,
            format!("LINSTOR resource definition {rd} does not exist"),
        ),
        _ => e.into_failure(code, &format!("{doing} snapshot {name} of {rd}")),
    }
}
