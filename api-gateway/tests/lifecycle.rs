//! The failover lifecycle end to end, checked against the simulators' state:
//! cleanup (manual and automatic), rollback of failures at every step, keep
//! state and retry, cancel, per-VM serialization, rate limits, idempotency.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{LINUX_VM_ID, Stack, WIN_VM_ID};
use simulators::faults::FaultRule;
use simulators::linstor as ls_sim;
use simulators::virt_customize_standin::ControlFile;

const WITHIN: Duration = Duration::from_secs(90);

fn fault(operation: &str) -> FaultRule {
    FaultRule {
        operation: operation.into(),
        latency_ms: 0,
        failure_rate: 1.0,
        failure_status: None,
        hang: false,
        fail_async_job: false,
        remaining: None,
    }
}

fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {job:#}"))
}

fn step_names(job: &Value) -> Vec<String> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_name"].as_str().unwrap().to_owned())
        .collect()
}

async fn stack_with_workers() -> Stack {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    stack.start_worker();
    stack.start_worker();
    stack
}

async fn test_failover(stack: &Stack, vm_id: &str, extra: Value) -> String {
    let mut body = json!({"vm_id": vm_id, "vm_name": "vm"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    stack.start_failover("test", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_cleanup_restores_the_exact_prior_state_and_the_vm_fails_over_again() {
    let stack = stack_with_workers().await;
    let before = stack.footprint();
    let test_id = test_failover(&stack, WIN_VM_ID, json!({})).await;
    let test_job = stack.wait_terminal(&test_id, WITHIN).await;
    assert_eq!(test_job["status"], "completed", "{test_job:#}");
    assert_eq!(test_job["holds_vm"], true);
    assert_ne!(stack.footprint(), before);

    let (status, answer) = stack
        .post(
            &format!("/api/v1/failover/jobs/{test_id}/cleanup"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let cleanup_id = answer["job_id"].as_str().unwrap().to_owned();
    assert!(cleanup_id.starts_with(&format!("enhanced-cleanup-{WIN_VM_ID}-")));
    assert_eq!(answer["data"]["test_job_id"], test_id.as_str());
    assert_ne!(answer["data"]["correlation_id"], test_job["correlation_id"]);
    let cleanup = stack.wait_terminal(&cleanup_id, WITHIN).await;
    assert_eq!(cleanup["status"], "completed", "{cleanup:#}");
    assert_eq!(cleanup["job_type"], "cleanup");
    assert_eq!(cleanup["test_job_id"], test_id.as_str());
    assert_eq!(
        step_names(&cleanup),
        [
            "test-vm-shutdown",
            "volume-detachment",
            "snapshot-rollback",
            "volume-reattachment",
            "test-vm-destruction",
            "snapshot-deletion"
        ]
    );
    assert!(
        cleanup["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "completed")
    );
    assert_eq!(
        stack.footprint(),
        before,
        "the simulators are as before the test failover"
    );
    for rd in [
        ls_sim::DEMO_RD_WIN2019_APP_DISK0,
        ls_sim::DEMO_RD_WIN2019_APP_DISK1,
    ] {
        assert_eq!(
            stack.rollback_count(rd),
            1,
            "{rd} rolled back to the pre-test snapshot"
        );
    }
    let (_, test_after) = stack.get(&format!("/api/v1/failover/jobs/{test_id}")).await;
    assert_eq!(test_after["data"]["cleanup_job_id"], cleanup_id.as_str());
    assert_eq!(test_after["data"]["holds_vm"], false);
    let (_, listed) = stack.get("/api/v1/failover/jobs?type=cleanup").await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["data"][0]["test_job_id"], test_id.as_str());
    let (status, again) = stack
        .post(
            &format!("/api/v1/failover/jobs/{test_id}/cleanup"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "{again}");

    // The VM can be failed over again, and cleaned up through the DELETE alias.
    let second = test_failover(&stack, WIN_VM_ID, json!({})).await;
    assert_eq!(
        stack.wait_terminal(&second, WITHIN).await["status"],
        "completed"
    );
    let (status, answer) = stack
        .delete(&format!("/api/v1/failover/test/{second}"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let cleanup = stack
        .wait_terminal(answer["job_id"].as_str().unwrap(), WITHIN)
        .await;
    assert_eq!(cleanup["status"], "completed");
    assert_eq!(stack.footprint(), before);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_cleanup_fires_once_with_two_gateways_even_after_the_accepting_one_restarts() {
    let mut stack = stack_with_workers().await;
    let before = stack.footprint();
    stack.start_gateway_replica().await;
    let test_id = test_failover(
        &stack,
        LINUX_VM_ID,
        json!({"auto_cleanup": true, "test_duration": "3s"}),
    )
    .await;
    let job = stack.wait_terminal(&test_id, WITHIN).await;
    assert_eq!(job["status"], "completed");
    assert!(
        job["auto_cleanup_at"].is_string(),
        "the job shows when its cleanup is due: {job:#}"
    );
    // The gateway that accepted the job is restarted before the timer is due.
    stack.restart_gateway(0).await;
    let job = stack
        .wait_for(&test_id, WITHIN, |j| j["cleanup_job_id"].is_string())
        .await;
    let cleanup_id = job["cleanup_job_id"].as_str().unwrap().to_owned();
    let cleanup = stack.wait_terminal(&cleanup_id, WITHIN).await;
    assert_eq!(cleanup["status"], "completed", "{cleanup:#}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, cleanups) = stack.get("/api/v1/failover/jobs?type=cleanup").await;
    assert_eq!(cleanups["total"], 1, "the timer fired once: {cleanups:#}");
    assert_eq!(stack.footprint(), before);
    stack.stop().await;
}

/// A fault that fails one step for good, and the code the job must end with.
async fn fail_step_and_check_nothing_is_left(name: &str, code: &str, arrange: impl FnOnce(&Stack)) {
    let stack = stack_with_workers().await;
    let before = stack.footprint();
    arrange(&stack);
    let job_id = test_failover(&stack, WIN_VM_ID, json!({})).await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "failed", "{name}: {job:#}");
    assert_eq!(job["error_code"], code, "{name}");
    assert_eq!(job["error_step"], name, "{name}");
    assert_eq!(step(&job, name)["status"], "failed");
    let undo: Vec<_> = step_names(&job)
        .into_iter()
        .filter(|n| n.starts_with("compensation-"))
        .collect();
    assert!(!undo.is_empty(), "{name}: the job undid its work");
    for undo_step in &undo {
        assert_eq!(
            step(&job, undo_step)["status"],
            "completed",
            "{name}: {undo_step}"
        );
    }
    assert_eq!(job["holds_vm"], false);
    assert_eq!(job["left_behind"], json!([]));
    assert_eq!(stack.footprint(), before, "{name}: nothing left behind");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_at_each_step_after_validation_leaves_nothing_behind() {
    fail_step_and_check_nothing_is_left("snapshot", "SNAPSHOT_FAILED", |s| {
        s.linstor
            .faults()
            .add(FaultRule {
                failure_status: Some(500),
                ..fault("snapshot-create")
            })
            .unwrap();
    })
    .await;
    fail_step_and_check_nothing_is_left("virtio-injection", "VIRTIO_FAILED", |s| {
        ControlFile {
            mode: Some(simulators::virt_customize_standin::Mode::Fail),
            ..Default::default()
        }
        .write_beside(&s.disk_path("win2019-app-disk0.raw"))
        .unwrap();
    })
    .await;
    fail_step_and_check_nothing_is_left("test-vm-creation", "VM_CREATE_FAILED", |s| {
        s.cloudstack
            .faults()
            .add(FaultRule {
                failure_status: Some(533),
                ..fault("deployVirtualMachine")
            })
            .unwrap();
    })
    .await;
    fail_step_and_check_nothing_is_left("volume-attachment", "VOLUME_ATTACH_FAILED", |s| {
        s.cloudstack
            .faults()
            .add(FaultRule {
                failure_status: Some(431),
                remaining: Some(1),
                ..fault("attachVolume")
            })
            .unwrap();
    })
    .await;
    fail_step_and_check_nothing_is_left("test-vm-startup", "VM_START_FAILED", |s| {
        s.cloudstack
            .faults()
            .add(FaultRule {
                failure_status: Some(431),
                ..fault("startVirtualMachine")
            })
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_failover_failing_after_the_volumes_moved_puts_them_back_on_the_appliance() {
    let stack = stack_with_workers().await;
    let before = stack.footprint();
    stack
        .cloudstack
        .faults()
        .add(FaultRule {
            failure_status: Some(431),
            ..fault("startVirtualMachine")
        })
        .unwrap();
    let job_id = stack
        .start_failover(
            "live",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error_code"], "VM_START_FAILED");
    assert_eq!(
        stack.footprint(),
        before,
        "volumes back on the appliance, replication can go on"
    );
    let (_, vm) = stack.get(&format!("/api/v1/vms/{WIN_VM_ID}")).await;
    assert_eq!(vm["data"]["replication_state"], "replicated");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keeping_state_then_retrying_completes_without_redoing_completed_steps() {
    let stack = stack_with_workers().await;
    stack
        .cloudstack
        .faults()
        .add(FaultRule {
            failure_status: Some(431),
            remaining: Some(1),
            ..fault("startVirtualMachine")
        })
        .unwrap();
    let job_id = test_failover(&stack, WIN_VM_ID, json!({"rollback_on_failure": false})).await;
    let failed = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["error_step"], "test-vm-startup");
    assert!(
        !step_names(&failed)
            .iter()
            .any(|n| n.starts_with("compensation-"))
    );
    assert_eq!(failed["holds_vm"], true);
    assert!(!failed["left_behind"].as_array().unwrap().is_empty());
    assert_eq!(
        stack.destination_vms().len(),
        1,
        "the partial state is kept"
    );

    let (status, answer) = stack
        .post(&format!("/api/v1/failover/jobs/{job_id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let done = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert!(done["error_code"].is_null());
    for name in [
        "validation",
        "snapshot",
        "virtio-injection",
        "test-vm-creation",
        "volume-attachment",
    ] {
        assert_eq!(step(&done, name)["attempt"], 1, "{name} ran once");
        assert_eq!(
            step(&done, name)["completed_at"],
            step(&failed, name)["completed_at"],
            "{name}"
        );
    }
    assert_eq!(step(&done, "test-vm-startup")["attempt"], 2);
    assert_eq!(stack.destination_vms().len(), 1);
    assert_eq!(stack.destination_vms()[0]["state"], "Running");
    let (status, _) = stack
        .post(&format!("/api/v1/failover/jobs/{job_id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 409, "a completed job cannot be retried");
    stack.stop().await;
}

fn process_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_during_a_long_virt_customize_kills_it_and_rolls_back() {
    let stack = stack_with_workers().await;
    let before = stack.footprint();
    let boot = stack.disk_path("win2019-app-disk0.raw");
    ControlFile {
        duration_ms: Some(120_000),
        ..Default::default()
    }
    .write_beside(&boot)
    .unwrap();
    let job_id = test_failover(&stack, WIN_VM_ID, json!({})).await;
    stack
        .wait_for(&job_id, WITHIN, |j| j["steps"][2]["status"] == "running")
        .await;
    let run_record = boot.with_file_name("win2019-app-disk0.raw.standin-run.json");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&run_record)
            && let Ok(record) = serde_json::from_str::<Value>(&text)
        {
            break record["pid"].as_i64().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "virt-customize never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(process_alive(pid));

    let (status, answer) = stack
        .post(
            &format!("/api/v1/failover/jobs/{job_id}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["data"]["status"], "cancelling");
    let (status, _) = stack
        .post(
            &format!("/api/v1/failover/jobs/{job_id}/cancel"),
            &json!({}),
        )
        .await;
    assert!(
        status == 200 || status == 202,
        "cancelling twice is harmless"
    );
    let job = stack.wait_terminal(&job_id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    assert!(!process_alive(pid), "virt-customize was killed");
    assert!(
        !boot
            .with_file_name("win2019-app-disk0.raw.virtio-injected")
            .exists()
    );
    assert_eq!(
        step(&job, "compensation-snapshot-rollback")["status"],
        "completed"
    );
    assert_eq!(step(&job, "test-vm-creation")["status"], "cancelled");
    assert_eq!(stack.footprint(), before);
    assert_eq!(stack.rollback_count(ls_sim::DEMO_RD_WIN2019_APP_DISK0), 1);
    let (status, answer) = stack
        .post(
            &format!("/api/v1/failover/jobs/{job_id}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    // A finished job cannot be cancelled.
    let other = test_failover(&stack, LINUX_VM_ID, json!({})).await;
    assert_eq!(
        stack.wait_terminal(&other, WITHIN).await["status"],
        "completed"
    );
    let (status, answer) = stack
        .post(&format!("/api/v1/failover/jobs/{other}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error_code"], "CONFLICT");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operations_on_one_vm_never_overlap_and_the_sixth_is_refused() {
    let stack = stack_with_workers().await;
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(
            test_failover(
                &stack,
                LINUX_VM_ID,
                json!({"auto_cleanup": true, "test_duration": "1s"}),
            )
            .await,
        );
    }
    let (status, refused) = stack
        .post(
            "/api/v1/failover/test",
            &json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error_code"], "VM_BUSY");
    assert_eq!(
        refused["details"]["job_id"],
        jobs[0].as_str(),
        "names the active job"
    );
    let (status, live) = stack
        .post(
            "/api/v1/failover/live",
            &json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}),
        )
        .await;
    assert_eq!(status, 409);
    assert!(
        live["error"]
            .as_str()
            .unwrap()
            .contains("clean it up first"),
        "{live}"
    );

    let mut windows = Vec::new();
    for job_id in &jobs {
        let job = stack.wait_terminal(job_id, WITHIN).await;
        assert_eq!(job["status"], "completed", "{job:#}");
        let cleanup_id = stack
            .wait_for(job_id, WITHIN, |j| j["cleanup_job_id"].is_string())
            .await["cleanup_job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let cleanup = stack.wait_terminal(&cleanup_id, WITHIN).await;
        assert_eq!(cleanup["status"], "completed");
        windows.push((
            job["started_at"].as_str().unwrap().to_owned(),
            cleanup["completed_at"].as_str().unwrap().to_owned(),
        ));
    }
    for pair in windows.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "operations overlapped: {windows:?}");
    }
    assert!(stack.destination_vms().is_empty());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_follow_the_reference_numbers() {
    let stack = Stack::start_with(|s| {
        s.gateway.rate_limit_per_minute = 10;
        s.gateway.rate_limit_burst = 20;
    })
    .await;
    let unknown = json!({"vm_id": "42000000-0000-4000-8000-000000000001", "vm_name": "x"});
    for n in 0..20 {
        let (status, _) = stack.post("/api/v1/failover/test", &unknown).await;
        assert_eq!(status, 404, "request {n} is within the burst");
    }
    let response = stack
        .http
        .post(format!("{}/api/v1/failover/test", stack.base_url))
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], "RATE_LIMITED");
    assert!(body["details"]["correlation_id"].is_string());
    let (status, _) = stack.get("/api/v1/failover/jobs").await;
    assert_eq!(status, 200, "reads are limited separately");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_return_the_original_answer_and_start_nothing_new() {
    let stack = stack_with_workers().await;
    let send = |key: &'static str, body: Value| {
        let http = stack.http.clone();
        let url = format!("{}/api/v1/failover/test", stack.base_url);
        async move {
            http.post(url)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let body = json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"});
    let first = send("key-1", body.clone()).await;
    assert_eq!(first.status().as_u16(), 202);
    let first: Value = first.json().await.unwrap();
    let second = send("key-1", body.clone()).await;
    assert_eq!(second.status().as_u16(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second, "the original answer");
    let (_, all) = stack.get("/api/v1/failover/jobs").await;
    assert_eq!(all["total"], 1, "nothing new started");
    let other = send("key-1", json!({"vm_id": LINUX_VM_ID, "vm_name": "other"})).await;
    assert_eq!(other.status().as_u16(), 409);
    let other: Value = other.json().await.unwrap();
    assert!(
        other["error"]
            .as_str()
            .unwrap()
            .contains("different request body"),
        "{other}"
    );
    stack.stop().await;
}
