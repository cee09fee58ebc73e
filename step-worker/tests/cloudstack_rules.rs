//! The server's rules, as the client sees them refused.

mod cloudstack_support;

use cloudstack_support::*;
use step_worker::cloudstack::{CloudStackError, VmFilter, VmState, VolumeFilter};
use uuid::Uuid;

async fn template_root(c: &step_worker::cloudstack::CloudStackClient, vm_id: &str) -> String {
    c.list_volumes(&VolumeFilter {
        virtual_machine_id: Some(vm_id.to_owned()),
        volume_type: Some("ROOT".to_owned()),
        ..VolumeFilter::default()
    })
    .await
    .expect("root")
    .pop()
    .expect("root")
    .id
}

#[tokio::test]
async fn attaching_a_volume_attached_elsewhere_is_refused_with_536() {
    let h = start().await;
    let vm = h
        .client
        .deploy_vm(&deploy_request("thief", false))
        .await
        .expect("deploy");
    let err = h
        .client
        .attach_volume(DEMO_PG_BOOT_VOLUME_ID, &vm.id, None)
        .await
        .expect_err("in use");
    assert!(
        matches!(err, CloudStackError::AsyncJobFailed { .. }),
        "{err}"
    );
    assert_eq!(err.error_code(), Some(536));
    assert_eq!(
        err.error_text(),
        Some("Please specify a volume that is not attached to any VM.")
    );
    assert!(err.job_id().is_some());
    let replica = h
        .client
        .get_volume(DEMO_PG_BOOT_VOLUME_ID)
        .await
        .expect("lookup")
        .expect("exists");
    assert_eq!(
        replica.virtual_machine_id.as_deref(),
        Some(DEMO_APPLIANCE_VM_ID)
    );
}

#[tokio::test]
async fn starting_a_vm_without_a_root_volume_is_refused() {
    let h = start().await;
    let c = &h.client;
    let vm = c
        .deploy_vm(&deploy_request("rootless", false))
        .await
        .expect("deploy");
    let root = template_root(c, &vm.id).await;
    c.detach_volume(&root)
        .await
        .expect("detach root of a stopped vm");
    let err = c.start_vm(&vm.id).await.expect_err("no root");
    assert_eq!(err.error_code(), Some(530));
    assert!(
        err.error_text()
            .is_some_and(|t| t.contains("no ROOT volume")),
        "{err}"
    );
    let vm = c.get_vm(&vm.id).await.expect("lookup").expect("vm");
    assert_eq!(vm.state(), Some(&VmState::Stopped));
}

#[tokio::test]
async fn duplicate_host_name_in_a_network_is_refused_with_431() {
    let h = start().await;
    let c = &h.client;
    c.deploy_vm(&deploy_request("twin", false))
        .await
        .expect("first");
    let before = h.vms().await.len();
    let err = c
        .deploy_vm(&deploy_request("twin", false))
        .await
        .expect_err("duplicate");
    assert!(
        matches!(
            err,
            CloudStackError::Api {
                http_status: 431,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.error_text()
            .is_some_and(|t| t.contains("already exists in the network domain"))
    );
    assert_eq!(h.vms().await.len(), before);
    let mut elsewhere = deploy_request("twin", false);
    elsewhere.network_ids = vec![DEMO_LIVE_NETWORK_ID.to_owned()];
    c.deploy_vm(&elsewhere)
        .await
        .expect("same name on another network");
}

#[tokio::test]
async fn host_names_must_follow_the_rules() {
    let h = start().await;
    for bad in [
        "9lives",
        "under_score",
        "trailing-",
        "x".repeat(64).as_str(),
    ] {
        let err = h
            .client
            .deploy_vm(&deploy_request(bad, false))
            .await
            .expect_err(bad);
        assert_eq!(err.error_code(), Some(431), "{bad}: {err}");
    }
}

#[tokio::test]
async fn swapping_the_root_of_a_running_vm_is_refused() {
    let h = start().await;
    let c = &h.client;
    let vm = c
        .deploy_vm(&deploy_request("busy", true))
        .await
        .expect("deploy");
    assert_eq!(vm.state(), Some(&VmState::Running));
    let root = template_root(c, &vm.id).await;
    let err = c
        .detach_volume(&root)
        .await
        .expect_err("root of a running vm");
    assert_eq!(err.error_code(), Some(431));
    assert!(
        err.error_text()
            .is_some_and(|t| t.contains("Stopped or Destroyed")),
        "{err}"
    );

    c.detach_volume(DEMO_WIN_BOOT_VOLUME_ID)
        .await
        .expect("free replica");
    let err = c
        .attach_volume(DEMO_WIN_BOOT_VOLUME_ID, &vm.id, Some(0))
        .await
        .expect_err("root attach to a running vm");
    assert_eq!(err.error_code(), Some(431));

    c.stop_vm(&vm.id, true).await.expect("stop");
    let err = c
        .attach_volume(DEMO_WIN_BOOT_VOLUME_ID, &vm.id, Some(0))
        .await
        .expect_err("second root");
    assert_eq!(
        err.error_text(),
        Some("Vm already has root volume attached to it")
    );
}

#[tokio::test]
async fn deleting_an_attached_volume_is_refused() {
    let h = start().await;
    let err = h
        .client
        .delete_volume(DEMO_WIN_DATA_VOLUME_ID)
        .await
        .expect_err("attached");
    assert!(
        matches!(
            err,
            CloudStackError::Api {
                http_status: 431,
                ..
            }
        ),
        "{err}"
    );
    assert!(h.volume(DEMO_WIN_DATA_VOLUME_ID).await.is_some());
}

#[tokio::test]
async fn lifecycle_commands_in_the_wrong_state_are_refused() {
    let h = start().await;
    let c = &h.client;
    let vm = c
        .deploy_vm(&deploy_request("stateful", true))
        .await
        .expect("deploy");
    let err = c.start_vm(&vm.id).await.expect_err("already running");
    assert_eq!(err.error_code(), Some(431));
    c.stop_vm(&vm.id, false).await.expect("stop");
    let again = c
        .stop_vm(&vm.id, false)
        .await
        .expect("stopping a stopped vm is a no-op");
    assert_eq!(again.state(), Some(&VmState::Stopped));
    c.destroy_vm(&vm.id, false).await.expect("destroy");
    let err = c.start_vm(&vm.id).await.expect_err("destroyed");
    assert_eq!(err.error_code(), Some(431));
    c.detach_volume(DEMO_WIN_DATA_VOLUME_ID)
        .await
        .expect("free a disk");
    let err = c
        .attach_volume(DEMO_WIN_DATA_VOLUME_ID, &vm.id, None)
        .await
        .expect_err("attach to a destroyed vm");
    assert_eq!(err.error_code(), Some(431));
}

#[tokio::test]
async fn unknown_ids_and_parameters() {
    let h = start().await;
    let c = &h.client;
    let unknown = Uuid::new_v4().to_string();
    assert!(c.get_vm(&unknown).await.expect("lookup").is_none());
    let err = c
        .list_vms(&VmFilter {
            id: Some(unknown.clone()),
            ..VmFilter::default()
        })
        .await
        .expect_err("an id never seen is a 431");
    assert!(err.is_entity_not_found(), "{err}");
    let err = c.start_vm(&unknown).await.expect_err("unknown vm");
    assert!(err.is_entity_not_found(), "{err}");

    let err = c
        .call(
            "deployVirtualMachine",
            &[("serviceofferingid", DEMO_OFFERING_SMALL_ID)],
        )
        .await
        .expect_err("missing zoneid");
    assert_eq!(
        err.error_text(),
        Some("Unable to execute API command deployvirtualmachine due to missing parameter zoneid")
    );
    let err = c
        .call("listTemplates", &[])
        .await
        .expect_err("templatefilter");
    assert_eq!(err.error_code(), Some(431));
    let err = c
        .call("makeCoffee", &[])
        .await
        .expect_err("unknown command");
    assert!(
        matches!(
            err,
            CloudStackError::Api {
                http_status: 432,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());

    let mut reused = deploy_request("custom", false);
    reused.custom_id = Uuid::parse_str(DEMO_APPLIANCE_VM_ID).expect("uuid");
    let found = c
        .deploy_vm(&reused)
        .await
        .expect("the vm of an existing id is returned");
    assert_eq!(found.name, "failover-appliance");
}
