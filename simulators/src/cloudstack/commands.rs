//! The command table and what every command handler shares: the request
//! parameters, required-parameter and id checks.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::errors::ApiError;
use super::jobs::{JobSpec, JobTiming};
use super::model::{Vm, Volume, World};
use super::{lists, vm_commands, volume_commands};

/// Request parameters: names lower-cased (the part after `details[0].`
/// keeps its case), values decoded.
pub type Params = BTreeMap<String, String>;

/// One command being handled.
#[derive(Debug)]
pub struct Request<'a> {
    /// The command's canonical name (`deployVirtualMachine`).
    pub command: &'static str,
    pub params: &'a Params,
    pub timing: JobTiming,
}

impl Request<'_> {
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.optional(name)
            .ok_or_else(|| ApiError::missing(self.command, name))
    }

    /// A boolean the way Java's `Boolean.parseBoolean` reads it.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        self.optional(name)
            .map_or(default, |v| v.eq_ignore_ascii_case("true"))
    }

    pub fn invalid(&self, name: &str, value: &str) -> ApiError {
        ApiError::invalid_id(self.command, name, value)
    }

    /// The VM named by the required parameter `name`.
    pub fn vm<'w>(&self, w: &'w World, name: &str) -> Result<&'w Vm, ApiError> {
        let id = self.required(name)?;
        w.vm(id).ok_or_else(|| self.invalid(name, id))
    }

    /// The volume named by the required parameter `name`.
    pub fn volume<'w>(&self, w: &'w World, name: &str) -> Result<&'w Volume, ApiError> {
        let id = self.required(name)?;
        w.volume(id).ok_or_else(|| self.invalid(name, id))
    }

    /// For list filters: `Ok(None)` without the parameter, `Ok(Some(id))`
    /// for an id that is or was in use, a 431 for one never seen.
    pub fn id_filter(&self, w: &World, name: &str) -> Result<Option<String>, ApiError> {
        match self.optional(name) {
            None => Ok(None),
            Some(id) if w.id_taken(id) => Ok(Some(id.to_owned())),
            Some(id) => Err(self.invalid(name, id)),
        }
    }

    /// Starts a job for this command; answers `{"jobid":..}` plus `"id"`
    /// for create-type commands.
    pub fn start_job(&self, w: &mut World, spec: JobSpec, created_id: Option<&str>) -> Value {
        let job_id = w.start_job(spec, self.timing);
        match created_id {
            Some(id) => json!({ "id": id, "jobid": job_id }),
            None => json!({ "jobid": job_id }),
        }
    }
}

pub type Handler = fn(&mut World, &Request<'_>) -> Result<Value, ApiError>;

/// Every command the simulator knows, by canonical name.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("listZones", lists::zones),
    ("listServiceOfferings", lists::service_offerings),
    ("listTemplates", lists::templates),
    ("listNetworks", lists::networks),
    ("listVirtualMachines", lists::virtual_machines),
    ("listVolumes", lists::volumes),
    ("listSnapshots", lists::snapshots),
    ("listVMSnapshot", lists::vm_snapshots),
    ("listAsyncJobs", lists::async_jobs),
    ("queryAsyncJobResult", lists::query_async_job),
    ("deployVirtualMachine", vm_commands::deploy),
    ("startVirtualMachine", vm_commands::start),
    ("stopVirtualMachine", vm_commands::stop),
    ("destroyVirtualMachine", vm_commands::destroy),
    ("createVMSnapshot", vm_commands::create_vm_snapshot),
    ("revertToVMSnapshot", vm_commands::revert_to_vm_snapshot),
    ("deleteVMSnapshot", vm_commands::delete_vm_snapshot),
    ("attachVolume", volume_commands::attach),
    ("detachVolume", volume_commands::detach),
    ("deleteVolume", volume_commands::delete),
    ("createSnapshot", volume_commands::create_snapshot),
];

/// The command called `name` (matched case-insensitively).
pub fn find(name: &str) -> Option<(&'static str, Handler)> {
    COMMANDS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .copied()
}
