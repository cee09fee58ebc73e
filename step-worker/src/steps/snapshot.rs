//! `snapshot`: one LINSTOR snapshot of every disk under the job's snapshot
//! name, before anything touches the disks (`SNAPSHOT_FAILED`). A snapshot
//! that an earlier attempt made is found and counted as done.

use std::collections::BTreeMap;

use failover_core::ErrorCode;

use super::{Executors, IntoStepFailure, StepContext, StepResult, outputs};
use crate::linstor::SnapshotCreation;

pub(super) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let name = &ctx.task.snapshot_name;
    if name.is_empty() {
        return StepResult::fail(ErrorCode::SnapshotFailed, "the job has no snapshot name");
    }
    let disks = ctx.vm().disks;
    let mut made = BTreeMap::new();
    for (index, disk) in disks.iter().enumerate() {
        let percent = (index * 100 / disks.len().max(1)) as u32;
        ctx.progress.set(
            percent,
            format!(
                "snapshot {name} of {} ({}/{})",
                disk.linstor_resource,
                index + 1,
                disks.len()
            ),
        );
        match exec
            .linstor
            .create_snapshot(&disk.linstor_resource, name)
            .await
        {
            Ok(created) => {
                let how = match created.outcome {
                    SnapshotCreation::Created => "created",
                    SnapshotCreation::AlreadyPresent => "already present",
                };
                ctx.note(format!("snapshot {}/{name} {how}", disk.linstor_resource));
                made.insert(
                    outputs::snapshot(&disk.disk_id),
                    format!("{}/{name}", disk.linstor_resource),
                );
            }
            Err(e) => {
                return e.into_failure(
                    ErrorCode::SnapshotFailed,
                    &format!("snapshot of {}", disk.linstor_resource),
                );
            }
        }
    }
    StepResult::Succeeded {
        message: format!("{} snapshot(s) {name}", made.len()),
        outputs: made,
    }
}
