//! `volume-detachment` / `compensation-volume-detachment`: every replicated
//! volume attached to the destination VM leaves it, the boot disk (its root
//! disk) too, which CloudStack allows only while the VM is stopped. Volumes
//! anywhere else are left alone; the template root volume stays with the VM
//! and goes when the VM is destroyed.

use super::super::{Executors, IntoStepFailure, StepContext, StepResult, outputs};
use super::{disks_in_order, retryable, state_of, volumes_of};
use crate::cloudstack::VmState;

pub(in crate::steps) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let code = ctx.step.error_code();
    let cs = &exec.cloudstack;
    let Some(dest) = ctx.output(outputs::DESTINATION_VM_ID).map(str::to_owned) else {
        return StepResult::done("no destination VM was created; nothing to detach");
    };
    let disks = disks_in_order(ctx);
    ctx.progress
        .set(10, format!("looking at VM {dest} and its volumes"));
    let vm = match cs.get_vm(&dest).await {
        Ok(Some(vm)) => vm,
        Ok(None) => {
            return StepResult::done(format!(
                "VM {dest} does not exist; nothing is attached to it"
            ));
        }
        Err(e) => return e.into_failure(code, &format!("looking up VM {dest}")),
    };
    let attached = match volumes_of(cs, &dest).await {
        Ok(v) => v,
        Err(e) => return e.into_failure(code, &format!("listing the volumes of VM {dest}")),
    };
    let ours: Vec<_> = disks
        .iter()
        .filter_map(|d| {
            attached
                .iter()
                .find(|v| v.id == d.cloudstack_volume_id)
                .map(|v| (d, v))
        })
        .collect();
    for disk in disks
        .iter()
        .filter(|d| !ours.iter().any(|(o, _)| o.disk_id == d.disk_id))
    {
        ctx.note(format!(
            "volume {} ({}) is not on VM {dest}; left alone",
            disk.cloudstack_volume_id, disk.disk_id
        ));
    }
    if ours.is_empty() {
        return StepResult::done(format!(
            "none of the {} replicated volume(s) is attached to VM {dest}",
            disks.len()
        ));
    }
    match vm.state() {
        Some(VmState::Running) => {
            return StepResult::fail(
                code,
                format!(
                    "VM {} ({dest}) is Running: it must be stopped before its volumes are detached",
                    vm.name
                ),
            );
        }
        Some(state) if state.is_transitional() => {
            return retryable(
                code,
                format!("VM {dest} is {state}; its volumes are detached once it is stopped"),
            );
        }
        _ => {}
    }

    let mut detached = Vec::new();
    for (index, (disk, volume)) in ours.iter().enumerate() {
        ctx.progress.set(
            20 + (index * 70 / ours.len()) as u32,
            format!("detaching {} ({}) from VM {dest}", volume.id, disk.disk_id),
        );
        if let Err(e) = cs.detach_volume(&volume.id).await {
            // An earlier call may have got through although this one failed:
            // what counts is where the volume is now.
            match cs.get_volume(&volume.id).await {
                Ok(Some(now)) if now.virtual_machine_id.as_deref() != Some(dest.as_str()) => {
                    ctx.note(format!(
                        "detaching {} reported {e}, but it is no longer on VM {dest}",
                        volume.id
                    ));
                }
                _ => {
                    return e.into_failure(
                        code,
                        &format!("detaching {} ({}) from VM {dest}", volume.id, disk.disk_id),
                    );
                }
            }
        }
        ctx.note(format!(
            "detached {} ({}, device {}) from VM {dest} ({})",
            volume.id,
            disk.disk_id,
            volume
                .device_id
                .map_or_else(|| "?".to_owned(), |d| d.to_string()),
            state_of(&vm)
        ));
        detached.push(format!("{} ({})", volume.id, disk.disk_id));
    }
    StepResult::done(format!(
        "detached {} volume(s) from VM {dest}: {}",
        detached.len(),
        detached.join(", ")
    ))
}
