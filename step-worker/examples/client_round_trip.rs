//! The worker's clients alone, against the two simulators (started by
//! `scripts/demo clients`): a LINSTOR snapshot, a CloudStack deploy with
//! `startvm=false`, the boot disk moved from the appliance VM to the new VM
//! as its root disk, start, VirtIO injection with the virt-customize
//! stand-in, then the way back: stop, destroy with expunge, the disk back on
//! the appliance, LINSTOR rollback and snapshot delete.
//!
//! Environment: FAILOVER_CLOUDSTACK__ENDPOINT, FAILOVER_LINSTOR__ENDPOINT,
//! FAILOVER_VIRT_CUSTOMIZE__COMMAND (see scripts/client-demo).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use failover_platform::Settings;
use step_worker::cloudstack::{CloudStackClient, DeployVmRequest, VolumeFilter};
use step_worker::linstor::LinstorClient;
use step_worker::virt_customize::VirtCustomize;

const APPLIANCE: &str = "55555555-0000-4000-8000-000000000001";
const BOOT_VOLUME: &str = "66666666-0000-4000-8000-000000000004";
const RESOURCE: &str = "pvc-pgtest1-disk0";
const TEST_NETWORK: &str = "44444444-0000-4000-8000-000000000001";

fn say(text: impl AsRef<str>) {
    println!("==> {}", text.as_ref());
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut settings = Settings::load(None)?;
    settings.cloudstack.async_poll_initial = Duration::from_millis(200);
    settings.cloudstack.async_poll_max = Duration::from_secs(1);
    let cs = CloudStackClient::new(&settings.cloudstack)?;
    let ls = LinstorClient::new(&settings.linstor)?;

    say(format!("CloudStack at {}", settings.cloudstack.endpoint));
    let zone = cs
        .list_zones()
        .await?
        .into_iter()
        .next()
        .context("no zone")?;
    println!("    zone {} ({})", zone.name, zone.id);
    let offering = cs
        .list_service_offerings()
        .await?
        .into_iter()
        .find(|o| o.cpu_number == Some(2))
        .context("no 2-CPU offering")?;
    println!(
        "    offering {} ({} CPU, {} MB)",
        offering.name,
        offering.cpu_number.unwrap_or(0),
        offering.memory.unwrap_or(0)
    );
    let template = cs
        .list_templates("featured", None)
        .await?
        .into_iter()
        .next()
        .context("no featured template")?;
    println!("    template {} ({})", template.name, template.id);

    say(format!("LINSTOR at {}", settings.linstor.endpoint));
    let version = ls.controller_version().await?;
    println!("    controller {}", version.version);
    let snapshot = format!("demo-{}", chrono::Utc::now().timestamp());
    let created = ls.create_snapshot(RESOURCE, &snapshot).await?;
    say(format!(
        "snapshot {RESOURCE}/{snapshot}: {:?}",
        created.outcome
    ));
    let again = ls.create_snapshot(RESOURCE, &snapshot).await?;
    say(format!(
        "the same snapshot again (a retried step): {:?}",
        again.outcome
    ));

    let request = DeployVmRequest {
        zone_id: zone.id.clone(),
        service_offering_id: offering.id.clone(),
        template_id: template.id.clone(),
        name: Some("pgtest1-demo".into()),
        display_name: Some("pgtest1 (client demo)".into()),
        network_ids: vec![TEST_NETWORK.into()],
        start_vm: false,
        custom_id: uuid::Uuid::new_v4(),
        details: BTreeMap::new(),
    };
    let vm = cs.deploy_vm(&request).await?;
    say(format!(
        "deployVirtualMachine startvm=false customid={} -> {} {}",
        request.custom_id,
        vm.name,
        vm.state().map(|s| s.as_str()).unwrap_or("?")
    ));
    let again = cs.deploy_vm(&request).await?;
    say(format!(
        "the same deploy again (same customid) -> the same VM {}",
        again.id
    ));

    let root = cs
        .list_volumes(&VolumeFilter {
            virtual_machine_id: Some(vm.id.clone()),
            volume_type: Some("ROOT".into()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .next()
        .context("the new VM has no root volume")?;
    cs.detach_volume(BOOT_VOLUME).await?;
    say(format!(
        "detached the replicated boot disk {BOOT_VOLUME} from the appliance"
    ));
    cs.detach_volume(&root.id).await?;
    say(format!("detached the template root volume {}", root.id));
    let attached = cs.attach_volume(BOOT_VOLUME, &vm.id, Some(0)).await?;
    say(format!(
        "attached {BOOT_VOLUME} to {} as device {:?}",
        vm.name, attached.device_id
    ));
    cs.delete_volume(&root.id).await?;
    say(format!("deleted the template root volume {}", root.id));

    let disk = std::env::temp_dir().join(format!("client-demo-{}.raw", std::process::id()));
    std::fs::write(&disk, b"disk")?;
    say(format!(
        "virt-customize --inject-virtio-win on {}",
        disk.display()
    ));
    let report = VirtCustomize::new(&settings.virt_customize)
        .inject_virtio(&disk, CancellationToken::new(), |line| {
            println!("    | {}", line.text)
        })
        .await?;
    say(format!("injected in {:.1}s", report.duration.as_secs_f64()));
    let _ = std::fs::remove_file(format!("{}.virtio-injected", disk.display()));
    let _ = std::fs::remove_file(&disk);

    let running = cs.start_vm(&vm.id).await?;
    let ip = running
        .nic
        .first()
        .and_then(|n| n.ip_address.clone())
        .unwrap_or_default();
    say(format!(
        "startVirtualMachine -> {} {} ip {ip}",
        running.name,
        running.state().map(|s| s.as_str()).unwrap_or("?")
    ));

    let stopped = cs.stop_vm(&vm.id, false).await?;
    say(format!(
        "stopVirtualMachine -> {}",
        stopped.state().map(|s| s.as_str()).unwrap_or("?")
    ));
    cs.detach_volume(BOOT_VOLUME).await?;
    cs.destroy_vm(&vm.id, true).await?;
    say(format!(
        "detached the boot disk, destroyVirtualMachine expunge=true: {} is gone",
        vm.name
    ));
    cs.attach_volume(BOOT_VOLUME, APPLIANCE, None).await?;
    say("the boot disk is back on the appliance VM");

    ls.rollback_snapshot(RESOURCE, &snapshot).await?;
    say(format!("rolled {RESOURCE} back to {snapshot}"));
    ls.delete_snapshot(RESOURCE, &snapshot).await?;
    let twice = ls.delete_snapshot(RESOURCE, &snapshot).await?;
    say(format!(
        "deleted the snapshot; deleting it again: {twice:?}"
    ));
    say("round trip complete");
    Ok(())
}
