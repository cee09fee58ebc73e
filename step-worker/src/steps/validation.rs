//! `validation`: everything the failover needs exists, checked all at once so
//! the operator sees every problem (`VALIDATION_FAILED`).

use failover_core::ErrorCode;
use failover_core::pipeline::JobType;

use super::create_vm::pick_offering;
use super::{Executors, StepContext, StepResult};

pub(super) async fn run(exec: &Executors, ctx: &StepContext) -> StepResult {
    let vm = ctx.vm();
    let placement = ctx.placement();
    let cs = &exec.cloudstack;
    let mut problems: Vec<String> = Vec::new();
    // Calls that failed for a cause that may pass (CloudStack unreachable).
    let mut transient = false;
    let mut check = |ok: bool, problem: String| {
        if !ok {
            problems.push(problem);
        }
    };

    ctx.progress.set(5, "checking CloudStack");
    match cs.list_zones().await {
        Ok(zones) => check(
            zones.iter().any(|z| z.id == placement.zone_id),
            format!("zone {} does not exist in CloudStack", placement.zone_id),
        ),
        Err(e) => {
            transient |= e.is_retryable();
            check(false, format!("CloudStack does not answer: {e}"));
        }
    }
    match cs.list_templates("all", Some(&placement.template_id)).await {
        Ok(templates) => check(
            templates.iter().any(|t| t.id == placement.template_id),
            format!("template {} does not exist", placement.template_id),
        ),
        Err(e) if e.is_entity_not_found() || e.error_code() == Some(431) => check(
            false,
            format!("template {} does not exist", placement.template_id),
        ),
        Err(e) => {
            transient |= e.is_retryable();
            check(false, format!("cannot list templates: {e}"));
        }
    }
    ctx.progress.set(20, "checking the service offering");
    match cs.list_service_offerings().await {
        Ok(offerings) => check(
            pick_offering(&offerings, vm.cpu_count, vm.memory_mb).is_some(),
            format!(
                "no service offering fits {} CPUs and {} MB of memory",
                vm.cpu_count, vm.memory_mb
            ),
        ),
        Err(e) => {
            transient |= e.is_retryable();
            check(false, format!("cannot list service offerings: {e}"));
        }
    }

    ctx.progress.set(40, "checking networks");
    let kind = if ctx.task.job_type == JobType::Live.as_str() {
        "live"
    } else {
        "test"
    };
    match cs.list_networks(Some(&placement.zone_id)).await {
        Ok(networks) => {
            for nic in &vm.nics {
                match ctx.task.network_mappings.get(&nic.source_network) {
                    Some(id) if !id.is_empty() => check(
                        networks.iter().any(|n| &n.id == id),
                        format!(
                            "network {id} mapped for NIC {:?} does not exist in the zone",
                            nic.source_network
                        ),
                    ),
                    _ => check(
                        false,
                        format!("NIC {:?} has no {kind} network mapping", nic.source_network),
                    ),
                }
            }
        }
        Err(e) => {
            transient |= e.is_retryable();
            check(false, format!("cannot list networks: {e}"));
        }
    }
    ctx.progress.set(60, "checking volumes");
    for disk in &vm.disks {
        match cs.get_volume(&disk.cloudstack_volume_id).await {
            Ok(Some(volume)) => match volume.virtual_machine_id.as_deref() {
                None => {}
                Some(owner) if owner == placement.appliance_vm_id => {}
                Some(owner) => check(
                    false,
                    format!(
                        "volume {} of disk {} is attached to VM {owner}, not to the appliance {}",
                        disk.cloudstack_volume_id, disk.disk_id, placement.appliance_vm_id
                    ),
                ),
            },
            Ok(None) => check(
                false,
                format!(
                    "volume {} of disk {} does not exist in CloudStack",
                    disk.cloudstack_volume_id, disk.disk_id
                ),
            ),
            Err(e) => {
                transient |= e.is_retryable();
                check(
                    false,
                    format!("cannot look up volume {}: {e}", disk.cloudstack_volume_id),
                );
            }
        }
    }

    ctx.progress
        .set(80, "checking LINSTOR resource definitions");
    for disk in &vm.disks {
        match exec
            .linstor
            .get_resource_definition(&disk.linstor_resource)
            .await
        {
            Ok(_) => {}
            Err(e) if e.http_status() == Some(404) => check(
                false,
                format!(
                    "LINSTOR resource definition {} of disk {} does not exist",
                    disk.linstor_resource, disk.disk_id
                ),
            ),
            Err(e) => {
                transient |= e.is_retryable();
                check(
                    false,
                    format!(
                        "cannot look up LINSTOR resource {}: {e}",
                        disk.linstor_resource
                    ),
                );
            }
        }
    }

    if problems.is_empty() {
        ctx.note("every check passed");
        return StepResult::done(format!(
            "validated {} disk(s) and {} NIC(s)",
            vm.disks.len(),
            vm.nics.len()
        ));
    }
    for problem in &problems {
        ctx.note(format!("check failed: {problem}"));
    }
    StepResult::Failed {
        code: ErrorCode::ValidationFailed,
        message: format!(
            "{} check(s) failed: {}",
            problems.len(),
            problems.join("; ")
        ),
        retryable: transient,
    }
}
