//! `test-vm-creation` / `vm-creation`: the destination VM, created stopped
//! (`startvm=false`) so its root disk can be swapped, with a `customid`
//! derived from the job so a retried step finds the VM it already made
//! (`VM_CREATE_FAILED`).

use std::collections::BTreeMap;

use failover_core::ErrorCode;
use failover_core::pipeline::JobType;

use super::naming::{custom_id, destination_vm_name};
use super::{Executors, IntoStepFailure, StepContext, StepResult, outputs};
use crate::cloudstack::{CloudStackError, DeployVmRequest, ServiceOffering, VolumeFilter};

/// How many broken VMs one step replaces before it gives up.
const MAX_GENERATIONS: u32 = 3;

/// The smallest fixed offering with at least `cpus` and `memory_mb`.
pub(super) fn pick_offering(
    offerings: &[ServiceOffering],
    cpus: u32,
    memory_mb: u64,
) -> Option<&ServiceOffering> {
    offerings
        .iter()
        .filter(|o| o.is_customized != Some(true))
        .filter(|o| o.cpu_number.unwrap_or(0) >= cpus && o.memory.unwrap_or(0) >= memory_mb)
        .min_by_key(|o| (o.cpu_number.unwrap_or(0), o.memory.unwrap_or(0)))
}

/// The destination network of every NIC, in NIC order.
pub(super) fn network_ids(ctx: &StepContext) -> Result<Vec<String>, String> {
    ctx.vm()
        .nics
        .iter()
        .map(
            |nic| match ctx.task.network_mappings.get(&nic.source_network) {
                Some(id) if !id.is_empty() => Ok(id.clone()),
                _ => Err(format!(
                    "NIC {:?} has no destination network",
                    nic.source_network
                )),
            },
        )
        .collect()
}

pub(super) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let code = ErrorCode::VmCreateFailed;
    let vm = ctx.vm();
    let placement = ctx.placement();
    let test = ctx.task.job_type == JobType::Test.as_str();
    let cs = &exec.cloudstack;

    let networks = match network_ids(ctx) {
        Ok(ids) => ids,
        Err(problem) => return StepResult::fail(code, problem),
    };
    ctx.progress.set(10, "choosing a service offering");
    let offerings = match cs.list_service_offerings().await {
        Ok(o) => o,
        Err(e) => return e.into_failure(code, "listing service offerings"),
    };
    let Some(offering) = pick_offering(&offerings, vm.cpu_count, vm.memory_mb) else {
        return StepResult::fail(
            code,
            format!(
                "no service offering fits {} CPUs and {} MB of memory",
                vm.cpu_count, vm.memory_mb
            ),
        );
    };
    // Where each replicated volume sits on the appliance now, so that an
    // undo puts it back there. The volumes stay on the appliance until the
    // volume step, so a retried creation records the same devices.
    ctx.progress
        .set(20, "recording the volumes' devices on the appliance");
    let devices = match appliance_devices(exec, ctx, &placement.appliance_vm_id).await {
        Ok(devices) => devices,
        Err(e) => return e.into_failure(code, "listing the appliance VM's volumes"),
    };
    let name = destination_vm_name(&vm.vm_name, &ctx.task.job_id, test);
    let display_name = if test {
        format!("{} (test failover)", vm.vm_name)
    } else {
        vm.vm_name.clone()
    };
    let mut request = DeployVmRequest {
        zone_id: placement.zone_id.clone(),
        service_offering_id: offering.id.clone(),
        template_id: placement.template_id.clone(),
        name: Some(name.clone()),
        display_name: Some(display_name),
        network_ids: networks,
        start_vm: false,
        custom_id: custom_id(&ctx.task.job_id, 0),
        details: BTreeMap::new(),
    };
    ctx.progress.set(30, format!("deploying {name}"));
    let mut generation = 0;
    let created = loop {
        request.custom_id = custom_id(&ctx.task.job_id, generation);
        ctx.note(format!(
            "deploying {name} (customid {}) with offering {} ({})",
            request.custom_id, offering.name, offering.id
        ));
        match cs.deploy_vm(&request).await {
            Ok(vm) => break vm,
            Err(CloudStackError::DeployedVmUnusable { vm_id, state })
                if generation < MAX_GENERATIONS =>
            {
                // An earlier deploy left a broken VM under this customid:
                // remove it and deploy under the next one.
                ctx.note(format!(
                    "VM {vm_id} from an earlier deploy is {state}; expunging it"
                ));
                if let Err(e) = cs.destroy_vm(&vm_id, true).await
                    && !e.is_entity_not_found()
                {
                    return e.into_failure(code, "expunging a broken VM");
                }
            }
            Err(e) if e.is_already_exists() && generation < MAX_GENERATIONS => {
                ctx.note(format!(
                    "customid {} is used up; taking the next one",
                    request.custom_id
                ));
            }
            Err(e) => return e.into_failure(code, "deployVirtualMachine"),
        }
        generation += 1;
    };
    ctx.progress.set(80, "looking up the template root volume");
    let roots = match cs
        .list_volumes(&VolumeFilter {
            virtual_machine_id: Some(created.id.clone()),
            volume_type: Some("ROOT".into()),
            ..Default::default()
        })
        .await
    {
        Ok(v) => v,
        Err(e) => return e.into_failure(code, "listing the new VM's volumes"),
    };
    let mut made = BTreeMap::from([
        (outputs::DESTINATION_VM_ID.to_owned(), created.id.clone()),
        (
            outputs::DESTINATION_VM_NAME.to_owned(),
            created.name.clone(),
        ),
        (outputs::SERVICE_OFFERING_ID.to_owned(), offering.id.clone()),
    ]);
    made.extend(devices);
    // The root disk the template gave the VM; the volume step replaces it
    // with the boot disk. Absent when an earlier attempt already swapped it.
    let boot_volume = vm
        .disks
        .iter()
        .find(|d| d.boot)
        .map(|d| d.cloudstack_volume_id.clone());
    if let Some(root) = roots.iter().find(|r| Some(&r.id) != boot_volume.as_ref()) {
        made.insert(outputs::TEMPLATE_ROOT_VOLUME_ID.to_owned(), root.id.clone());
    } else if let Some(previous) = ctx.output(outputs::TEMPLATE_ROOT_VOLUME_ID) {
        made.insert(
            outputs::TEMPLATE_ROOT_VOLUME_ID.to_owned(),
            previous.to_owned(),
        );
    }
    ctx.note(format!(
        "VM {} ({}) is {}",
        created.name,
        created.id,
        created.state().map(|s| s.as_str()).unwrap_or("unknown")
    ));
    StepResult::Succeeded {
        message: format!("created VM {} ({})", created.name, created.id),
        outputs: made,
    }
}

/// `appliance_device:<disk_id>` = the device id of every disk volume that
/// is attached to the appliance VM now; a disk whose volume is elsewhere
/// keeps what an earlier step recorded, if anything. Each volume is looked
/// up by its id: the appliance may hold the volumes of a whole site.
async fn appliance_devices(
    exec: &Executors,
    ctx: &StepContext,
    appliance: &str,
) -> Result<BTreeMap<String, String>, CloudStackError> {
    let mut devices = BTreeMap::new();
    for disk in &ctx.vm().disks {
        let key = outputs::appliance_device(&disk.disk_id);
        let volume = if appliance.is_empty() {
            None
        } else {
            exec.cloudstack
                .get_volume(&disk.cloudstack_volume_id)
                .await?
        };
        let found = volume
            .filter(|v| v.virtual_machine_id.as_deref() == Some(appliance))
            .and_then(|v| v.device_id);
        match found {
            Some(device) => {
                ctx.note(format!(
                    "volume {} ({}) is device {device} of the appliance",
                    disk.cloudstack_volume_id, disk.disk_id
                ));
                devices.insert(key, device.to_string());
            }
            None => {
                if let Some(previous) = ctx.output(&key) {
                    devices.insert(key.clone(), previous.to_owned());
                }
            }
        }
    }
    Ok(devices)
}
