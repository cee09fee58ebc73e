//! The simulator's admin API (`/sim/`), and what seeded state looks like
//! through the client.

mod cloudstack_support;

use cloudstack_support::*;
use reqwest::Method;
use serde_json::json;
use step_worker::cloudstack::{VmFilter, VmState, VolumeFilter};

#[tokio::test]
async fn seed_creates_what_it_is_given_and_reports_ids() {
    let h = start().await;
    let (status, report) = h
        .admin(
            Method::POST,
            "/sim/seed",
            Some(json!({
                "service_offerings": [{ "name": "Huge", "cpunumber": 16, "memory": 65536 }],
                "networks": [{ "name": "dr-net", "cidr": "192.168.50.0/24" }],
                "vms": [{
                    "name": "legacy-db", "serviceofferingid": DEMO_OFFERING_SMALL_ID,
                    "networkids": [], "state": "Stopped", "root_size_gib": 40
                }],
                "volumes": [
                    { "name": "spare", "size_gib": 5 },
                    { "name": "extra", "size_gib": 7, "virtualmachineid": DEMO_APPLIANCE_VM_ID }
                ]
            })),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let network_id = report["networks"][0].as_str().expect("network id");
    let vm_id = report["vms"][0].as_str().expect("vm id");
    let extra_id = report["volumes"][1].as_str().expect("volume id");

    let vm = h
        .client
        .get_vm(vm_id)
        .await
        .expect("lookup")
        .expect("seeded vm");
    assert_eq!(vm.state(), Some(&VmState::Stopped));
    let networks = h.client.list_networks(None).await.expect("networks");
    let dr = networks
        .iter()
        .find(|n| n.id == network_id)
        .expect("dr-net");
    assert_eq!(dr.cidr.as_deref(), Some("192.168.50.0/24"));
    let extra = h
        .client
        .get_volume(extra_id)
        .await
        .expect("lookup")
        .expect("extra");
    assert_eq!(
        extra.device_id,
        Some(4),
        "next free slot after the three replicas"
    );
    assert_eq!(extra.size, Some(7 * 1024 * 1024 * 1024));
    let root = h
        .client
        .list_volumes(&VolumeFilter {
            virtual_machine_id: Some(vm_id.to_owned()),
            ..VolumeFilter::default()
        })
        .await
        .expect("root");
    assert_eq!(root.len(), 1);
    assert_eq!(
        root[0].id,
        report["root_volumes"][0].as_str().expect("root id")
    );
}

#[tokio::test]
async fn bad_admin_input_is_a_400_with_a_reason() {
    let h = start().await;
    let cases = [
        json!({ "zones": [{ "name": "z", "colour": "red" }] }),
        json!({ "zones": [{ "id": "not-a-uuid", "name": "z" }] }),
        json!({ "zones": [{ "id": DEMO_ZONE_ID, "name": "again" }] }),
        json!({ "vms": [{ "name": "x", "serviceofferingid": "00000000-0000-4000-8000-000000000000" }] }),
        json!({ "vms": [{ "name": "9bad", "serviceofferingid": DEMO_OFFERING_SMALL_ID }] }),
        json!({ "networks": [{ "name": "n", "cidr": "10.0.0.0/16" }] }),
        json!({ "volumes": [{ "name": "v", "size_gib": 1, "deviceid": 2 }] }),
    ];
    for body in cases {
        let (status, answer) = h.admin(Method::POST, "/sim/seed", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    let resp = h
        .http
        .post(h.base.join("/sim/seed").expect("url"))
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    let (status, _) = h
        .admin(
            Method::POST,
            "/sim/faults",
            Some(json!({ "operation": "x", "failure_rate": 2.0 })),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .admin(
            Method::PUT,
            "/sim/config",
            Some(json!({ "async_job_ms": "fast" })),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = h.admin(Method::POST, "/sim/seed/demo", None).await;
    assert_eq!(status, 400, "the demo ids are taken");
    // A refused seed changes nothing.
    let half = json!({ "zones": [{ "name": "ok-zone" }], "vms": [{ "name": "x", "serviceofferingid": "nope" }] });
    let (status, _) = h.admin(Method::POST, "/sim/seed", Some(half)).await;
    assert_eq!(status, 400);
    assert_eq!(h.client.list_zones().await.expect("zones").len(), 1);
}

#[tokio::test]
async fn faults_config_and_reset() {
    let h = start().await;
    let rule = json!({ "operation": "listZones", "latency_ms": 5, "remaining": 3 });
    h.fault(rule).await;
    let (_, rules) = h.admin(Method::GET, "/sim/faults", None).await;
    assert_eq!(rules.as_array().expect("rules").len(), 1);
    assert_eq!(rules[0]["operation"], "listZones");
    let (status, _) = h.admin(Method::DELETE, "/sim/faults", None).await;
    assert_eq!(status, 200);
    let (_, rules) = h.admin(Method::GET, "/sim/faults", None).await;
    assert!(rules.as_array().expect("rules").is_empty());

    let (_, config) = h.admin(Method::GET, "/sim/config", None).await;
    assert_eq!(config["async_job_ms"], JOB_MS);
    h.set_job_ms(0).await;
    let vm = h
        .client
        .deploy_vm(&deploy_request("instant", true))
        .await
        .expect("deploy");
    assert_eq!(vm.state(), Some(&VmState::Running));

    let state = h.state().await;
    for key in [
        "zones",
        "service_offerings",
        "templates",
        "networks",
        "vms",
        "volumes",
        "snapshots",
        "vm_snapshots",
        "async_jobs",
    ] {
        assert!(state[key].is_array(), "{key}");
    }
    assert!(!state["async_jobs"].as_array().expect("jobs").is_empty());

    let (status, _) = h.admin(Method::POST, "/sim/reset", None).await;
    assert_eq!(status, 200);
    assert!(
        h.client
            .list_vms(&VmFilter::default())
            .await
            .expect("vms")
            .is_empty()
    );
    let (status, report) = h.admin(Method::POST, "/sim/seed/demo", None).await;
    assert_eq!(status, 200);
    assert_eq!(report["vms"][0], DEMO_APPLIANCE_VM_ID);
    assert_eq!(h.client.list_zones().await.expect("zones").len(), 1);
}
