//! A gateway slow to answer a heartbeat (a database hiccup, an overloaded
//! replica) never pauses the step the heartbeat is about: the step goes on
//! and reports while the heartbeat is still waiting for its answer.

mod common;
mod harness;

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use common::{Stack, WIN_VM_ID, workspace_bin};
use harness::processes::{Proc, worker_env};
use harness::tap::{Point, Release, Tap};
use simulators::virt_customize_standin::ControlFile;

fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {job:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heartbeat_waiting_on_a_slow_gateway_never_pauses_the_step() {
    let stack = Stack::start_with(|s| s.gateway.lease_duration = Duration::from_secs(20)).await;
    stack.register_demo_vms().await;
    let shutdown = CancellationToken::new();
    let (tap, tap_url) = Tap::start(&stack.grpc_url, shutdown.clone()).await;
    ControlFile {
        duration_ms: Some(2_000),
        ..Default::default()
    }
    .write_beside(&stack.disk_path("win2019-app-disk0.raw"))
    .unwrap();
    let mut hold = tap.hold(Point::Heartbeat, "worker", "virtio-injection");
    let logs = tempfile::tempdir().unwrap();
    let _worker = Proc::start(
        "worker",
        workspace_bin("step-worker"),
        Vec::new(),
        worker_env(&stack.settings, &tap_url, "worker"),
        logs.path(),
    );
    let job_id = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    hold.held(Duration::from_secs(60)).await;
    // The gateway takes 8 s to answer this heartbeat; the 2 s
    // virt-customize run is reported long before.
    let reported = harness::eventually(Duration::from_secs(6), "virtio reported", || async {
        let reports = tap.calls_for("report", &job_id, "virtio-injection");
        (!reports.is_empty()).then_some(reports)
    })
    .await;
    assert_eq!(reported[0].ok, Some(true), "{reported:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    hold.release(Release::Forward);

    let job = stack.wait_terminal(&job_id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(step(&job, "virtio-injection")["attempt"], 1);
    shutdown.cancel();
    stack.stop().await;
}

fn process_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_cut_off_from_the_gateway_stops_its_step_when_its_lease_runs_out() {
    let stack = Stack::start().await;
    stack.register_demo_vms().await;
    let lease = stack.settings.gateway.lease_duration;
    let shutdown = CancellationToken::new();
    let (tap, tap_url) = Tap::start(&stack.grpc_url, shutdown.clone()).await;
    let boot = stack.disk_path("win2019-app-disk0.raw");
    ControlFile {
        duration_ms: Some(12_000),
        ..Default::default()
    }
    .write_beside(&boot)
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let _worker = Proc::start(
        "cut-off",
        workspace_bin("step-worker"),
        Vec::new(),
        worker_env(&stack.settings, &tap_url, "cut-off"),
        logs.path(),
    );
    let job_id = stack
        .start_failover(
            "test",
            json!({"vm_id": WIN_VM_ID, "vm_name": "win2019-app"}),
        )
        .await;
    stack
        .wait_for(&job_id, Duration::from_secs(60), |j| {
            step(j, "virtio-injection")["status"] == "running"
        })
        .await;
    let record = boot.with_file_name("win2019-app-disk0.raw.standin-run.json");
    let first = harness::eventually(Duration::from_secs(20), "virt-customize runs", || async {
        let run: Value = serde_json::from_str(&std::fs::read_to_string(&record).ok()?).ok()?;
        run["pid"].as_i64()
    })
    .await;
    // The worker can no longer renew its lease; the gateway gives the step
    // to attempt 2 once the lease runs out. The cut-off worker must not go
    // on beside it: it stops its virt-customize when its lease is over.
    tap.partition_heartbeats("cut-off", "virtio-injection", 1);
    let cut = std::time::Instant::now();
    harness::eventually(
        lease + Duration::from_secs(3),
        "the cut-off worker stopped its step",
        || async { (!process_alive(first)).then_some(()) },
    )
    .await;
    assert!(
        cut.elapsed() < Duration::from_secs(10),
        "stopped by the lease, not by its end"
    );
    assert!(
        tap.calls_for("report", &job_id, "virtio-injection")
            .iter()
            .all(|r| r.attempt != 1),
        "attempt 1 is never reported"
    );
    let job = stack.wait_terminal(&job_id, Duration::from_secs(90)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(step(&job, "virtio-injection")["attempt"], 2);
    shutdown.cancel();
    stack.stop().await;
}
