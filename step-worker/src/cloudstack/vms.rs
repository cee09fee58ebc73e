//! Virtual machines: listing, the retry-safe deploy, the lifecycle and VM
//! snapshots.

use std::time::Instant;

use super::client::CloudStackClient;
use super::error::CloudStackError;
use super::jobs::{job_entity, next_interval};
use super::types::{DeployVmRequest, VirtualMachine, VmFilter, VmSnapshot, VmState};
use super::wire::{Params, decode_list};

impl CloudStackClient {
    /// `listVirtualMachines` (`listall=true`) with the given filters.
    pub async fn list_vms(
        &self,
        filter: &VmFilter,
    ) -> Result<Vec<VirtualMachine>, CloudStackError> {
        const CMD: &str = "listVirtualMachines";
        let params = Params::new()
            .with("listall", "true")
            .with_opt("id", filter.id.as_deref())
            .with_opt("name", filter.name.as_deref())
            .with_opt("state", filter.state.as_deref());
        let inner = self.send_retried(CMD, &params).await?;
        decode_list(CMD, &inner, "virtualmachine")
    }

    /// The VM with `id`, or `None`. An id the server has never seen is
    /// refused with a 431 rather than answered with an empty list; both
    /// mean "no such VM" here.
    pub async fn get_vm(&self, id: &str) -> Result<Option<VirtualMachine>, CloudStackError> {
        let filter = VmFilter {
            id: Some(id.to_owned()),
            ..VmFilter::default()
        };
        match self.list_vms(&filter).await {
            Ok(vms) => Ok(vms.into_iter().find(|vm| vm.id == id)),
            Err(err) if err.is_entity_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `deployVirtualMachine`, safe to call again with the same request:
    ///
    /// 1. the VM is looked up by `custom_id` first, and returned if it exists;
    /// 2. the create is sent once; its job is awaited;
    /// 3. a 431 "already exists" (another attempt got there first) returns
    ///    the VM found under `custom_id`;
    /// 4. after an ambiguous failure (transport error, timeout, 5xx) or a
    ///    429 the VM is looked up again, and the create is sent again only
    ///    when it does not exist (backoff, at most `max_retries` times).
    ///
    /// A VM found by its id is returned once it has left a transitional
    /// state (`Starting`, `Stopping`); one that is `Error`, `Destroyed` or
    /// `Expunging` is [`CloudStackError::DeployedVmUnusable`].
    pub async fn deploy_vm(
        &self,
        request: &DeployVmRequest,
    ) -> Result<VirtualMachine, CloudStackError> {
        const CMD: &str = "deployVirtualMachine";
        let custom_id = request.custom_id.to_string();
        if let Some(vm) = self.get_vm(&custom_id).await? {
            tracing::info!(
                command = CMD,
                vm_id = custom_id.as_str(),
                "vm exists already, not creating it again"
            );
            return self.settled_vm(vm).await;
        }
        let params = deploy_params(request);
        let mut delays = self.backoff_delays();
        loop {
            let err = match self.submit_create(CMD, &params).await {
                Ok(submitted) => {
                    let job = self.wait_for_job(CMD, &submitted.job_id).await?;
                    return job_entity(CMD, &job, "virtualmachine");
                }
                Err(err) => err,
            };
            if err.is_already_exists() {
                return match self.get_vm(&custom_id).await? {
                    Some(vm) => {
                        tracing::info!(
                            command = CMD,
                            vm_id = custom_id.as_str(),
                            "another attempt created the vm"
                        );
                        self.settled_vm(vm).await
                    }
                    None => Err(err),
                };
            }
            if !err.is_retryable() {
                return Err(err);
            }
            if let Some(vm) = self.get_vm(&custom_id).await? {
                tracing::info!(command = CMD, vm_id = custom_id.as_str(), error = %err, "create reached the server despite the error");
                return self.settled_vm(vm).await;
            }
            let Some(delay) = delays.next() else {
                return Err(err);
            };
            tracing::warn!(
                command = CMD,
                vm_id = custom_id.as_str(),
                retry_in_ms = delay.as_millis() as u64,
                error = %err,
                "vm was not created, sending the create again"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Polls the VM until it leaves a transitional state, within the async
    /// job deadline; returns it as last seen, unless it is unusable.
    async fn settled_vm(&self, mut vm: VirtualMachine) -> Result<VirtualMachine, CloudStackError> {
        let started = Instant::now();
        let mut interval = self.timings.async_poll_initial;
        while vm.state().is_some_and(|s| s.is_transitional()) {
            let left = self
                .timings
                .async_job_deadline
                .saturating_sub(started.elapsed());
            if left.is_zero() {
                tracing::warn!(vm_id = vm.id.as_str(), state = %vm.state().map(|s| s.as_str()).unwrap_or(""), "vm still in a transitional state");
                break;
            }
            tokio::time::sleep(interval.min(left)).await;
            interval = next_interval(interval, self.timings.async_poll_max);
            match self.get_vm(&vm.id).await? {
                Some(now) => vm = now,
                None => break,
            }
        }
        match vm.state() {
            Some(state @ (VmState::Error | VmState::Destroyed | VmState::Expunging)) => {
                Err(CloudStackError::DeployedVmUnusable {
                    vm_id: vm.id.clone(),
                    state: state.to_string(),
                })
            }
            _ => Ok(vm),
        }
    }

    /// `startVirtualMachine`; the VM once it runs.
    pub async fn start_vm(&self, id: &str) -> Result<VirtualMachine, CloudStackError> {
        const CMD: &str = "startVirtualMachine";
        let job = self.run_async(CMD, &Params::new().with("id", id)).await?;
        job_entity(CMD, &job, "virtualmachine")
    }

    /// `stopVirtualMachine` (`forced` powers it off); the VM once stopped.
    pub async fn stop_vm(&self, id: &str, forced: bool) -> Result<VirtualMachine, CloudStackError> {
        const CMD: &str = "stopVirtualMachine";
        let params = Params::new()
            .with("id", id)
            .with_opt("forced", forced.then_some("true"));
        let job = self.run_async(CMD, &params).await?;
        job_entity(CMD, &job, "virtualmachine")
    }

    /// `destroyVirtualMachine`; with `expunge` the VM and its ROOT volume
    /// are removed at once. Data disks are detached either way. Returns the
    /// VM as the job reported it, when it did.
    pub async fn destroy_vm(
        &self,
        id: &str,
        expunge: bool,
    ) -> Result<Option<VirtualMachine>, CloudStackError> {
        const CMD: &str = "destroyVirtualMachine";
        let params = Params::new()
            .with("id", id)
            .with_opt("expunge", expunge.then_some("true"));
        let job = self.run_async(CMD, &params).await?;
        Ok(job_entity(CMD, &job, "virtualmachine").ok())
    }

    /// `listVMSnapshot` of one VM.
    pub async fn list_vm_snapshots(&self, vm_id: &str) -> Result<Vec<VmSnapshot>, CloudStackError> {
        const CMD: &str = "listVMSnapshot";
        let params = Params::new()
            .with("listall", "true")
            .with("virtualmachineid", vm_id);
        let inner = self.send_retried(CMD, &params).await?;
        decode_list(CMD, &inner, "vmSnapshot")
    }

    /// `createVMSnapshot` (disk only unless `with_memory`). A create: sent
    /// once; after an ambiguous failure list the VM's snapshots by `name`
    /// before trying again.
    pub async fn create_vm_snapshot(
        &self,
        vm_id: &str,
        name: Option<&str>,
        with_memory: bool,
    ) -> Result<VmSnapshot, CloudStackError> {
        const CMD: &str = "createVMSnapshot";
        let params = Params::new()
            .with("virtualmachineid", vm_id)
            .with_opt("name", name)
            .with_opt("snapshotmemory", with_memory.then_some("true"));
        let submitted = self.submit_create(CMD, &params).await?;
        let job = self.wait_for_job(CMD, &submitted.job_id).await?;
        job_entity(CMD, &job, "vmsnapshot")
    }

    /// `revertToVMSnapshot`; the VM after the revert.
    pub async fn revert_to_vm_snapshot(
        &self,
        vm_snapshot_id: &str,
    ) -> Result<VirtualMachine, CloudStackError> {
        const CMD: &str = "revertToVMSnapshot";
        let job = self
            .run_async(CMD, &Params::new().with("vmsnapshotid", vm_snapshot_id))
            .await?;
        job_entity(CMD, &job, "virtualmachine")
    }

    /// `deleteVMSnapshot`.
    pub async fn delete_vm_snapshot(&self, vm_snapshot_id: &str) -> Result<(), CloudStackError> {
        const CMD: &str = "deleteVMSnapshot";
        self.run_async(CMD, &Params::new().with("vmsnapshotid", vm_snapshot_id))
            .await?;
        Ok(())
    }
}

fn deploy_params(request: &DeployVmRequest) -> Params {
    let mut params = Params::new()
        .with("zoneid", &request.zone_id)
        .with("serviceofferingid", &request.service_offering_id)
        .with("templateid", &request.template_id)
        .with("customid", request.custom_id.to_string())
        .with("startvm", request.start_vm.to_string())
        .with_opt("name", request.name.as_deref())
        .with_opt("displayname", request.display_name.as_deref());
    if !request.network_ids.is_empty() {
        params.push("networkids", request.network_ids.join(","));
    }
    for (key, value) in &request.details {
        params.push(format!("details[0].{key}"), value);
    }
    params
}
