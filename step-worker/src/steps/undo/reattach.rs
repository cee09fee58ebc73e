//! `volume-reattachment` / `compensation-volume-reattachment`: every
//! replicated volume goes back to the appliance VM, disk by disk in their
//! order, at the device id it had there before the failover (output
//! `appliance_device:<disk_id>`) when that slot is free, else at the next
//! free one. A volume already on the appliance stays where it is; one
//! still on another VM is detached from it first, unless it is the root
//! disk of a running VM.

use std::collections::BTreeSet;

use super::super::{Executors, IntoStepFailure, StepContext, StepResult, outputs};
use super::{disks_in_order, is_root, state_of, volumes_of};
use crate::cloudstack::VmState;

pub(in crate::steps) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let code = ctx.step.error_code();
    let cs = &exec.cloudstack;
    let appliance = ctx.placement().appliance_vm_id;
    if appliance.is_empty() {
        return StepResult::fail(code, "the task names no appliance VM");
    }
    let disks = disks_in_order(ctx);
    ctx.progress
        .set(5, format!("looking at the appliance VM {appliance}"));
    match cs.get_vm(&appliance).await {
        Ok(Some(vm)) if matches!(vm.state(), Some(VmState::Running | VmState::Stopped)) => {}
        Ok(Some(vm)) if vm.state().is_some_and(|s| s.is_transitional()) => {
            return super::retryable(
                code,
                format!(
                    "the appliance VM {appliance} is {}; volumes can be attached once it is running or stopped",
                    state_of(&vm)
                ),
            );
        }
        Ok(Some(vm)) => {
            return StepResult::fail(
                code,
                format!(
                    "the appliance VM {appliance} is {}: volumes cannot be attached to it",
                    state_of(&vm)
                ),
            );
        }
        Ok(None) => {
            return StepResult::fail(code, format!("the appliance VM {appliance} does not exist"));
        }
        Err(e) => return e.into_failure(code, "looking up the appliance VM"),
    }
    let mut used: BTreeSet<u32> = match volumes_of(cs, &appliance).await {
        Ok(volumes) => volumes.iter().filter_map(|v| v.device_id).collect(),
        Err(e) => return e.into_failure(code, "listing the appliance VM's volumes"),
    };

    let mut landed = Vec::new();
    for (index, disk) in disks.iter().enumerate() {
        let id = &disk.cloudstack_volume_id;
        ctx.progress.set(
            10 + (index * 85 / disks.len().max(1)) as u32,
            format!("putting {id} ({}) back on the appliance", disk.disk_id),
        );
        let volume = match cs.get_volume(id).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                return StepResult::fail(
                    code,
                    format!("volume {id} of disk {} does not exist", disk.disk_id),
                );
            }
            Err(e) => return e.into_failure(code, &format!("looking up volume {id}")),
        };
        match volume.virtual_machine_id.as_deref() {
            Some(owner) if owner == appliance => {
                let device = volume
                    .device_id
                    .map_or_else(|| "?".to_owned(), |d| d.to_string());
                ctx.note(format!(
                    "{id} ({}) is already on the appliance at device {device}",
                    disk.disk_id
                ));
                landed.push(format!("{id} at device {device} (already there)"));
                continue;
            }
            Some(owner) => {
                let owner_vm = match cs.get_vm(owner).await {
                    Ok(vm) => vm,
                    Err(e) => return e.into_failure(code, &format!("looking up VM {owner}")),
                };
                if is_root(&volume)
                    && owner_vm
                        .as_ref()
                        .is_some_and(|vm| vm.state() == Some(&VmState::Running))
                {
                    return StepResult::fail(
                        code,
                        format!(
                            "refusing to detach {id} ({}): it is the root disk of the running VM {owner}",
                            disk.disk_id
                        ),
                    );
                }
                if let Err(e) = cs.detach_volume(id).await {
                    return e.into_failure(code, &format!("detaching {id} from VM {owner}"));
                }
                ctx.note(format!("detached {id} ({}) from VM {owner}", disk.disk_id));
            }
            None => {}
        }
        let recorded = ctx
            .output(&outputs::appliance_device(&disk.disk_id))
            .and_then(|d| d.parse::<u32>().ok());
        let device = match recorded {
            Some(d) if d != 0 && !used.contains(&d) => Some(d),
            Some(d) => {
                ctx.note(format!(
                    "device {d} of the appliance is taken; {id} goes to the next free slot"
                ));
                None
            }
            None => None,
        };
        let attached = match cs.attach_volume(id, &appliance, device).await {
            Ok(v) => v,
            Err(e) => match cs.get_volume(id).await {
                // The attach may have got through although this call failed.
                Ok(Some(now)) if now.virtual_machine_id.as_deref() == Some(appliance.as_str()) => {
                    ctx.note(format!(
                        "attaching {id} reported {e}, but it is on the appliance"
                    ));
                    now
                }
                _ => {
                    return e.into_failure(
                        code,
                        &format!("attaching {id} ({}) to the appliance VM", disk.disk_id),
                    );
                }
            },
        };
        if let Some(d) = attached.device_id {
            used.insert(d);
        }
        let device = attached
            .device_id
            .map_or_else(|| "?".to_owned(), |d| d.to_string());
        ctx.note(format!(
            "attached {id} ({}) to the appliance at device {device}",
            disk.disk_id
        ));
        landed.push(format!("{id} at device {device}"));
    }
    StepResult::done(format!(
        "{} volume(s) on the appliance VM {appliance}: {}",
        landed.len(),
        landed.join(", ")
    ))
}
