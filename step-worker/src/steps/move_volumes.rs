//! `volume-attachment` / `volume-switch`: the replicated volumes leave the
//! appliance VM, the boot disk replaces the new VM's template root disk
//! (device 0) and the data disks follow in order (`VOLUME_ATTACH_FAILED`).
//! Every sub-step looks at the current state first, so a retry continues
//! where an earlier attempt stopped.

use failover_core::ErrorCode;

use super::{Executors, IntoStepFailure, StepContext, StepResult, outputs};
use crate::cloudstack::{VmState, VolumeFilter};

pub(super) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let code = ErrorCode::VolumeAttachFailed;
    let cs = &exec.cloudstack;
    let vm = ctx.vm();
    let appliance = ctx.placement().appliance_vm_id;
    let Some(dest) = ctx.output(outputs::DESTINATION_VM_ID).map(str::to_owned) else {
        return StepResult::fail(code, "no destination VM was recorded by the creation step");
    };
    let Some(boot) = vm.disks.iter().find(|d| d.boot).cloned() else {
        return StepResult::fail(code, "the VM has no boot disk");
    };
    let total = vm.disks.len() * 2 + 2;
    let mut done = 0usize;
    let mut advance = |what: String| {
        done += 1;
        ctx.progress.set((done * 100 / total) as u32, what.clone());
        ctx.note(what);
    };

    match cs.get_vm(&dest).await {
        Ok(Some(v)) if v.state() == Some(&VmState::Stopped) => {}
        Ok(Some(v)) => {
            return StepResult::fail(
                code,
                format!(
                    "destination VM {dest} is {}, not Stopped: its root disk cannot be swapped",
                    v.state().map(|s| s.as_str()).unwrap_or("unknown")
                ),
            );
        }
        Ok(None) => return StepResult::fail(code, format!("destination VM {dest} does not exist")),
        Err(e) => return e.into_failure(code, "looking up the destination VM"),
    }

    // 1. Every replicated volume leaves the appliance VM.
    for disk in &vm.disks {
        let volume = match cs.get_volume(&disk.cloudstack_volume_id).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                return StepResult::fail(
                    code,
                    format!(
                        "volume {} of disk {} does not exist",
                        disk.cloudstack_volume_id, disk.disk_id
                    ),
                );
            }
            Err(e) => return e.into_failure(code, "looking up a volume"),
        };
        match volume.virtual_machine_id.as_deref() {
            Some(owner) if owner == appliance => {
                if let Err(e) = cs.detach_volume(&volume.id).await {
                    return e.into_failure(
                        code,
                        &format!("detaching {} from the appliance", volume.id),
                    );
                }
                advance(format!(
                    "detached {} ({}) from the appliance VM",
                    volume.id, disk.disk_id
                ));
            }
            Some(owner) if owner == dest => {
                advance(format!(
                    "{} ({}) is already on the destination VM",
                    volume.id, disk.disk_id
                ));
            }
            Some(owner) => {
                return StepResult::fail(
                    code,
                    format!(
                        "volume {} of disk {} is attached to an unrelated VM {owner}",
                        volume.id, disk.disk_id
                    ),
                );
            }
            None => advance(format!("{} ({}) is detached", volume.id, disk.disk_id)),
        }
    }

    // 2. The template root disk goes, the boot disk becomes device 0.
    let attached = match cs
        .list_volumes(&VolumeFilter {
            virtual_machine_id: Some(dest.clone()),
            ..Default::default()
        })
        .await
    {
        Ok(v) => v,
        Err(e) => return e.into_failure(code, "listing the destination VM's volumes"),
    };
    let root = attached.iter().find(|v| v.device_id == Some(0));
    match root {
        Some(r) if r.id == boot.cloudstack_volume_id => {
            advance(format!("boot disk {} is already the root disk", r.id));
        }
        Some(r) => {
            if let Err(e) = cs.detach_volume(&r.id).await {
                return e.into_failure(code, &format!("detaching template root {}", r.id));
            }
            advance(format!("detached template root volume {}", r.id));
        }
        None => advance("the destination VM has no root disk yet".to_owned()),
    }
    if root.is_none_or(|r| r.id != boot.cloudstack_volume_id) {
        if let Err(e) = cs
            .attach_volume(&boot.cloudstack_volume_id, &dest, Some(0))
            .await
        {
            return e.into_failure(
                code,
                &format!("attaching boot disk {} as root", boot.cloudstack_volume_id),
            );
        }
        advance(format!(
            "attached boot disk {} as device 0",
            boot.cloudstack_volume_id
        ));
    }
    if let Some(template_root) = ctx.output(outputs::TEMPLATE_ROOT_VOLUME_ID) {
        match cs.get_volume(template_root).await {
            Ok(Some(v)) if v.virtual_machine_id.is_none() => {
                if let Err(e) = cs.delete_volume(template_root).await {
                    return e.into_failure(
                        code,
                        &format!("deleting template root volume {template_root}"),
                    );
                }
                ctx.note(format!(
                    "deleted the unused template root volume {template_root}"
                ));
            }
            Ok(_) => {}
            Err(e) => return e.into_failure(code, "looking up the template root volume"),
        }
    }

    // 3. Data disks, in order.
    for disk in vm.disks.iter().filter(|d| !d.boot) {
        if attached.iter().any(|v| v.id == disk.cloudstack_volume_id) {
            advance(format!(
                "data disk {} is already attached",
                disk.cloudstack_volume_id
            ));
            continue;
        }
        match cs
            .attach_volume(&disk.cloudstack_volume_id, &dest, None)
            .await
        {
            Ok(v) => advance(format!(
                "attached data disk {} as device {}",
                v.id,
                v.device_id
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "?".into())
            )),
            Err(e) => {
                return e.into_failure(
                    code,
                    &format!("attaching data disk {}", disk.cloudstack_volume_id),
                );
            }
        }
    }
    StepResult::done(format!(
        "{} volume(s) on VM {dest}, boot disk {} at device 0",
        vm.disks.len(),
        boot.cloudstack_volume_id
    ))
}
