//! Volumes: listing, moving them between VMs, deleting, snapshots.

use super::client::CloudStackClient;
use super::error::CloudStackError;
use super::jobs::job_entity;
use super::types::{Snapshot, Volume, VolumeFilter};
use super::wire::{Params, decode_list};

impl CloudStackClient {
    /// `listVolumes` (`listall=true`) with the given filters.
    pub async fn list_volumes(
        &self,
        filter: &VolumeFilter,
    ) -> Result<Vec<Volume>, CloudStackError> {
        const CMD: &str = "listVolumes";
        let params = Params::new()
            .with("listall", "true")
            .with_opt("id", filter.id.as_deref())
            .with_opt("virtualmachineid", filter.virtual_machine_id.as_deref())
            .with_opt("type", filter.volume_type.as_deref());
        let inner = self.send_retried(CMD, &params).await?;
        decode_list(CMD, &inner, "volume")
    }

    /// The volume with `id`, or `None` (an unknown id is a 431 on the wire).
    pub async fn get_volume(&self, id: &str) -> Result<Option<Volume>, CloudStackError> {
        let filter = VolumeFilter {
            id: Some(id.to_owned()),
            ..VolumeFilter::default()
        };
        match self.list_volumes(&filter).await {
            Ok(volumes) => Ok(volumes.into_iter().find(|v| v.id == id)),
            Err(err) if err.is_entity_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `attachVolume`: `device_id` 0 attaches it as the root disk (the VM
    /// must be stopped and have no root disk); `None` takes the next free
    /// data-disk slot. Returns the volume once attached.
    pub async fn attach_volume(
        &self,
        volume_id: &str,
        vm_id: &str,
        device_id: Option<u32>,
    ) -> Result<Volume, CloudStackError> {
        const CMD: &str = "attachVolume";
        let params = Params::new()
            .with("id", volume_id)
            .with("virtualmachineid", vm_id)
            .with_opt("deviceid", device_id.map(|d| d.to_string()));
        let job = self.run_async(CMD, &params).await?;
        job_entity(CMD, &job, "volume")
    }

    /// `detachVolume`; a root disk only while its VM is stopped. Returns
    /// the volume once detached.
    pub async fn detach_volume(&self, volume_id: &str) -> Result<Volume, CloudStackError> {
        const CMD: &str = "detachVolume";
        let job = self
            .run_async(CMD, &Params::new().with("id", volume_id))
            .await?;
        job_entity(CMD, &job, "volume")
    }

    /// `deleteVolume` (sync); only a detached volume.
    pub async fn delete_volume(&self, volume_id: &str) -> Result<(), CloudStackError> {
        const CMD: &str = "deleteVolume";
        self.send_retried(CMD, &Params::new().with("id", volume_id))
            .await?;
        Ok(())
    }

    /// `listSnapshots` of one volume.
    pub async fn list_snapshots(&self, volume_id: &str) -> Result<Vec<Snapshot>, CloudStackError> {
        const CMD: &str = "listSnapshots";
        let params = Params::new()
            .with("listall", "true")
            .with("volumeid", volume_id);
        let inner = self.send_retried(CMD, &params).await?;
        decode_list(CMD, &inner, "snapshot")
    }

    /// `createSnapshot` of a volume. A create: sent once; after an
    /// ambiguous failure list the volume's snapshots before trying again.
    pub async fn create_volume_snapshot(
        &self,
        volume_id: &str,
        name: Option<&str>,
    ) -> Result<Snapshot, CloudStackError> {
        const CMD: &str = "createSnapshot";
        let params = Params::new()
            .with("volumeid", volume_id)
            .with_opt("name", name);
        let submitted = self.submit_create(CMD, &params).await?;
        let job = self.wait_for_job(CMD, &submitted.job_id).await?;
        job_entity(CMD, &job, "snapshot")
    }
}
