//! `snapshot-deletion` / `compensation-snapshot-deletion`: the job's LINSTOR
//! snapshot of every disk is deleted; one that is already gone counts as
//! deleted.

use super::super::{Executors, IntoStepFailure, StepContext, StepResult};
use super::disks_in_order;
use crate::linstor::{ApiErrorKind, SnapshotDeletion};

pub(in crate::steps) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let code = ctx.step.error_code();
    let name = ctx.task.snapshot_name.clone();
    if name.is_empty() {
        return StepResult::Skipped {
            reason: "the failover took no snapshot".to_owned(),
        };
    }
    let disks = disks_in_order(ctx);
    let (mut deleted, mut absent) = (0usize, 0usize);
    for (index, disk) in disks.iter().enumerate() {
        let rd = &disk.linstor_resource;
        ctx.progress.set(
            (index * 100 / disks.len().max(1)) as u32,
            format!(
                "deleting snapshot {name} of {rd} ({}/{})",
                index + 1,
                disks.len()
            ),
        );
        match exec.linstor.delete_snapshot(rd, &name).await {
            Ok(SnapshotDeletion::Deleted) => {
                ctx.note(format!("deleted snapshot {rd}/{name}"));
                deleted += 1;
            }
            Ok(SnapshotDeletion::AlreadyAbsent) => {
                ctx.note(format!("snapshot {rd}/{name} is already gone"));
                absent += 1;
            }
            Err(e) if e.api_kind() == Some(ApiErrorKind::ResourceDefinitionNotFound) => {
                ctx.note(format!(
                    "LINSTOR resource definition {rd} does not exist, nor does its snapshot {name}"
                ));
                absent += 1;
            }
            Err(e) => return e.into_failure(code, &format!("deleting snapshot {rd}/{name}")),
        }
    }
    let message = match (deleted, absent) {
        (_, 0) => format!("deleted {deleted} snapshot(s) {name}"),
        (0, _) => format!("no snapshot {name} was left to delete ({absent} disk(s))"),
        _ => format!("deleted {deleted} snapshot(s) {name}; {absent} were already gone"),
    };
    StepResult::done(message)
}
