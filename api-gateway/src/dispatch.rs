//! The step task a dispatch publishes: everything a worker needs (the VM,
//! its disks and NICs, the network mappings, the placement and the outputs
//! of earlier steps), so workers never read the database.

use failover_core::job::JobRecord;
use failover_core::pipeline::StepName;
use failover_proto::v1 as pb;

/// The task of attempt `attempt` of `step` of `job`.
pub fn task(job: &JobRecord, step: StepName, attempt: u32) -> pb::StepTask {
    let ctx = &job.context;
    pb::StepTask {
        job_id: job.job_id.clone(),
        correlation_id: job.correlation_id.to_string(),
        step_name: step.as_str().to_owned(),
        attempt,
        job_type: job.job_type.as_str().to_owned(),
        vm: Some(pb::VmSpec {
            vm_id: ctx.vm_id.to_string(),
            vm_name: ctx.vm.vm_name.clone(),
            os_family: ctx.vm.os_family.as_str().to_owned(),
            cpu_count: ctx.vm.cpu_count,
            memory_mb: ctx.vm.memory_mb,
            disks: ctx
                .vm
                .disks
                .iter()
                .enumerate()
                .map(|(order, d)| pb::DiskSpec {
                    disk_id: d.disk_id.clone(),
                    cloudstack_volume_id: d.cloudstack_volume_id.clone(),
                    linstor_resource: d.linstor_resource.clone(),
                    device_path: d.device_path.clone(),
                    boot: d.boot,
                    order: u32::try_from(order).unwrap_or(u32::MAX),
                })
                .collect(),
            nics: ctx
                .vm
                .nics
                .iter()
                .map(|n| pb::NicSpec {
                    source_network: n.source_network.clone(),
                    test_network_id: n.test_network_id.clone().unwrap_or_default(),
                    live_network_id: n.live_network_id.clone().unwrap_or_default(),
                })
                .collect(),
        }),
        network_mappings: ctx
            .network_mappings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        outputs: job
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        snapshot_name: ctx.snapshot_name.clone().unwrap_or_default(),
        placement: Some(pb::Placement {
            zone_id: ctx.placement.zone_id.clone(),
            template_id: ctx.placement.template_id.clone(),
            appliance_vm_id: ctx.placement.appliance_vm_id.clone(),
        }),
    }
}
