//! Test and live failovers end to end: REST → Postgres → outbox → RabbitMQ →
//! two workers → simulators → gRPC reports, checked against the simulators'
//! state and the database.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{LINUX_VM_ID, Stack, WIN_VM_ID};
use simulators::cloudstack as cs_sim;
use simulators::linstor as ls_sim;

const WITHIN: Duration = Duration::from_secs(60);

fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {job:#}"))
}

fn step_names_and_statuses(job: &Value) -> Vec<(String, String)> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step_name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn stack_with_workers() -> Stack {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    stack.start_worker();
    stack.start_worker();
    stack
}

fn snapshots_of(stack: &Stack, rd: &str) -> Vec<String> {
    let state = stack.linstor.state();
    state
        .resource_definitions
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(rd))
        .map(|r| r.snapshots.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default()
}

/// The destination VM: Running, boot disk at device 0, data disk attached,
/// replicated volumes off the appliance, the template root gone.
fn assert_windows_vm_landed(stack: &Stack, job: &Value, network: &str) {
    let vms = stack.destination_vms();
    assert_eq!(vms.len(), 1, "exactly one new VM: {vms:#?}");
    let vm = &vms[0];
    assert_eq!(vm["state"], "Running");
    assert_eq!(job["destination_vm_id"], vm["id"]);
    assert!(
        vm["nic"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["networkid"] == network),
        "{vm:#}"
    );
    let boot = stack.volume(cs_sim::DEMO_WIN_BOOT_VOLUME_ID);
    assert_eq!(boot["virtualmachineid"], vm["id"]);
    assert_eq!(boot["deviceid"], 0);
    let data = stack.volume(cs_sim::DEMO_WIN_DATA_VOLUME_ID);
    assert_eq!(data["virtualmachineid"], vm["id"]);
    assert!(data["deviceid"].as_u64().unwrap() >= 1);
    let on_vm: Vec<_> = stack.cloudstack_state()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["virtualmachineid"] == vm["id"])
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_vm.len(), 2, "only the two replicated disks: {on_vm:?}");
    let snapshot = job["linstor_snapshot_name"].as_str().unwrap();
    for rd in [
        ls_sim::DEMO_RD_WIN2019_APP_DISK0,
        ls_sim::DEMO_RD_WIN2019_APP_DISK1,
    ] {
        assert_eq!(snapshots_of(stack, rd), vec![snapshot.to_owned()], "{rd}");
    }
    let marker = stack.disk_path("win2019-app-disk0.raw.virtio-injected");
    assert!(marker.exists(), "VirtIO injection marker on the boot disk");
    assert!(
        !stack
            .disk_path("win2019-app-disk1.raw.virtio-injected")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn windows_test_failover_runs_every_step_to_a_running_vm() {
    let stack = stack_with_workers().await;
    let (status, accepted) = stack
        .post(
            "/api/v1/failover/test",
            &json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app", "test_duration": "30m",
                    "custom_config": {"key": "value"}}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["success"], true);
    assert_eq!(
        accepted["message"],
        "Test failover initiated successfully with snapshot protection and VirtIO injection"
    );
    assert_eq!(accepted["estimated_duration"], "30m");
    let job_id = accepted["job_id"].as_str().unwrap();
    let prefix = format!("enhanced-test-failover-{WIN_VM_ID}-");
    assert!(job_id.starts_with(&prefix), "{job_id}");
    assert!(job_id[prefix.len()..].parse::<i64>().is_ok(), "{job_id}");
    let data = &accepted["data"];
    for key in [
        "auto_cleanup",
        "correlation_id",
        "job_type",
        "snapshot_protection",
        "status",
        "test_duration",
        "virtio_injection",
        "vm_id",
        "vm_name",
    ] {
        assert!(data.get(key).is_some(), "data.{key} missing: {data:#}");
    }
    assert_eq!(data["job_type"], "test");
    let correlation_id = data["correlation_id"].as_str().unwrap().to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&correlation_id)
            .unwrap()
            .get_version_num(),
        4
    );

    let job = stack.wait_terminal(job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(
        step_names_and_statuses(&job),
        [
            "validation",
            "snapshot",
            "virtio-injection",
            "test-vm-creation",
            "volume-attachment",
            "test-vm-startup"
        ]
        .iter()
        .map(|s| (s.to_string(), "completed".to_string()))
        .collect::<Vec<_>>()
    );
    for s in job["steps"].as_array().unwrap() {
        assert!(
            s["started_at"].is_string() && s["completed_at"].is_string(),
            "{s:#}"
        );
        assert_eq!(s["attempt"], 1);
    }
    let virtio_log = step(&job, "virtio-injection")["log"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(virtio_log.contains("Examining the guest"), "{virtio_log}");
    assert_eq!(job["correlation_id"], correlation_id.as_str());
    let short = &WIN_VM_ID[..8];
    let stamp = job_id.rsplit('-').next().unwrap();
    assert_eq!(
        job["linstor_snapshot_name"],
        format!("test-{short}-{stamp}")
    );
    let spec: Value = serde_json::from_str(job["source_vm_spec"].as_str().unwrap()).unwrap();
    assert_eq!(spec["cpu_count"], 2);
    assert_eq!(spec["vm_name"], "win2019-app");
    let mappings: Value = serde_json::from_str(job["network_mappings"].as_str().unwrap()).unwrap();
    assert_eq!(mappings["VM Network"], cs_sim::DEMO_TEST_NETWORK_ID);
    assert_eq!(job["custom_config"]["key"], "value");
    assert_windows_vm_landed(&stack, &job, cs_sim::DEMO_TEST_NETWORK_ID);

    // The reference's monitoring queries, as written.
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(&format!(
        "SELECT job_id, status, linstor_snapshot_name, error_message FROM failover_jobs WHERE vm_id = '{WIN_VM_ID}'"
    ))
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, job_id);
    assert_eq!(rows[0].1, "completed");
    let tracking: Vec<(String, String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT operation, status, error_message FROM job_tracking WHERE correlation_id = '{correlation_id}'"
    ))
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    assert!(
        tracking
            .iter()
            .any(|r| r.0 == "failover.test" && r.1 == "completed"),
        "{tracking:?}"
    );
    assert!(
        tracking
            .iter()
            .any(|r| r.0 == "step.test-vm-startup" && r.1 == "completed")
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn windows_live_failover_switches_volumes_to_the_production_vm() {
    let stack = stack_with_workers().await;
    let (status, accepted) = stack
        .post(
            "/api/v1/failover/live",
            &json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app",
                    "notification_config": {"email": "admin@company.com"}}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["message"], "Live failover initiated successfully");
    assert!(accepted.get("estimated_duration").is_none());
    assert!(accepted["data"].get("test_duration").is_none());
    let job_id = accepted["job_id"].as_str().unwrap();
    assert!(job_id.starts_with(&format!("enhanced-live-failover-{WIN_VM_ID}-")));
    let job = stack.wait_terminal(job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(
        step_names_and_statuses(&job)
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        [
            "validation",
            "snapshot",
            "virtio-injection",
            "vm-creation",
            "volume-switch",
            "vm-startup"
        ]
    );
    assert!(
        job["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "completed")
    );
    assert_eq!(job["notification_config"]["email"], "admin@company.com");
    assert!(
        job["linstor_snapshot_name"]
            .as_str()
            .unwrap()
            .starts_with("live-4205a1b2-")
    );
    assert_windows_vm_landed(&stack, &job, cs_sim::DEMO_VM_NETWORK_ID);
    let vm = &stack.destination_vms()[0];
    assert_eq!(
        vm["name"], "win2019-app",
        "the production VM keeps the VM's name"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linux_guest_skips_virtio_injection_with_its_reason() {
    let stack = stack_with_workers().await;
    let job_id = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    let virtio = step(&job, "virtio-injection");
    assert_eq!(virtio["status"], "skipped");
    assert!(
        virtio["message"].as_str().unwrap().contains("linux"),
        "{virtio:#}"
    );
    assert!(
        !stack
            .disk_path("pgtest1-disk0.raw.virtio-injected")
            .exists()
    );
    let vms = stack.destination_vms();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0]["state"], "Running");
    assert_eq!(stack.volume(cs_sim::DEMO_PG_BOOT_VOLUME_ID)["deviceid"], 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_skip_flag_skips_its_step() {
    for (flag, skipped) in [
        ("skip_validation", "validation"),
        ("skip_snapshot", "snapshot"),
        ("skip_virtio_injection", "virtio-injection"),
    ] {
        let stack = stack_with_workers().await;
        let (status, accepted) = stack
            .post(
                "/api/v1/failover/test",
                &json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app", flag: true}),
            )
            .await;
        assert_eq!(status, 202);
        if flag == "skip_snapshot" {
            assert_eq!(accepted["data"]["snapshot_protection"], false);
        }
        if flag == "skip_virtio_injection" {
            assert_eq!(accepted["data"]["virtio_injection"], false);
        }
        let job = stack
            .wait_terminal(accepted["job_id"].as_str().unwrap(), WITHIN)
            .await;
        assert_eq!(job["status"], "completed", "{flag}: {job:#}");
        for (name, status) in step_names_and_statuses(&job) {
            let expected = if name == skipped {
                "skipped"
            } else {
                "completed"
            };
            assert_eq!(status, expected, "{flag}: step {name}");
        }
        assert!(
            step(&job, skipped)["message"]
                .as_str()
                .unwrap()
                .contains(flag)
        );
        match flag {
            "skip_snapshot" => {
                assert!(job["linstor_snapshot_name"].is_null());
                assert!(snapshots_of(&stack, ls_sim::DEMO_RD_WIN2019_APP_DISK0).is_empty());
            }
            "skip_virtio_injection" => {
                assert!(
                    !stack
                        .disk_path("win2019-app-disk0.raw.virtio-injected")
                        .exists()
                );
            }
            _ => {}
        }
        assert_eq!(stack.destination_vms().len(), 1);
        stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unregistered_vm_is_refused_with_vm_not_found() {
    let stack = Stack::start().await;
    stack.register_demo_vms().await;
    let unknown = "42000000-0000-4000-8000-000000000099";
    let (status, body) = stack
        .post(
            "/api/v1/failover/test",
            &json!({"vm_id": unknown, "vm_name": "ghost"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["error_code"], "VM_NOT_FOUND");
    assert_eq!(body["details"]["error_code"], "VM_NOT_FOUND");
    assert_eq!(body["details"]["vm_id"], unknown);
    assert!(body["details"]["correlation_id"].is_string());
    assert!(
        !body["troubleshooting"]["suggestions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        body["troubleshooting"]["documentation"],
        "/docs/failover/troubleshooting.md"
    );
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM failover_jobs")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unmapped_network_fails_validation_listing_every_problem() {
    let stack = stack_with_workers().await;
    // A NIC on a network with no mapping, and a LINSTOR resource that does not exist.
    let (status, body) = stack
        .put(
            "/api/v1/vms/42111111-0000-4000-8000-000000000001",
            &json!({
                "vm_name": "orphan", "os_family": "linux", "cpu_count": 1, "memory_mb": 1024,
                "replication_state": "replicated",
                "disks": [{"disk_id": "d0", "cloudstack_volume_id": cs_sim::DEMO_PG_BOOT_VOLUME_ID,
                           "linstor_resource": "pvc-missing", "device_path": "/dev/null", "boot": true}],
                "nics": [{"source_network": "Backup Net", "test_network_id": "44444444-0000-4000-8000-0000000000ff"}]
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let job_id = stack
        .start_failover(
            "test",
            json!({"vm_id": "42111111-0000-4000-8000-000000000001", "vm_name": "orphan"}),
        )
        .await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error_code"], "VALIDATION_FAILED");
    assert_eq!(job["error_step"], "validation");
    let validation = step(&job, "validation");
    assert_eq!(validation["status"], "failed");
    assert_eq!(validation["error"]["error_code"], "VALIDATION_FAILED");
    let message = job["error_message"].as_str().unwrap();
    assert!(message.contains("Backup Net"), "{message}");
    assert!(message.contains("pvc-missing"), "{message}");
    assert_eq!(
        step(&job, "snapshot")["status"],
        "cancelled",
        "not run after the failure"
    );
    assert!(stack.destination_vms().is_empty());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_cloudstack_create_fails_the_job_at_vm_creation() {
    let stack = stack_with_workers().await;
    stack
        .cloudstack
        .faults()
        .add(simulators::faults::FaultRule {
            operation: "deployVirtualMachine".into(),
            latency_ms: 0,
            failure_rate: 1.0,
            failure_status: Some(533),
            hang: false,
            fail_async_job: false,
            remaining: None,
        })
        .unwrap();
    let job_id = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error_code"], "VM_CREATE_FAILED");
    assert_eq!(job["error_step"], "test-vm-creation");
    let creation = step(&job, "test-vm-creation");
    assert_eq!(creation["status"], "failed");
    assert_eq!(creation["error"]["error_code"], "VM_CREATE_FAILED");
    assert!(creation["attempt"].as_u64().unwrap() >= 1);
    assert_eq!(
        step(&job, "volume-attachment")["status"],
        "cancelled",
        "not run after the failure"
    );
    // The snapshot that was taken is undone.
    assert_eq!(
        step(&job, "compensation-snapshot-deletion")["status"],
        "completed"
    );
    assert!(snapshots_of(&stack, ls_sim::DEMO_RD_PGTEST1_DISK0).is_empty());
    assert!(stack.destination_vms().is_empty());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_get_400_in_the_envelope_and_create_nothing() {
    let stack = Stack::start().await;
    stack.register_demo_vms().await;
    let cases: Vec<(&str, String)> = vec![
        ("bad json", "{\"vm_id\": ".into()),
        ("missing field", json!({"vm_id": WIN_VM_ID}).to_string()),
        ("wrong type", json!({"vm_id": WIN_VM_ID, "vm_name": "w", "skip_snapshot": "yes"}).to_string()),
        ("vm_id not a uuid", json!({"vm_id": "pgtest1", "vm_name": "w"}).to_string()),
        ("bad duration", json!({"vm_id": WIN_VM_ID, "vm_name": "w", "test_duration": "soon"}).to_string()),
        ("unknown field", json!({"vm_id": WIN_VM_ID, "vm_name": "w", "skip_snapshots": true}).to_string()),
        ("not an object", "[1, 2]".into()),
        ("empty body", String::new()),
        (
            "oversized",
            json!({"vm_id": WIN_VM_ID, "vm_name": "w", "custom_config": {"pad": "x".repeat(200_000)}})
                .to_string(),
        ),
    ];
    for (name, body) in cases {
        let (status, answer) = stack.post_raw("/api/v1/failover/test", body).await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert_eq!(answer["success"], false, "{name}");
        assert_eq!(answer["error_code"], "INVALID_REQUEST", "{name}");
        assert!(
            answer["details"]["correlation_id"].is_string(),
            "{name}: {answer}"
        );
        assert!(
            answer["troubleshooting"]["suggestions"].is_array(),
            "{name}"
        );
    }
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM failover_jobs")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
    let (status, answer) = stack.get("/api/v1/failover/jobs?status=bogus").await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = stack.get("/api/v1/failover/jobs/no-such-job").await;
    assert_eq!(status, 404);
    assert_eq!(answer["error_code"], "JOB_NOT_FOUND");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_filter_and_ids_stay_unique_within_one_second() {
    let stack = stack_with_workers().await;
    // Two requests for one VM in the same second get distinct ids.
    let request = json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app", "skip_validation": true});
    let (a, b) = tokio::join!(
        stack.post("/api/v1/failover/live", &request),
        stack.post("/api/v1/failover/live", &request),
    );
    assert_eq!((a.0, b.0), (202, 202));
    let (id_a, id_b) = (
        a.1["job_id"].as_str().unwrap(),
        b.1["job_id"].as_str().unwrap(),
    );
    assert_ne!(id_a, id_b);
    for id in [id_a, id_b] {
        assert!(id.starts_with(&format!("enhanced-live-failover-{WIN_VM_ID}-")));
    }
    let test_id = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    stack.wait_terminal(&test_id, WITHIN).await;

    let (status, all) = stack.get("/api/v1/failover/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(all["success"], true);
    assert_eq!(all["total"], 3);
    let first = &all["data"][0];
    for key in [
        "job_id",
        "vm_id",
        "vm_name",
        "job_type",
        "status",
        "linstor_snapshot_name",
        "destination_vm_id",
        "created_at",
        "completed_at",
    ] {
        assert!(first.get(key).is_some(), "{key} missing in {first:#}");
    }
    let (_, tests) = stack.get("/api/v1/failover/jobs?type=test").await;
    assert_eq!(tests["total"], 1);
    assert_eq!(tests["data"][0]["job_id"], test_id.as_str());
    let (_, by_vm) = stack
        .get(&format!("/api/v1/failover/jobs?vm_id={WIN_VM_ID}"))
        .await;
    assert_eq!(by_vm["total"], 2);
    let (_, completed) = stack
        .get("/api/v1/failover/jobs?status=completed&type=test")
        .await;
    assert_eq!(completed["total"], 1);
    let correlation = all["data"][0]["correlation_id"].as_str().unwrap();
    let (_, by_corr) = stack
        .get(&format!(
            "/api/v1/failover/jobs?correlation_id={correlation}"
        ))
        .await;
    assert_eq!(by_corr["total"], 1);
    let (_, page) = stack.get("/api/v1/failover/jobs?limit=1&offset=1").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["total"], 3);
    stack.stop().await;
}
