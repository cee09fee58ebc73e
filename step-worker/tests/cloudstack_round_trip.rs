//! The failover's use of CloudStack end to end, real client against the
//! simulator: deploy a stopped VM, swap its root disk for a replica taken
//! from the appliance, start, stop, hand the disks back, destroy.

mod cloudstack_support;

use cloudstack_support::*;
use step_worker::cloudstack::{VmFilter, VmState, VolumeFilter, VolumeType};

#[tokio::test]
async fn catalog_of_the_demo_scenario() {
    let h = start().await;
    let zones = h.client.list_zones().await.expect("zones");
    assert_eq!(zones.len(), 1);
    assert_eq!(zones[0].id, DEMO_ZONE_ID);
    let offerings = h.client.list_service_offerings().await.expect("offerings");
    let sizes: Vec<_> = offerings.iter().map(|o| (o.cpu_number, o.memory)).collect();
    assert_eq!(
        sizes,
        [
            (Some(1), Some(1024)),
            (Some(2), Some(4096)),
            (Some(4), Some(8192))
        ]
    );
    let featured = h
        .client
        .list_templates("featured", None)
        .await
        .expect("templates");
    assert_eq!(featured.len(), 1);
    assert_eq!(featured[0].id, DEMO_TEMPLATE_ID);
    let by_id = h
        .client
        .list_templates("all", Some(DEMO_TEMPLATE_ID))
        .await
        .expect("template by id");
    assert_eq!(by_id.len(), 1);
    let networks = h
        .client
        .list_networks(Some(DEMO_ZONE_ID))
        .await
        .expect("networks");
    let names: Vec<_> = networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "failover-test",
            "failover-live",
            "VM Network",
            "failover-mgmt"
        ]
    );
    let appliance_disks = h
        .client
        .list_volumes(&VolumeFilter {
            virtual_machine_id: Some(DEMO_APPLIANCE_VM_ID.to_owned()),
            volume_type: Some("DATADISK".to_owned()),
            ..VolumeFilter::default()
        })
        .await
        .expect("appliance disks");
    let ids: Vec<_> = appliance_disks.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            DEMO_WIN_BOOT_VOLUME_ID,
            DEMO_WIN_DATA_VOLUME_ID,
            DEMO_PG_BOOT_VOLUME_ID
        ]
    );
}

#[tokio::test]
async fn failover_round_trip_swaps_the_root_disk() {
    let h = start().await;
    let c = &h.client;

    // Deploy stopped, so that the root disk can be swapped first.
    let request = deploy_request("win2019-app", false);
    let vm = c.deploy_vm(&request).await.expect("deploy");
    assert_eq!(vm.id, request.custom_id.to_string());
    assert_eq!(vm.state(), Some(&VmState::Stopped));
    assert_eq!(vm.display_name.as_deref(), Some("win2019-app (failover)"));
    let nic = vm.default_nic().expect("nic");
    assert_eq!(nic.network_id, DEMO_TEST_NETWORK_ID);
    assert!(
        nic.ip_address
            .as_deref()
            .is_some_and(|ip| ip.starts_with("10.10.1."))
    );
    assert!(
        nic.mac_address
            .as_deref()
            .is_some_and(|m| m.starts_with("02:00:"))
    );
    let template_root = c
        .list_volumes(&VolumeFilter {
            virtual_machine_id: Some(vm.id.clone()),
            volume_type: Some("ROOT".to_owned()),
            ..VolumeFilter::default()
        })
        .await
        .expect("root")
        .pop()
        .expect("a template root disk");
    assert_eq!(template_root.device_id, Some(0));

    // Take the replicas off the appliance (running: data disks may go).
    let boot = c
        .detach_volume(DEMO_WIN_BOOT_VOLUME_ID)
        .await
        .expect("detach boot replica");
    assert!(!boot.is_attached());
    c.detach_volume(DEMO_WIN_DATA_VOLUME_ID)
        .await
        .expect("detach data replica");

    // Swap the root disk: the template root goes, the replica becomes root.
    let old_root = c
        .detach_volume(&template_root.id)
        .await
        .expect("detach template root");
    assert_eq!(old_root.volume_type, VolumeType::DataDisk);
    c.delete_volume(&template_root.id)
        .await
        .expect("delete template root");
    assert!(
        c.get_volume(&template_root.id)
            .await
            .expect("lookup")
            .is_none()
    );
    let root = c
        .attach_volume(DEMO_WIN_BOOT_VOLUME_ID, &vm.id, Some(0))
        .await
        .expect("attach replica as root");
    assert_eq!(
        (root.volume_type.clone(), root.device_id),
        (VolumeType::Root, Some(0))
    );
    assert_eq!(root.virtual_machine_id.as_deref(), Some(vm.id.as_str()));
    let data = c
        .attach_volume(DEMO_WIN_DATA_VOLUME_ID, &vm.id, None)
        .await
        .expect("attach data replica");
    assert_eq!(data.device_id, Some(1));

    let running = c.start_vm(&vm.id).await.expect("start");
    assert_eq!(running.state(), Some(&VmState::Running));
    let listed = c
        .list_vms(&VmFilter {
            state: Some("Running".to_owned()),
            ..VmFilter::default()
        })
        .await
        .expect("running vms");
    assert!(listed.iter().any(|v| v.id == vm.id));
    let stopped = c.stop_vm(&vm.id, false).await.expect("stop");
    assert_eq!(stopped.state(), Some(&VmState::Stopped));

    // Clean-up: the replica root goes back to the appliance, the data disk
    // is released by the destroy itself.
    c.detach_volume(DEMO_WIN_BOOT_VOLUME_ID)
        .await
        .expect("detach root replica");
    let destroyed = c.destroy_vm(&vm.id, true).await.expect("destroy");
    assert_eq!(destroyed.and_then(|v| v.state), Some(VmState::Expunging));
    assert!(c.get_vm(&vm.id).await.expect("lookup").is_none());
    assert!(h.vms().await.iter().all(|v| v["id"] != vm.id.as_str()));
    let released = c
        .get_volume(DEMO_WIN_DATA_VOLUME_ID)
        .await
        .expect("lookup")
        .expect("kept");
    assert!(!released.is_attached(), "data disk detached by destroy");
    let by_removed_vm = c
        .list_volumes(&VolumeFilter {
            virtual_machine_id: Some(vm.id.clone()),
            ..VolumeFilter::default()
        })
        .await
        .expect("a removed vm id still resolves");
    assert!(by_removed_vm.is_empty());
    for id in [DEMO_WIN_BOOT_VOLUME_ID, DEMO_WIN_DATA_VOLUME_ID] {
        let back = c
            .attach_volume(id, DEMO_APPLIANCE_VM_ID, None)
            .await
            .expect("back to the appliance");
        assert_eq!(
            back.virtual_machine_id.as_deref(),
            Some(DEMO_APPLIANCE_VM_ID)
        );
    }
}

#[tokio::test]
async fn destroy_with_expunge_removes_the_root_and_releases_data_disks() {
    let h = start().await;
    let c = &h.client;
    let vm = c
        .deploy_vm(&deploy_request("pgtest1", false))
        .await
        .expect("deploy");
    c.detach_volume(DEMO_PG_BOOT_VOLUME_ID)
        .await
        .expect("detach replica");
    c.attach_volume(DEMO_PG_BOOT_VOLUME_ID, &vm.id, None)
        .await
        .expect("attach as data disk");
    let root = c
        .list_volumes(&VolumeFilter {
            virtual_machine_id: Some(vm.id.clone()),
            volume_type: Some("ROOT".to_owned()),
            ..VolumeFilter::default()
        })
        .await
        .expect("root")
        .pop()
        .expect("root");
    c.start_vm(&vm.id).await.expect("start");
    c.destroy_vm(&vm.id, true)
        .await
        .expect("destroy running vm");
    assert!(
        h.volume(&root.id).await.is_none(),
        "root removed with the vm"
    );
    let replica = h
        .volume(DEMO_PG_BOOT_VOLUME_ID)
        .await
        .expect("replica kept");
    assert!(replica.get("virtualmachineid").is_none(), "{replica}");
    assert_eq!(replica["state"], "Ready");
}

#[tokio::test]
async fn destroy_without_expunge_keeps_a_destroyed_vm() {
    let h = start().await;
    let c = &h.client;
    let vm = c
        .deploy_vm(&deploy_request("keep-me", true))
        .await
        .expect("deploy");
    assert_eq!(vm.state(), Some(&VmState::Running));
    let destroyed = c.destroy_vm(&vm.id, false).await.expect("destroy");
    assert_eq!(destroyed.and_then(|v| v.state), Some(VmState::Destroyed));
    let again = c
        .destroy_vm(&vm.id, false)
        .await
        .expect_err("already destroyed");
    assert_eq!(again.error_code(), Some(431));
    c.destroy_vm(&vm.id, true).await.expect("expunge later");
    assert!(c.get_vm(&vm.id).await.expect("lookup").is_none());
}

#[tokio::test]
async fn volume_and_vm_snapshots() {
    let h = start().await;
    let c = &h.client;
    let snap = c
        .create_volume_snapshot(DEMO_PG_BOOT_VOLUME_ID, Some("before-test"))
        .await
        .expect("volume snapshot");
    assert_eq!(snap.state.as_deref(), Some("BackedUp"));
    assert_eq!(snap.volume_id.as_deref(), Some(DEMO_PG_BOOT_VOLUME_ID));
    assert_eq!(
        c.list_snapshots(DEMO_PG_BOOT_VOLUME_ID)
            .await
            .expect("list")
            .len(),
        1
    );

    let vm = c
        .deploy_vm(&deploy_request("snap-vm", false))
        .await
        .expect("deploy");
    let vm_snap = c
        .create_vm_snapshot(&vm.id, Some("s1"), false)
        .await
        .expect("vm snapshot");
    assert_eq!(vm_snap.state.as_deref(), Some("Ready"));
    assert_eq!(vm_snap.current, Some(true));
    let detach = c.detach_volume(DEMO_PG_BOOT_VOLUME_ID).await;
    assert!(detach.is_ok(), "the appliance has no vm snapshots");
    let refused = c
        .attach_volume(DEMO_PG_BOOT_VOLUME_ID, &vm.id, None)
        .await
        .expect_err("vm has snapshots");
    assert_eq!(refused.error_code(), Some(431));
    let reverted = c.revert_to_vm_snapshot(&vm_snap.id).await.expect("revert");
    assert_eq!(reverted.state(), Some(&VmState::Stopped));
    assert_eq!(c.list_vm_snapshots(&vm.id).await.expect("list").len(), 1);
    c.delete_vm_snapshot(&vm_snap.id).await.expect("delete");
    assert!(c.list_vm_snapshots(&vm.id).await.expect("list").is_empty());
}
