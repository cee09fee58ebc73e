//! A worker process killed with SIGKILL in the middle of a step: the lease
//! expires, the step runs again under a new attempt on another worker, and
//! its idempotency means the job completes with no second VM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use common::{LINUX_VM_ID, Stack, workspace_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_step_leaves_a_job_that_completes_with_one_vm() {
    let mut stack = Stack::start().await;
    stack.register_demo_vms().await;
    // Deploys take long enough to kill the worker while it waits on one.
    stack
        .cloudstack
        .set_async_job_duration(Duration::from_secs(5));

    let mut doomed = tokio::process::Command::new(workspace_bin("step-worker"))
        .envs(stack.worker_env("doomed-worker"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("worker process starts");

    let job_id = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;

    // Wait until the deploy was submitted: the VM exists in CloudStack while
    // the worker polls its async job.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = stack.get(&format!("/api/v1/failover/jobs/{job_id}")).await;
        let creation = body["data"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step_name"] == "test-vm-creation")
            .cloned()
            .unwrap();
        if creation["status"] == "running" && !stack.destination_vms().is_empty() {
            assert_eq!(creation["attempt"], 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deploy never started: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();

    stack
        .cloudstack
        .set_async_job_duration(Duration::from_millis(30));
    stack.start_worker();
    let job = stack.wait_terminal(&job_id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    let creation = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_name"] == "test-vm-creation")
        .unwrap();
    assert_eq!(
        creation["attempt"], 2,
        "the step ran again under a new attempt"
    );
    let vms = stack.destination_vms();
    assert_eq!(vms.len(), 1, "no second VM: {vms:#?}");
    assert_eq!(vms[0]["state"], "Running");
    assert_eq!(job["destination_vm_id"], vms[0]["id"]);
    stack.stop().await;
}
