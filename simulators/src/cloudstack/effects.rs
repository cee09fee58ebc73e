//! The work of async jobs and the state rules they enforce. A rule is
//! checked when the command arrives (a broken rule makes a job that fails at
//! once, as the real server fails it early inside the job) and again when
//! the job ends, since the world may have changed in between.

use serde_json::{Value, json};

use super::errors::ApiError;
use super::model::{Vm, VmState, Volume, VolumeType, World, now_stamp};
use super::render;

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Ends the job with this error.
    Fail(ApiError),
    /// The VM was created when the command arrived; `start` boots it.
    Deploy {
        vm_id: String,
        start: bool,
    },
    Start {
        vm_id: String,
    },
    Stop {
        vm_id: String,
    },
    /// Answers the VM as it is (stopping a stopped VM).
    ReturnVm {
        vm_id: String,
    },
    Destroy {
        vm_id: String,
        expunge: bool,
        before: VmState,
    },
    Attach {
        volume_id: String,
        vm_id: String,
        device_id: Option<u32>,
    },
    Detach {
        volume_id: String,
    },
    Snapshot {
        snapshot_id: String,
    },
    VmSnapshot {
        vm_snapshot_id: String,
    },
    Revert {
        vm_snapshot_id: String,
    },
    DeleteVmSnapshot {
        vm_snapshot_id: String,
    },
}

fn wrong_state(action: &str, vm: &Vm) -> ApiError {
    ApiError::param(format!(
        "Unable to {action} VM {} ({}): it is in state {}",
        vm.id, vm.display_name, vm.state
    ))
}

fn has_vm_snapshots(w: &World, vm_id: &str) -> bool {
    w.vm_snapshots.iter().any(|s| s.vm_id == vm_id)
}

pub fn check_start(w: &World, vm: &Vm) -> Result<(), ApiError> {
    match vm.state {
        VmState::Stopped => {}
        VmState::Running => {
            return Err(ApiError::param(format!(
                "The virtual machine {} ({}) is already running",
                vm.id, vm.display_name
            )));
        }
        _ => return Err(wrong_state("start", vm)),
    }
    if w.root_volume_of(&vm.id).is_none() {
        return Err(ApiError::internal(format!(
            "Unable to start VM instance {}: it has no ROOT volume (device id 0) attached",
            vm.instance_name
        )));
    }
    Ok(())
}

/// `Ok(true)` when the VM must be stopped, `Ok(false)` when it is already.
pub fn check_stop(vm: &Vm) -> Result<bool, ApiError> {
    match vm.state {
        VmState::Running => Ok(true),
        VmState::Stopped => Ok(false),
        _ => Err(wrong_state("stop", vm)),
    }
}

pub fn check_destroy(vm: &Vm, expunge: bool) -> Result<(), ApiError> {
    match vm.state {
        VmState::Running | VmState::Stopped | VmState::Error => Ok(()),
        VmState::Destroyed if expunge => Ok(()),
        VmState::Destroyed => Err(ApiError::param(format!(
            "Vm with id {} is already destroyed",
            vm.id
        ))),
        _ => Err(wrong_state("destroy", vm)),
    }
}

const ROOT_STATE_RULE: &str =
    "Root volume detach can happen only when vm is in states: Stopped or Destroyed";

pub fn check_attach(
    w: &World,
    vol: &Volume,
    vm: &Vm,
    device_id: Option<u32>,
) -> Result<(), ApiError> {
    if vol.state == "Destroy" {
        return Err(ApiError::param(
            "Please specify a volume that is not destroyed.",
        ));
    }
    if vol.vm_id.is_some() {
        return Err(ApiError::in_use(
            "Please specify a volume that is not attached to any VM.",
        ));
    }
    if !matches!(vm.state, VmState::Running | VmState::Stopped) {
        return Err(ApiError::param(
            "Please specify a VM that is either running or stopped.",
        ));
    }
    if vm.zone_id != vol.zone_id {
        return Err(ApiError::param(
            "Please specify a VM that is in the same zone as the volume.",
        ));
    }
    if has_vm_snapshots(w, &vm.id) {
        return Err(ApiError::param(
            "Unable to attach volume, please specify a VM that does not have VM snapshots",
        ));
    }
    match device_id {
        Some(0) => {
            if vm.state != VmState::Stopped {
                return Err(ApiError::param(ROOT_STATE_RULE));
            }
            if w.root_volume_of(&vm.id).is_some() {
                return Err(ApiError::param("Vm already has root volume attached to it"));
            }
        }
        Some(dev)
            if w.attached_to(&vm.id)
                .iter()
                .any(|v| v.device_id == Some(dev)) =>
        {
            return Err(ApiError::internal(format!(
                "deviceId {dev} is used by vm {}",
                vm.id
            )));
        }
        _ => {}
    }
    Ok(())
}

pub fn check_detach(w: &World, vol: &Volume) -> Result<(), ApiError> {
    let Some(vm) = vol.vm_id.as_deref().and_then(|id| w.vm(id)) else {
        return Err(ApiError::param(
            "The specified volume is not attached to a VM.",
        ));
    };
    if !matches!(
        vm.state,
        VmState::Running | VmState::Stopped | VmState::Destroyed
    ) {
        return Err(ApiError::param(
            "Please specify a VM that is either running or stopped.",
        ));
    }
    let is_root = vol.volume_type == VolumeType::Root || vol.device_id == Some(0);
    if is_root && !matches!(vm.state, VmState::Stopped | VmState::Destroyed) {
        return Err(ApiError::param(ROOT_STATE_RULE));
    }
    if has_vm_snapshots(w, &vm.id) {
        return Err(ApiError::param(
            "Unable to detach volume, please specify a VM that does not have VM snapshots",
        ));
    }
    Ok(())
}

fn vm_result(w: &World, vm_id: &str) -> Result<Value, ApiError> {
    let vm = w
        .vm(vm_id)
        .ok_or_else(|| ApiError::internal(format!("Unable to find VM {vm_id}")))?;
    Ok(json!({ "virtualmachine": render::vm(w, vm) }))
}

fn volume_result(w: &World, volume_id: &str) -> Result<Value, ApiError> {
    let vol = w
        .volume(volume_id)
        .ok_or_else(|| ApiError::internal(format!("Unable to find volume {volume_id}")))?;
    Ok(json!({ "volume": render::volume(w, vol) }))
}

/// Marks the volumes of `vm_id` that are still `Allocated` as created.
fn materialize_volumes(w: &mut World, vm_id: &str) {
    for v in w
        .volumes
        .iter_mut()
        .filter(|v| v.vm_id.as_deref() == Some(vm_id))
    {
        if v.state == "Allocated" {
            v.state = "Ready".to_owned();
        }
    }
}

fn set_vm_state(w: &mut World, vm_id: &str, state: VmState) {
    if let Some(vm) = w.vm_mut(vm_id) {
        vm.state = state;
    }
}

/// Does the work of a job that ends now; the `jobresult` or the error.
pub fn apply(w: &mut World, effect: Effect) -> Result<Value, ApiError> {
    match effect {
        Effect::Fail(err) => Err(err),
        Effect::Deploy { vm_id, start } => {
            if start {
                materialize_volumes(w, &vm_id);
                set_vm_state(w, &vm_id, VmState::Running);
            }
            vm_result(w, &vm_id)
        }
        Effect::Start { vm_id } => {
            materialize_volumes(w, &vm_id);
            set_vm_state(w, &vm_id, VmState::Running);
            vm_result(w, &vm_id)
        }
        Effect::Stop { vm_id } => {
            set_vm_state(w, &vm_id, VmState::Stopped);
            vm_result(w, &vm_id)
        }
        Effect::ReturnVm { vm_id } => vm_result(w, &vm_id),
        Effect::Destroy { vm_id, expunge, .. } => Ok(destroy(w, &vm_id, expunge)),
        Effect::Attach {
            volume_id,
            vm_id,
            device_id,
        } => attach(w, &volume_id, &vm_id, device_id),
        Effect::Detach { volume_id } => {
            let vol = w
                .volume(&volume_id)
                .cloned()
                .ok_or_else(|| ApiError::internal("volume gone"))?;
            check_detach(w, &vol)?;
            if let Some(v) = w.volume_mut(&volume_id) {
                v.vm_id = None;
                v.device_id = None;
                v.attached = None;
                v.volume_type = VolumeType::DataDisk;
            }
            volume_result(w, &volume_id)
        }
        Effect::Snapshot { snapshot_id } => {
            let snap = w.snapshots.iter_mut().find(|s| s.id == snapshot_id);
            let snap = snap.ok_or_else(|| ApiError::internal("snapshot gone"))?;
            snap.state = "BackedUp".to_owned();
            Ok(json!({ "snapshot": render::snapshot(snap) }))
        }
        Effect::VmSnapshot { vm_snapshot_id } => {
            let vm_id = w
                .vm_snapshots
                .iter()
                .find(|s| s.id == vm_snapshot_id)
                .map(|s| s.vm_id.clone())
                .ok_or_else(|| ApiError::internal("vm snapshot gone"))?;
            make_current(w, &vm_id, &vm_snapshot_id, true);
            let snap = w.vm_snapshots.iter().find(|s| s.id == vm_snapshot_id);
            Ok(json!({ "vmsnapshot": snap.map(render::vm_snapshot) }))
        }
        Effect::Revert { vm_snapshot_id } => {
            let snap = w
                .vm_snapshots
                .iter()
                .find(|s| s.id == vm_snapshot_id)
                .cloned()
                .ok_or_else(|| ApiError::internal("vm snapshot gone"))?;
            make_current(w, &snap.vm_id, &snap.id, false);
            let after = if snap.kind == "DiskAndMemory" {
                VmState::Running
            } else {
                VmState::Stopped
            };
            set_vm_state(w, &snap.vm_id, after);
            vm_result(w, &snap.vm_id)
        }
        Effect::DeleteVmSnapshot { vm_snapshot_id } => {
            let World {
                vm_snapshots,
                removed,
                ..
            } = w;
            World::remove_where(vm_snapshots, removed, |s| &s.id, |s| s.id == vm_snapshot_id);
            Ok(json!({ "success": true }))
        }
    }
}

/// Makes `snapshot_id` the VM's current snapshot; a new one also becomes
/// `Ready` with the previous current one as its parent.
fn make_current(w: &mut World, vm_id: &str, snapshot_id: &str, new: bool) {
    let previous = w
        .vm_snapshots
        .iter()
        .find(|s| s.vm_id == vm_id && s.current && s.id != snapshot_id)
        .map(|s| s.id.clone());
    for s in w.vm_snapshots.iter_mut().filter(|s| s.vm_id == vm_id) {
        s.current = s.id == snapshot_id;
        if new && s.id == snapshot_id {
            s.state = "Ready".to_owned();
            s.parent = previous.clone();
        }
    }
}

fn attach(
    w: &mut World,
    volume_id: &str,
    vm_id: &str,
    device_id: Option<u32>,
) -> Result<Value, ApiError> {
    let vol = w
        .volume(volume_id)
        .cloned()
        .ok_or_else(|| ApiError::internal("volume gone"))?;
    let vm = w
        .vm(vm_id)
        .cloned()
        .ok_or_else(|| ApiError::internal("vm gone"))?;
    check_attach(w, &vol, &vm, device_id)?;
    let used: Vec<u32> = w
        .attached_to(vm_id)
        .iter()
        .filter_map(|v| v.device_id)
        .collect();
    let device = device_id.unwrap_or_else(|| (1..).find(|d| !used.contains(d)).unwrap_or(1));
    let running = vm.state == VmState::Running;
    if let Some(v) = w.volume_mut(volume_id) {
        v.vm_id = Some(vm_id.to_owned());
        v.device_id = Some(device);
        v.attached = Some(now_stamp());
        if device == 0 {
            v.volume_type = VolumeType::Root;
        }
        if running && v.state == "Allocated" {
            v.state = "Ready".to_owned();
        }
    }
    volume_result(w, volume_id)
}

/// Destroys the VM: data disks are detached; with `expunge` the VM, its
/// ROOT volume and its VM snapshots are removed, otherwise the VM stays
/// `Destroyed` and its ROOT volume goes to `Destroy`.
fn destroy(w: &mut World, vm_id: &str, expunge: bool) -> Value {
    for v in w
        .volumes
        .iter_mut()
        .filter(|v| v.vm_id.as_deref() == Some(vm_id))
    {
        if v.volume_type == VolumeType::DataDisk {
            v.vm_id = None;
            v.device_id = None;
            v.attached = None;
        } else {
            v.state = "Destroy".to_owned();
        }
    }
    let final_state = if expunge {
        VmState::Expunging
    } else {
        VmState::Destroyed
    };
    set_vm_state(w, vm_id, final_state);
    let result = vm_result(w, vm_id).unwrap_or_else(|_| json!({}));
    if expunge {
        let World {
            vms,
            volumes,
            vm_snapshots,
            removed,
            ..
        } = w;
        World::remove_where(
            volumes,
            removed,
            |v| &v.id,
            |v| v.vm_id.as_deref() == Some(vm_id),
        );
        World::remove_where(vm_snapshots, removed, |s| &s.id, |s| s.vm_id == vm_id);
        World::remove_where(vms, removed, |v| &v.id, |v| v.id == vm_id);
    }
    result
}

/// Undoes what a job did when it started, for a job that is made to fail
/// (fault `fail_async_job`): a failed deploy leaves the VM in `Error`, as
/// the real server does; a failed snapshot stays in `Error`.
pub fn roll_back(w: &mut World, effect: &Effect) {
    match effect {
        Effect::Deploy { vm_id, .. } => set_vm_state(w, vm_id, VmState::Error),
        Effect::Start { vm_id } => set_vm_state(w, vm_id, VmState::Stopped),
        Effect::Stop { vm_id } => set_vm_state(w, vm_id, VmState::Running),
        Effect::Destroy { vm_id, before, .. } => set_vm_state(w, vm_id, *before),
        Effect::Snapshot { snapshot_id } => {
            if let Some(s) = w.snapshots.iter_mut().find(|s| &s.id == snapshot_id) {
                s.state = "Error".to_owned();
            }
        }
        Effect::VmSnapshot { vm_snapshot_id } => {
            if let Some(s) = w.vm_snapshots.iter_mut().find(|s| &s.id == vm_snapshot_id) {
                s.state = "Error".to_owned();
            }
        }
        _ => {}
    }
}
