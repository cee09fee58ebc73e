//! VM commands: deploy (with its synchronous create phase), start, stop,
//! destroy, VM snapshots.

use std::collections::BTreeMap;

use serde_json::Value;

use super::commands::Request;
use super::effects::{self, Effect};
use super::errors::ApiError;
use super::jobs::JobSpec;
use super::model::{
    HOSTNAME_RULE, NETWORK_DOMAIN, Vm, VmSnapshot, VmState, Volume, VolumeType, World, is_uuid,
    new_id, now_stamp, valid_hostname,
};

fn vm_job(
    command: &'static str,
    cmd_class: &'static str,
    vm_id: &str,
    effect: Result<Effect, ApiError>,
) -> JobSpec {
    JobSpec {
        command,
        cmd_class,
        instance_type: Some("VirtualMachine"),
        instance_id: Some(vm_id.to_owned()),
        effect,
    }
}

/// `details[0].cpuNumber=2` → `cpuNumber: 2`.
fn details(req: &Request<'_>) -> BTreeMap<String, String> {
    req.params
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("details[")?;
            let (_, key) = rest.split_once("].")?;
            Some((key.to_owned(), v.clone()))
        })
        .collect()
}

/// The create phase runs before the job (as `BaseAsyncCreateCmd.create`
/// does): every parameter error is a synchronous 431 and the VM exists,
/// `Stopped`, when the answer (`id`, `jobid`) leaves.
pub fn deploy(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let zone_id = req.required("zoneid")?;
    let offering_id = req.required("serviceofferingid")?;
    if req.optional("volumeid").is_some() || req.optional("snapshotid").is_some() {
        return Err(ApiError::param(
            "The simulator deploys from templateid only, not from volumeid or snapshotid",
        ));
    }
    let template_id = req.required("templateid")?;
    if !w.zones.iter().any(|z| z.id == zone_id) {
        return Err(req.invalid("zoneid", zone_id));
    }
    if !w.offerings.iter().any(|o| o.id == offering_id) {
        return Err(req.invalid("serviceofferingid", offering_id));
    }
    let template = w
        .templates
        .iter()
        .find(|t| t.id == template_id)
        .cloned()
        .ok_or_else(|| req.invalid("templateid", template_id))?;
    if template.zone_id != zone_id {
        return Err(ApiError::param(format!(
            "Template {} is not available in zone {zone_id}",
            template.name
        )));
    }
    let vm_id = match req.optional("customid") {
        None => new_id(),
        Some(custom) if !is_uuid(custom) => {
            return Err(ApiError::param(format!(
                "UUID: {custom} doesn't follow the UUID format"
            )));
        }
        Some(custom) if w.id_taken(custom) => {
            return Err(ApiError::param(format!(
                "UUID: {custom} already exists so can't create/update with custom id"
            )));
        }
        Some(custom) => custom.to_owned(),
    };
    let network_ids = networks_for(w, req, zone_id)?;
    let name = match req.optional("name") {
        Some(name) if !valid_hostname(name) => return Err(ApiError::param(HOSTNAME_RULE)),
        Some(name) => name.to_owned(),
        None => format!("VM-{vm_id}"),
    };
    for network_id in &network_ids {
        if w.hostname_taken(network_id, &name) {
            let network = w
                .network(network_id)
                .map(|n| n.name.clone())
                .unwrap_or_default();
            return Err(ApiError::param(format!(
                "The vm with hostName {name} already exists in the network domain: {NETWORK_DOMAIN}; network={network}"
            )));
        }
    }
    let mut nics = Vec::new();
    for (i, network_id) in network_ids.iter().enumerate() {
        let nic = w.new_nic(network_id, i == 0).ok_or_else(|| ApiError {
            code: 533,
            cs_code: Some(4320),
            text: format!("Insufficient address capacity in network {network_id}"),
        })?;
        nics.push(nic);
    }
    let seq = w.seq();
    let start = req.flag("startvm", true);
    w.vms.push(Vm {
        id: vm_id.clone(),
        name: name.clone(),
        display_name: req.optional("displayname").unwrap_or(&name).to_owned(),
        state: if start {
            VmState::Starting
        } else {
            VmState::Stopped
        },
        zone_id: zone_id.to_owned(),
        offering_id: offering_id.to_owned(),
        template_id: Some(template.id.clone()),
        nics,
        details: details(req),
        instance_name: format!("i-2-{seq}-VM"),
        created: now_stamp(),
    });
    w.volumes.push(Volume {
        id: new_id(),
        name: format!("ROOT-{seq}"),
        volume_type: VolumeType::Root,
        zone_id: zone_id.to_owned(),
        size: template.size,
        vm_id: Some(vm_id.clone()),
        device_id: Some(0),
        state: "Allocated".to_owned(),
        created: now_stamp(),
        attached: Some(now_stamp()),
    });
    let spec = vm_job(
        req.command,
        "org.apache.cloudstack.api.command.admin.vm.DeployVMCmdByAdmin",
        &vm_id,
        Ok(Effect::Deploy {
            vm_id: vm_id.clone(),
            start,
        }),
    );
    Ok(req.start_job(w, spec, Some(&vm_id)))
}

/// The networks of a new VM: `networkids`, or the zone's only network.
fn networks_for(w: &World, req: &Request<'_>, zone_id: &str) -> Result<Vec<String>, ApiError> {
    let Some(list) = req.optional("networkids") else {
        let in_zone: Vec<&str> = w
            .networks
            .iter()
            .filter(|n| n.zone_id == zone_id)
            .map(|n| n.id.as_str())
            .collect();
        return match in_zone.as_slice() {
            [only] => Ok(vec![(*only).to_owned()]),
            _ => Err(ApiError::param(
                "More than 1 default Isolated networks are found for account admin; please specify networkIds",
            )),
        };
    };
    let mut ids: Vec<String> = Vec::new();
    for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let network = w.network(id).ok_or_else(|| req.invalid("networkids", id))?;
        if network.zone_id != zone_id {
            return Err(ApiError::param(format!(
                "Network {} doesn't belong to zone {zone_id}",
                network.name
            )));
        }
        if !ids.iter().any(|x| x == id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

pub fn start(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let vm = req.vm(w, "id")?.clone();
    let effect = effects::check_start(w, &vm).map(|()| Effect::Start {
        vm_id: vm.id.clone(),
    });
    if effect.is_ok() {
        set_state(w, &vm.id, VmState::Starting);
    }
    let spec = vm_job(
        req.command,
        "org.apache.cloudstack.api.command.admin.vm.StartVMCmdByAdmin",
        &vm.id,
        effect,
    );
    Ok(req.start_job(w, spec, None))
}

pub fn stop(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let vm = req.vm(w, "id")?.clone();
    let effect = match effects::check_stop(&vm) {
        Ok(true) => {
            set_state(w, &vm.id, VmState::Stopping);
            Ok(Effect::Stop {
                vm_id: vm.id.clone(),
            })
        }
        Ok(false) => Ok(Effect::ReturnVm {
            vm_id: vm.id.clone(),
        }),
        Err(err) => Err(err),
    };
    let spec = vm_job(
        req.command,
        "org.apache.cloudstack.api.command.admin.vm.StopVMCmdByAdmin",
        &vm.id,
        effect,
    );
    Ok(req.start_job(w, spec, None))
}

pub fn destroy(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let vm = req.vm(w, "id")?.clone();
    let expunge = req.flag("expunge", false);
    let effect = effects::check_destroy(&vm, expunge).map(|()| Effect::Destroy {
        vm_id: vm.id.clone(),
        expunge,
        before: vm.state,
    });
    if effect.is_ok() && vm.state == VmState::Running {
        set_state(w, &vm.id, VmState::Stopping);
    }
    let spec = vm_job(
        req.command,
        "org.apache.cloudstack.api.command.admin.vm.DestroyVMCmdByAdmin",
        &vm.id,
        effect,
    );
    Ok(req.start_job(w, spec, None))
}

fn set_state(w: &mut World, vm_id: &str, state: VmState) {
    if let Some(vm) = w.vm_mut(vm_id) {
        vm.state = state;
    }
}

/// A create-type command: the snapshot exists (`Allocated`) at once.
pub fn create_vm_snapshot(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let vm = req.vm(w, "virtualmachineid")?.clone();
    let memory = req.flag("snapshotmemory", false);
    if !matches!(vm.state, VmState::Running | VmState::Stopped) {
        return Err(ApiError::param(format!(
            "Creating VM snapshot failed due to VM:{} is a system VM or does not exist or in {} state",
            vm.id, vm.state
        )));
    }
    if memory && vm.state != VmState::Running {
        return Err(ApiError::param(
            "Can not snapshot memory when VM is not in Running state",
        ));
    }
    let id = new_id();
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let name = format!("{}_VS_{stamp}", vm.instance_name);
    w.vm_snapshots.push(VmSnapshot {
        id: id.clone(),
        name: name.clone(),
        display_name: req.optional("name").unwrap_or(&name).to_owned(),
        vm_id: vm.id.clone(),
        zone_id: vm.zone_id.clone(),
        kind: if memory { "DiskAndMemory" } else { "Disk" },
        state: "Allocated".to_owned(),
        current: false,
        parent: None,
        created: now_stamp(),
    });
    let spec = JobSpec {
        command: req.command,
        cmd_class: "org.apache.cloudstack.api.command.user.vmsnapshot.CreateVMSnapshotCmd",
        instance_type: Some("VmSnapshot"),
        instance_id: Some(id.clone()),
        effect: Ok(Effect::VmSnapshot {
            vm_snapshot_id: id.clone(),
        }),
    };
    Ok(req.start_job(w, spec, Some(&id)))
}

fn vm_snapshot<'w>(w: &'w World, req: &Request<'_>) -> Result<&'w VmSnapshot, ApiError> {
    let id = req.required("vmsnapshotid")?;
    w.vm_snapshots
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| req.invalid("vmsnapshotid", id))
}

pub fn revert_to_vm_snapshot(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let snap = vm_snapshot(w, req)?.clone();
    let vm_state = w.vm(&snap.vm_id).map(|vm| vm.state);
    let effect = if snap.state != "Ready" {
        Err(ApiError::param(format!(
            "VM Snapshot {} is not in Ready state, cannot revert to it",
            snap.name
        )))
    } else if snap.kind == "Disk" && vm_state != Some(VmState::Stopped) {
        Err(ApiError::param(
            "VM Snapshot revert not allowed. This will result in VM state change. You can revert running VM to disk and memory type snapshot and stopped VM to disk type snapshot",
        ))
    } else if !matches!(vm_state, Some(VmState::Running | VmState::Stopped)) {
        Err(ApiError::param(
            "VM Snapshot reverting failed due to vm is not in the state of Running or Stopped.",
        ))
    } else {
        Ok(Effect::Revert {
            vm_snapshot_id: snap.id.clone(),
        })
    };
    let spec = vm_job(
        req.command,
        "org.apache.cloudstack.api.command.user.vmsnapshot.RevertToVMSnapshotCmd",
        &snap.vm_id,
        effect,
    );
    Ok(req.start_job(w, spec, None))
}

pub fn delete_vm_snapshot(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let snap = vm_snapshot(w, req)?.clone();
    let effect = if snap.state == "Ready" || snap.state == "Error" {
        Ok(Effect::DeleteVmSnapshot {
            vm_snapshot_id: snap.id.clone(),
        })
    } else {
        Err(ApiError::param(format!(
            "There is other active vm snapshot tasks on the instance {}, please try again later",
            snap.vm_id
        )))
    };
    let spec = JobSpec {
        command: req.command,
        cmd_class: "org.apache.cloudstack.api.command.user.vmsnapshot.DeleteVMSnapshotCmd",
        instance_type: Some("VmSnapshot"),
        instance_id: Some(snap.id.clone()),
        effect,
    };
    Ok(req.start_job(w, spec, None))
}
