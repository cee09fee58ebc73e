//! Volume commands: attach, detach, delete, volume snapshots.

use serde_json::{Value, json};

use super::commands::Request;
use super::effects::{self, Effect};
use super::errors::ApiError;
use super::jobs::JobSpec;
use super::model::{Snapshot, World, new_id, now_stamp};

fn volume_job(
    command: &'static str,
    cmd_class: &'static str,
    volume_id: &str,
    effect: Result<Effect, ApiError>,
) -> JobSpec {
    JobSpec {
        command,
        cmd_class,
        instance_type: Some("Volume"),
        instance_id: Some(volume_id.to_owned()),
        effect,
    }
}

pub fn attach(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let vol = req.volume(w, "id")?.clone();
    let vm = req.vm(w, "virtualmachineid")?.clone();
    let device_id = match req.optional("deviceid") {
        None => None,
        Some(raw) => Some(raw.parse::<u32>().map_err(|_| {
            ApiError::param(format!(
                "Unable to execute API command attachvolume due to invalid value. Invalid parameter deviceid value={raw} due to incorrect long value format"
            ))
        })?),
    };
    let effect = effects::check_attach(w, &vol, &vm, device_id).map(|()| Effect::Attach {
        volume_id: vol.id.clone(),
        vm_id: vm.id.clone(),
        device_id,
    });
    let spec = volume_job(
        req.command,
        "org.apache.cloudstack.api.command.user.volume.AttachVolumeCmd",
        &vol.id,
        effect,
    );
    Ok(req.start_job(w, spec, None))
}

pub fn detach(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let vol = req.volume(w, "id")?.clone();
    let effect = effects::check_detach(w, &vol).map(|()| Effect::Detach {
        volume_id: vol.id.clone(),
    });
    let spec = volume_job(
        req.command,
        "org.apache.cloudstack.api.command.user.volume.DetachVolumeCmd",
        &vol.id,
        effect,
    );
    Ok(req.start_job(w, spec, None))
}

/// Synchronous: `{"success":true}` at once, only for a detached volume.
pub fn delete(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let vol = req.volume(w, "id")?.clone();
    if vol.vm_id.is_some() {
        return Err(ApiError::param(
            "Please specify a volume that is not attached to any VM.",
        ));
    }
    let World {
        volumes, removed, ..
    } = w;
    World::remove_where(volumes, removed, |v| &v.id, |v| v.id == vol.id);
    Ok(json!({ "success": true }))
}

/// A create-type command: the snapshot exists (`Allocated`) at once.
pub fn create_snapshot(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let vol = req.volume(w, "volumeid")?.clone();
    if vol.state != "Ready" {
        return Err(ApiError::param(format!(
            "VolumeId: {} is not in Ready state but {}. Cannot take snapshot.",
            vol.id, vol.state
        )));
    }
    let vm_name = vol
        .vm_id
        .as_deref()
        .and_then(|id| w.vm(id))
        .map_or_else(|| "detached".to_owned(), |vm| vm.name.clone());
    let id = new_id();
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
    w.snapshots.push(Snapshot {
        id: id.clone(),
        name: req
            .optional("name")
            .map_or_else(|| format!("{vm_name}_{}_{stamp}", vol.name), str::to_owned),
        volume_id: vol.id.clone(),
        volume_name: vol.name.clone(),
        volume_type: vol.volume_type,
        zone_id: vol.zone_id.clone(),
        state: "Allocated".to_owned(),
        size: vol.size,
        created: now_stamp(),
    });
    let spec = JobSpec {
        command: req.command,
        cmd_class: "org.apache.cloudstack.api.command.user.snapshot.CreateSnapshotCmd",
        instance_type: Some("Snapshot"),
        instance_id: Some(id.clone()),
        effect: Ok(Effect::Snapshot {
            snapshot_id: id.clone(),
        }),
    };
    Ok(req.start_job(w, spec, Some(&id)))
}
