//! The synchronous reads: `list*` and `queryAsyncJobResult`. A filter by id
//! that names nothing ever seen is a 431 (the server translates UUIDs
//! first); an id of something removed gives an empty list.

use serde_json::Value;

use super::commands::Request;
use super::errors::ApiError;
use super::jobs;
use super::model::World;
use super::render;

fn matches(filter: Option<&str>, value: &str) -> bool {
    filter.is_none_or(|f| f == value)
}

fn matches_ci(filter: Option<&str>, value: &str) -> bool {
    filter.is_none_or(|f| f.eq_ignore_ascii_case(value))
}

pub fn zones(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let id = req.id_filter(w, "id")?;
    let items = w
        .zones
        .iter()
        .filter(|z| matches(id.as_deref(), &z.id) && matches_ci(req.optional("name"), &z.name))
        .map(render::zone)
        .collect();
    Ok(render::list("zone", items))
}

pub fn service_offerings(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let id = req.id_filter(w, "id")?;
    let items = w
        .offerings
        .iter()
        .filter(|o| matches(id.as_deref(), &o.id) && matches_ci(req.optional("name"), &o.name))
        .map(render::offering)
        .collect();
    Ok(render::list("serviceoffering", items))
}

pub fn templates(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let filter = req.required("templatefilter")?.to_ascii_lowercase();
    let featured_only = match filter.as_str() {
        "featured" => Some(true),
        "community" => Some(false),
        "self" | "selfexecutable" | "sharedexecutable" | "executable" | "all" | "shared" => None,
        _ => return Err(ApiError::param("Please specify a valid template filter")),
    };
    let id = req.id_filter(w, "id")?;
    let zone = req.id_filter(w, "zoneid")?;
    let items = w
        .templates
        .iter()
        .filter(|t| featured_only.is_none_or(|f| t.featured == f))
        .filter(|t| matches(id.as_deref(), &t.id) && matches(zone.as_deref(), &t.zone_id))
        .map(|t| render::template(w, t))
        .collect();
    Ok(render::list("template", items))
}

pub fn networks(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let id = req.id_filter(w, "id")?;
    let zone = req.id_filter(w, "zoneid")?;
    let items = w
        .networks
        .iter()
        .filter(|n| matches(id.as_deref(), &n.id) && matches(zone.as_deref(), &n.zone_id))
        .map(|n| render::network(w, n))
        .collect();
    Ok(render::list("network", items))
}

pub fn virtual_machines(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let id = req.id_filter(w, "id")?;
    let zone = req.id_filter(w, "zoneid")?;
    let network = req.id_filter(w, "networkid")?;
    let items = w
        .vms
        .iter()
        .filter(|vm| {
            matches(id.as_deref(), &vm.id)
                && matches(zone.as_deref(), &vm.zone_id)
                && matches_ci(req.optional("name"), &vm.name)
                && matches_ci(req.optional("state"), &vm.state.to_string())
                && network
                    .as_deref()
                    .is_none_or(|n| vm.nics.iter().any(|nic| nic.network_id == n))
        })
        .map(|vm| render::vm(w, vm))
        .collect();
    Ok(render::list("virtualmachine", items))
}

pub fn volumes(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let id = req.id_filter(w, "id")?;
    let vm = req.id_filter(w, "virtualmachineid")?;
    let zone = req.id_filter(w, "zoneid")?;
    let items = w
        .volumes
        .iter()
        .filter(|v| {
            matches(id.as_deref(), &v.id)
                && matches(zone.as_deref(), &v.zone_id)
                && vm
                    .as_deref()
                    .is_none_or(|vm| v.vm_id.as_deref() == Some(vm))
                && matches_ci(req.optional("type"), v.volume_type.as_str())
                && matches_ci(req.optional("name"), &v.name)
        })
        .map(|v| render::volume(w, v))
        .collect();
    Ok(render::list("volume", items))
}

pub fn snapshots(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let id = req.id_filter(w, "id")?;
    let volume = req.id_filter(w, "volumeid")?;
    let items = w
        .snapshots
        .iter()
        .filter(|s| matches(id.as_deref(), &s.id) && matches(volume.as_deref(), &s.volume_id))
        .map(render::snapshot)
        .collect();
    Ok(render::list("snapshot", items))
}

pub fn vm_snapshots(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let id = req.id_filter(w, "vmsnapshotid")?;
    let vm = req.id_filter(w, "virtualmachineid")?;
    let items = w
        .vm_snapshots
        .iter()
        .filter(|s| matches(id.as_deref(), &s.id) && matches(vm.as_deref(), &s.vm_id))
        .map(render::vm_snapshot)
        .collect();
    Ok(render::list("vmSnapshot", items))
}

pub fn async_jobs(w: &mut World, _req: &Request<'_>) -> Result<Value, ApiError> {
    let items = w.jobs.iter().rev().map(jobs::render).collect();
    Ok(render::list("asyncjobs", items))
}

pub fn query_async_job(w: &mut World, req: &Request<'_>) -> Result<Value, ApiError> {
    let id = req.required("jobid")?;
    w.jobs
        .iter()
        .find(|j| j.id == id)
        .map(jobs::render)
        .ok_or_else(|| req.invalid("jobid", id))
}
