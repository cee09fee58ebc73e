//! CloudStack, LINSTOR and virt-customize slow, failing a share of calls,
//! or hanging (the simulators' fault rules, the stand-in's hang mode):
//! calls are retried with backoff inside a step and steps again with
//! backoff, every call has a timeout so a hung call never holds a worker,
//! and a step that exhausts its attempts fails the job with its code and
//! runs the compensation, which leaves nothing behind.

mod common;
mod harness;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{LINUX_VM_ID, Stack, WIN_VM_ID};
use failover_platform::Settings;
use simulators::faults::FaultRule;
use simulators::linstor as ls_sim;
use simulators::virt_customize_standin::{ControlFile, Mode};

const WITHIN: Duration = Duration::from_secs(120);

fn rule(operation: &str) -> FaultRule {
    FaultRule {
        operation: operation.into(),
        latency_ms: 0,
        failure_rate: 0.0,
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

/// Every call of the workers times out after a second.
fn short_timeouts(s: &mut Settings) {
    s.cloudstack.request_timeout = Duration::from_secs(1);
    s.linstor.request_timeout = Duration::from_secs(1);
    s.virt_customize.deadline = Duration::from_secs(2);
}

async fn stack_with_one_worker(adjust: impl FnOnce(&mut Settings)) -> Stack {
    let mut stack = Stack::start_with(|s| {
        short_timeouts(s);
        adjust(s);
    })
    .await;
    stack.register_demo_vms().await;
    stack.start_worker();
    stack
}

async fn audit_messages(stack: &Stack, job_id: &str, step: &str, status: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT coalesce(details->>'message', '') FROM job_tracking
         WHERE job_id = $1 AND operation = $2 AND status = $3 ORDER BY id",
    )
    .bind(job_id)
    .bind(format!("step.{step}"))
    .bind(status)
    .fetch_all(&stack.pool)
    .await
    .unwrap()
}

/// The job failed at `step` with `code` after every attempt, its
/// compensation completed, and the simulators are as before.
async fn assert_failed_and_compensated(
    stack: &Stack,
    job: &Value,
    step_name: &str,
    code: &str,
    before: &Value,
) {
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error_code"], code, "{job:#}");
    assert_eq!(job["error_step"], step_name);
    let failed = step(job, step_name);
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["attempt"], stack.settings.gateway.step_max_attempts,
        "every attempt was spent: {failed:#}"
    );
    let undo: Vec<&Value> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["step_name"]
                .as_str()
                .unwrap()
                .starts_with("compensation-")
        })
        .collect();
    assert!(!undo.is_empty(), "compensation ran: {job:#}");
    assert!(undo.iter().all(|s| s["status"] == "completed"), "{undo:#?}");
    assert_eq!(job["left_behind"], json!([]));
    assert_eq!(&stack.footprint(), before, "nothing left behind");
    let queued = audit_messages(stack, job["job_id"].as_str().unwrap(), step_name, "queued").await;
    assert!(
        queued.iter().any(|m| m.contains("attempt 2 of 3 in")),
        "retried with backoff: {queued:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_flaky_backends_are_retried_with_backoff_and_the_job_completes() {
    let stack = stack_with_one_worker(|_| {}).await;
    let cs = stack.cloudstack.faults();
    cs.add(FaultRule {
        latency_ms: 100,
        ..rule("*")
    })
    .unwrap();
    for read in ["listVirtualMachines", "listVolumes", "queryAsyncJobResult"] {
        cs.add(FaultRule {
            failure_rate: 0.2,
            ..rule(read)
        })
        .unwrap();
    }
    // Five 530s in a row outlast the client's retries of one attempt: the
    // step fails, and its second attempt (after the step backoff) succeeds.
    cs.add(FaultRule {
        failure_rate: 1.0,
        remaining: Some(stack.settings.cloudstack.max_retries + 1),
        ..rule("startVirtualMachine")
    })
    .unwrap();
    let ls = stack.linstor.faults();
    ls.add(FaultRule {
        latency_ms: 100,
        ..rule("*")
    })
    .unwrap();
    for read in ["snapshot-get", "snapshot-list", "resource-definition-get"] {
        ls.add(FaultRule {
            failure_rate: 0.2,
            ..rule(read)
        })
        .unwrap();
    }
    let job_id = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    // Attempt 1 failed for sure; a random read failure may cost another.
    assert!(
        step(&job, "test-vm-startup")["attempt"].as_u64().unwrap() >= 2,
        "{job:#}"
    );
    let queued = audit_messages(&stack, &job_id, "test-vm-startup", "queued").await;
    assert!(
        queued
            .iter()
            .any(|m| m.contains("attempt 1 failed (VM_START_FAILED") && m.contains("in 0.2s")),
        "{queued:?}"
    );
    let vms = stack.destination_vms();
    assert_eq!(vms.len(), 1, "{vms:#?}");
    assert_eq!(vms[0]["state"], "Running");
    for rd in [
        ls_sim::DEMO_RD_WIN2019_APP_DISK0,
        ls_sim::DEMO_RD_WIN2019_APP_DISK1,
    ] {
        let state = stack.linstor.state();
        let snapshots = &state
            .resource_definitions
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(rd))
            .unwrap()
            .snapshots;
        assert_eq!(snapshots.len(), 1, "{rd}: {snapshots:?}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_calls_time_out_and_are_retried_and_the_job_completes() {
    let stack = stack_with_one_worker(|_| {}).await;
    stack
        .cloudstack
        .faults()
        .add(FaultRule {
            hang: true,
            remaining: Some(2),
            ..rule("startVirtualMachine")
        })
        .unwrap();
    stack
        .linstor
        .faults()
        .add(FaultRule {
            hang: true,
            remaining: Some(1),
            ..rule("snapshot-create")
        })
        .unwrap();
    let started = Instant::now();
    let job_id = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "three calls waited out their 1 s timeout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(step(&job, "snapshot")["attempt"], 1, "{job:#}");
    assert_eq!(step(&job, "test-vm-startup")["attempt"], 1, "{job:#}");
    assert_eq!(stack.destination_vms().len(), 1);
    assert_eq!(stack.footprint()["snapshots"].as_array().unwrap().len(), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_that_exhausts_its_attempts_fails_the_job_with_its_code_and_compensates() {
    let stack = stack_with_one_worker(|s| s.cloudstack.max_retries = 1).await;
    let before = stack.footprint();
    // 530 is retryable: the client retries, then the step, then it gives up.
    stack
        .cloudstack
        .faults()
        .add(FaultRule {
            failure_rate: 1.0,
            ..rule("startVirtualMachine")
        })
        .unwrap();
    let job_id = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_failed_and_compensated(&stack, &job, "test-vm-startup", "VM_START_FAILED", &before)
        .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cloudstack_call_hanging_for_good_never_holds_the_worker() {
    let stack = stack_with_one_worker(|s| s.cloudstack.max_retries = 1).await;
    let before = stack.footprint();
    stack
        .cloudstack
        .faults()
        .add(FaultRule {
            hang: true,
            ..rule("startVirtualMachine")
        })
        .unwrap();
    let job_id = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_failed_and_compensated(&stack, &job, "test-vm-startup", "VM_START_FAILED", &before)
        .await;
    assert!(
        job["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("no answer within 1s"),
        "{job:#}"
    );
    // The only worker is free again: the next job runs on it.
    stack.cloudstack.faults().clear();
    let next = stack
        .start_failover("test", json!({"vm_id": LINUX_VM_ID, "vm_name": "pgtest1"}))
        .await;
    assert_eq!(
        stack.wait_terminal(&next, WITHIN).await["status"],
        "completed"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_linstor_call_hanging_for_good_fails_the_snapshot_and_compensates() {
    let stack = stack_with_one_worker(|s| s.linstor.max_retries = 1).await;
    let before = stack.footprint();
    stack
        .linstor
        .faults()
        .add(FaultRule {
            hang: true,
            ..rule("snapshot-create")
        })
        .unwrap();
    let job_id = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_failed_and_compensated(&stack, &job, "snapshot", "SNAPSHOT_FAILED", &before).await;
    stack.stop().await;
}

fn process_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_virt_customize_is_killed_at_its_deadline_and_the_job_compensates() {
    let stack = stack_with_one_worker(|_| {}).await;
    let before = stack.footprint();
    let boot = stack.disk_path("win2019-app-disk0.raw");
    ControlFile {
        mode: Some(Mode::Hang),
        ignore_sigterm: Some(true),
        ..Default::default()
    }
    .write_beside(&boot)
    .unwrap();
    let job_id = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    let job = stack.wait_terminal(&job_id, WITHIN).await;
    assert_failed_and_compensated(&stack, &job, "virtio-injection", "VIRTIO_FAILED", &before).await;
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(boot.with_file_name("win2019-app-disk0.raw.standin-run.json"))
            .unwrap(),
    )
    .unwrap();
    for key in ["pid", "child_pid"] {
        let pid = record[key].as_i64().unwrap();
        assert!(!process_alive(pid), "{key} {pid} of the last run is gone");
    }
    stack.stop().await;
}
