//! `test-vm-destruction` / `compensation-vm-destruction`: the destination
//! VM is destroyed with expunge, then the root volume the template gave it
//! is deleted if it is still around, detached.
//!
//! Expunging a VM deletes its ROOT volume. While a replicated volume is
//! still attached to the VM (the boot disk is its ROOT volume after the
//! volume step) the VM is not destroyed: that would delete the replica.

use super::super::{Executors, IntoStepFailure, StepContext, StepResult, outputs};
use super::{disks_in_order, retryable, state_of, volumes_of};
use crate::cloudstack::VmState;

pub(in crate::steps) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let code = ctx.step.error_code();
    let cs = &exec.cloudstack;
    let Some(dest) = ctx.output(outputs::DESTINATION_VM_ID).map(str::to_owned) else {
        return StepResult::done("no destination VM was created; nothing to destroy");
    };
    let disks = disks_in_order(ctx);
    let mut done = Vec::new();

    ctx.progress.set(10, format!("looking up VM {dest}"));
    let vm = match cs.get_vm(&dest).await {
        Ok(vm) => vm,
        Err(e) => return e.into_failure(code, &format!("looking up VM {dest}")),
    };
    match vm {
        None => {
            ctx.note(format!("VM {dest} does not exist; nothing to destroy"));
            done.push(format!("VM {dest} does not exist"));
        }
        Some(vm) if vm.state() == Some(&VmState::Expunging) => {
            ctx.note(format!("VM {} ({dest}) is already being expunged", vm.name));
            done.push(format!("VM {dest} is being expunged"));
        }
        Some(vm) => {
            ctx.progress
                .set(20, format!("checking the volumes of VM {dest}"));
            let attached = match volumes_of(cs, &dest).await {
                Ok(v) => v,
                Err(e) => {
                    return e.into_failure(code, &format!("listing the volumes of VM {dest}"));
                }
            };
            if let Some(volume) = attached
                .iter()
                .find(|v| disks.iter().any(|d| d.cloudstack_volume_id == v.id))
            {
                return StepResult::fail(
                    code,
                    format!(
                        "refusing to destroy VM {dest}: replicated volume {} is still attached (device {})",
                        volume.id,
                        volume
                            .device_id
                            .map_or_else(|| "?".to_owned(), |d| d.to_string())
                    ),
                );
            }
            ctx.progress
                .set(40, format!("destroying VM {dest} with expunge"));
            ctx.note(format!(
                "destroying VM {} ({dest}, {}) with expunge",
                vm.name,
                state_of(&vm)
            ));
            if let Err(e) = cs.destroy_vm(&dest, true).await
                && !e.is_entity_not_found()
            {
                return e.into_failure(code, &format!("destroying VM {dest}"));
            }
            match cs.get_vm(&dest).await {
                Ok(None) => {}
                Ok(Some(now)) if now.state() == Some(&VmState::Expunging) => {}
                Ok(Some(now)) => {
                    return retryable(
                        code,
                        format!("VM {dest} is {} after destroy with expunge", state_of(&now)),
                    );
                }
                Err(e) => return e.into_failure(code, &format!("looking up VM {dest}")),
            }
            ctx.note(format!("VM {} ({dest}) is expunged", vm.name));
            done.push(format!("destroyed VM {} ({dest}) with expunge", vm.name));
        }
    }

    if let Some(root) = ctx.output(outputs::TEMPLATE_ROOT_VOLUME_ID) {
        ctx.progress
            .set(80, format!("looking up template root volume {root}"));
        if disks.iter().any(|d| d.cloudstack_volume_id == root) {
            // Never the case for what the creation step records; a replica
            // is never deleted here whatever the outputs say.
            ctx.note(format!(
                "template root volume {root} is a replicated volume; left alone"
            ));
        } else {
            match cs.get_volume(root).await {
                Ok(None) => {
                    ctx.note(format!("template root volume {root} is gone"));
                }
                Ok(Some(v)) if v.virtual_machine_id.is_none() => {
                    match cs.delete_volume(root).await {
                        Ok(()) => {}
                        Err(e) if e.is_entity_not_found() => {}
                        Err(e) => {
                            return e.into_failure(
                                code,
                                &format!("deleting template root volume {root}"),
                            );
                        }
                    }
                    ctx.note(format!("deleted the detached template root volume {root}"));
                    done.push(format!("deleted template root volume {root}"));
                }
                Ok(Some(v)) => {
                    ctx.note(format!(
                        "template root volume {root} is attached to VM {}; left alone",
                        v.virtual_machine_id.unwrap_or_default()
                    ));
                }
                Err(e) => {
                    return e
                        .into_failure(code, &format!("looking up template root volume {root}"));
                }
            }
        }
    }
    StepResult::done(done.join("; "))
}
